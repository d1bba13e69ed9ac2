"""The "exact" sub-step on every linear sub-flow ẏ = P y + y Q + R: singular, near-singular and zero P, Q.

Reference: for normal P = U diag(p) U^*, Q = V diag(q) V^* (U, V unitary) the flow is, entrywise in
the eigenbases, ỹ_ij(h) = e^{λh} ỹ0_ij + h φ1(λh) R̃_ij with λ = p_i + q_j and φ1(x) = (e^x − 1)/x
(φ1(0) = 1), evaluated with expm1 — exact also where λ = 0, i.e. where the Sylvester operator
y ↦ Py + yQ is singular. A solve-based closed form y* = −(P·+·Q)^{-1}R breaks exactly there.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tests.helpers.dlra import H, orth
from dlrt_ref.substeps import SubFlow, exact_linear, solve_subflow


def _flow(P, Q, R):
    return SubFlow("S", point=None, project=None, linear=(P, Q, R))


def _run(P, Q, R, y0, h):
    return solve_subflow(exact_linear, _flow(P, Q, R), None, 0.0, y0, h)


def _phi1(x):
    x = np.asarray(x, dtype=complex)
    out = np.ones_like(x)
    nz = np.abs(x) > 1e-300
    out[nz] = np.expm1(x[nz]) / x[nz]
    small = np.abs(x) < 1e-8  # expm1(x)/x loses nothing, but keep the series where x is tiny
    out[small] = 1 + x[small] / 2 + x[small] ** 2 / 6
    return out


def _reference(p, q, U, V, R, y0, h):
    lam = p[:, None] + q[None, :]
    Rt, yt = H(U) @ R @ V, H(U) @ y0 @ V
    yt1 = np.exp(lam * h) * yt + h * _phi1(lam * h) * Rt
    return U @ yt1 @ H(V)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), a=st.integers(1, 6), b=st.integers(1, 6), cplx=st.booleans(),
       gap=st.sampled_from([None, 0.0, 1e-12, 1e-9, "zero P, Q", "zero P"]), h=st.sampled_from([0.01, 0.3, -0.2]))
def test_exact_substep_is_exact_for_singular_and_near_singular_systems(seed, a, b, cplx, gap, h):
    """Relative error ≤ 1e-13 against the closed form, with eigenvalue sums p_i + q_j = 0, 1e-12, 1e-9 or generic."""
    rng = np.random.default_rng(seed)
    if cplx:
        p = rng.standard_normal(a) + 1j * rng.standard_normal(a)
        q = rng.standard_normal(b) + 1j * rng.standard_normal(b)
    else:
        p, q = rng.standard_normal(a), rng.standard_normal(b)
    if gap == "zero P, Q":
        p, q = 0 * p, 0 * q
    elif gap == "zero P":
        p = 0 * p
    elif gap is not None:  # make P and −Q share (nearly) an eigenvalue
        q[0] = -p[0] + gap
    U, V = orth(rng, a, a, cplx), orth(rng, b, b, cplx)
    if not cplx:  # real normal matrices with real spectra: symmetric
        P, Q = (U * p) @ U.T, (V * q) @ V.T
    else:
        P, Q = (U * p) @ H(U), (V * q) @ H(V)
    dt = complex if cplx else float
    R = rng.standard_normal((a, b)).astype(dt)
    y0 = rng.standard_normal((a, b)).astype(dt)
    y1 = _run(P, Q, R, y0, h)
    ref = _reference(p, q, U, V, R, y0, h)
    assert np.linalg.norm(y1 - ref) <= 1e-13 * np.linalg.norm(ref)
    assert y1.dtype == np.result_type(y0, P)


def test_zero_operator_gives_y0_plus_hR():
    """P = Q = 0: ẏ = R, so y(h) = y0 + hR exactly (a Sylvester-solve form returned y0 here)."""
    rng = np.random.default_rng(0)
    y0, R = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    y1 = _run(np.zeros((4, 4)), np.zeros((3, 3)), R, y0, 0.25)
    np.testing.assert_allclose(y1, y0 + 0.25 * R, rtol=0, atol=1e-15)


def test_exact_substep_needs_a_linear_flow():
    with pytest.raises(ValueError, match="linear"):
        solve_subflow(exact_linear, SubFlow("K", None, None), None, 0.0, np.zeros((2, 2)), 0.1)


def test_sylvester_problem_ksl_exact_is_at_the_best_approximation():
    """`ode --problem sylvester --integrator ksl --rank 5 --substep exact`: error/best ≤ 1.01 (was 1.457)."""
    from dlrt_ref.integrators import integrate
    from dlrt_ref.ode.problems import sylvester

    P = sylvester(r=5, seed=0)
    sol = integrate(P.field, P.Y0, 0.0, P.T, 100, "ksl", substep="exact")
    assert P.error(sol.Y, P.T) <= 1.01 * P.best_error(P.T, 5)
