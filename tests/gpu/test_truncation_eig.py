"""Truncation by the Gram eigen-decomposition (``truncate(solver="gram")``) against a float64 SVD.

The claim (``dlrt_ref.truncation.truncate``): for a single-precision core S (k1×k2) the
symmetric eigen-decomposition in float64 of the smaller Gram matrix gives the kept
singular triplets as accurately as a float32 SVD does, for every τ the experiments use
(1e-3 … 0.45) and at constant rank, and it falls back to the SVD when a kept σ_j is
below ρσ_1 (``gram_min_ratio``), where its partner vectors would lose orthogonality.

Reference: the float64 SVD of the (float32) core, taken as exact. Bounds, with
u = eps₃₂ and k = min(k1, k2) (backward-stable criteria, independent of gaps
between singular values):

* residuals of the kept triplets ‖S Q − P Σ‖_F, ‖S^* P − Q Σ‖_F ≤ C·k·u·‖S‖_2;
* orthonormality ‖P^*P − I‖_F, ‖Q^*Q − I‖_F ≤ C·k·u;
* the kept part is a best approximation: |‖S − PΣQ^*‖_F − tail₆₄| ≤ C·k·u·‖S‖_F;
* each kept σ_j within 4u·σ_j + C·k·eps₆₄·σ_1²/σ_j of the float64 SVD's;
* the same rank as the float64 SVD's rule, unless ϑ lies within C·k·u·‖σ‖ of a tail
  (a tie at float32 resolution).

C = 4. The float32 SVD of the same cores meets the same bounds (checked, so the bounds
are those of the working precision, not loose ones).
"""
import numpy as np
import pytest

from dlrt_ref.truncation import gram_min_ratio, truncate

# every τ of the experiments (fc_tau_sweep, lenet_tau, rank_evolution, rank_dynamics, dlrt_descent, finetune,
# tutorials) and the README's 0.1
TAUS = [1e-3, 0.03, 0.05, 0.07, 0.09, 0.1, 0.11, 0.13, 0.15, 0.17, 0.2, 0.3, 0.4, 0.45]
C = 4.0
U32 = float(np.finfo(np.float32).eps)
U64 = float(np.finfo(np.float64).eps)


def dlrt_core(k1, k2, r, spectrum, rng, dtype=np.float32, h=0.05):
    """A core as ra-bug truncates it: Ŝ1 = [[S0, 0], [0, 0]] + h·(a dense update), S0 = diag(σ) of rank r."""
    if spectrum == "flat":
        sig = 1.0 + 0.1 * rng.random(r)
    elif spectrum == "geometric":  # six decades
        sig = 10.0 ** (-6.0 * np.arange(r) / max(r - 1, 1))
    elif spectrum == "halfnormal":  # the library's default initial spectrum
        sig = np.sort(np.abs(rng.standard_normal(r)))[::-1] + 1e-3
    else:
        raise ValueError(spectrum)
    S = np.zeros((k1, k2))
    S[:r, :r] = np.diag(sig)
    S += h * np.max(sig) * rng.standard_normal((k1, k2)) / np.sqrt(k1 + k2)
    if np.dtype(dtype).kind == "c":
        S = S + 1j * h * np.max(sig) * rng.standard_normal((k1, k2)) / np.sqrt(k1 + k2)
    return S.astype(dtype)


def check_against_svd64(S, tr, label, s64=None):
    S64 = S.astype(np.complex128 if S.dtype.kind == "c" else np.float64)
    s64 = np.linalg.svd(S64, compute_uv=False) if s64 is None else s64
    k, r1 = s64.size, tr.rank
    norm2, normF = s64[0], np.linalg.norm(s64)
    P, Q = tr.P.astype(S64.dtype), tr.Q.astype(S64.dtype)
    sig = tr.sigma.real.astype(np.float64)
    tol = C * k * U32
    res_right = np.linalg.norm(S64 @ Q - P * sig)
    res_left = np.linalg.norm(S64.conj().T @ P - Q * sig)
    assert res_right <= tol * norm2 and res_left <= tol * norm2, (label, res_right / norm2, res_left / norm2)
    for F in (P, Q):
        assert np.linalg.norm(F.conj().T @ F - np.eye(r1)) <= tol, (label, "orthonormality")
    tail64 = float(np.linalg.norm(s64[r1:]))
    best = np.linalg.norm(S64 - (P * sig) @ Q.conj().T)
    assert abs(best - tail64) <= tol * normF, (label, best, tail64)
    assert np.all(np.abs(sig - s64[:r1]) <= 4 * U32 * s64[:r1] + C * k * U64 * norm2**2 / s64[:r1]), label
    np.testing.assert_allclose(np.sqrt(np.sum(tr.discarded**2)), tail64, rtol=0, atol=tol * normF)
    return s64


def rank_rule(s, tau=None, rank=None, r_min=1, r_max=None):
    if rank is not None:
        return min(rank, s.size), None
    th = tau * np.linalg.norm(s)
    tails = np.sqrt(np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]]))
    r1 = int(np.argmax(tails <= th))
    r1 = max(1, min(max(r1, r_min), r_max or s.size, s.size))
    return r1, float(np.min(np.abs(tails - th)))


CASES = [(k1, k2, spectrum) for (k1, k2) in [(8, 8), (40, 40), (186, 186), (304, 304), (292, 304), (74, 70)]
         for spectrum in ("flat", "halfnormal", "geometric")]


