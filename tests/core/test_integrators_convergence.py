"""Convergence, robustness, norm/energy and descent properties of the integrators.

References: [LO14] Lubich & Oseledets, BIT 54 (2014); [KLW16] Kieri, Lubich &
Walach, SINUM 54 (2016); [CL22] Ceruti & Lubich, BIT 62 (2022); [CKL22] Ceruti,
Kusch & Lubich, BIT 62 (2022); [SZ22] Schotthöfer, Zangrando et al., NeurIPS 2022.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.integrate import solve_ivp

from tests.helpers.dlra import (EPS, GenericField, H, HermitianSuperoperatorField, dense, draw, expm, fro, hermitian, lowrank,
                                orth, run, slope, step)
from dlrt_ref.lowrank import LowRankMatrix, best_rank_r, tangent_project
from dlrt_ref.ode.fields import SylvesterField
from dlrt_ref.ode.problems import lsq, schrodinger, sylvester

seeds = st.integers(0, 2**32 - 1)
cplxs = st.booleans()


class _Dense:
    """A dense matrix seen as a field argument (only ``to_dense`` is used by GenericField)."""

    def __init__(self, Y):
        self.Yd = Y

    def to_dense(self):
        return self.Yd


def dlra_reference(F, Y0, t1, r):
    """The DLRA solution Ẏ = P(Y) F(t, Y) ([KL07]) at t1, by DOP853 at rtol = atol = 1e-12."""
    sh = Y0.shape

    def f(t, y):
        Yl = best_rank_r(y.reshape(sh), r)
        return tangent_project(Yl, F(t, _Dense(Yl.to_dense()))).ravel()

    sol = solve_ivp(f, (0.0, t1), dense(Y0).ravel().astype(complex), method="DOP853", rtol=1e-12, atol=1e-12)
    return sol.y[:, -1].reshape(sh)


# --------------------------------------------------------------------------- #
# Orders
# --------------------------------------------------------------------------- #
FIRST_ORDER = [("ksl", "euler"), ("lsk", "euler"), ("bug", "euler"), ("bug", "rk4"), ("ra-bug", "euler"),
               ("parallel", "euler"), ("naive", "euler")]


@settings(max_examples=4)
@given(seed=seeds, cplx=cplxs, m=st.integers(6, 10), n=st.integers(6, 10), r=st.integers(1, 3))
def test_local_error_is_second_order(seed, cplx, m, n, r):
    """One-step error vs the exact DLRA flow is O(h²) (consistency); Strang with RK4 is O(h³)."""
    rng = np.random.default_rng(seed)
    F = GenericField(rng, m, n, cplx, gamma=0.1)
    Y0 = lowrank(rng, m, n, r, cplx)
    hs = np.array([0.04, 0.02, 0.01])
    refs = [dlra_reference(F, Y0, h, r) for h in hs]
    for method, sub in FIRST_ORDER + [("strang", "rk4")]:
        errs = [fro(dense(step(method, F, 0.0, Y0, h, sub).Y) - ref) for h, ref in zip(hs, refs)]
        p = slope(hs, errs)
        if method == "strang":
            assert p >= 2.7, (method, errs, p)
        else:
            assert 1.7 <= p <= 2.4, (method, sub, errs, p)


@settings(max_examples=3)
@given(seed=seeds, cplx=cplxs, m=st.integers(6, 10), n=st.integers(6, 10), r=st.integers(1, 3))
def test_global_convergence_orders(seed, cplx, m, n, r):
    """Error at T vs the DLRA solution: slope ≈ 1 for KSL/LSK/BUG/RA-BUG/parallel/naive, ≈ 2 for Strang+RK4.

    σ(Y) stays O(1) here, so the low-rank modelling error is absent (the reference
    is the DLRA flow itself) and only the time discretisation is measured.
    """
    rng = np.random.default_rng(seed)
    F = GenericField(rng, m, n, cplx, gamma=0.1)
    Y0 = lowrank(rng, m, n, r, cplx)
    T = 0.4
    ref = dlra_reference(F, Y0, T, r)
    Ns = np.array([8, 16, 32, 64])  # four step sizes
    for method, sub in FIRST_ORDER + [("strang", "rk4")]:
        errs = [fro(dense(run(method, F, Y0, 0.0, T, N, sub)) - ref) for N in Ns]
        p = slope(T / Ns, errs)
        if method == "strang":
            assert 1.75 <= p <= 2.3, (method, errs, p)
        else:
            assert 0.8 <= p <= 1.25, (method, sub, errs, p)


@settings(max_examples=5)
@given(seed=seeds, cplx=cplxs, m=st.integers(6, 14), n=st.integers(6, 14), r=st.integers(1, 3))
def test_ksl_exact_on_sylvester_while_bug_is_first_order(seed, cplx, m, n, r):
    """F = AY + YB (C = 0) keeps rank r: Y(t) = e^{tA} Y0 e^{tB}.

    With exact sub-flows KSL and Strang reproduce it to round-off (the K-, S- and
    L-flows compose to e^{hA} · e^{hB}: the U1^*AU1 factors of the S- and L-flows
    cancel), while the Galerkin S-step of BUG in the fixed new basis is only first
    order: halving h halves the error.
    """
    rng = np.random.default_rng(seed)
    A, B = draw(rng, (m, m), cplx) / np.sqrt(m), draw(rng, (n, n), cplx) / np.sqrt(n)
    F = SylvesterField(A, B, np.zeros((m, n)))
    Y0 = lowrank(rng, m, n, r, cplx)
    T = 0.5
    exact = expm(T * A) @ dense(Y0) @ expm(T * B)
    scale = fro(exact)
    for method in ("ksl", "lsk", "strang"):
        for N in (1, 5):
            assert fro(dense(run(method, F, Y0, 0.0, T, N, "exact")) - exact) <= 200 * EPS * max(m, n) * N * scale
    Ns = np.array([8, 16, 32])
    errs = [fro(dense(run("bug", F, Y0, 0.0, T, N, "exact")) - exact) for N in Ns]
    assert min(errs) > 1e-8 * scale
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all((1.7 <= ratios) & (ratios <= 2.3)), (errs, ratios)


# --------------------------------------------------------------------------- #
# Robustness to small singular values [KLW16], [CL22, Thm 4.2]
# --------------------------------------------------------------------------- #
@settings(max_examples=2)
@given(seed=seeds)
def test_robust_to_small_singular_values(seed):
    """Ẏ = AY + YB + εC with σ_r(Y0) ∈ {1e-2, 1e-5, 1e-10}: KSL/BUG/RA-BUG errors are bounded
    independently of σ_r; the naive factor-ODE integrator (S^{-1}) blows up.

    Bound: err ≤ c(ε + h) with c = ‖Y0‖ e^{T(‖A‖+‖B‖)} (the Grönwall factor of the
    robust error bounds, no σ_r in it). With exact sub-flows KSL and RA-BUG (fixed
    rank r) are at the best-approximation level.
    """
    m = n = 16
    r, eps_, T, N = 4, 1e-3, 1.0, 20
    h = T / N
    errs = {}
    for sr in (1e-2, 1e-5, 1e-10):
        P = sylvester(m=m, n=n, r=r, sigma_min=sr, eps=eps_, seed=seed % 1000, T=T)
        best = P.best_error(T, r)
        c = fro(dense(P.Y0)) * np.exp(T * (np.linalg.norm(P.field.A, 2) + np.linalg.norm(P.field.B, 2)))
        for method, sub in [("ksl", "euler"), ("bug", "euler"), ("ra-bug", "euler"), ("bug", "exact"),
                            ("ksl", "exact"), ("ra-bug", "exact"), ("naive", "euler")]:
            Y = run(method, P.field, P.Y0, 0.0, T, N, sub)
            errs[method, sub, sr] = e = P.error(Y, T)
            if method != "naive":
                assert e <= c * (eps_ + h), (method, sub, sr, e)
            if sub == "exact" and method != "bug":
                assert e <= 1.2 * best, (method, sr, e, best)
    naive = [errs["naive", "euler", s] for s in (1e-2, 1e-5, 1e-10)]
    assert naive[2] >= 1e3 * naive[0] and naive[2] > 10 * fro(dense(P.Y0)), naive
    assert naive[2] > 1e3 * max(errs["bug", "euler", s] for s in (1e-2, 1e-5, 1e-10))


# --------------------------------------------------------------------------- #
# Norm and energy on Schrödinger-type fields [CKL22, Sec. 4 and 5.2]
# --------------------------------------------------------------------------- #
def _schrodinger_sylvester(rng, m, n):
    """F(Y) = −i(H1 Y + Y H2), H1, H2 Hermitian (‖·‖₂ = 1): the flow is unitary on C^{m×n},
    conserving ‖Y‖_F and E(Y) = Re⟨Y, H1 Y + Y H2⟩; Sylvester-type, so sub-steps are exact."""
    H1, H2 = hermitian(rng, m), hermitian(rng, n)
    F = SylvesterField(-1j * H1, -1j * H2, np.zeros((m, n), complex))
    energy = lambda Y: float(np.real(np.vdot(Y, H1 @ Y + Y @ H2)))
    return F, energy, 2.0  # ‖Y ↦ H1 Y + Y H2‖ ≤ ‖H1‖₂ + ‖H2‖₂


def _complex_lowrank(rng, m, n, r, decay=10.0):
    s = decay ** -np.arange(r)
    Y0 = lowrank(rng, m, n, r, True, sigmas=s / np.linalg.norm(s))
    return Y0


@settings(max_examples=8)
@given(seed=seeds, m=st.integers(6, 16), n=st.integers(6, 16), r=st.integers(1, 3), h=st.sampled_from([0.2, 0.05]))
def test_bug_norm_on_schrodinger_type_field(seed, m, n, r, h):
    """Fixed-rank BUG, exact sub-steps: the Galerkin S-step is unitary, so ‖Y1‖ = ‖U1^* Y0 V1‖ ≤ ‖Y0‖
    (the only loss is the projection onto the new bases, O(h²) per step)."""
    rng = np.random.default_rng(seed)
    F, _, _ = _schrodinger_sylvester(rng, m, n)
    Y0 = _complex_lowrank(rng, m, n, r, decay=3.0)
    Y0d = dense(Y0)
    losses = []
    for hh in (h, h / 2, h / 4):
        Y1 = step("bug", F, 0.0, Y0, hh, "exact").Y
        n1 = fro(dense(Y1))
        proj = fro(H(Y1.U) @ Y0d @ Y1.V)
        assert abs(n1 - proj) <= 100 * EPS * max(m, n)
        assert n1 <= 1.0 + 100 * EPS * max(m, n)
        losses.append(1.0 - n1)
    if min(losses) > 1e-11:  # measurable: the loss decays like h² (not a first-order leak)
        assert 1.6 <= slope([h, h / 2, h / 4], losses) <= 2.5, losses


def _rk4_damping(h, rho):
    """RK4 on Ṡ = −i𝓗S: |R(iy)|² = 1 − y⁶/72 + y⁸/576 ∈ [1 − y⁶/72, 1] for |y| ≤ hρ ≤ 2√2."""
    return (h * rho) ** 6 / 72


@settings(max_examples=6)
@given(seed=seeds, m=st.integers(8, 16), n=st.integers(8, 16), r=st.integers(1, 3))
def test_ra_bug_conserves_norm_exactly_on_rank_preserving_unitary_flow(seed, m, n, r):
    """Exact sub-steps, F = −i(H1 Y + Y H2): Û S̃0 V̂^* = Y0 and the Galerkin flow is unitary,
    so ‖Ŷ1‖ = ‖Y0‖ to round-off; the flow keeps rank r, so nothing is discarded either."""
    rng = np.random.default_rng(seed)
    F, _, _ = _schrodinger_sylvester(rng, m, n)
    Y = _complex_lowrank(rng, m, n, r, decay=3.0)
    for k in range(4):
        res = step("ra-bug", F, 0.1 * k, Y, 0.1, "exact", tau=1e-8)
        Y = res.Y
        d2 = float(np.sum(res.truncation.discarded**2))
        assert abs(fro(dense(Y)) ** 2 + d2 - 1.0) <= 100 * EPS * max(m, n) * (k + 1)
        assert Y.rank == r


@settings(max_examples=8)
@given(seed=seeds, m=st.integers(8, 16), n=st.integers(8, 16), r=st.integers(2, 3), tau=st.sampled_from([5e-2, 1e-2]))
def test_ra_bug_norm_loss_equals_discarded(seed, m, n, r, tau):
    """RA-BUG on a norm-conserving, rank-raising field: ‖Ŷ1‖ = ‖Y0‖ and
    ‖Y1‖² = ‖Ŷ1‖² − Σ discarded σ², hence ‖Y0‖ − ‖Y1‖ ≤ ϑ ([CKL22] Sec. 4).

    RK4 sub-steps with hρ = 0.03: the only other change of norm is RK4's damping of a
    unitary flow, at most (hρ)⁶/72 ≈ 1e-11 relative, far below the discarded Σσ².
    """
    rng = np.random.default_rng(seed)
    F = HermitianSuperoperatorField(rng, m, n)
    Y = _complex_lowrank(rng, m, n, r)
    h = 0.01
    damp = _rk4_damping(h, F.rho)
    nrm2, some_discarded = 1.0, False
    for k in range(5):
        res = step("ra-bug", F, h * k, Y, h, "rk4", tau=tau)
        tr = res.truncation
        d2 = float(np.sum(tr.discarded**2))
        n1 = fro(dense(res.Y)) ** 2
        tol = 100 * EPS * max(m, n)
        assert nrm2 * (1 - damp) - tol <= n1 + d2 <= nrm2 + tol, (k, n1, d2, nrm2)
        assert np.sqrt(nrm2) - np.sqrt(n1) <= tr.theta + np.sqrt(damp) + tol
        some_discarded |= d2 > 1e3 * (damp + tol)
        nrm2, Y = n1, res.Y
    assert some_discarded  # the identity was exercised with a real truncation


@settings(max_examples=6)
@given(seed=seeds, m=st.integers(8, 16), n=st.integers(8, 16), r=st.integers(2, 3), tau=st.sampled_from([5e-2, 1e-3]))
def test_ra_bug_energy_drift_bounded_by_truncation(seed, m, n, r, tau):
    """Energy drift over n steps ≤ Σ_k (2ρ‖Y_{k+1}‖ϑ_k + ρϑ_k²) ≤ n(2ρ‖Y0‖ϑ + ρϑ²) ([CKL22] Sec. 4-5).

    Ŷ1 has the energy of Y0 (unitary Galerkin flow on an exact representation of Y0),
    up to RK4's damping ρ(hρ)⁶/72‖Y‖²; truncation changes E by
    |E(Ŷ) − E(Y)| = |2Re⟨Y, 𝓗R⟩ + ⟨R, 𝓗R⟩| ≤ 2ρ‖Y‖ϑ + ρϑ² with R = Ŷ − Y, ‖R‖ = tail ≤ ϑ.
    Checked step by step with the actual tails, and in total against n·ϑ.
    """
    rng = np.random.default_rng(seed)
    F = HermitianSuperoperatorField(rng, m, n)
    rho, h, nsteps = F.rho, 0.01, 8
    Y = _complex_lowrank(rng, m, n, r, decay=4.0)
    E0 = E = F.energy(dense(Y))
    slack = rho * _rk4_damping(h, rho) + 100 * EPS * max(m, n) * rho
    bound_total, theta_max, tail_max = 0.0, 0.0, 0.0
    for k in range(nsteps):
        res = step("ra-bug", F, h * k, Y, h, "rk4", tau=tau)
        t = res.truncation.tail
        E1 = F.energy(dense(res.Y))
        b = 2 * rho * fro(dense(res.Y)) * t + rho * t**2 + slack
        assert abs(E1 - E) <= b, (k, E1 - E, b)
        bound_total += b
        theta_max = max(theta_max, res.truncation.theta)
        tail_max = max(tail_max, t)
        E, Y = E1, res.Y
    assert abs(E - E0) <= bound_total
    assert abs(E - E0) <= nsteps * (2 * rho * theta_max + rho * theta_max**2 + slack)
    assert tail_max > 1e-6  # a real truncation happened: the bound was exercised


def test_schrodinger_problem_norm_and_energy_with_rk4():
    """The [CKL22] Schrödinger problem (small N), RK4 sub-steps: RA-BUG's norm budget
    ‖Y1‖² + Σ disc² equals ‖Y0‖² up to RK4's damping of a unitary flow, and the energy
    drifts by at most the truncation bound plus that damping.

    RK4 on Ṡ = −i𝓗S multiplies each eigencomponent by R(−ihλ), |R(iy)|² = 1 − y⁶/72 + y⁸/576,
    so per step the norm² shrinks by a factor in [1 − (hρ)⁶/72, 1] and E moves by at
    most ρ(hρ)⁶/72 ‖Y‖², ρ = ‖H‖ ≤ ‖D‖₂ + ‖V_cos‖₂² ≤ 4 + 4.
    """
    P = schrodinger(N=16, r=4, seed=3, T=0.5)
    rho, h, tau = 8.0, 0.05, 1e-3
    damp = (h * rho) ** 6 / 72
    Y = P.Y0
    n2 = fro(dense(Y)) ** 2
    E0 = E = P.energy(dense(Y))
    total, disc_any = 0.0, False
    for k in range(10):
        res = step("ra-bug", P.field, k * h, Y, h, "rk4", tau=tau)
        d2 = float(np.sum(res.truncation.discarded**2))
        n1 = fro(dense(res.Y)) ** 2
        tol = 100 * EPS * 16
        assert n2 * (1 - damp) - tol <= n1 + d2 <= n2 + tol, (k, n1 + d2, n2)
        disc_any |= d2 > 1e-12
        t = res.truncation.tail
        E1 = P.energy(dense(res.Y))
        b = 2 * rho * np.sqrt(n1) * t + rho * t**2 + rho * damp * n2 + tol * rho
        assert abs(E1 - E) <= b, (k, E1 - E, b)
        total += b
        E, n2, Y = E1, n1, res.Y
    assert disc_any
    assert abs(E - E0) <= total
    # the energy computed lazily (factored field) equals the dense one
    assert abs(P.energy(Y) - P.energy(dense(Y))) <= 100 * EPS * 16 * rho


# --------------------------------------------------------------------------- #
# Descent on an L-smooth loss [SZ22, Thm 2]
# --------------------------------------------------------------------------- #
def _grad(field, Y):
    return -dense_value(field(0.0, Y))


def dense_value(F):
    return F.to_dense() if hasattr(F, "to_dense") else np.asarray(F)


@settings(max_examples=8)
@given(seed=seeds, r=st.integers(1, 4), hfrac=st.sampled_from([1.0, 0.5, 0.1]), tau=st.sampled_from([0.0, 1e-3, 1e-1]))
def test_ra_bug_euler_descends_for_h_le_1_over_L(seed, r, hfrac, tau):
    """Explicit-Euler RA-BUG on L(W) = ½‖MW − B‖², h ≤ 1/L ([SZ22] Thm 2, in this form):

        L(Y1) ≤ L(Y0) − (h/2)‖P(Y0)∇L(Y0)‖² + (‖∇L(Y1)‖ + Lϑ)ϑ + (L/2)ϑ²,   ϑ = actual tail.

    Proof: Ŷ1 = Y0 − h P̂ ∇L(Y0) with P̂ Z = ÛÛ^* Z V̂V̂^*; the augmented bases contain
    U0, ∇L V0 and V0, ∇L^* U0, so range(P̂) ⊇ T_{Y0}M_r and ‖P̂G‖ ≥ ‖P(Y0)G‖; L-smoothness
    gives L(Ŷ1) ≤ L(Y0) − h(1 − hL/2)‖P̂G‖² ≤ L(Y0) − (h/2)‖P̂G‖²; the truncation adds
    ⟨∇L(Ŷ1), Y1 − Ŷ1⟩ + (L/2)ϑ² with ‖∇L(Ŷ1)‖ ≤ ‖∇L(Y1)‖ + Lϑ. With τ = 0 (nothing
    discarded) it is the plain sufficient-decrease inequality.
    """
    P = lsq(m=16, n=12, r=r, seed=seed % 10_000, T=1.0)
    Lc = P.lipschitz
    h = hfrac / Lc
    Y = P.Y0
    for k in range(5):
        G0 = _grad(P.field, Y)
        dec = 0.5 * h * fro(tangent_project(Y, G0)) ** 2
        res = step("ra-bug", P.field, k * h, Y, h, "euler", **({"theta": 0.0} if tau == 0 else {"tau": tau}))
        th = res.truncation.tail
        if tau == 0:
            assert th == 0.0
        G1 = _grad(P.field, res.Y)
        bound = P.loss(Y) - dec + (fro(G1) + Lc * th) * th + 0.5 * Lc * th**2
        assert P.loss(res.Y) <= bound + 100 * EPS * 16 * P.loss(Y), (k, P.loss(res.Y), bound)
        Y = res.Y


def test_descent_negative_controls_step_size():
    """The step-size condition is needed. On L(W) = ½‖aW − B‖² (every direction has curvature L = a²),
    with ϑ = 0 the RA-BUG step is exactly Ŷ1 = Y0 − hP̂G and

        L(Y1) − L(Y0) = −h(1 − hL/2)‖P̂G‖²,  ‖P̂G‖ = ‖Y1 − Y0‖/h.

    h = 1/L satisfies the sufficient decrease (h/2)‖P̂G‖²; h = 1.9/L still descends but violates
    it (1 − hL/2 = 0.05 < 1/2); h = 2.1/L increases the loss at every step (GD diverges).
    """
    rng = np.random.default_rng(0)
    m, n, r, a = 14, 10, 3, 1.7
    Bm = draw(rng, (m, n), False)
    field = SylvesterField(-a * a * np.eye(m), np.zeros((n, n)), a * Bm)  # −∇L = −a(aW − B)
    loss = lambda Y: 0.5 * fro(a * dense(Y) - Bm) ** 2
    Lc = a * a
    for trial in range(3):  # one step (no truncation: ϑ = 0, rank 2r ≤ min(m, n)) from 3 random Y0
        Y0 = lowrank(rng, m, n, r, False)
        tol = 100 * EPS * max(m, n) * loss(Y0)
        for hfrac, expect in [(1.0, "sufficient"), (1.9, "weak"), (2.1, "ascent")]:
            h = hfrac / Lc
            res = step("ra-bug", field, 0.0, Y0, h, "euler", theta=0.0)
            assert res.truncation.tail == 0.0 and res.Y.rank == 2 * r
            dP2 = (fro(dense(res.Y) - dense(Y0)) / h) ** 2
            change = loss(res.Y) - loss(Y0)
            assert dP2 > 1e-3 * loss(Y0)  # a genuine step
            assert change == pytest.approx(-h * (1 - h * Lc / 2) * dP2, abs=tol)
            if expect == "sufficient":
                assert change <= -0.5 * h * dP2 + tol
            elif expect == "weak":
                assert change < 0 and change > -0.5 * h * dP2 + 1e3 * tol
            else:
                assert change > 1e3 * tol
    # and iterating h = 2.1/L (rank capped by the dimensions) diverges
    Y = lowrank(rng, m, n, r, False)
    losses = [loss(Y)]
    for k in range(30):
        Y = step("ra-bug", field, 0.0, Y, 2.1 / Lc, "euler", theta=0.0).Y
        losses.append(loss(Y))
    assert np.all(np.diff(losses) > 0) and losses[-1] > 2 * losses[0]
