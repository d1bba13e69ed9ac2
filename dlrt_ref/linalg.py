"""Small linear-algebra helpers shared by the core, ``nn/`` and ``ode/``.

* :func:`H`: the conjugate transpose Aᴴ (= Aᵀ for real A), the papers' ``*``;
* :func:`random_orthonormal`: a seeded Haar-random n×r matrix with orthonormal columns;
* :func:`svd_factors`: the rank-r factors (U, S, V) of a truncated SVD, A ≈ U S Vᴴ;
* ``FACTOR_DTYPES``: the dtypes accepted for low-rank factors and cores.

Each works on the array module of its input (NumPy or CuPy) except
:func:`random_orthonormal`, which draws on the host (random initial data is
always drawn on the host, see :mod:`dlrt_ref.backend`).
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.backend import array_module

__all__ = ["H", "random_orthonormal", "svd_factors", "FACTOR_DTYPES"]

# the dtypes of LowRankMatrix factors and of truncate's cores: those the QR/SVD/Cholesky kernels support
FACTOR_DTYPES = ("float32", "float64", "complex64", "complex128")


def H(A):
    """Aᴴ, the conjugate transpose (Aᵀ for real A)."""
    return A.conj().T


def random_orthonormal(rng, n: int, r: int, complex_: bool = False) -> np.ndarray:
    """Q (n×r) with orthonormal columns: QR of a Gaussian matrix, with the signs (phases) of diag(R) removed.

    With that fix Q is unique, and Haar-distributed (Mezzadri 2007). ``rng``: a
    ``numpy.random.Generator`` or a seed.
    """
    rng = np.random.default_rng(rng)
    X = rng.standard_normal((n, r))  # (n, r)
    if complex_:
        X = X + 1j * rng.standard_normal((n, r))
    Q, R = np.linalg.qr(X)  # (n, r), (r, r)
    d = np.diag(R)
    return Q * (d / np.abs(d))[None, :]


def svd_factors(A, r: int):
    """(U, S, V) with A ≈ U S Vᴴ the best rank-r approximation (truncated SVD; Eckart–Young).

    U (m×r) and V (n×r) have orthonormal columns, S = diag(σ₁..σ_r) (r×r) in A's dtype.
    """
    xp = array_module(A)
    P, sigma, Qh = xp.linalg.svd(A, full_matrices=False)  # (m, p), (p,), (p, n); p = min(m, n)
    return P[:, :r], xp.diag(sigma[:r]).astype(A.dtype), H(Qh[:r, :])  # (m, r), (r, r), (n, r)
