"""Low-rank matrices Y = U S V^*, orthonormalisation, tangent projection, truncation.

Notation as in [1]_ and [2]_: ``U`` (m×r) and ``V`` (n×r) have orthonormal
columns, ``S`` (r×r) is invertible but not necessarily diagonal, and
``Y = U S V^*`` (``^*`` is the conjugate transpose, ``^T`` for real data).

References
----------
.. [1] O. Koch, C. Lubich, "Dynamical low-rank approximation",
   SIAM J. Matrix Anal. Appl. 29(2), 434–454, 2007.
.. [2] G. Ceruti, J. Kusch, C. Lubich, "A rank-adaptive robust integrator for
   dynamical low-rank approximation", BIT Numer. Math. 62, 1149–1174, 2022.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from dlrt_ref.backend import array_module, is_array, scipy_linalg, to_numpy
from dlrt_ref.linalg import H, svd_factors

__all__ = [
    "LowRankMatrix",
    "orthonormalise",
    "orthonormalise_after",
    "augment_threshold",
    "ORTHONORMALISERS",
    "tangent_project",
    "truncate",
    "Truncation",
    "TRUNCATION_SOLVERS",
    "gram_min_ratio",
    "best_rank_r",
    "FACTOR_DTYPES",
]


FACTOR_DTYPES = ("float32", "float64", "complex64", "complex128")


def _check_factor(name: str, A) -> None:
    """One-line TypeError unless A is a NumPy/CuPy array of a supported floating dtype.

    Lists are rejected rather than converted, so that the caller chooses the backend
    and the dtype (``numpy.asarray(x, dtype=numpy.float64)``); float16 and integer or
    bool factors are rejected because the QR/SVD/Cholesky kernels do not support them
    (or silently compute in another precision).
    """
    if not is_array(A):
        raise TypeError(f"LowRankMatrix: {name} must be a NumPy or CuPy array, got {type(A).__name__}; "
                        f"convert it first, e.g. numpy.asarray({name}, dtype=numpy.float64)")
    if str(A.dtype) not in FACTOR_DTYPES:
        raise TypeError(f"LowRankMatrix: {name} has dtype {A.dtype}; factors must be one of {', '.join(FACTOR_DTYPES)}")


@dataclass(frozen=True)
class LowRankMatrix:
    """The m×n matrix ``Y = U S V^*`` kept as its factors.

    Parameters
    ----------
    U : array, shape (m, r)
    S : array, shape (r, r)
    V : array, shape (n, r)

    The integrators keep U and V orthonormal; intermediate quantities such as
    ``K V^*`` (as ``LowRankMatrix(K, I, V)``) need not be.
    """

    U: Any
    S: Any
    V: Any

    def __post_init__(self):
        U, S, V = self.U, self.S, self.V
        for name, A in (("U", U), ("S", S), ("V", V)):
            _check_factor(name, A)
        if U.ndim != 2 or S.ndim != 2 or V.ndim != 2:
            raise ValueError(f"LowRankMatrix needs 2-D factors, got U{U.shape}, S{S.shape}, V{V.shape}")
        if S.shape != (U.shape[1], V.shape[1]):
            raise ValueError(
                f"LowRankMatrix factor shapes do not chain: U{U.shape} S{S.shape} V{V.shape}; "
                f"expected S of shape {(U.shape[1], V.shape[1])}"
            )
        array_module(U, S, V)

    @property
    def shape(self) -> tuple:
        return (self.U.shape[0], self.V.shape[0])

    @property
    def rank(self) -> int:
        """The representation rank r (the number of columns of U)."""
        return self.U.shape[1]

    @property
    def dtype(self):
        return (self.U[:0, :0].sum() * self.S[:0, :0].sum() * self.V[:0, :0].sum()).dtype

    def to_dense(self):
        """The full matrix U S V^*: (m, r) @ (r, r) @ (r, n) -> (m, n)."""
        return (self.U @ self.S) @ H(self.V)

    @property
    def H(self) -> "LowRankMatrix":
        """Y^* = V S^* U^*."""
        return LowRankMatrix(self.V, H(self.S), self.U)

    @property
    def T(self) -> "LowRankMatrix":
        """Y^T = conj(V) S^T U^T (plain transpose, also for complex data)."""
        return LowRankMatrix(self.V.conj(), self.S.T, self.U.conj())

    def singular_values(self):
        """Singular values of Y (requires orthonormal U, V): those of S, descending, host array."""
        S = to_numpy(self.S)
        if not np.isfinite(S).all():
            raise ValueError(f"LowRankMatrix.singular_values: S ({S.shape[0]}×{S.shape[1]}) holds NaN or infinite entries")
        return np.linalg.svd(S, compute_uv=False)

    @staticmethod
    def from_dense(A, rank: int) -> "LowRankMatrix":
        """Best rank-``rank`` approximation of A (truncated SVD), S diagonal."""
        return best_rank_r(A, rank)


def best_rank_r(A, r: int) -> LowRankMatrix:
    """Truncated SVD: the best rank-r approximation in every unitarily invariant norm."""
    xp = array_module(A)
    if not (1 <= r <= min(A.shape)):
        raise ValueError(f"rank must be in [1, {min(A.shape)}] for a {A.shape} matrix, got {r}")
    if not bool(xp.isfinite(A).all()):
        raise ValueError(f"best_rank_r: the {A.shape[0]}×{A.shape[1]} matrix holds NaN or infinite entries")
    return LowRankMatrix(*svd_factors(A, r))  # U (m, r), S (r, r), V (n, r)


# --------------------------------------------------------------------------- #
# Orthonormalisation
# --------------------------------------------------------------------------- #
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


# --------------------------------------------------------------------------- #
# Tangent projector
# --------------------------------------------------------------------------- #
def tangent_project(Y: LowRankMatrix, Z):
    r"""Orthogonal projection of Z (m×n, dense) onto the tangent space of M_r at Y.

    .. math:: P(Y) Z = U U^* Z - U U^* Z V V^* + Z V V^*   \quad\text{([1], Lemma 4.1)}

    U and V must be orthonormal.
    """
    U, V = Y.U, Y.V
    UhZ = H(U) @ Z  # (r, m) @ (m, n) -> (r, n)
    ZV = Z @ V  # (m, n) @ (n, r) -> (m, r)
    # U (U^*Z) - U ((U^*Z) V) V^* + (Z V) V^*: every product is (m|n)×r×(n|m)
    return U @ UhZ - U @ ((UhZ @ V) @ H(V)) + ZV @ H(V)


# --------------------------------------------------------------------------- #
# Truncation
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Truncation:
    """Result of :func:`truncate`: ``S ≈ P diag(sigma) Q^*`` at the chosen rank.

    Attributes
    ----------
    P, Q : arrays, shape (k, rank)
    sigma : array, shape (rank,) — kept singular values, descending.
    rank : int
    discarded : numpy array — the discarded singular values (host), descending.
    theta : float — the absolute tolerance ϑ that was applied.
    solver : str — how the singular triplets were computed: "svd" or "gram" (see :func:`truncate`).
    """

    P: Any
    sigma: Any
    Q: Any
    rank: int
    discarded: np.ndarray
    theta: float
    solver: str = "svd"

    @property
    def S(self):
        """The kept core diag(sigma) as an array of the input's backend."""
        xp = array_module(self.sigma)
        return xp.diag(self.sigma)

    @property
    def tail(self) -> float:
        """ℓ2 norm of the discarded singular values, ‖Y₁ − Ŷ₁‖_F."""
        return float(np.sqrt(np.sum(self.discarded**2)))


