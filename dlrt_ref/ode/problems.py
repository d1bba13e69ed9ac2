"""Matrix ODE test problems with exact (or solve_ivp) references.

A :class:`~dlrt_ref.ode.problem.Problem` bundles a field for :func:`dlrt_ref.integrators.integrate`,
a rank-r initial value Y0, the time interval [t0, T] and a reference
``reference(t)`` for the exact solution A(t) (dense). Constructors, all
seeded (host NumPy ``default_rng(seed)``):

``toy``          A(t) = e^{tW1} e^t D e^{tW2}, given through its increments ([LO14] Sec. 5, [CL22] Sec. 5.1).
``sylvester``    Ẏ = A Y + Y B + εC with prescribed σ_r(Y0) ([KLW16]; exact flow).
``schrodinger``  iẎ = ½(DY + YDᵀ) + V_cos Y V_cos ([CKL22] Sec. 6.1, Eq. (23)); see :mod:`.schrodinger`.
``lsq``          gradient flow of ½‖M W − B‖²_F, an L-smooth loss ([SZ22], DLRT descent).

``PROBLEMS`` maps these names to their constructors.

References
----------
.. [LO14] C. Lubich, I. V. Oseledets, BIT 54, 171–188, 2014.
.. [CL22] G. Ceruti, C. Lubich, "An unconventional robust integrator for
   dynamical low-rank approximation", BIT 62, 23–44, 2022.
.. [CKL22] G. Ceruti, J. Kusch, C. Lubich, "A rank-adaptive robust integrator
   for dynamical low-rank approximation", BIT 62, 1149–1174, 2022.
.. [KLW16] E. Kieri, C. Lubich, H. Walach, "Discretized dynamical low-rank
   approximation in the presence of small singular values", SIAM J. Numer.
   Anal. 54(2), 1020–1038, 2016.
.. [SZ22] S. Schotthöfer, E. Zangrando, J. Kusch, G. Ceruti, F. Tudisco,
   "Low-rank lottery tickets: finding efficient low-rank neural networks via
   matrix differential equations", NeurIPS 2022.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from dlrt_ref.linalg import random_orthonormal
from dlrt_ref.lowrank import LowRankMatrix, best_rank_r
from dlrt_ref.ode.fields import Increments, SylvesterField
from dlrt_ref.ode.problem import Problem, best_error_of
from dlrt_ref.ode.reference import NormalSylvesterFlow
from dlrt_ref.ode.schrodinger import schrodinger

__all__ = ["Problem", "toy", "sylvester", "lsq", "schrodinger", "PROBLEMS", "make_problem",
           "random_orthonormal", "random_skew", "best_error_of"]


# --------------------------------------------------------------------------- #
# Random building blocks (host, seeded)
# --------------------------------------------------------------------------- #
def random_skew(rng, n: int):
    """A random real skew-symmetric W = (X − Xᵀ) normalised to unit spectral norm ‖W‖₂ = 1.

    [LO14] and [CL22] only say "randomly generated"; without a normalisation
    ‖X − Xᵀ‖₂ ≈ 2√(2n) ≈ 28 for n = 100, the singular vectors of A(t) rotate
    ~28 times faster, and the time-discretisation error of a first-order
    method at h = 0.01 is then comparable to the rank-10 best-approximation
    error. With ‖W‖₂ = 1 the rotation speed is O(1) and independent of n.
    """
    X = rng.standard_normal((n, n))
    W = X - X.T
    return W / np.linalg.norm(W, 2)


# --------------------------------------------------------------------------- #
# Toy problem [LO14], [CL22]
# --------------------------------------------------------------------------- #
def toy(N: int = 100, r: int = 10, seed: int = 0, T: float = 1.0, increments: bool = True) -> Problem:
    """The explicit trajectory A(t) = e^{tW1} e^t D e^{tW2} ([LO14] Sec. 5; [CL22] Sec. 5.1).

    W1, W2 are random skew-symmetric N×N with ‖W‖₂ = 1 (:func:`random_skew`),
    D = diag(2^{-i}), i = 1..N, t ∈ [0, T] = [0, 1]. A(t) is known exactly;
    e^{tW} is evaluated through the eigen-decomposition of the Hermitian iW.
    Since e^{tW1}, e^{tW2} are orthogonal, the singular values of A(t) are
    e^t 2^{-i}, so the best rank-r error is known in closed form:

    .. math:: \\|A(t) - \\mathcal T_r(A(t))\\|_F = e^t \\Big(\\sum_{i>r} 4^{-i}\\Big)^{1/2}.

    Y0 is the best rank-r approximation of A(0) = D.

    With ``increments=True`` (default) the field is :class:`Increments` (A):
    each step sees (A(t0+h) − A(t0))/h, so Euler sub-steps solve the
    sub-flows exactly and the error shows the low-rank integrator alone —
    the setting of [LO14]/[CL22], where the integrators are exact for
    trajectories of rank r. With ``increments=False`` the field is the
    derivative Ȧ(t) = W1 A + A + A W2, and an Euler sub-step adds an O(h)
    error (≈ 0.08 at h = 0.01) that swamps the best-approximation level.
    """
    rng = np.random.default_rng(seed)
    W1, W2 = random_skew(rng, N), random_skew(rng, N)
    w1, Q1 = NormalSylvesterFlow.skew_eig(W1)
    w2, Q2 = NormalSylvesterFlow.skew_eig(W2)
    d = 2.0 ** -np.arange(1, N + 1)

    def A(t):
        # e^{tW} = Q diag(e^{t w}) Q^*:  (N, N) each
        E1 = (Q1 * np.exp(t * w1)[None, :]) @ Q1.conj().T
        E2 = (Q2 * np.exp(t * w2)[None, :]) @ Q2.conj().T
        return ((E1.real * (np.exp(t) * d)[None, :]) @ E2.real)  # E1 (e^t D) E2

    def Adot(t, Y=None):
        At = A(t)
        return W1 @ At + At + At @ W2  # d/dt e^{tW1} e^t D e^{tW2}

    def best(t, rr):
        return float(np.exp(t) * np.sqrt(np.sum(d[rr:] ** 2)))

    return Problem(
        name="toy", field=Increments(A) if increments else Adot, Y0=best_rank_r(A(0.0), r),
        t0=0.0, T=float(T), reference=A, rhs=None, exact=True,
        params=dict(N=N, r=r, seed=seed, T=T, increments=increments), _best=best,
    )


# --------------------------------------------------------------------------- #
# Sylvester problem with small singular values [KLW16]
# --------------------------------------------------------------------------- #
def sylvester(m: int = 100, n: int = 100, r: int = 10, sigma_min: float = 1e-3, eps: float = 1e-3,
              seed: int = 0, T: float = 1.0, delta: float = 0.0) -> Problem:
    """Ẏ = A Y + Y B + εC with σ_r(Y0) = ``sigma_min`` (the robustness test of [KLW16]).

    A = W_A − δI (m×m) and B = W_B (n×n) with W random skew-symmetric,
    ‖W‖₂ = 1; C Gaussian with ‖C‖_F = 1. For ε = 0 the exact flow
    e^{tA} Y0 e^{tB} stays on the rank-r manifold; εC is the small normal
    component of [KLW16], whose error bound c(ε + h) holds independently of
    the singular values of Y — unlike the naive factor ODEs, whose step size
    must be ≲ σ_r. Y0 = U0 Σ0 V0ᵀ with random orthonormal U0, V0 and
    Σ0 = diag(logspace(0, log10 σ_min, r)), so σ_1 = 1 and σ_r = σ_min.

    The field is a :class:`~dlrt_ref.ode.fields.SylvesterField`, so the
    ``exact`` sub-step applies. The reference is exact
    (:class:`~dlrt_ref.ode.reference.NormalSylvesterFlow`: A, B are normal).
    """
    if not (1 <= r <= min(m, n)):
        raise ValueError(f"sylvester: rank must be in [1, {min(m, n)}], got {r}")
    if not (np.isfinite(sigma_min) and 0 < sigma_min <= 1):
        raise ValueError(f"sylvester: sigma_min must be in (0, 1], got {sigma_min}")
    rng = np.random.default_rng(seed)
    WA, WB = random_skew(rng, m), random_skew(rng, n)
    C = rng.standard_normal((m, n))
    C /= np.linalg.norm(C)
    A, B = WA - delta * np.eye(m), WB
    U0, V0 = random_orthonormal(rng, m, r), random_orthonormal(rng, n, r)
    sig = np.logspace(0.0, np.log10(sigma_min), r) if r > 1 else np.array([1.0])
    Y0 = LowRankMatrix(U0, np.diag(sig), V0)
    a, Qa = NormalSylvesterFlow.skew_eig(WA)
    b, Qb = NormalSylvesterFlow.skew_eig(WB)
    ref = NormalSylvesterFlow(a - delta, Qa, b, Qb, eps * C, Y0.to_dense(), 0.0, real=True)
    field = SylvesterField(A, B, eps * C)
    return Problem(
        name="sylvester", field=field, Y0=Y0, t0=0.0, T=float(T), reference=ref,
        rhs=lambda t, Y: A @ Y + Y @ B + eps * C, exact=True,
        params=dict(m=m, n=n, r=r, sigma_min=sigma_min, eps=eps, seed=seed, T=T, delta=delta),
    )


# --------------------------------------------------------------------------- #
# Least-squares gradient flow [SZ22]
# --------------------------------------------------------------------------- #
def lsq(m: int = 60, n: int = 40, r: int = 5, seed: int = 0, T: float = 5.0, p: Optional[int] = None,
        target_rank: Optional[int] = None, noise: float = 1e-2) -> Problem:
    """Gradient flow Ẇ = −∇L(W) of L(W) = ½‖M W − B‖²_F, the matrix least-squares loss.

    M (p×m, p = 2m by default) is Gaussian scaled by 1/√p, so G = MᵀM has
    spectrum in ≈ [0.09, 2.9]; B = M W* + noise·E with W* of rank
    ``target_rank`` (default 2r) and E Gaussian, ‖E‖_F = 1. Then

    .. math:: -\\nabla L(W) = -G W + M^T B, \\qquad L\\text{ is } L\\text{-smooth with } L = \\|G\\|_2 = \\|M\\|_2^2,

    a :class:`~dlrt_ref.ode.fields.SylvesterField` (A = −G, B = 0, C = MᵀB),
    so sub-step "exact" works and the reference is exact (G symmetric).
    Y0 is a random rank-r matrix with ‖Y0‖_F = 1.

    Descent ([SZ22] Thm. 2): explicit-Euler RA-BUG decreases L when h ≤ 1/L up to
    the truncation term. Note: L is quadratic, so a projected gradient step
    still decreases L for every h < 2/L; a monotonicity *failure* needs
    h > 2/L (h = 1.9/L only loses the guaranteed decrease rate).
    """
    if not (1 <= r <= min(m, n)):
        raise ValueError(f"lsq: rank must be in [1, {min(m, n)}], got {r}")
    rng = np.random.default_rng(seed)
    p = 2 * m if p is None else p
    k = min(2 * r, m, n) if target_rank is None else target_rank
    M = rng.standard_normal((p, m)) / np.sqrt(p)
    W_star = random_orthonormal(rng, m, k) @ np.diag(np.linspace(1.0, 0.1, k)) @ random_orthonormal(rng, n, k).T
    E = rng.standard_normal((p, n))
    Bt = M @ W_star + noise * E / np.linalg.norm(E)  # (p, n)
    G = M.T @ M  # (m, m)
    g, Qg = np.linalg.eigh(G)
    U0, V0 = random_orthonormal(rng, m, r), random_orthonormal(rng, n, r)
    Y0 = LowRankMatrix(U0, np.diag(np.ones(r) / np.sqrt(r)), V0)
    MtB = M.T @ Bt  # (m, n)
    ref = NormalSylvesterFlow(-g, Qg, np.zeros(n), np.eye(n), MtB, Y0.to_dense(), 0.0, real=True)

    def loss(W):
        Wd = W.to_dense() if isinstance(W, LowRankMatrix) else W
        return 0.5 * float(np.linalg.norm(M @ Wd - Bt) ** 2)  # (p, m)(m, n)

    return Problem(
        name="lsq", field=SylvesterField(-G, np.zeros((n, n)), MtB), Y0=Y0, t0=0.0, T=float(T),
        reference=ref, rhs=lambda t, W: -G @ W + MtB, exact=True, lipschitz=float(g.max()), loss=loss,
        params=dict(m=m, n=n, r=r, seed=seed, T=T, p=p, target_rank=k, noise=noise),
    )


PROBLEMS: dict[str, Callable[..., Problem]] = {
    "toy": toy, "sylvester": sylvester, "schrodinger": schrodinger, "lsq": lsq,
}


def make_problem(name: str, **kwargs) -> Problem:
    """``PROBLEMS[name](**kwargs)`` with a clear error for unknown names."""
    try:
        ctor = PROBLEMS[name]
    except KeyError:
        raise ValueError(f"unknown problem {name!r}; expected one of {sorted(PROBLEMS)}") from None
    return ctor(**kwargs)
