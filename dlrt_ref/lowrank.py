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

from dlrt_ref.backend import array_module, to_numpy

__all__ = [
    "LowRankMatrix",
    "orthonormalise",
    "orthonormalise_after",
    "augment_threshold",
    "ORTHONORMALISERS",
    "tangent_project",
    "truncate",
    "Truncation",
    "best_rank_r",
    "FACTOR_DTYPES",
]


def _H(A):
    """Conjugate transpose A^*."""
    return A.conj().T


FACTOR_DTYPES = ("float32", "float64", "complex64", "complex128")


def _check_factor(name: str, A) -> None:
    """One-line TypeError unless A is a NumPy/CuPy array of a supported floating dtype.

    Lists are rejected rather than converted, so that the caller chooses the backend
    and the dtype (``numpy.asarray(x, dtype=numpy.float64)``); float16 and integer or
    bool factors are rejected because the QR/SVD/Cholesky kernels do not support them
    (or silently compute in another precision).
    """
    if not (type(A).__module__.split(".")[0] in ("numpy", "cupy") and hasattr(A, "ndim")):
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
        return (self.U @ self.S) @ _H(self.V)

    @property
    def H(self) -> "LowRankMatrix":
        """Y^* = V S^* U^*."""
        return LowRankMatrix(self.V, _H(self.S), self.U)

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
    P, sigma, Qh = xp.linalg.svd(A, full_matrices=False)  # (m,k) (k,) (k,n)
    return LowRankMatrix(P[:, :r], xp.diag(sigma[:r]).astype(A.dtype), _H(Qh[:r, :]))


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
    """
    xp = array_module(A)
    eps = float(np.finfo(A.real.dtype).eps)
    Q = A
    for _ in range(2):
        G = _H(Q) @ Q  # (k, m) @ (m, k) -> (k, k)
        try:
            R = _H(xp.linalg.cholesky(G))  # upper triangular, R^* R = G
        except Exception:  # LinAlgError (NumPy) or its CuPy equivalent
            return None
        d = xp.abs(xp.diag(R))
        if not bool(xp.all(xp.isfinite(d))) or float(d.min()) <= 0.1 * eps**0.5 * float(d.max()):
            return None  # Gram matrix too ill-conditioned for CholeskyQR
        Q = Q @ xp.linalg.inv(R)  # (m, k) @ (k, k)
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


def augment_threshold(Q, A) -> float:
    """The rank threshold δ of :func:`orthonormalise_after`: δ = 10·√(q + k)·eps·‖A‖_F.

    Round-off leaves every exactly dependent direction of W = (I − QQ^*)A with a
    singular value of about 0.1–0.3·eps·‖A‖_F (measured for q + k up to 500, float32
    and float64); δ sits 30–700× above that, so such directions are never taken, and
    below any direction that carries information at working precision.
    """
    xp = array_module(Q, A)
    eps = float(np.finfo(xp.result_type(Q.dtype, A.dtype)).eps)
    return AUGMENT_RTOL_FACTOR * float(np.sqrt(Q.shape[1] + A.shape[1])) * eps * float(xp.linalg.norm(A))


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

    * ``"householder"``: Householder QR [Q | A] = [Q | Q2] R; the block
      R22 = Q2^* A (≤k×k) holds A's coordinates beyond span(Q). SVD
      R22 = P Σ Z^*; Ũ = Q2 P[:, :k'] with k' = #{σ_j > δ}. Ũ is a rotation of
      Householder columns, so orthonormal and ⟂ Q to eps whatever A is. If no
      direction is dropped, Ũ = Q2 (the trailing Q factor of [Q | A], as before).
    * ``"cholqr2"``: GEMMs only when W is well-conditioned and clearly of full
      rank: W by block classical Gram–Schmidt with re-orthogonalisation
      (W = A − QQ^*A, twice), then CholeskyQR2 of W. The rank is read from the
      eigenvalues of the Gram matrix W^*W (k×k): only if
      λ_min ≥ 100·k·eps·λ_max (so λ_min is accurate and κ(W) ≤ 0.1/√(k·eps),
      CholeskyQR2's stable range) and √λ_min > δ, else — and whenever
      CholeskyQR2's own guard fails — the Householder form above decides. (The
      diagonal of a Cholesky factor does not reveal rank: a rank-deficient W
      can pass that guard and return columns that overlap Q.)
    """
    xp = array_module(Q, A)
    q, k = Q.shape[1], A.shape[1]
    if method not in ORTHONORMALISERS:
        raise ValueError(f"unknown orthonormalisation {method!r}; expected one of {sorted(ORTHONORMALISERS)}")
    delta = augment_threshold(Q, A) if threshold is None else float(threshold)
    if method == "cholqr2" and q + k <= Q.shape[0] and k > 0:
        W = A - Q @ (_H(Q) @ A)  # (m, q) @ (q, m) @ (m, k) -> (m, k)
        W = W - Q @ (_H(Q) @ W)  # second pass (CGS2): W ⟂ Q to round-off
        lam = to_numpy(xp.linalg.eigvalsh(_H(W) @ W))  # (k,) ascending, of the (k, k) Gram matrix
        eps = float(np.finfo(W.real.dtype).eps)
        if lam[0] >= 100 * k * eps * lam[-1] and np.sqrt(max(lam[0], 0.0)) > delta:
            Q2 = _cholesky_qr2_or_none(W)  # (m, k)
            if Q2 is not None:
                return Q2
    Qf, R = xp.linalg.qr(xp.concatenate([Q, A], axis=1))  # (m, p) (p, q + k), p = min(m, q + k)
    Q2, R22 = Qf[:, q:], R[q:, q:]  # (m, p − q), (p − q, k): A's coordinates in Q2
    if R22.size == 0:
        return Q2
    P, sigma, _ = xp.linalg.svd(R22, full_matrices=False)  # (p−q, j) (j,) ; j = min(p − q, k)
    k1 = int(np.count_nonzero(to_numpy(sigma) > delta))  # numerical rank of W
    if k1 == Q2.shape[1]:
        return Q2  # nothing dropped: the Householder columns themselves
    return Q2 @ P[:, :k1]  # (m, p − q) @ (p − q, k1) -> (m, k1)


