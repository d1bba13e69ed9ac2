"""Property tests of dlrt_ref.lowrank (tangent projector), dlrt_ref.orthonormal and dlrt_ref.truncation.

Notation as in Koch & Lubich (2007) and Ceruti, Kusch & Lubich (2022):
Y = U S V^*, P(Y) Z = UU^*Z − UU^*ZVV^* + ZVV^*, and the rank-adaptive
truncation to the smallest rank whose discarded ℓ2 tail is ≤ ϑ.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import dlrt_ref.orthonormal as orthonormal_module
from dlrt_ref.backend import to_numpy
from dlrt_ref.integrators import augment, truncate_core
from dlrt_ref.lowrank import LowRankMatrix, tangent_project
from dlrt_ref.orthonormal import orthonormalise, orthonormalise_after
from dlrt_ref.truncation import truncate
from tests.helpers.dlra import EPS, H, draw, fixture_settings, fro, lowrank, orth, orth_err

shapes = st.tuples(st.integers(2, 20), st.integers(2, 20)).flatmap(
    lambda mn: st.tuples(st.just(mn[0]), st.just(mn[1]), st.integers(1, min(mn)))
)
seeds = st.integers(0, 2**32 - 1)
cplxs = st.booleans()


def inner(A, B):
    """Frobenius inner product ⟨A, B⟩ = tr(A^* B)."""
    return complex(np.vdot(to_numpy(A), to_numpy(B)))


# --------------------------------------------------------------------------- #
# Tangent projector
# --------------------------------------------------------------------------- #
@fixture_settings()
@given(shape=shapes, cplx=cplxs, seed=seeds)
def test_tangent_projector_algebra(backend, shape, cplx, seed):
    """P² = P, P self-adjoint in ⟨·,·⟩_F, P(Y)Y = Y, P Z = Z on tangent Z, (I − P)Z ⟂ T_Y M_r."""
    m, n, r = shape
    rng = np.random.default_rng(seed)
    Y = lowrank(rng, m, n, r, cplx, be=backend)
    Z1, Z2 = (backend.asarray(draw(rng, (m, n), cplx)) for _ in range(2))
    # a generic tangent vector δU S V^* + U δS V^* + U S δV^* = U C + D V^*
    T = Y.U @ backend.asarray(draw(rng, (r, n), cplx)) + backend.asarray(draw(rng, (m, r), cplx)) @ H(Y.V)
    P = lambda Z: tangent_project(Y, Z)
    tol = 20 * EPS * max(m, n)
    nz = fro(Z1)
    assert fro(P(P(Z1)) - P(Z1)) <= tol * nz
    assert abs(inner(P(Z1), Z2) - inner(Z1, P(Z2))) <= tol * nz * fro(Z2)
    Yd = Y.to_dense()
    assert fro(P(Yd) - Yd) <= tol * fro(Yd)
    assert fro(P(T) - T) <= tol * fro(T)
    N = Z1 - P(Z1)
    assert abs(inner(N, T)) <= tol * fro(N) * fro(T) + tol * nz * fro(T)
    # and the normal part is (I − UU^*) Z (I − VV^*)
    U, V = Y.U, Y.V
    assert fro(N - (Z1 - U @ (H(U) @ Z1)) @ (backend.xp.eye(n) - V @ H(V))) <= tol * nz
    # P does not depend on the gauge (U Q, Q^* S R, V R)
    Q, R = (backend.asarray(orth(rng, r, r, cplx)) for _ in range(2))
    Yg = LowRankMatrix(Y.U @ Q, H(Q) @ Y.S @ R, Y.V @ R)
    assert fro(tangent_project(Yg, Z1) - P(Z1)) <= tol * nz


@given(m=st.integers(2, 25), k=st.integers(1, 25), cplx=cplxs, seed=seeds,
       method=st.sampled_from(["householder", "cholqr2"]), cond=st.sampled_from([0, 4, 9, 14]))
def test_orthonormalise_spans_and_is_orthonormal(m, k, cplx, seed, method, cond):
    """Q^*Q = I and span(A) ⊆ span(Q), also for ill-conditioned A (κ up to 1e14: CholeskyQR2 falls back)."""
    rng = np.random.default_rng(seed)
    k = min(k, m)
    A = orth(rng, m, k, cplx) @ np.diag(np.logspace(0, -cond, k)) @ H(orth(rng, k, k, cplx))
    Q = orthonormalise(A, method)
    assert Q.shape == (m, k)
    assert fro(H(Q) @ Q - np.eye(k)) <= 20 * EPS * m
    assert fro(A - Q @ (H(Q) @ A)) <= 20 * EPS * m * fro(A)


# --------------------------------------------------------------------------- #
# Truncation contract
# --------------------------------------------------------------------------- #
@st.composite
def cores(draw_, max_k=16):
    k = draw_(st.integers(1, max_k))
    cplx = draw_(cplxs)
    seed = draw_(seeds)
    decay = draw_(st.sampled_from(["geometric", "flat", "cliff", "random"]))
    rng = np.random.default_rng(seed)
    if decay == "geometric":
        s = 10.0 ** -np.arange(k) * rng.uniform(0.5, 1.0)
    elif decay == "flat":
        s = np.ones(k)
    elif decay == "cliff":
        j = rng.integers(0, k + 1)
        s = np.concatenate([np.ones(j), 1e-9 * rng.uniform(0.1, 1.0, k - j)])
    else:
        s = np.sort(rng.exponential(1.0, k))[::-1]
    S = orth(rng, k, k, cplx) @ np.diag(s) @ H(orth(rng, k, k, cplx))
    return S, np.sort(s)[::-1], cplx, rng


def _tails(s):
    return np.sqrt(np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]]))  # tails[j] = ‖s[j:]‖


@given(core=cores(), frac=st.floats(0.0, 1.2), rmin=st.integers(1, 6), rmax=st.one_of(st.none(), st.integers(1, 16)))
def test_truncation_contract(core, frac, rmin, rmax):
    """Tail ≤ ϑ at the minimal rank, clipped to [r_min, r_max]; P Σ Q^* is the SVD truncation."""
    S, s, cplx, _ = core
    k = s.size
    theta = frac * float(np.linalg.norm(s))
    tr = truncate(S, theta=theta, r_min=rmin, r_max=rmax)
    r1 = tr.rank
    tails = _tails(s)
    rtol = 50 * EPS * k * max(s[0], 1e-300)
    # bounds
    lo = min(max(rmin, 1), k)
    assert r1 >= lo or (rmax is not None and r1 == min(rmax, k))
    if rmax is not None:
        assert r1 <= max(rmax, 1)
    assert 1 <= r1 <= k
    # reported discarded values are the σ_j, j > r1, and tail = their ℓ2 norm
    assert tr.discarded.shape == (k - r1,)
    assert np.allclose(tr.discarded, s[r1:], rtol=0, atol=rtol)
    assert abs(tr.tail - tails[r1]) <= rtol
    assert tr.theta == pytest.approx(theta)
    free = rmax is None or r1 < rmax
    if free:  # r_max did not bind: the tolerance is met ...
        assert tr.tail <= theta + rtol
    if r1 > lo:  # ... and the rank is minimal: dropping one more exceeds ϑ
        assert tails[r1 - 1] > theta - rtol
    # P, Q orthonormal; ‖S − P Σ Q^*‖_F = tail (Eckart–Young)
    P, Q = to_numpy(tr.P), to_numpy(tr.Q)
    assert fro(H(P) @ P - np.eye(r1)) <= 20 * EPS * k
    assert fro(H(Q) @ Q - np.eye(r1)) <= 20 * EPS * k
    approx = P @ np.diag(to_numpy(tr.sigma)) @ H(Q)
    assert abs(fro(S - approx) - tr.tail) <= rtol * 10 + 1e-8 * tr.tail


@given(core=cores(), tau=st.floats(0.0, 1.0, exclude_max=True))  # τ ≥ 1 is refused (ValueError)
def test_truncation_relative_is_absolute_times_norm(core, tau):
    """Relative ϑ = τ‖σ‖₂ gives exactly the absolute truncation at that ϑ."""
    S, s, _, _ = core
    rel = truncate(S, tau=tau)
    ab = truncate(S, theta=tau * float(np.linalg.norm(s)))
    assert rel.theta == pytest.approx(tau * np.linalg.norm(s), rel=1e-12, abs=0)
    assert rel.rank == ab.rank
    assert rel.tail <= rel.theta * (1 + 1e-12) + 50 * EPS * s[0]


@given(core=cores(), r=st.integers(1, 20))
def test_truncation_fixed_rank(core, r):
    S, s, _, _ = core
    tr = truncate(S, rank=r)
    assert tr.rank == min(r, s.size)
    assert abs(tr.tail - np.linalg.norm(s[tr.rank:])) <= 50 * EPS * s.size * s[0]


@given(m=st.integers(4, 20), n=st.integers(4, 20), cplx=cplxs, seed=seeds, frac=st.floats(0.0, 0.9))
def test_truncate_core_error_equals_discarded(m, n, cplx, seed, frac):
    """‖Y1 − Ŷ1‖_F² = Σ discarded σ², for Ŷ1 = Û Ŝ V̂^* with orthonormal Û, V̂ ([CKL22] Alg. 1 step 3)."""
    rng = np.random.default_rng(seed)
    k = min(m, n, 8)
    Uh, Vh = orth(rng, m, k, cplx), orth(rng, n, k, cplx)
    S = draw(rng, (k, k), cplx) * (2.0 ** -np.arange(k))[None, :]
    s = np.linalg.svd(S, compute_uv=False)
    Y1, tr = truncate_core(Uh, S, Vh, theta=frac * np.linalg.norm(s))
    Yhat = Uh @ S @ H(Vh)
    d2 = float(np.sum(tr.discarded**2))
    assert abs(fro(Y1.to_dense() - Yhat) ** 2 - d2) <= 100 * EPS * max(m, n) * fro(Yhat) ** 2
    assert fro(H(Y1.U) @ Y1.U - np.eye(tr.rank)) <= 20 * EPS * max(m, n)
    assert fro(H(Y1.V) @ Y1.V - np.eye(tr.rank)) <= 20 * EPS * max(m, n)
    assert abs(fro(Y1.to_dense()) ** 2 + d2 - fro(Yhat) ** 2) <= 100 * EPS * max(m, n) * fro(Yhat) ** 2


def test_compat_2022_differs_from_correct_truncation():
    """The 2022 reference codes' truncation (compat_2022) breaks the contract in two documented ways.

    1. Its tail leaves out the last singular value: σ = (1, .1, .01, .01), ϑ = .012 —
       the correct rank is 3 (tail .01 ≤ ϑ); compat picks 2, whose true tail .0141 > ϑ.
    2. It builds the right factor from Vh[:, :r] instead of Vh^*[:, :r], so for a
       generic (non-normal) core P Σ Q^* is not the SVD truncation of S.
    """
    rng = np.random.default_rng(7)
    s = np.array([1.0, 0.1, 0.01, 0.01])
    S = orth(rng, 4, 4, False) @ np.diag(s) @ orth(rng, 4, 4, False).T
    good, bad = truncate(S, theta=0.012), truncate(S, theta=0.012, compat_2022=True)
    assert good.rank == 3 and good.tail <= 0.012
    assert bad.rank == 2 and bad.tail > 0.012
    # 2. the untransposed Vh: same rank, different (wrong) matrix
    for cplx in (False, True):
        S = draw(rng, (6, 6), cplx)
        good, bad = truncate(S, rank=3), truncate(S, rank=3, compat_2022=True)
        err_good = fro(S - to_numpy(good.P) @ np.diag(to_numpy(good.sigma)) @ H(to_numpy(good.Q)))
        err_bad = fro(S - to_numpy(bad.P) @ np.diag(to_numpy(bad.sigma)) @ H(to_numpy(bad.Q)))
        assert err_good == pytest.approx(good.tail, rel=1e-10)
        assert err_bad > 1.5 * err_good + 0.1 * fro(S)


def test_truncation_rejects_bad_arguments():
    S = np.eye(3)
    with pytest.raises(ValueError):
        truncate(S)
    with pytest.raises(ValueError):
        truncate(S, theta=0.1, tau=0.1)
    with pytest.raises(ValueError):
        truncate(S, theta=-1.0)
    with pytest.raises(ValueError):
        truncate(S, rank=0)


# --------------------------------------------------------------------------- #
# Augmented basis ([CKL22] Alg. 1, step 1)
# --------------------------------------------------------------------------- #
@fixture_settings()
@given(shape=shapes, cplx=cplxs, seed=seeds, method=st.sampled_from(["householder", "cholqr2"]))
def test_augmented_basis_contains_old_basis_and_represents_Y0(backend, shape, cplx, seed, method):
    """span(Û) ⊇ span(U0) ∪ span(K1), Û^*Û = I, Û M̂ = U0, and Û (M̂ S0 N̂^*) V̂^* = Y0 exactly."""
    m, n, r = shape
    rng = np.random.default_rng(seed)
    Y0 = lowrank(rng, m, n, r, cplx, be=backend)
    K1 = Y0.U @ Y0.S + 0.1 * backend.asarray(draw(rng, (m, r), cplx))
    L1 = Y0.V @ H(Y0.S) + 0.1 * backend.asarray(draw(rng, (n, r), cplx))
    Uh, M = augment(K1, Y0.U, method)
    Vh, N = augment(L1, Y0.V, method)
    assert Uh.shape == (m, min(m, 2 * r)) and Vh.shape == (n, min(n, 2 * r))
    tol = 30 * EPS * max(m, n)
    assert fro(H(Uh) @ Uh - backend.xp.eye(Uh.shape[1])) <= tol
    assert fro(H(Vh) @ Vh - backend.xp.eye(Vh.shape[1])) <= tol
    assert fro(Y0.U - Uh @ (H(Uh) @ Y0.U)) <= tol * np.sqrt(r)
    assert fro(Y0.V - Vh @ (H(Vh) @ Y0.V)) <= tol * np.sqrt(r)
    assert fro(Uh @ M - Y0.U) <= tol * np.sqrt(r)
    assert fro(K1 - Uh @ (H(Uh) @ K1)) <= tol * fro(K1)
    Y0d = Y0.to_dense()
    S_tilde0 = M @ Y0.S @ H(N)
    assert fro(Uh @ S_tilde0 @ H(Vh) - Y0d) <= tol * fro(Y0d)


# --------------------------------------------------------------------------- #
# Bad input to the Python API: one clear line, never a deep NumPy error
# --------------------------------------------------------------------------- #
def test_api_rejects_bad_factors_and_cores_with_one_line():
    I2, E = np.eye(2), np.eye(3, 2)
    Y = LowRankMatrix(E, I2, E)
    cases = [
        (lambda: LowRankMatrix([[1.0], [0.0]], np.eye(1), np.eye(2, 1)), TypeError, "U must be a NumPy or CuPy array, got list"),
        (lambda: LowRankMatrix(E, I2.tolist(), E), TypeError, "S must be a NumPy or CuPy array"),
        (lambda: LowRankMatrix(E.astype(np.float16), I2, E), TypeError, "U has dtype float16"),
        (lambda: LowRankMatrix(E, I2, E.astype(int)), TypeError, "V has dtype int64"),
        (lambda: LowRankMatrix(E, I2.astype(bool), E), TypeError, "S has dtype bool"),
        (lambda: truncate(Y, tau=0.1), TypeError, "not a LowRankMatrix; pass Y.S"),
        (lambda: truncate([[1.0]], tau=0.1), TypeError, "got list"),
        (lambda: truncate(I2.astype(np.float16), tau=0.1), TypeError, "dtype float16"),
        (lambda: truncate(np.array([[1.0, 0], [0, np.nan]]), tau=0.1), ValueError, "NaN or infinite"),
        (lambda: truncate(np.array([[np.inf, 0], [0, 1.0]]), rank=1), ValueError, "NaN or infinite"),
        (lambda: LowRankMatrix(E, np.array([[np.nan, 0], [0, 1.0]]), E).singular_values(), ValueError, "NaN or infinite"),
        (lambda: LowRankMatrix.from_dense(np.full((3, 3), np.nan), 1), ValueError, "NaN or infinite"),
    ]
    for call, exc, text in cases:
        with pytest.raises(exc) as info:
            call()
        assert text in str(info.value) and "\n" not in str(info.value), str(info.value)
    # the supported dtypes still work, complex included
    for dt in (np.float32, np.float64, np.complex64, np.complex128):
        assert truncate(LowRankMatrix(E.astype(dt), I2.astype(dt), E.astype(dt)).S, rank=1).rank == 1


def test_compat_2022_on_a_rectangular_core_pads_with_zeros():
    """A k1×k2 core (rank-revealing augmentation dropped a direction) is truncated as the zero-padded square core."""
    rng = np.random.default_rng(2)
    S = rng.standard_normal((6, 5))
    Sq = np.concatenate([S, np.zeros((6, 1))], axis=1)
    a, b = truncate(S, tau=0.3, compat_2022=True), truncate(Sq, tau=0.3, compat_2022=True)
    assert a.rank == b.rank and a.P.shape == (6, a.rank) and a.Q.shape == (5, a.rank)
    np.testing.assert_allclose(a.Q, b.Q[:5], atol=1e-14)
    np.testing.assert_allclose(a.P, b.P, atol=1e-14)
    np.testing.assert_allclose(a.sigma, b.sigma, atol=1e-14)


# --------------------------------------------------------------------------- #
# CholeskyQR2 and orthonormalise_after on DLRT's sizes (was test_lowrank_ortho.py)
#
# The property tests above check, for small random shapes, that both methods give
# QᴴQ = I and span(A) ⊆ span(Q) up to κ = 1e14. These add the error bound
# ‖QᵀQ − I‖₂ ≤ c·eps·k on tall-skinny matrices of the sizes DLRT uses (float32 and
# float64), that CholeskyQR2 itself — not its fallback — handles well-conditioned
# input, that κ = 1e12 and rank-deficient input *do* fall back and still give
# orthonormal Q, and that the block augmentation used by ra-bug/parallel with
# "cholqr2" spans the same space as Householder QR of [K1 | U0], with Û = [U0 | Ũ]
# and M̂ = [I; 0].
# --------------------------------------------------------------------------- #


def _matrix(rng, m, k, cond, dtype):
    """m×k with singular values logspace(0, -log10 cond) and random singular vectors."""
    P = np.linalg.qr(rng.standard_normal((m, k)))[0]
    Q = np.linalg.qr(rng.standard_normal((k, k)))[0]
    return (P * np.logspace(0, -np.log10(cond), k)) @ Q.T


@pytest.fixture
def householder_calls(monkeypatch):
    """Count calls of the Householder QR (the fallback of CholeskyQR2)."""
    calls = []
    real = orthonormal_module._householder

    def counted(A):
        calls.append(A.shape)
        return real(A)

    monkeypatch.setattr(orthonormal_module, "_householder", counted)
    monkeypatch.setitem(orthonormal_module.ORTHONORMALISERS, "householder", counted)
    return calls


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m,k,cond", [(2000, 40, 1.0), (2000, 80, 1e2), (5120, 16, 1e3), (300, 150, 10.0)])
def test_cholqr2_orthogonality_error_is_eps_k(householder_calls, dtype, m, k, cond):
    """Well-conditioned A (κ ≪ eps^-1/2): no fallback, ‖QᵀQ − I‖₂ ≤ c·eps·k and A = Q (QᵀA) to c·eps·κ."""
    if dtype == np.float32 and cond > 1e2:
        cond = 1e2  # CholeskyQR2's domain in float32 is κ ≲ eps^-1/2 ≈ 3e3
    rng = np.random.default_rng(m + k)
    A = _matrix(rng, m, k, cond, np.float64).astype(dtype)
    Q = orthonormalise(A, "cholqr2")
    assert householder_calls == []  # CholeskyQR2 itself did it
    assert Q.shape == (m, k) and Q.dtype == A.dtype
    eps = np.finfo(dtype).eps
    assert orth_err(Q, ord=2) <= 4 * eps * k
    A64 = A.astype(np.float64)
    Q64 = Q.astype(np.float64)
    assert np.linalg.norm(A64 - Q64 @ (Q64.T @ A64)) <= 20 * eps * np.sqrt(k) * cond * np.linalg.norm(A64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ill_conditioned_input_falls_back_and_stays_orthonormal(householder_calls, dtype):
    """κ = 1e12: the Gram matrix is numerically singular, CholeskyQR2 falls back to Householder."""
    rng = np.random.default_rng(7)
    m, k = 1000, 30
    A = _matrix(rng, m, k, 1e12, np.float64).astype(dtype)
    Q = orthonormalise(A, "cholqr2")
    assert householder_calls == [(m, k)]
    eps = np.finfo(dtype).eps
    assert orth_err(Q, ord=2) <= 20 * eps * k
    A64, Q64 = A.astype(np.float64), Q.astype(np.float64)
    assert np.linalg.norm(A64 - Q64 @ (Q64.T @ A64)) <= 50 * eps * np.sqrt(m) * np.linalg.norm(A64)


@pytest.mark.parametrize("kind", ["repeated column", "zero column", "rank 3 of 8"])
def test_rank_deficient_input(householder_calls, kind):
    """Exactly rank-deficient A: orthonormal Q of full width whose span contains span(A)."""
    rng = np.random.default_rng(3)
    m, k = 200, 8
    A = rng.standard_normal((m, k))
    if kind == "repeated column":
        A[:, 5] = A[:, 2]
    elif kind == "zero column":
        A[:, 0] = 0.0
    else:
        A = rng.standard_normal((m, 3)) @ rng.standard_normal((3, k))
    Q = orthonormalise(A, "cholqr2")
    assert len(householder_calls) == 1  # fell back
    assert Q.shape == (m, k)
    assert orth_err(Q, ord=2) <= 20 * np.finfo(float).eps * k
    assert np.linalg.norm(A - Q @ (Q.T @ A)) <= 1e-12 * np.linalg.norm(A)


def test_wide_input_uses_householder(householder_calls):
    A = np.random.default_rng(0).standard_normal((5, 9))
    Q = orthonormalise(A, "cholqr2")
    assert Q.shape == (5, 5) and householder_calls == [(5, 9)]
    assert orth_err(Q, ord=2) <= 1e-14


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_augmentation_spans_what_householder_spans(householder_calls, dtype):
    """augment(K1, U0, "cholqr2") spans span([K1 | U0]) as Householder QR does, although κ([K1|U0]) ~ 1/h."""
    rng = np.random.default_rng(11)
    m, r, h = 1500, 20, 1e-3
    U0 = np.linalg.qr(rng.standard_normal((m, r)))[0]
    S0 = np.diag(np.linspace(3.0, 0.5, r))
    K1 = (U0 @ S0 + h * rng.standard_normal((m, r))).astype(dtype)  # a K-step: U0 S0 + O(h)
    U0 = U0.astype(dtype)
    Uh_chol, M_chol = augment(K1, U0, "cholqr2")
    assert householder_calls == []  # no fallback, although CholeskyQR2 of [K1 | U0] itself would fall back
    Uh_hh, _ = augment(K1, U0, "householder")
    eps = np.finfo(dtype).eps
    assert orth_err(Uh_chol, ord=2) <= 20 * eps * 2 * r
    np.testing.assert_array_equal(Uh_chol[:, :r], U0)  # Û = [U0 | Ũ] ...
    np.testing.assert_array_equal(M_chol, np.vstack([np.eye(r), np.zeros((r, r))]))  # ... so M̂ = [I; 0]
    # same span: the orthogonal projectors agree; the new block is the normalised O(h) residual,
    # whose error is eps/h-amplified in both methods
    Pc, Ph = (Q.astype(float) @ Q.astype(float).T for Q in (Uh_chol, Uh_hh))
    tol = 1e-9 if dtype == np.float64 else 2e-2
    assert np.linalg.norm(Pc - Ph, 2) <= tol
    assert np.linalg.norm(Uh_chol.astype(float) @ M_chol - U0) <= 50 * eps * np.sqrt(r)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["inside span(Q)", "half inside span(Q)", "generic"])
@pytest.mark.parametrize("method", ["cholqr2", "householder"])
def test_orthonormalise_after_is_orthogonal_to_Q(dtype, kind, method):
    """Columns orthonormal and ⟂ Q; span(A) ⊆ span([Q | Q2]) — also when A lies (partly) in span(Q).

    Rank-revealing: inside span(Q), W = (I − QQᵀ)A is round-off and no column is
    returned; half inside, only the k/2 independent directions are.
    """
    rng = np.random.default_rng(5)
    m, q, k = 400, 12, 8
    Q = np.linalg.qr(rng.standard_normal((m, q)))[0]
    if kind == "inside span(Q)":
        A, k_new = Q @ rng.standard_normal((q, k)), 0
    elif kind == "half inside span(Q)":
        A, k_new = np.concatenate([Q[:, : k // 2] * 2.0, rng.standard_normal((m, k - k // 2))], axis=1), k - k // 2
    else:
        A, k_new = rng.standard_normal((m, k)), k
    Q, A = Q.astype(dtype), A.astype(dtype)
    Q2 = orthonormalise_after(Q, A, method)
    assert Q2.shape == (m, k_new) and Q2.dtype == dtype
    eps = np.finfo(dtype).eps
    Q64, Q264, A64 = Q.astype(float), Q2.astype(float), A.astype(float)
    assert np.linalg.norm(Q64.T @ Q264) <= 50 * eps * np.sqrt(k)
    assert orth_err(Q2, ord=2) <= 50 * eps * k
    B = np.concatenate([Q64, Q264], axis=1)
    assert np.linalg.norm(A64 - B @ (B.T @ A64)) <= 100 * eps * np.linalg.norm(A64)
    if kind == "generic":  # the trailing Q factor of [Q | A], up to column signs
        Q2h = orthonormalise_after(Q, A, "householder").astype(float)
        assert np.allclose(np.abs(Q2h.T @ Q264), np.eye(k), atol=100 * eps * k)
    with pytest.raises(ValueError):
        orthonormalise_after(Q, A, "gram-schmidt")
