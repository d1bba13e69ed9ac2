"""Rank-revealing augmentation (orthonormal.orthonormalise_after, integrators.augment) on every input.

Required by the design: Û = [U0 | Ũ] keeps range(U0), is orthonormal to working
precision whatever K1 is, and appends only the numerically independent part of
(I − U0U0^*)K1 (k ≤ r new columns), so that ranks do not depend on round-off.
The rank-deficient inputs below made the 2022-style augmentation (CholeskyQR2 of
the projected block, guarded by the diagonal of its Cholesky factor) return
columns that overlap U0 by O(1), and the Householder form append arbitrary
completion columns.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tests.helpers.dlra import EPS, H, fro, lowrank, orth
from dlrt_ref.integrators import augment, parallel_bug_step, ra_bug_step
from dlrt_ref.lowrank import LowRankMatrix
from dlrt_ref.operators import OuterProductOperator
from dlrt_ref.orthonormal import augment_threshold, orthonormalise_after

ORTHOS = ("householder", "cholqr2")


def _orth_err(B) -> float:
    B = np.asarray(B, dtype=np.complex128 if np.iscomplexobj(B) else np.float64)
    return float(np.linalg.norm(H(B) @ B - np.eye(B.shape[1])))


def _deficient_block(rng, m, q, k, d, scale, cplx):
    """A = Q B + C with Q (m×q) orthonormal, C ⟂ Q of exact rank d with singular values in [0.5, 1]·scale."""
    Q = orth(rng, m, q, cplx)
    X = orth(rng, m, q + d, cplx)[:, q:] if d else np.zeros((m, 0))
    X = X - Q @ (H(Q) @ X)  # ⟂ Q
    X = np.linalg.qr(X)[0] if d else X
    Y = orth(rng, k, d, cplx) if d else np.zeros((k, 0))
    C = X @ np.diag(rng.uniform(0.5, 1.0, d) * scale) @ H(Y) if d else 0.0
    B = rng.standard_normal((q, k)) * 3 + (1j * rng.standard_normal((q, k)) if cplx else 0)
    return Q, Q @ B + C


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(4, 60), r=st.integers(1, 8), deficit=st.sampled_from(["1", "2", "r-1", "r", "0"]),
       dtype=st.sampled_from([np.float64, np.float32]), ortho=st.sampled_from(ORTHOS), cplx=st.booleans(),
       log_scale=st.floats(-5, 0))
def test_augmentation_is_orthonormal_and_rank_revealing(seed, m, r, deficit, dtype, ortho, cplx, log_scale):
    """‖[Q|Ũ]^*[Q|Ũ] − I‖ ≤ 10·eps·(q+k), A ∈ span([Q|Ũ]) to eps, and k = the exact rank of (I − QQ^*)A.

    Exact deficits 1, 2, r − 1 and r (A inside span(Q)) and none; m down to < 2r (2r > m: at most m − r
    new directions); float32 and float64, real and complex, both orthonormalisations.
    """
    rng = np.random.default_rng(seed)
    q = min(r, m - 1)
    k = r
    d_full = min(k, m - q)  # rank of a generic new block
    d = {"0": d_full, "1": d_full - 1, "2": d_full - 2, "r-1": 1, "r": 0}[deficit]
    d = max(0, min(d, d_full))
    if dtype == np.float32:
        log_scale = max(log_scale, -2.0)  # float32 directions below ~1e-5‖A‖ are at its round-off level
    Q, A = _deficient_block(rng, m, q, k, d, 10.0**log_scale, cplx)
    cdt = np.complex64 if dtype == np.float32 else np.complex128
    Q, A = Q.astype(cdt if cplx else dtype), A.astype(cdt if cplx else dtype)
    U_t = orthonormalise_after(Q, A, ortho)
    eps = float(np.finfo(dtype).eps)
    assert U_t.shape == (m, d), (U_t.shape, d)
    B = np.concatenate([Q, U_t], axis=1).astype(np.complex128)
    assert _orth_err(B) <= 10 * eps * (q + d + 1)
    A64 = A.astype(np.complex128)
    assert fro(A64 - B @ (H(B) @ A64)) <= 50 * eps * np.sqrt(q + k) * fro(A64)
    # the integrators' form: Û = [U0 | Ũ], M̂ = [I; 0] represents U0 exactly
    U_hat, M_hat = augment(A, Q, ortho)
    assert U_hat.shape == (m, q + d) and np.array_equal(U_hat[:, :q], Q) and np.array_equal(U_hat @ M_hat, Q)


@pytest.mark.parametrize("ortho", ORTHOS)
def test_threshold_is_documented_and_used(ortho):
    """A direction just above δ is kept, one just below is dropped (δ = 10·√(q+k)·eps·‖A‖_F)."""
    rng = np.random.default_rng(0)
    m, q, k = 50, 4, 4
    Q = orth(rng, m, q, False)
    A = Q @ rng.standard_normal((q, k))
    e = orth(rng, m, q + 1, False)[:, q]
    e = e - Q @ (Q.T @ e)
    e /= np.linalg.norm(e)
    delta = augment_threshold(Q, A)
    assert delta == pytest.approx(10 * np.sqrt(q + k) * EPS * np.linalg.norm(A))
    for factor, width in ((3.0, 1), (0.3, 0)):
        A2 = A.copy()
        A2[:, 0] += factor * delta * e
        assert orthonormalise_after(Q, A2, ortho).shape[1] == width


@pytest.mark.parametrize("ortho", ORTHOS)
@pytest.mark.parametrize("batch", [1, 2, 4])
def test_ra_bug_with_a_batch_smaller_than_r(ortho, batch):
    """A layer-gradient field F = −Δ^T X of rank B < r: Û, V̂ get exactly B new columns and stay orthonormal."""
    rng = np.random.default_rng(batch)
    m, n, r = 40, 30, 6
    Y0 = lowrank(rng, m, n, r, False)
    X, D = rng.standard_normal((batch, n)), rng.standard_normal((batch, m))
    field = lambda t, Y: OuterProductOperator(D, X, -1.0)  # F = −D^T X (m, n), rank B
    res = ra_bug_step(field, 0.0, Y0, 0.1, ortho=ortho, theta=0.0)
    assert res.Y.rank == r + batch  # ϑ = 0 keeps every augmented direction: there are only B of them
    assert _orth_err(res.Y.U) <= 20 * EPS * (r + batch) and _orth_err(res.Y.V) <= 20 * EPS * (r + batch)
    Y1 = Y0.to_dense() + 0.1 * (-D.T @ X)  # rank r + B: the Euler step is exact in the augmented bases
    assert fro(res.Y.to_dense() - Y1) <= 100 * EPS * fro(Y1)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), method=st.sampled_from(["ra-bug", "parallel"]), ortho=st.sampled_from(ORTHOS),
       deficit=st.integers(1, 3))
def test_ranks_do_not_depend_on_round_off(seed, method, ortho, deficit):
    """A constant field G whose K-directions G V0 are rank-deficient (rank r − d) while its L-directions are not.

    Perturbing S0 by 1e-15 leaves the rank (2r − d: r + (r − d) new K- and r new L-directions, ϑ = 1e-12)
    and Y1 unchanged to 1e-12. Appending completion columns for the d missing K-directions instead gives
    them Galerkin content h·u^*G Ṽ = O(h) that depends on round-off, and rank 2r.
    """
    rng = np.random.default_rng(seed)
    m, n, r, h = 24, 20, 5, 0.1
    Y0 = lowrank(rng, m, n, r, False)
    Ux = orth(rng, m, m, False)[:, : r - deficit]
    Ux = np.linalg.qr(Ux - Y0.U @ (Y0.U.T @ Ux))[0]  # ⟂ U0
    G = rng.standard_normal((m, n)) @ (np.eye(n) - Y0.V @ Y0.V.T) + Ux @ rng.standard_normal((r - deficit, r)) @ Y0.V.T
    field = lambda t, Y: G
    Y0p = LowRankMatrix(Y0.U, Y0.S + 1e-15 * rng.standard_normal((r, r)), Y0.V)
    step = ra_bug_step if method == "ra-bug" else parallel_bug_step
    a = step(field, 0.0, Y0, h, ortho=ortho, theta=1e-12)
    b = step(field, 0.0, Y0p, h, ortho=ortho, theta=1e-12)
    assert a.Y.rank == b.Y.rank == 2 * r - deficit
    assert fro(a.Y.to_dense() - b.Y.to_dense()) <= 1e-12 * fro(a.Y.to_dense())


@pytest.mark.parametrize("ortho", ORTHOS)
def test_parallel_bug_zero_block_with_unequal_and_empty_augmentations(ortho):
    """Parallel BUG's core [[S̄1, L1^*Ṽ], [Ũ^*K1, 0]] when only U gains directions (l = 0) and when nothing does.

    F = Z V0 V0^* with Z ⟂ U0 moves K only: K1 = U0 S0 + hZ, L1 = V0 S0^*; so k = r, l = 0 and
    Y1 = U0 S0 V0^* + h Z V0^* exactly (rank r, the zero block has no columns). F = 0 gives Y1 = Y0.
    """
    rng = np.random.default_rng(1)
    m, n, r, h = 20, 15, 3, 0.1
    Y0 = lowrank(rng, m, n, r, False)
    Z = rng.standard_normal((m, r))
    Z -= Y0.U @ (Y0.U.T @ Z)
    F = Z @ Y0.V.T
    res = parallel_bug_step(lambda t, Y: F, 0.0, Y0, h, ortho=ortho, theta=0.0)
    assert res.Y.rank == r + 0 and res.truncation.discarded.size == 0
    assert fro(res.Y.to_dense() - (Y0.to_dense() + h * F)) <= 100 * EPS * fro(Y0.to_dense())
    assert _orth_err(res.Y.U) <= 20 * EPS * r and _orth_err(res.Y.V) <= 20 * EPS * r
    zero = parallel_bug_step(lambda t, Y: np.zeros((m, n)), 0.0, Y0, h, ortho=ortho, theta=0.0)
    assert zero.Y.rank == r and fro(zero.Y.to_dense() - Y0.to_dense()) <= 100 * EPS * fro(Y0.to_dense())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(6, 90), r=st.integers(1, 12), dtype=st.sampled_from([np.float64, np.float32]),
       cplx=st.booleans(), n_kept=st.integers(0, 12), n_dropped=st.integers(0, 12), top=st.floats(1.0, 8.0))
def test_fast_path_spans_what_householder_spans(seed, m, r, dtype, cplx, n_kept, n_dropped, top):
    """ortho="cholqr2" (GEMMs + a float64 Gram eigen-decomposition) returns the span of the Householder form.

    W = (I − QQ^*)A has singular values clearly above δ (10…10^top·δ₀) and clearly below (δ₀/10³…δ₀/10),
    δ₀ the threshold without them: both forms keep exactly the directions above δ, and the principal angles
    between their spans (and to the exact span) are ≤ 20·eps·‖A‖_F/σ_min(kept) — first-order perturbation
    theory for the kept invariant subspace. On float32 data with q + k ≤ m the Gram matrix always decides (no
    Householder QR: this is what makes training fast).
    """
    from unittest import mock

    import dlrt_ref.orthonormal as orthonormal_mod

    rng = np.random.default_rng(seed)
    q = min(r, m - 2)
    k = r
    n_kept = min(n_kept, k, m - q)
    n_dropped = min(n_dropped, k - n_kept, m - q - n_kept)
    Q = orth(rng, m, q, cplx)
    A0 = Q @ (rng.standard_normal((q, k)) + (1j * rng.standard_normal((q, k)) if cplx else 0))
    eps = float(np.finfo(dtype).eps)
    delta0 = 10 * np.sqrt(q + k) * eps * fro(A0)
    d = n_kept + n_dropped
    X = orth(rng, m, q + d, cplx)[:, q:]
    X = np.linalg.qr(X - Q @ (H(Q) @ X))[0]  # (m, d) ⟂ Q
    Y = orth(rng, k, d, cplx) if d else np.zeros((k, 0))
    s = np.concatenate([delta0 * 10.0 ** rng.uniform(1.0, top, n_kept), delta0 * 10.0 ** rng.uniform(-3.0, -1.0, n_dropped)])
    s = np.minimum(s, fro(A0))  # keep ‖A‖ within a factor √2 of ‖A0‖, so that δ ≈ δ₀
    A = A0 + (X * s) @ H(Y)
    cdt = (np.complex64 if dtype == np.float32 else np.complex128) if cplx else dtype
    Qc, Ac = Q.astype(cdt), A.astype(cdt)
    delta = augment_threshold(Qc, Ac)
    kept = s > delta
    assume_clear = np.all((s > 5 * delta) | (s < delta / 5))
    if not assume_clear:  # s was clipped near δ (tiny ‖A0‖ cases): nothing to compare
        return
    with mock.patch.object(orthonormal_mod, "_augment_householder", wraps=orthonormal_mod._augment_householder) as hh:
        U_fast = orthonormalise_after(Qc, Ac, "cholqr2")
    if dtype == np.float32 and q + k <= m:  # (q + k > m: only the Householder form applies)
        assert hh.call_count == 0
    U_hh = orthonormalise_after(Qc, Ac, "householder")
    assert U_fast.shape == U_hh.shape == (m, int(kept.sum())), (U_fast.shape, U_hh.shape, kept.sum())
    assert _orth_err(np.concatenate([Qc, U_fast], axis=1)) <= 10 * eps * (q + kept.sum() + 1)
    if kept.any():
        tol = 20 * eps * fro(A) / s[kept].min()
        F, Hh, Xk = (B.astype(np.complex128) for B in (U_fast, U_hh, X[:, kept]))
        sin_theta = lambda B, C: np.linalg.norm(B - C @ (H(C) @ B), 2)  # noqa: E731 largest principal angle
        assert sin_theta(F, Hh) <= tol and sin_theta(Hh, F) <= tol
        assert sin_theta(F, Xk) <= tol


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 20), log_ratio=st.floats(-3, 3))
def test_sigma_min_test_agrees_with_the_eigenvalues(seed, k, log_ratio):
    """_sigma_min_exceeds(G, s) (Cholesky of G − s²I) says σ_min(W) > s exactly when the eigenvalues do.

    W has singular values spread over 4 decades; s = 10^log_ratio·σ_min (never within 0.1 % of a σ).
    """
    from dlrt_ref.orthonormal import _sigma_min_exceeds

    rng = np.random.default_rng(seed)
    sig = 10.0 ** rng.uniform(-4, 0, k)
    W = orth(rng, 3 * k, k, False) @ np.diag(sig) @ orth(rng, k, k, False).T
    s = float(sig.min() * 10.0**log_ratio)
    if np.min(np.abs(sig / s - 1)) < 1e-3:
        return
    assert _sigma_min_exceeds(W.T @ W, s) == bool(np.all(sig > s))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_fast_path_uses_no_eigensolver_when_every_direction_is_kept(dtype):
    """On NumPy the cholqr2 augmentation decides 'all kept' by a shifted Cholesky factorisation (no eigh, no
    eigvalsh) and gives the Q factor of W; with a deficit one eigh (eigenvalues and vectors together) decides.
    """
    from unittest import mock

    rng = np.random.default_rng(3)
    m, q, k = 40, 6, 5
    eps = float(np.finfo(dtype).eps)
    for kept, eigh_calls in ((k, 0), (k - 2, 1)):
        Q, A = _deficient_block(rng, m, q, k, kept, 1.0, False)
        Qd, Ad = Q.astype(dtype), A.astype(dtype)
        with mock.patch.object(np.linalg, "eigh", wraps=np.linalg.eigh) as eigh, \
                mock.patch.object(np.linalg, "eigvalsh", wraps=np.linalg.eigvalsh) as eigvalsh:
            U_t = orthonormalise_after(Qd, Ad, "cholqr2")
        assert (eigh.call_count, eigvalsh.call_count) == (eigh_calls, 0)
        assert U_t.shape == (m, kept)
        B = np.concatenate([Qd, U_t], axis=1)
        assert _orth_err(B) <= 10 * eps * (q + kept + 1)
        assert fro(A - B @ (H(B) @ A)) <= 50 * eps * np.sqrt(q + k) * fro(A)
        U_hh = orthonormalise_after(Qd, Ad, "householder")  # the same span (well-separated σ)
        assert np.linalg.norm(U_t.astype(float) - U_hh @ (H(U_hh) @ U_t.astype(float)), 2) <= 1e3 * eps