# --------------------------------------------------------------------------- #
# Tangent projector
# --------------------------------------------------------------------------- #
def tangent_project(Y: LowRankMatrix, Z):
    r"""Orthogonal projection of Z (m×n, dense) onto the tangent space of M_r at Y.

    .. math:: P(Y) Z = U U^* Z - U U^* Z V V^* + Z V V^*   \quad\text{([1], Lemma 4.1)}

    U and V must be orthonormal.
    """
    U, V = Y.U, Y.V
    UhZ = _H(U) @ Z  # (r, m) @ (m, n) -> (r, n)
    ZV = Z @ V  # (m, n) @ (n, r) -> (m, r)
    # U (U^*Z) - U ((U^*Z) V) V^* + (Z V) V^*: every product is (m|n)×r×(n|m)
    return U @ UhZ - U @ ((UhZ @ V) @ _H(V)) + ZV @ _H(V)


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
    """

    P: Any
    sigma: Any
    Q: Any
    rank: int
    discarded: np.ndarray
    theta: float

    @property
    def S(self):
        """The kept core diag(sigma) as an array of the input's backend."""
        xp = array_module(self.sigma)
        return xp.diag(self.sigma)

    @property
    def tail(self) -> float:
        """ℓ2 norm of the discarded singular values, ‖Y₁ − Ŷ₁‖_F."""
        return float(np.sqrt(np.sum(self.discarded**2)))


def truncate(
    S,
    *,
    theta: Optional[float] = None,
    tau: Optional[float] = None,
    rank: Optional[int] = None,
    r_min: int = 1,
    r_max: Optional[int] = None,
    compat_2022: bool = False,
) -> Truncation:
    r"""Truncate a core S (k×k) by SVD, as in the rank-adaptive BUG ([2], Sec. 3.1).

    With ``S = P \Sigma Q^*`` and :math:`\sigma_1 \ge \dots \ge \sigma_k`, the new
    rank is the smallest r1 with

    .. math:: \Big(\sum_{j > r_1} \sigma_j^2\Big)^{1/2} \le \vartheta,

    then clipped to ``[r_min, r_max]`` (and to k). Give exactly one of ``theta``
    (absolute ϑ), ``tau`` (relative: ϑ = τ‖σ‖₂, as in DLRT) or ``rank`` (fixed).

    ``compat_2022=True`` reproduces the public DLRT reference codes of 2022:
    their tail sum leaves out the last singular value (it runs over
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
    # checked before the SVD (which would fail with "SVD did not converge" or return NaN); one host sync
    if not bool(xp.isfinite(S).all()):
        raise ValueError(f"truncate: the core S ({S.shape[0]}×{S.shape[1]}) holds NaN or infinite entries")
    k1_in, k2_in = S.shape
    if compat_2022 and k1_in != k2_in:
        # The 2022 codes always had a square 2r×2r core (their augmentation appended completion columns);
        # a rank-revealing augmentation can give k1 ≠ k2. Pad with zeros to a square core, as if the
        # dropped directions were present with zero content, and cut P, Q back to the real rows below.
        kk = max(k1_in, k2_in)
        S = xp.concatenate([xp.concatenate([S, xp.zeros((k1_in, kk - k2_in), dtype=S.dtype)], axis=1),
                            xp.zeros((kk - k1_in, kk), dtype=S.dtype)], axis=0)
    P, sigma, Qh = xp.linalg.svd(S, full_matrices=False)  # (k1,k) (k,) (k,k2)
    s = to_numpy(sigma).astype(float)
    k = s.size
    if rank is not None:
        if rank < 1:
            raise ValueError(f"truncate: rank must be >= 1, got {rank}")
        th = float(np.sqrt(np.sum(s[rank:] ** 2)))
        r1 = min(rank, k)
    else:
        if theta is not None and not (np.isfinite(theta) and theta >= 0):
            raise ValueError(f"truncate: theta must be finite and >= 0, got {theta}")
        if tau is not None and not (np.isfinite(tau) and tau >= 0):
            raise ValueError(f"truncate: tau must be finite and >= 0, got {tau}")
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
    Q = Qh[:k2_in, :r1] if compat_2022 else _H(Qh[:r1, :])  # (k2, r1)
    return Truncation(P[:k1_in, :r1], sigma[:r1].astype(S.dtype), Q, r1, s[r1:].copy(), th)
