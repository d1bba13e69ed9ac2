"""Orthonormal bases: orthonormalise (Householder, CholeskyQR2) and the rank-revealing augmentation.

:func:`orthonormalise` gives an orthonormal basis of the column span of a matrix (the
K- and L-steps' QR). :func:`orthonormalise_after` gives the new directions Ũ of the
rank-adaptive augmentation Û = [U0 | Ũ] ([2]_, Alg. 1, step 1; see
:func:`dlrt_ref.integrators.augment`): an orthonormal basis of only the numerically
independent part of (I − QQ^*)A, with the rank threshold :func:`augment_threshold`.
Notation as in :mod:`dlrt_ref.lowrank` (``^*`` is the conjugate transpose, ``^T`` for real data).

References
----------
.. [2] G. Ceruti, J. Kusch, C. Lubich, "A rank-adaptive robust integrator for
   dynamical low-rank approximation", BIT Numer. Math. 62, 1149–1174, 2022.
.. [3] Y. Yamamoto, Y. Nakatsukasa, Y. Yanagisawa, T. Fukaya, "Roundoff error analysis of the
   CholeskyQR2 algorithm", Electron. Trans. Numer. Anal. 44, 306–326, 2015
   ("Yamamoto et al. 2015" below).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from dlrt_ref.backend import array_module, scipy_linalg, to_numpy
from dlrt_ref.linalg import H

__all__ = ["orthonormalise", "orthonormalise_after", "augment_threshold", "ORTHONORMALISERS"]


def _householder(A):
    xp = array_module(A)
    Q, _ = xp.linalg.qr(A)  # reduced QR: Q (m, min(m, k))
    return Q


def _cholesky_qr2_or_none(A):
    """CholeskyQR2 of a tall A (m ≥ k): Q = A R^{-1} twice, with R^*R the Cholesky factorisation of the Gram matrix.

    Returns None instead of Q when the Cholesky factorisation fails or the Gram
    matrix is too ill-conditioned for CholeskyQR (κ(A) ≳ eps^{-1/2}; Yamamoto
    et al. 2015), so that the caller chooses the fallback.

    GPU-friendly: ``Q R^{-1}`` is a triangular solve (no inverse), and the guard is
    evaluated on the device for both passes and read once at the end (one host
    synchronisation per call instead of three per pass). The guard reads the diagonal
    of the Cholesky factor *with its sign*: NumPy raises ``LinAlgError`` for a Gram
    matrix that is not positive definite, but CuPy (by default) does not — cuSOLVER's
    potrf leaves the non-positive pivot (or NaN) on the diagonal, which the test
    ``min(diag) > 0.1·√eps·max(diag)`` rejects whatever its magnitude.
    """
    xp = array_module(A)
    solve_triangular = scipy_linalg(xp).solve_triangular
    eps = float(np.finfo(A.real.dtype).eps)
    Q, ok = A, None
    for _ in range(2):
        G = H(Q) @ Q  # (k, m) @ (m, k) -> (k, k)
        try:
            L = xp.linalg.cholesky(G)  # lower triangular, L L^* = G; R = L^*
            d = xp.diag(L).real  # (k,), positive for a successful factorisation
            ok_pass = xp.isfinite(d).all() & (d.min() > 0.1 * eps**0.5 * d.max())
            ok = ok_pass if ok is None else ok & ok_pass
            # Q R^{-1} with R = L^*:  (Q R^{-1})^T = conj(L)^{-1} Q^T, a lower-triangular solve: (k, k) \ (k, m)
            Q = solve_triangular(L.conj(), Q.T, lower=True, check_finite=False).T  # (m, k)
        except Exception:  # LinAlgError (NumPy: not positive definite, or an exactly zero pivot in the solve)
            return None  # CuPy reports a failed factorisation on the diagonal instead, see above
    if not bool(to_numpy(ok)):  # the one host synchronisation: both passes' guards
        return None  # Gram matrix too ill-conditioned for CholeskyQR (or not positive definite)
    return Q


def _cholesky_qr2(A):
    """CholeskyQR2: two passes of Q = A R^{-1} with R^*R = A^*A (GEMM-based).

    Stable when κ(A) ≲ eps^{-1/2} (Yamamoto et al. 2015); otherwise, or when
    the Cholesky factorisation fails, falls back to Householder QR.
    """
    if A.shape[1] > A.shape[0]:
        return _householder(A)
    Q = _cholesky_qr2_or_none(A)
    return _householder(A) if Q is None else Q


ORTHONORMALISERS = {"householder": _householder, "cholqr2": _cholesky_qr2}


def orthonormalise(A, method: str = "householder"):
    """An orthonormal basis Q (m×k') of the column span of A (m×k), k' = min(m, k).

    ``method`` is "householder" (LAPACK QR, always stable) or "cholqr2"
    (CholeskyQR2, GEMM-based and faster for tall-skinny A, with an automatic
    fallback to Householder when A is ill-conditioned). For a rank-deficient A
    the extra columns of Q are orthonormal completions, so span(A) ⊆ span(Q).
    """
    try:
        f = ORTHONORMALISERS[method]
    except KeyError:
        raise ValueError(f"unknown orthonormalisation {method!r}; expected one of {sorted(ORTHONORMALISERS)}") from None
    return f(A)


AUGMENT_RTOL_FACTOR = 10.0
GRAM_RESOLUTION_FACTOR = 10.0


def _augment_delta(norm_A: float, q: int, k: int, eps: float) -> float:
    """δ = 10·√(q + k)·eps·‖A‖_F (see :func:`augment_threshold`)."""
    return AUGMENT_RTOL_FACTOR * float(np.sqrt(q + k)) * eps * norm_A


def augment_threshold(Q, A) -> float:
    """The rank threshold δ of :func:`orthonormalise_after`: δ = 10·√(q + k)·eps·‖A‖_F.

    Round-off leaves every exactly dependent direction of W = (I − QQ^*)A with a
    singular value of about 0.1–0.3·eps·‖A‖_F (measured for q + k up to 500, float32
    and float64); δ sits 30–700× above that, so such directions are never taken, and
    below any direction that carries information at working precision.
    """
    xp = array_module(Q, A)
    eps = float(np.finfo(xp.result_type(Q.dtype, A.dtype)).eps)
    return _augment_delta(float(to_numpy(xp.linalg.norm(A))), Q.shape[1], A.shape[1], eps)  # 1 host sync


def orthonormalise_after(Q, A, method: str = "householder", threshold: Optional[float] = None):
    """An orthonormal basis Ũ (m×k') of the numerically independent part of (I − QQ^*)A, k' ≤ k.

    For orthonormal Q (m×q) and A (m×k) this is rank-revealing: Ũ is
    orthonormal, orthogonal to Q to working precision for *every* input, and
    spans exactly the directions of W = (I − QQ^*)A whose singular values exceed
    the threshold δ (default :func:`augment_threshold`, 10·√(q+k)·eps·‖A‖_F).
    Directions of W at round-off level are dropped instead of being completed
    by arbitrary columns (which would then receive Galerkin content in an
    S-step and make the result depend on round-off). So k' is the numerical
    rank of W, k' ≤ min(k, m − q), and span(A) ⊆ span([Q | Ũ]) up to δ.

    * ``"householder"`` (the reference): Householder QR [Q | A] = [Q | Q2] R; the block
      R22 = Q2^* A (≤k×k) holds A's coordinates beyond span(Q). SVD
      R22 = P Σ Z^*; Ũ = Q2 P[:, :k'] with k' = #{σ_j > δ}. Ũ is a rotation of
      Householder columns, so orthonormal and ⟂ Q to eps whatever A is. If no
      direction is dropped, Ũ = Q2 (the trailing Q factor of [Q | A]).
    * ``"cholqr2"`` (GEMM-based, :func:`_augment_gram`): W by block classical
      Gram–Schmidt, the Gram matrix W^*W in float64 and its symmetric eigen-decomposition
      (or, on NumPy, a shifted Cholesky factorisation when every direction is kept) decide the
      same rank k' = #{√λ_j > δ}; Ũ is formed
      from W by GEMMs and triangular solves, projected against Q once more and passed
      through one CholeskyQR step. Where the float64 Gram matrix cannot resolve the
      singular values around δ (float64 data whose W has σ between δ and ~√eps₆₄·‖W‖_F),
      the Householder form decides instead. When nothing is dropped, Ũ is the Q factor
      of W, i.e. the Householder columns up to signs.

    The rank decision is made on the host with one synchronisation per call: ‖A‖_F (for δ)
    travels with R22's σ (Householder) or with the Gram eigenvalues (cholqr2); when the
    Gram matrix cannot decide, the Householder form adds one more (its σ).
    """
    q, k = Q.shape[1], A.shape[1]
    if method not in ORTHONORMALISERS:
        raise ValueError(f"unknown orthonormalisation {method!r}; expected one of {sorted(ORTHONORMALISERS)}")
    delta = None if threshold is None else float(threshold)
    if method == "cholqr2" and 0 < k and q + k <= Q.shape[0]:
        U_tilde, delta = _augment_gram(Q, A, delta)
        if U_tilde is not None:
            return U_tilde
    return _augment_householder(Q, A, delta)


def _augment_householder(Q, A, delta: Optional[float]):
    """The Householder form of :func:`orthonormalise_after`; δ from ‖A‖_F (read with R22's σ) when None."""
    xp = array_module(Q, A)
    q, k = Q.shape[1], A.shape[1]
    Qf, R = xp.linalg.qr(xp.concatenate([Q, A], axis=1))  # (m, p) (p, q + k), p = min(m, q + k)
    Q2, R22 = Qf[:, q:], R[q:, q:]  # (m, p − q), (p − q, k): A's coordinates in Q2
    if R22.size == 0:
        return Q2
    P, sigma, _ = xp.linalg.svd(R22, full_matrices=False)  # (p−q, j) (j,) ; j = min(p − q, k)
    if delta is None:  # ‖A‖_F and σ in one host synchronisation
        host = to_numpy(xp.concatenate([xp.linalg.norm(A).astype(sigma.dtype).reshape(1), sigma]))
        delta = _augment_delta(float(host[0]), q, k, float(np.finfo(xp.result_type(Q.dtype, A.dtype)).eps))
        sigma_h = host[1:]
    else:
        sigma_h = to_numpy(sigma)  # one host synchronisation
    k1 = int(np.count_nonzero(sigma_h > delta))  # numerical rank of W
    if k1 == Q2.shape[1]:
        return Q2  # nothing dropped: the Householder columns themselves
    return Q2 @ P[:, :k1]  # (m, p − q) @ (p − q, k1) -> (m, k1)


def _augment_gram(Q, A, delta: Optional[float]):
    """The GEMM-based form of :func:`orthonormalise_after` (``"cholqr2"``): returns (Ũ, δ), or (None, δ) to let
    the Householder form decide.

    1. W = (I − QQ^*)A by one pass of block classical Gram–Schmidt. Its rounding leaves W a
       component along Q, ‖Q^*W‖ ≲ c·eps·‖A‖_F with c = O(1) (the same order as the
       round-off σ of a dependent direction, see :func:`augment_threshold`): it changes each
       σ_j(W) by ≲ c·eps·‖A‖_F ≪ δ, so the rank decision stands, and step 4 removes it. (A
       second pass, CGS2, would make W ⟂ Q already here; its bound, eps·‖W‖ ≤ eps·‖A‖, is no
       better than what step 3 needs, so the pass was dropped: 2 of ~10 GEMMs of m·q·k.)
    2. G = W^*W in float64 (k×k; W is exact in float64 when it is float32) and its eigenvalues
       λ_j = σ_j(W)² (G = Z Λ Z^*), resolved down to s_res = √((m + k)·eps₆₄·Σλ) (rounding
       of G and of the eigen-solver). The decision k' = #{√λ_j > δ} is taken when every σ is
       resolved or below δ: 10·s_res ≤ δ (always for float32 data with m + k ≤ 64(q + k),
       since Σλ = ‖W‖_F² ≤ ‖A‖_F²), or √λ_min ≥ 10·s_res (well-conditioned W, float64 too).
       Otherwise (None, δ): the Householder form decides.
    2'. On NumPy a cheaper test comes first: the Cholesky factorisation of G − s²I with
       s = max(δ, 10·s_res) succeeds iff σ_min(W) > s (:func:`_sigma_min_exceeds`), which
       proves k' = k without an eigen-solver. Otherwise one ``eigh`` gives the eigenvalues and
       the eigenvectors together. (On CuPy ``eigvalsh`` decides in the one host
       read and ``eigh`` follows only if 0 < k' < k, so as not to add a read.) The decision is
       the same either way.
    3. Ũ₀ = W R^{-1} with R^*R = G (Cholesky) when k' = k — the Q factor of W — else
       Ũ₀ = W Z_k' Λ_k'^{-1/2}; the k×k factors come from float64 and are applied to W in the
       working precision. Ũ₀'s orthonormality error is ≲ s_res²/δ² + eps·κ(W) ≤ 0.1 and its
       overlap with Q ≲ c·eps·‖A‖_F/σ_min(kept) ≤ c/(10√(q+k)) (step 1's component along Q
       divided by the smallest kept σ ≥ δ; κ(W) ≤ ‖A‖/δ).
    4. Ũ₁ = (I − QQ^*)Ũ₀, then one CholeskyQR step, all in the working precision:
       Ũ = Ũ₁ R₁^{-1}, R₁^*R₁ = Ũ₁^*Ũ₁. Ũ₁ is within ~0.1 of orthonormal (κ(Ũ₁) ≤ 1.2), so this
       is the second pass of CholeskyQR2 (Yamamoto et al. 2015: O(eps) for κ ≲ eps^{-1/2}) and
       needs no float64 Gram matrix: ‖Ũ^*Ũ − I‖ and ‖Q^*Ũ‖ are O(eps), like Householder's.

    One host synchronisation (CuPy): the eigenvalues with ‖A‖_F. Cost: GEMMs, k×k factorisations and
    triangular solves, no Householder QR of the m×(q+k) block; its time in a training step is
    measured in ``benchmarks/README.md`` (issue 14).
    """
    xp = array_module(Q, A)
    solve_triangular = scipy_linalg(xp).solve_triangular
    dt = xp.result_type(Q.dtype, A.dtype)
    m, q, k = Q.shape[0], Q.shape[1], A.shape[1]
    wide = xp.complex128 if np.dtype(dt).kind == "c" else xp.float64
    eps = float(np.finfo(dt).eps)
    W = A - Q @ (H(Q) @ A)  # (m, q) @ (q, m) @ (m, k) -> (m, k): one pass, W·Q ≲ c·eps·‖A‖ (step 4 removes it)
    W64 = W.astype(wide)  # (m, k)
    G = H(W64) @ W64  # (k, m) @ (m, k) -> (k, k), float64
    L, Z = None, None
    if xp is np:  # NumPy: first the Cholesky certificate (step 2'), no eigen-solver when it shows that k' = k
        d = delta if delta is not None else _augment_delta(float(np.linalg.norm(A)), q, k, eps)
        s_res = _gram_resolution(m, k, float(np.trace(G).real))
        if np.isfinite(d) and np.isfinite(s_res) and _sigma_min_exceeds(G, max(d, GRAM_RESOLUTION_FACTOR * s_res)):
            delta, L = d, xp.linalg.cholesky(G)  # every σ_j(W) > δ and resolved: k' = k; L L^* = G for step 3
    if L is None:
        try:  # the eigenvalues; on NumPy with the eigenvectors in the same call (needed when a direction is dropped)
            if xp is np:
                lam, Z = xp.linalg.eigh(G)  # ascending: (k,), (k, k)
            else:
                lam, Z = xp.linalg.eigvalsh(G), None  # ascending (k,); the eigenvectors only if needed
        except Exception:  # LinAlgError: NaN/inf in A (NumPy); the Householder form reports it as before
            return None, delta
        parts = [lam] if delta is not None else [xp.linalg.norm(A).astype(xp.float64).reshape(1), lam]
        host = to_numpy(xp.concatenate(parts))  # the one host synchronisation: ‖A‖_F with the eigenvalues
        if delta is None:
            delta = _augment_delta(float(host[0]), q, k, eps)
        if not np.isfinite(host).all():
            return None, delta  # CuPy returns NaN for non-finite input: the Householder form reports it
        lam_h = host[-k:]
        s = np.sqrt(np.maximum(lam_h, 0.0))  # σ(W), ascending
        s_res = _gram_resolution(m, k, float(lam_h.sum()))
        if not (GRAM_RESOLUTION_FACTOR * s_res <= delta or s[0] >= GRAM_RESOLUTION_FACTOR * s_res):
            return None, delta  # σ near δ that the float64 Gram matrix cannot resolve: Householder decides
        k1 = int(np.count_nonzero(s > delta))  # numerical rank of W, the same rule as the Householder form
        if k1 == 0:
            return xp.zeros((m, 0), dtype=dt), delta
    else:
        k1 = k
    if k1 == k:  # nothing dropped: the Q factor of W, W = Ũ₀ R with R = L^*, G = L L^*
        if L is None:
            L = xp.linalg.cholesky(G)  # (k, k) lower
        # (W R^{-1})^T = conj(L)^{-1} W^T: a lower-triangular solve (k, k) \ (k, m)
        U0 = solve_triangular(L.conj().astype(dt), W.T, lower=True, check_finite=False).T  # (m, k)
    else:  # the eigen-directions of the k1 largest λ, descending
        if Z is None:
            lam, Z = xp.linalg.eigh(G)  # ascending: (k,), (k, k)
        Zk = Z[:, k - k1:][:, ::-1]  # (k, k1)
        U0 = W @ (Zk / xp.sqrt(lam[k - k1:][::-1])).astype(dt)  # (m, k) @ (k, k1) -> (m, k1): W z_j / σ_j
    U1 = U0 - Q @ (H(Q) @ U0)  # (m, q) @ (q, m) @ (m, k1): re-projection, removes the O(eps‖A‖/δ) overlap
    # U1 is within ~0.1 of orthonormal (κ ≤ 1.2): its Gram matrix needs no float64 (CholeskyQR2's second step)
    L1 = xp.linalg.cholesky(H(U1) @ U1)  # (k1, m) @ (m, k1) -> (k1, k1), ≈ I
    U_tilde = solve_triangular(L1.conj().astype(dt), U1.T, lower=True, check_finite=False).T  # (m, k1)
    return U_tilde, delta


def _gram_resolution(m: int, k: int, trace: float) -> float:
    """s_res = √((m + k)·eps₆₄·Σλ): the σ that a float64 Gram matrix W^*W (W m×k, Σλ = ‖W‖_F²) resolves."""
    return float(np.sqrt((m + k) * np.finfo(np.float64).eps * max(trace, 0.0)))


def _sigma_min_exceeds(G, s: float) -> bool:
    """Whether σ_min(W) > s for a host Hermitian G = W^*W (k×k, float64), by the Cholesky factorisation of G − s²I.

    G − s²I is positive definite iff λ_min(G) > s². The factorisation is backward stable (it succeeds
    for G − s²I + E with ‖E‖ ≲ k·eps₆₄·‖G‖, the size of the Gram matrix's own rounding), so the
    answer is that of the eigenvalues up to that resolution — which the caller's s ≥ 10·s_res covers.
    Cost: one Cholesky factorisation, k³/3 flops, a fraction of an eigen-solver's.
    """
    try:
        np.linalg.cholesky(G - (s * s) * np.eye(G.shape[0]))  # (k, k)
    except np.linalg.LinAlgError:  # not positive definite (a σ ≤ s, or NaN)
        return False
    return True