TRUNCATION_SOLVERS = ("auto", "svd", "gram")


def gram_min_ratio(dtype) -> float:
    """ρ = 10·√(eps₆₄ / eps): the Gram path keeps only triplets with σ_j ≥ ρ·σ_1 (else the SVD decides).

    The partner vectors of the Gram path, ``S^* p_j / σ_j``, are orthonormal up to
    ``E_ij / (σ_i σ_j)`` with ``|E| ≲ k·eps₆₄·σ_1²`` (the float64 eigen-residual), i.e. up to
    ``k·eps₆₄/ρ² = k·eps/100`` for kept σ ≥ ρσ_1 — below the working precision's
    rounding of k columns. For float32 ρ ≈ 4.3e-4; for float64 ρ > 1, so double-precision
    cores always use the SVD (a float64 Gram matrix cannot resolve their small σ).
    """
    eps = float(np.finfo(np.dtype(dtype)).eps)
    return 10.0 * float(np.sqrt(np.finfo(np.float64).eps / eps))


def _gram_triplets(S, xp):
    """Singular values of S (k1×k2, descending, device, float64) and a function giving the top-r triplets.

    Symmetric eigen-decomposition in float64 of the smaller Gram matrix,
    G = S S^* (k1 ≤ k2) or S^* S: G = Z Λ Z^*, σ_j = √max(λ_j, 0); the eigenvectors are the
    singular vectors of that side, the other side's are S^* z_j / σ_j (or S z_j / σ_j).
    """
    wide = xp.complex128 if S.dtype.kind == "c" else xp.float64
    S64 = S.astype(wide)  # (k1, k2)
    left = S.shape[0] <= S.shape[1]
    G = S64 @ H(S64) if left else H(S64) @ S64  # (k1, k2)(k2, k1) or (k2, k1)(k1, k2): (k, k), k = min(k1, k2)
    lam, Z = xp.linalg.eigh(G)  # ascending; (k,), (k, k)
    sigma = xp.sqrt(xp.maximum(lam[::-1], 0.0))  # (k,) descending

    def top(r1):
        Zr = Z[:, Z.shape[1] - r1:][:, ::-1]  # (k, r1), eigenvectors of the r1 largest λ, descending
        # the partner vectors: (k2, k1) @ (k1, r1) or (k1, k2) @ (k2, r1), columns divided by σ_j
        W = (H(S64) @ Zr if left else S64 @ Zr) / sigma[:r1]
        return (Zr, W) if left else (W, Zr)

    return sigma, top


