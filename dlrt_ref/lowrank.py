"""Low-rank matrices Y = U S V^* (LowRankMatrix, best_rank_r) and the tangent projector.

Notation as in [1]_ and [2]_: ``U`` (m×r) and ``V`` (n×r) have orthonormal
columns, ``S`` (r×r) is invertible but not necessarily diagonal, and
``Y = U S V^*`` (``^*`` is the conjugate transpose, ``^T`` for real data).

The operations on the factors have modules of their own: orthonormal bases and the
rank-revealing augmentation in :mod:`dlrt_ref.orthonormal`, the truncation of a core
in :mod:`dlrt_ref.truncation`. Their public names are re-exported here for user code.

References
----------
.. [1] O. Koch, C. Lubich, "Dynamical low-rank approximation",
   SIAM J. Matrix Anal. Appl. 29(2), 434–454, 2007.
.. [2] G. Ceruti, J. Kusch, C. Lubich, "A rank-adaptive robust integrator for
   dynamical low-rank approximation", BIT Numer. Math. 62, 1149–1174, 2022.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dlrt_ref.backend import array_module, is_array, to_numpy
from dlrt_ref.linalg import FACTOR_DTYPES, H, svd_factors
# re-exported for user code; defined in dlrt_ref.orthonormal and dlrt_ref.truncation (import from there)
from dlrt_ref.orthonormal import ORTHONORMALISERS, augment_threshold, orthonormalise, orthonormalise_after
from dlrt_ref.truncation import TRUNCATION_SOLVERS, Truncation, gram_min_ratio, truncate

__all__ = [
    "LowRankMatrix",
    "best_rank_r",
    "tangent_project",
    "FACTOR_DTYPES",
    # re-exports (see above)
    "orthonormalise",
    "orthonormalise_after",
    "augment_threshold",
    "ORTHONORMALISERS",
    "truncate",
    "Truncation",
    "TRUNCATION_SOLVERS",
    "gram_min_ratio",
]


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

