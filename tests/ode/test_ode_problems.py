"""The matrix ODE problems: references are right, constructors are seeded and checked."""
import numpy as np
import pytest

from dlrt_ref.integrators import integrate
from dlrt_ref.ode.fields import Increments
from dlrt_ref.lowrank import LowRankMatrix, best_rank_r
from dlrt_ref.ode.least_squares import least_squares
from dlrt_ref.ode.network_flow import teacher_student
from dlrt_ref.ode.problems import PROBLEMS, best_error_of, make_problem, random_skew, toy
from dlrt_ref.ode.reference import NormalSylvesterFlow, ivp_solve, phi1
from dlrt_ref.ode.schrodinger import apply_D

SMALL = {
    "toy": dict(N=16, r=3),
    "sylvester": dict(m=12, n=9, r=3, sigma_min=1e-4),
    "schrodinger": dict(N=10, r=3),
    "lsq": dict(m=12, n=9, r=3),
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_problem_basics(name):
    P = make_problem(name, **SMALL[name])
    assert P.name == name and P.rank == SMALL[name]["r"]
    U, V = P.Y0.U, P.Y0.V
    r = P.rank
    assert np.allclose(U.conj().T @ U, np.eye(r), atol=1e-12)
    assert np.allclose(V.conj().T @ V, np.eye(r), atol=1e-12)
    assert np.allclose(P.reference(P.t0), P.Y0.to_dense() if name != "toy" else P.reference(0.0), atol=1e-12)
    # seeded: the same arguments give the same numbers
    Q = make_problem(name, **SMALL[name])
    assert np.array_equal(P.reference(P.T), Q.reference(P.T))
    assert P.best_error(P.T, r) == pytest.approx(best_error_of(P.reference(P.T), r), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("name", ["sylvester", "schrodinger", "lsq"])
def test_exact_reference_matches_solve_ivp(name):
    P = make_problem(name, **SMALL[name])
    for t in (0.37 * P.T, P.T):
        ivp = ivp_solve(P.rhs, P.Y0.to_dense(), P.t0, t)
        ref = P.reference(t)
        assert np.linalg.norm(ivp - ref) <= 1e-7 * max(1.0, np.linalg.norm(ref))


def test_toy_satisfies_its_ode_and_singular_values():
    P = toy(N=20, r=4, seed=3)
    W = random_skew(np.random.default_rng(0), 20)
    assert np.allclose(W, -W.T) and np.linalg.norm(W, 2) == pytest.approx(1.0)
    Pd = toy(N=20, r=4, seed=3, increments=False)
    t, h = 0.4, 1e-5
    fd = (P.reference(t + h) - P.reference(t - h)) / (2 * h)  # central difference, O(h²)
    assert np.linalg.norm(fd - Pd.field(t, None)) < 1e-6 * np.linalg.norm(fd)
    s = np.linalg.svd(P.reference(0.8), compute_uv=False)
    assert np.allclose(s, np.exp(0.8) * 2.0 ** -np.arange(1, 21), rtol=1e-10)
    assert isinstance(P.field, Increments)


def test_toy_rank_r_integrators_near_best():
    # the Done-when claim at a smaller size: error / best stays near 1
    P = toy(N=40, r=5, seed=1)
    best = P.best_error(P.T, 5)
    for method in ("ksl", "strang", "bug"):
        sol = integrate(P.field, P.Y0, P.t0, P.T, 50, method)
        assert P.error(sol.Y, P.T) <= 1.5 * best, method


def test_sylvester_prescribed_sigma_min():
    P = make_problem("sylvester", m=20, n=15, r=6, sigma_min=1e-8)
    s = P.Y0.singular_values()
    assert s[0] == pytest.approx(1.0) and s[-1] == pytest.approx(1e-8)
    with pytest.raises(ValueError):
        make_problem("sylvester", m=5, n=5, r=6)
    with pytest.raises(ValueError):
        make_problem("sylvester", sigma_min=0.0)


def test_schrodinger_conserves_norm_and_energy():
    P = make_problem("schrodinger", N=30, r=4, seed=2, complex_factors=True)
    assert P.norm(P.Y0) == pytest.approx(1.0)
    E0 = P.energy(P.Y0)
    assert E0 == pytest.approx(P.energy(P.Y0.to_dense()), rel=1e-12)
    for t in (1.0, 2.5, P.T):
        Y = P.reference(t)
        assert P.norm(Y) == pytest.approx(1.0, abs=1e-12)
        assert P.energy(Y) == pytest.approx(E0, rel=1e-11)


def test_schrodinger_lazy_field_matches_dense():
    P = make_problem("schrodinger", N=15, r=3, seed=1, complex_factors=True)
    rng = np.random.default_rng(5)
    Y = LowRankMatrix(rng.standard_normal((15, 3)) + 1j * rng.standard_normal((15, 3)),
                      rng.standard_normal((3, 3)), rng.standard_normal((15, 3)))
    F, Fd = P.field(0.0, Y), P.rhs(0.0, Y.to_dense())
    X = rng.standard_normal((15, 2))
    assert np.allclose(F @ X, Fd @ X, atol=1e-12)
    assert np.allclose(F.H @ X, Fd.conj().T @ X, atol=1e-12)
    assert np.allclose(F.to_dense(), Fd, atol=1e-12)
    D = 2 * np.eye(15) - np.eye(15, k=1) - np.eye(15, k=-1)
    assert np.allclose(apply_D(X), D @ X)


def test_lsq_loss_gradient_and_lipschitz():
    P = make_problem("lsq", m=10, n=7, r=2, seed=4)
    W = P.Y0.to_dense()
    rng = np.random.default_rng(1)
    E = rng.standard_normal(W.shape)
    h = 1e-6
    dL = (P.loss(W + h * E) - P.loss(W - h * E)) / (2 * h)
    assert dL == pytest.approx(float(np.sum(-P.rhs(0, W) * E)), rel=1e-6)  # F = −∇L
    assert P.lipschitz > 0
    # the exact gradient flow decreases the loss
    losses = [P.loss(P.reference(t)) for t in np.linspace(0, P.T, 6)]
    assert all(b < a for a, b in zip(losses, losses[1:]))


def test_phi1_and_normal_flow_limits():
    z = np.array([0.0, 1e-12, 1j, -2.0])
    assert np.allclose(phi1(0.5, z), [0.5, 0.5, (np.exp(0.5j) - 1) / 1j, (np.exp(-1.0) - 1) / -2.0])
    # A = 0, B = 0: Y(t) = Y0 + t C
    n = 3
    flow = NormalSylvesterFlow(np.zeros(n), np.eye(n), np.zeros(n), np.eye(n), np.ones((n, n)), np.eye(n))
    assert np.allclose(flow(2.0), np.eye(n) + 2.0)


def test_unknown_problem():
    with pytest.raises(ValueError, match="unknown problem"):
        make_problem("heat")


@pytest.mark.parametrize("make", [lambda: least_squares(m=12, n=10, r=3, gamma=0.3, T=1.0),
                                  lambda: teacher_student(d=8, k=6, o=3, n_samples=32, r=2, T=0.5)],
                         ids=["least_squares", "teacher_student"])
def test_gradient_flow_errors_agree_with_the_truncated_svd(make):
    """GradientFlow (ode/problem.py): best_error(t, r) is the error of the best rank-r matrix, error() its norm.

    Computed along another route: the dense rank-r truncation of W(t) by ``best_rank_r`` and ``error``.
    """
    P = make()
    t = P.T / 2
    W = P.flow(t)
    assert P.shape == W.shape and P.rank == P.Y0.rank
    np.testing.assert_array_equal(P.reference(t), W)
    for r in (1, P.rank, min(W.shape) - 1):
        Yr = best_rank_r(W, r)
        np.testing.assert_allclose(P.best_error(t, r), P.error(Yr, t), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(P.best_error(t, r), np.linalg.norm(W - Yr.to_dense()), rtol=1e-10, atol=1e-14)
    assert P.best_error(t) == P.best_error(t, P.rank)
    assert P.epsilon(times=[t]) == P.normal_component(best_rank_r(W, P.rank))