def truncate(
    S,
    *,
    theta: Optional[float] = None,
    tau: Optional[float] = None,
    rank: Optional[int] = None,
    r_min: int = 1,
    r_max: Optional[int] = None,
    compat_2022: bool = False,
    solver: str = "auto",
) -> Truncation:
    r"""Truncate a core S (k1×k2) by its singular value decomposition, as in the rank-adaptive BUG ([2], Sec. 3.1).

    With ``S = P \Sigma Q^*`` and :math:`\sigma_1 \ge \dots \ge \sigma_k`, the new
    rank is the smallest r1 with

    .. math:: \Big(\sum_{j > r_1} \sigma_j^2\Big)^{1/2} \le \vartheta,

    then clipped to ``[r_min, r_max]`` (and to k). Give exactly one of ``theta``
    (absolute ϑ), ``tau`` (relative: ϑ = τ‖σ‖₂, as in DLRT) or ``rank`` (fixed).

    ``solver`` — how the singular values and the kept vectors are computed:

    * ``"svd"``: a full SVD of S (LAPACK gesdd; ``cupy.linalg.svd`` on a GPU);
    * ``"gram"``: a symmetric eigen-decomposition in float64 of the smaller Gram matrix
      S S^* or S^* S (:func:`_gram_triplets`), on the device of S. On a GPU, eigh of a
      small matrix is several times faster than an SVD (issue 14: 1.2–6.7 ms against
      15.9–34.8 ms for 160–320 on an H200), and it is cheaper on a CPU too. Accurate
      for cores in single precision: the float64 eigenvalues give σ_j with error
      ≲ k·eps₆₄·σ_1²/σ_j, below float32's own SVD error k·eps₃₂·σ_1 for every
      σ_j ≳ 1e-9·σ_1; the partner vectors are accurate while σ_j ≥ ρσ_1
      (:func:`gram_min_ratio`). If a kept σ_j falls below ρσ_1 (constant rank or
      ``r_min`` forcing a tiny σ, a rank-deficient core), that call uses the SVD
      instead; ``Truncation.solver`` says which path produced the result;
    * ``"auto"`` (default): ``"gram"`` for float32/complex64 cores, ``"svd"`` for
      float64/complex128 (where the Gram matrix cannot resolve σ_j below √eps₆₄·σ_1),
      on either backend. ``tests/gpu/test_truncation_eig.py`` bounds the error of the
      kept triplets against a float64 SVD for every τ of the experiments (down to
      1e-3) and at constant rank.

    One host synchronisation per call: the singular values (with a finiteness flag)
    come to the host together for the rank decision.

    ``compat_2022=True`` reproduces the public DLRT reference codes of 2022 (always
    with the SVD): their tail sum leaves out the last singular value (it runs over
    σ_{j}, …, σ_{k−1}), when no j qualifies the rank falls back to k//2, and
    they build the right factor from ``Vh[:, :r1]`` instead of
    ``Vh^*[:, :r1]`` — a bug. It is offered only to reproduce their numbers. Their core was
    always square; a rectangular S (k1×k2, from the rank-revealing augmentation) is first
    padded with zeros to a square one, as if the dropped directions were present with zero
    content.
    """
    if isinstance(S, LowRankMatrix):
        raise TypeError("truncate takes the core S (a 2-D array), not a LowRankMatrix; pass Y.S and apply "
                        "P, Q to Y.U, Y.V (as integrators.truncate_core does)")
    if not (hasattr(S, "ndim") and hasattr(S, "dtype")):
        raise TypeError(f"truncate takes the core S as a NumPy or CuPy array, got {type(S).__name__}")
    if str(S.dtype) not in FACTOR_DTYPES:
        raise TypeError(f"truncate: the core S has dtype {S.dtype}; expected one of {', '.join(FACTOR_DTYPES)}")
    xp = array_module(S)
    if S.ndim != 2:
        raise ValueError(f"truncate needs a 2-D core, got shape {S.shape}")
    if sum(x is not None for x in (theta, tau, rank)) != 1:
        raise ValueError("truncate: give exactly one of theta (absolute), tau (relative) or rank")
    if solver not in TRUNCATION_SOLVERS:
        raise ValueError(f"truncate: solver must be one of {TRUNCATION_SOLVERS}, got {solver!r}")
    if rank is not None and rank < 1:
        raise ValueError(f"truncate: rank must be >= 1, got {rank}")
    if theta is not None and not (np.isfinite(theta) and theta >= 0):
        raise ValueError(f"truncate: theta must be finite and >= 0, got {theta}")
    if tau is not None and not (np.isfinite(tau) and 0 <= tau < 1):
        raise ValueError(f"truncate: tau must be in [0, 1) (it is relative: ϑ = τ‖σ‖₂), got {tau}")
    k1_in, k2_in = S.shape
    if compat_2022 and k1_in != k2_in:
        # The 2022 codes always had a square 2r×2r core (their augmentation appended completion columns);
        # a rank-revealing augmentation can give k1 ≠ k2. Pad with zeros to a square core, as if the
        # dropped directions were present with zero content, and cut P, Q back to the real rows below.
        kk = max(k1_in, k2_in)
        S = xp.concatenate([xp.concatenate([S, xp.zeros((k1_in, kk - k2_in), dtype=S.dtype)], axis=1),
                            xp.zeros((kk - k1_in, kk), dtype=S.dtype)], axis=0)
    if solver == "auto":
        solver = "gram" if S.dtype in (np.float32, np.complex64) and not compat_2022 else "svd"
    if compat_2022:
        solver = "svd"
    # NaN/inf must not reach the SVD/eigh (LAPACK fails with "did not converge", a GPU returns garbage): the
    # decomposition runs on a zeroed core if S is not finite, and the flag travels with σ in ONE host sync
    finite = xp.isfinite(S).all()  # 0-d, on the device
    S_safe = xp.where(finite, S, xp.zeros((), dtype=S.dtype))
    if solver == "gram":
        sigma, top = _gram_triplets(S_safe, xp)  # (k,) float64
    else:
        P, sigma, Qh = xp.linalg.svd(S_safe, full_matrices=False)  # (k1,k) (k,) (k,k2)
    host = to_numpy(xp.concatenate([finite.astype(sigma.dtype).reshape(1), sigma]))  # the one host sync
    if not host[0]:
        raise ValueError(f"truncate: the core S ({S.shape[0]}×{S.shape[1]}) holds NaN or infinite entries")
    s = host[1:].real.astype(float)
    k = s.size
    if rank is not None:
        th = float(np.sqrt(np.sum(s[rank:] ** 2)))
        r1 = min(rank, k)
    else:
        th = float(theta) if theta is not None else float(tau) * float(np.sqrt(np.sum(s**2)))
        if not compat_2022:
            # tails[j] = ||sigma[j:]||_2 for j = 0..k; tails[k] = 0
            tails = np.sqrt(np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]]))
            r1 = int(np.argmax(tails <= th))  # first j with tail <= theta
        else:
            r1 = k // 2
            for j in range(k - 1):
                if np.sqrt(np.sum(s[j : k - 1] ** 2)) < th:
                    r1 = j
                    break
        r1 = max(r1, r_min)
        if r_max is not None:
            r1 = min(r1, r_max)
        r1 = max(1, min(r1, k))
    if solver == "gram":
        if s[r1 - 1] >= gram_min_ratio(S.dtype) * s[0] > 0:
            P, Q = top(r1)  # (k1, r1), (k2, r1), float64
            return Truncation(P.astype(S.dtype), sigma[:r1].astype(S.dtype), Q.astype(S.dtype), r1, s[r1:].copy(),
                              th, "gram")
        # a kept σ too small for the partner vectors (see gram_min_ratio): this call takes the SVD
        P, sigma, Qh = xp.linalg.svd(S, full_matrices=False)
    Q = Qh[:k2_in, :r1] if compat_2022 else H(Qh[:r1, :])  # (k2, r1)
    return Truncation(P[:k1_in, :r1], sigma[:r1].astype(S.dtype), Q, r1, s[r1:].copy(), th, "svd")
