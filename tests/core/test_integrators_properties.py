"""Structural properties of the low-rank integrators (one or a few steps).

Each test states a property the theory guarantees and would fail if it did not
hold: orthonormal factors, zero step, gauge invariance, transposition
equivariance of the BUG family (and KSL's lack of it), exactness for rank-r
trajectories given by increments, time reversibility of the projector splitting,
preservation of (skew-)symmetry, and dense vs lazy-operator agreement.

References: [LO14] Lubich & Oseledets, BIT 54 (2014); [CL22] Ceruti & Lubich,
BIT 62 (2022); [CKL22] Ceruti, Kusch & Lubich, BIT 62 (2022); [CKL24] Ceruti,
Kusch & Lubich, SISC 46 (2024); [KL07] Koch & Lubich, SIMAX 29 (2007).
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tests.helpers.dlra import (
    ALL_METHODS, BUG_FAMILY, EPS, GenericField, H, dense, draw, expm, fixture_settings, fro, lowrank,
    orth, orth_err, skew, step,
)
from dlrt_ref.backend import to_numpy
from dlrt_ref.lowrank import LowRankMatrix
from dlrt_ref.ode.fields import Increments, SylvesterField
from dlrt_ref.operators import OuterProductOperator

seeds = st.integers(0, 2**32 - 1)
cplxs = st.booleans()
shapes = st.tuples(st.integers(3, 16), st.integers(3, 16)).flatmap(
    lambda mn: st.tuples(st.just(mn[0]), st.just(mn[1]), st.integers(1, min(mn) // 2))
)
methods = st.sampled_from(ALL_METHODS)
hs = st.sampled_from([0.3, 0.1, 0.03, 0.01])


def _opts(method, adaptive_rule):
    """Rank rule for the adaptive methods: fixed rank r, or a relative tolerance."""
    if method not in ("ra-bug", "parallel", "midpoint-bug") or adaptive_rule == "rank":
        return {}
    return {"tau": 1e-3}


# --------------------------------------------------------------------------- #
@fixture_settings(max_examples=20)
@given(shape=shapes, cplx=cplxs, seed=seeds, method=methods, h=hs, ortho=st.sampled_from(["householder", "cholqr2"]),
       substep=st.sampled_from(["euler", "rk4"]), rule=st.sampled_from(["rank", "tau"]))
def test_factors_stay_orthonormal_after_every_step(backend, shape, cplx, seed, method, h, ortho, substep, rule):
    """U^*U = I and V^*V = I after every one of 4 steps, for every integrator (naive included)."""
    m, n, r = shape
    rng = np.random.default_rng(seed)
    F = GenericField(rng, m, n, cplx, be=backend)
    Y = lowrank(rng, m, n, r, cplx, be=backend)
    for k in range(4):
        Y = step(method, F, k * h, Y, h, substep, ortho=ortho, **_opts(method, rule)).Y
        assert Y.U.shape[0] == m and Y.V.shape[0] == n and Y.S.shape == (Y.rank, Y.rank)
        tol = 50 * EPS * max(m, n)
        assert orth_err(Y.U) <= tol, (method, k)
        assert orth_err(Y.V) <= tol, (method, k)


@fixture_settings(max_examples=15)
@given(shape=shapes, cplx=cplxs, seed=seeds, method=methods, substep=st.sampled_from(["euler", "rk4", "exact"]),
       rule=st.sampled_from(["rank", "tau"]))
def test_zero_step_returns_Y0(backend, shape, cplx, seed, method, substep, rule):
    """h = 0 leaves the matrix unchanged (every integrator and sub-step)."""
    m, n, r = shape
    rng = np.random.default_rng(seed)
    Y0 = lowrank(rng, m, n, r, cplx, be=backend)
    if substep == "exact":
        F = SylvesterField(*(backend.asarray(draw(rng, s, cplx)) for s in [(m, m), (n, n), (m, n)]))
    else:
        F = GenericField(rng, m, n, cplx, be=backend)
    Y1 = step(method, F, 0.3, Y0, 0.0, substep, **_opts(method, rule)).Y
    assert fro(Y1.to_dense() - Y0.to_dense()) <= 50 * EPS * max(m, n) * fro(Y0.to_dense())


@fixture_settings(max_examples=20)
@given(shape=shapes, cplx=cplxs, seed=seeds, method=methods, h=hs, substep=st.sampled_from(["euler", "rk4"]),
       rule=st.sampled_from(["rank", "tau"]))
def test_gauge_invariance(backend, shape, cplx, seed, method, h, substep, rule):
    """The step from (U Q, Q^* S R, V R) gives the same matrix Y1 as from (U, S, V), Q, R unitary."""
    m, n, r = shape
    rng = np.random.default_rng(seed)
    F = GenericField(rng, m, n, cplx, be=backend)
    Y0 = lowrank(rng, m, n, r, cplx, be=backend)  # σ ∈ [0.5, 2]: κ(S) ≤ 4 (naive uses S^{-1})
    Q, R = (backend.asarray(orth(rng, r, r, cplx)) for _ in range(2))
    Yg = LowRankMatrix(Y0.U @ Q, H(Q) @ Y0.S @ R, Y0.V @ R)
    opts = _opts(method, rule)
    a = step(method, F, 0.0, Y0, h, substep, **opts)
    b = step(method, F, 0.0, Yg, h, substep, **opts)
    assert a.Y.rank == b.Y.rank
    A, B = a.Y.to_dense(), b.Y.to_dense()
    assert fro(A - B) <= 200 * EPS * max(m, n) * fro(A)


# --------------------------------------------------------------------------- #
# Transposition
# --------------------------------------------------------------------------- #
@settings(max_examples=20)
@given(shape=shapes, cplx=cplxs, seed=seeds, method=st.sampled_from(BUG_FAMILY), h=hs,
       substep=st.sampled_from(["euler", "rk4"]), rule=st.sampled_from(["rank", "tau"]))
def test_bug_family_is_transposition_equivariant(shape, cplx, seed, method, h, substep, rule):
    """Stepping Y^T with G(t, X) = F(t, X^T)^T gives Y1^T (BUG treats K and L alike)."""
    m, n, r = shape
    rng = np.random.default_rng(seed)
    F = GenericField(rng, m, n, cplx)
    Y0 = lowrank(rng, m, n, r, cplx)
    opts = _opts(method, rule)
    a = step(method, F, 0.0, Y0, h, substep, **opts).Y
    b = step(method, F.transposed(), 0.0, Y0.T, h, substep, **opts).Y
    assert fro(dense(b) - dense(a).T) <= 200 * EPS * max(m, n) * fro(dense(a))


@settings(max_examples=10)
@given(shape=shapes, cplx=cplxs, seed=seeds, substep=st.sampled_from(["euler", "rk4"]))
def test_ksl_is_not_transposition_equivariant(shape, cplx, seed, substep):
    """KSL on Y^T is LSK on Y, transposed — and LSK ≠ KSL on a generic field (order matters)."""
    m, n, r = shape
    rng = np.random.default_rng(seed)
    F = GenericField(rng, m, n, cplx)
    Y0 = lowrank(rng, m, n, r, cplx)
    h = 0.1
    ksl = dense(step("ksl", F, 0.0, Y0, h, substep).Y)
    lsk = dense(step("lsk", F, 0.0, Y0, h, substep).Y)
    ksl_T = dense(step("ksl", F.transposed(), 0.0, Y0.T, h, substep).Y).T
    tol = 200 * EPS * max(m, n) * fro(ksl)
    assert fro(ksl_T - lsk) <= tol
    # the splitting error O(h²)·‖F‖ is many orders above round-off
    assert fro(ksl_T - ksl) > 1e-6 * fro(ksl)


# --------------------------------------------------------------------------- #
# Exactness for rank-r trajectories A(t) given by increments
# --------------------------------------------------------------------------- #
def _rank_r_trajectory(rng, m, n, r, cplx):
    """A(t) = e^{tW1} U0 diag(σ e^{ct}) V0^* e^{tW2}: exactly rank r for all t, ‖A‖ = O(1)."""
    W1, W2 = skew(rng, m, cplx), skew(rng, n, cplx)
    U0, V0 = orth(rng, m, r, cplx), orth(rng, n, r, cplx)
    sig = np.sort(rng.uniform(0.1, 1.0, r))[::-1]
    c = rng.uniform(-1.0, 1.0, r)
    return lambda t: expm(t * W1) @ U0 @ np.diag(sig * np.exp(c * t)) @ H(V0) @ expm(t * W2)


@settings(max_examples=15)
@given(shape=shapes, cplx=cplxs, seed=seeds)
def test_exact_for_rank_r_increments(shape, cplx, seed):
    """KSL, LSK, Strang [LO14, Thm 4.1], BUG [CL22, Thm 4.1] and RA-BUG [CKL22] reproduce A(t_n).

    Parallel BUG [CKL24] is the negative control: its core drops the block
    Ũ1^* ΔA Ṽ1, so it is not exact.
    """
    m, n, r = shape
    rng = np.random.default_rng(seed)
    A = _rank_r_trajectory(rng, m, n, r, cplx)
    field = Increments(A)
    Y0 = LowRankMatrix.from_dense(A(0.0), r)
    h, N = 0.1, 5
    scale = max(fro(A(k * h)) for k in range(N + 1))
    tol = 100 * EPS * max(m, n) * N * scale
    for method, opts in [("ksl", {}), ("lsk", {}), ("strang", {}), ("bug", {}), ("ra-bug", {"rank": r}),
                         ("ra-bug", {"tau": 1e-10})]:
        Y = Y0
        for k in range(N):
            Y = step(method, field, k * h, Y, h, **opts).Y
            err = fro(dense(Y) - A((k + 1) * h))
            assert err <= tol, (method, opts, k, err)
        assert Y.rank == r  # the adaptive one drops the round-off directions again
    Y = Y0
    for k in range(N):
        Y = step("parallel", field, k * h, Y, h, rank=r).Y
    assert fro(dense(Y) - A(N * h)) > 1e-6 * scale


# --------------------------------------------------------------------------- #
# Time reversibility of the projector splitting [LO14, Sec. 3.3]
# --------------------------------------------------------------------------- #
@settings(max_examples=15)
@given(shape=shapes, cplx=cplxs, seed=seeds, h=st.sampled_from([0.2, 0.05]), kind=st.sampled_from(["sylvester", "increments"]))
def test_projector_splitting_is_reversible(shape, cplx, seed, h, kind):
    """Strang(h) then Strang(−h) returns Y0; KSL(h) then LSK(−h) returns Y0 (sub-flows solved exactly).

    Sub-flows are solved exactly by ``exact`` on a Sylvester field (F = AY + YB + C),
    and by Euler on increments (the field is constant on a step). The
    fixed-rank BUG is not reversible (negative control).
    """
    m, n, r = shape
    rng = np.random.default_rng(seed)
    if kind == "sylvester":
        F = SylvesterField(draw(rng, (m, m), cplx) / np.sqrt(m), draw(rng, (n, n), cplx) / np.sqrt(n),
                           draw(rng, (m, n), cplx))
        Y0, sub = lowrank(rng, m, n, r, cplx), "exact"
    else:
        A = _rank_r_trajectory(rng, m, n, r, cplx)
        P = draw(rng, (m, n), cplx) * 0.3  # not rank r: A(t) + tP
        F, sub = Increments(lambda t: A(t) + t * P), "euler"
        Y0 = LowRankMatrix.from_dense(A(0.0), r)
    Y0d = dense(Y0)
    tol = 1000 * EPS * max(m, n) * fro(Y0d)
    fwd = step("strang", F, 0.0, Y0, h, sub).Y
    back = step("strang", F, h, fwd, -h, sub).Y
    assert fro(dense(back) - Y0d) <= tol
    fwd = step("ksl", F, 0.0, Y0, h, sub).Y
    back = step("lsk", F, h, fwd, -h, sub).Y
    assert fro(dense(back) - Y0d) <= tol
    fwd = step("bug", F, 0.0, Y0, h, sub).Y
    back = step("bug", F, h, fwd, -h, sub).Y
    assert fro(dense(back) - Y0d) > 1e-8 * fro(Y0d)


# --------------------------------------------------------------------------- #
# Symmetry
# --------------------------------------------------------------------------- #
class _StarField:
    """F(Y) = A Y + Y A^* + C + γ Y Y^* Y with C = ±C^*: maps (skew-)Hermitian Y to (skew-)Hermitian F."""

    def __init__(self, rng, n, cplx, sign):
        self.A = draw(rng, (n, n), cplx) / np.sqrt(n)
        C = draw(rng, (n, n), cplx)
        self.C = (C + sign * H(C)) / 2
        self.g = -0.2

    def __call__(self, t, Y):
        Yd = Y.to_dense()
        return self.A @ Yd + Yd @ H(self.A) + self.C + self.g * (Yd @ H(Yd) @ Yd)


@settings(max_examples=20)
@given(n=st.integers(4, 16), half_r=st.integers(1, 4), cplx=cplxs, seed=seeds, method=st.sampled_from(BUG_FAMILY),
       sign=st.sampled_from([1, -1]), substep=st.sampled_from(["euler", "rk4"]), h=st.sampled_from([0.1, 0.02]),
       rule=st.sampled_from(["rank", "full"]))
def test_bug_family_preserves_symmetry(n, half_r, cplx, seed, method, sign, substep, h, rule):
    """Y0 = ±Y0^* and a field with F(Y^*) = F(Y)^* keep Y1 = ±Y1^* (real: (skew-)symmetric; complex:
    (skew-)Hermitian). Fixed rank r is even, so the truncation never splits a ± pair of the skew case."""
    r = min(2 * half_r, n // 2 if n // 2 % 2 == 0 else n // 2 - 1) if sign == -1 else min(2 * half_r, n // 2)
    r = max(r, 2 if sign == -1 else 1)
    rng = np.random.default_rng(seed)
    Q = orth(rng, n, r, cplx)
    B = draw(rng, (r, r), cplx) + 2 * np.eye(r)
    Y0d = Q @ ((B + sign * H(B)) / 2) @ H(Q)  # rank r, ±Hermitian
    Y0 = LowRankMatrix.from_dense(Y0d, r)
    F = _StarField(rng, n, cplx, sign)
    opts = {"theta": 0.0} if (rule == "full" and method != "bug") else {}
    Y = Y0
    for k in range(3):
        Y = step(method, F, k * h, Y, h, substep, **opts).Y
        Yd = dense(Y)
        assert fro(Yd - sign * H(Yd)) <= 200 * EPS * n * fro(Yd), (method, k)


# --------------------------------------------------------------------------- #
# Dense value vs lazy operator
# --------------------------------------------------------------------------- #
@fixture_settings(max_examples=15)
@given(shape=shapes, cplx=cplxs, seed=seeds, method=methods, batch=st.integers(1, 12),
       substep=st.sampled_from(["euler", "rk4"]), rule=st.sampled_from(["rank", "tau"]))
def test_dense_and_outer_product_fields_agree(backend, shape, cplx, seed, method, batch, substep, rule):
    """F = c·D(Y)^T X returned dense or as OuterProductOperator(D, X, c) gives the same steps."""
    m, n, r = shape
    rng = np.random.default_rng(seed)
    X = backend.asarray(draw(rng, (batch, n), cplx))
    T0 = backend.asarray(draw(rng, (batch, m), cplx))
    c = (-0.7 + 0.2j) if cplx else -0.7

    def D(Y):  # (B, m): residual of a linear layer Z = X W^T, W = Y
        return X @ Y.to_dense().T - T0

    lazy = lambda t, Y: OuterProductOperator(D(Y), X, c)
    full = lambda t, Y: c * (D(Y).T @ X)
    Y0 = lowrank(rng, m, n, r, cplx, be=backend)
    opts = _opts(method, rule)
    Ya, Yb = Y0, Y0
    for k in range(3):
        Ya = step(method, lazy, 0.05 * k, Ya, 0.05, substep, **opts).Y
        Yb = step(method, full, 0.05 * k, Yb, 0.05, substep, **opts).Y
        assert Ya.rank == Yb.rank
        A, B = Ya.to_dense(), Yb.to_dense()
        assert fro(A - B) <= 200 * EPS * max(m, n, batch) * fro(B)