@pytest.mark.parametrize("k1,k2,spectrum", CASES)
def test_gram_truncation_matches_float64_svd_for_every_tau_and_constant_rank(k1, k2, spectrum):
    rng = np.random.default_rng(k1 * 1000 + k2 + len(spectrum))
    r = min(k1, k2) // 2
    S = dlrt_core(k1, k2, r, spectrum, rng)
    used = []
    s64 = np.linalg.svd(S.astype(np.float64), compute_uv=False)
    for rule in [dict(tau=t) for t in TAUS] + [dict(rank=r), dict(tau=0.0, r_min=r, r_max=r)]:
        label = (k1, k2, spectrum, rule)
        tr = truncate(S, solver="gram", **rule)
        check_against_svd64(S, tr, label, s64)
        r_ref, margin = rank_rule(s64, **rule)
        if tr.rank != r_ref:  # only a tie at float32 resolution may flip the decision
            assert margin is not None and margin <= C * s64.size * U32 * np.linalg.norm(s64), (label, tr.rank, r_ref)
        # the Gram path is taken exactly when every kept σ is ≥ ρσ_1; otherwise the SVD decided
        expect = "gram" if s64[tr.rank - 1] >= 1.0001 * gram_min_ratio(np.float32) * s64[0] else None
        if expect:
            assert tr.solver == "gram", label
        used.append(tr.solver)
        # the float32 SVD meets the same bounds (they are the working precision's, not loose)
        check_against_svd64(S, truncate(S, solver="svd", **rule), label + ("svd",), s64)
    if spectrum != "geometric":  # the σ of these cores stay above ρσ_1: the Gram path must have been used
        assert used.count("gram") == len(used), used


def test_gram_path_used_by_default_for_float32_only():
    rng = np.random.default_rng(1)
    S = dlrt_core(20, 20, 10, "halfnormal", rng)
    assert truncate(S, tau=0.1).solver == "gram"
    assert truncate(S.astype(np.float64), tau=0.1).solver == "svd"  # float64: the Gram matrix cannot resolve small σ
    assert truncate(S, tau=0.1, solver="svd").solver == "svd"
    assert truncate(S, tau=0.1, compat_2022=True).solver == "svd"  # the 2022 emulation keeps its SVD
    assert gram_min_ratio(np.float64) > 1 and 4e-4 < gram_min_ratio(np.float32) < 5e-4


def test_gram_falls_back_to_svd_when_a_kept_sigma_is_tiny():
    """Constant rank beyond the numerical rank: σ_r ≈ 0, its partner vector S^*p/σ would be noise."""
    rng = np.random.default_rng(2)
    A = rng.standard_normal((30, 5)) @ rng.standard_normal((5, 30))  # rank 5
    S = A.astype(np.float32)
    tr = truncate(S, rank=10, solver="gram")
    assert tr.solver == "svd" and tr.rank == 10
    check_against_svd64(S, tr, "rank-deficient")
    tr = truncate(S, rank=5, solver="gram")  # the numerical rank: the Gram path is fine
    assert tr.solver == "gram"
    check_against_svd64(S, tr, "rank 5")
    Z = np.zeros((6, 6), np.float32)  # a zero core: σ_1 = 0
    tr = truncate(Z, rank=2, solver="gram")
    assert tr.solver == "svd" and np.all(np.isfinite(tr.P)) and np.all(np.isfinite(tr.Q))


@pytest.mark.parametrize("k1,k2", [(12, 12), (9, 14), (14, 9)])
def test_gram_truncation_complex64(k1, k2):
    rng = np.random.default_rng(3)
    S = dlrt_core(k1, k2, min(k1, k2) // 2, "halfnormal", rng, dtype=np.complex64)
    for rule in (dict(tau=1e-3), dict(tau=0.1), dict(rank=min(k1, k2) // 2)):
        tr = truncate(S, solver="gram", **rule)
        assert tr.solver == "gram" and tr.P.dtype == np.complex64 and tr.Q.dtype == np.complex64
        check_against_svd64(S, tr, (k1, k2, rule))


@pytest.mark.parametrize("solver", ["gram", "svd"])
def test_non_finite_core_is_refused_by_both_solvers(solver):
    S = np.eye(4, dtype=np.float32)
    S[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        truncate(S, tau=0.1, solver=solver)
    with pytest.raises(ValueError, match="solver must be one of"):
        truncate(np.eye(3, dtype=np.float32), tau=0.1, solver="eig")


def test_cores_of_a_training_run_truncate_alike():
    """The cores ra-bug meets while training (float32, τ = 0.1 and constant rank): Gram path, float64-SVD accuracy."""
    import dlrt_ref.integrators as integrators
    from dlrt_ref.nn import mlp
    from dlrt_ref.train.dlrt import DLRT
    from dlrt_ref.train.optim import SGD

    cores = []
    orig = integrators.truncate

    def spy(S, **rule):
        cores.append((S.copy(), dict(rule)))
        return orig(S, **rule)

    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 40)).astype(np.float32)
    y = rng.integers(0, 5, 64)
    integrators.truncate = spy
    try:
        for tau in (0.1, None):
            tr = DLRT(mlp([40, 30, 20, 5], ranks=[8, 6, None], seed=0), SGD(0.2), method="ra-bug", tau=tau or 0.0)
            if tau is None:  # constant rank
                tr._rule = lambda layer, *_: dict(tau=0.0, r_min=layer.rank, r_max=layer.rank)
            for _ in range(3):
                tr.step(x, y)
    finally:
        integrators.truncate = orig
    assert len(cores) == 12
    for S, rule in cores:
        tr = truncate(S, **rule)
        assert tr.solver == "gram"
        check_against_svd64(S, tr, rule)
