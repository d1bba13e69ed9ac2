r"""Matrix least squares E(W) = ½‖X W Z − C‖²_F: an L-smooth loss with an exact gradient flow.

The problem on which the two DLRT theorems of [SZ22] can be checked with no
reference error at all:

.. math:: \nabla E(W) = X^T (X W Z - C) Z^T = A W B - D,\qquad A = X^T X,\ B = Z Z^T,\ D = X^T C Z^T,

so the Hessian is B ⊗ A (eigenvalues a_i b_j) and E is L-smooth with
L = ‖A‖₂‖B‖₂ exactly. The gradient flow Ẇ = −∇E(W) = −A W B + D is linear;
in the eigenbases A = P_a diag(a) P_aᵀ, B = P_b diag(b) P_bᵀ it decouples
entry-wise (W̃ = P_aᵀ W P_b, D̃ = P_aᵀ D P_b, λ_ij = a_i b_j):

.. math:: \tilde W_{ij}(t) = e^{-\lambda_{ij} t}\,\tilde W_{ij}(0) + \varphi_1(\lambda_{ij}, t)\,\tilde D_{ij},
          \qquad \varphi_1(\lambda, t) = (1 - e^{-\lambda t})/\lambda\ (= t \text{ at } \lambda = 0),

an exact reference W(t) at every t.

What can be set
---------------
* ``L`` — the smoothness constant: the spectrum of A is L·logspace(0, −log10 κ, m)
  (``kappa`` = κ), the spectrum of B lies in [1 − η, 1] with max 1, so ‖A‖‖B‖ = L.
* the normal component ε. With ``gamma = 0`` and ``eta = 0`` (B = I) the flow is
  W(t) = e^{−tA} W(0) e^{−t}: exactly rank r for a rank-r start, with rotating
  singular vectors (κ > 1) — ε = 0. Two knobs move it off the manifold:
  ``gamma`` = ‖D‖_F, a target C whose gradient term D is generic (full rank),
  and ``eta``, the spread of the spectrum of B, which makes the field A Y B
  leave the tangent space. The measured
  ε = max_t ‖(I − P(Y(t)))∇E(Y(t))‖_F along a trajectory is
  :meth:`LeastSquares.epsilon` (P the tangent projector of :mod:`dlrt_ref.lowrank`).
* σ_r(W(0)): Y0 = U0 diag(logspace(0, log10 σ_min, r)) V0ᵀ with random orthonormal U0, V0.

Design matrices: X = Q_x diag(√a) P_aᵀ (p×m, Q_x orthonormal columns),
Z = P_b diag(√b) Q_zᵀ (n×q), C = γ Ĉ with Ĉ Gaussian scaled so that
‖X^T Ĉ Z^T‖_F = 1. Everything is float64 and seeded.

References
----------
.. [SZ22] S. Schotthöfer, E. Zangrando, J. Kusch, G. Ceruti, F. Tudisco,
   "Low-rank lottery tickets: finding efficient low-rank neural networks via
   matrix differential equations", NeurIPS 2022 (arXiv:2205.13571), Sec. 5.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Optional

import numpy as np

from dlrt_ref.linalg import random_orthonormal
from dlrt_ref.lowrank import LowRankMatrix
from dlrt_ref.ode.problem import GradientFlow, Problem, dense_of

__all__ = ["LeastSquares", "least_squares", "dense_of"]


@dataclass
class LeastSquares(GradientFlow):
    """E(W) = ½‖X W Z − C‖²_F with its exact gradient flow; see the module docstring.

    Attributes: X (p×m), Z (n×q), C (p×q); a, Pa (eigenpairs of A = XᵀX),
    b, Pb (of B = ZZᵀ); D = XᵀCZᵀ (m×n); Y0 (rank-r LowRankMatrix); T; params.
    """

    X: np.ndarray
    Z: np.ndarray
    C: np.ndarray
    a: np.ndarray
    Pa: np.ndarray
    b: np.ndarray
    Pb: np.ndarray
    Y0: LowRankMatrix
    T: float
    params: dict = dc_field(default_factory=dict)

    def __post_init__(self):
        self.A = (self.Pa * self.a) @ self.Pa.T  # (m, m)
        self.B = (self.Pb * self.b) @ self.Pb.T  # (n, n)
        self.D = self.X.T @ self.C @ self.Z.T  # (m, p)(p, q)(q, n) -> (m, n)
        self._D_tilde = self.Pa.T @ self.D @ self.Pb  # (m, n)
        self._W0_tilde = self.Pa.T @ self.Y0.to_dense() @ self.Pb  # (m, n)
        self._lam = np.outer(self.a, self.b)  # λ_ij = a_i b_j, (m, n)

    # ---------------------------------------------------------------- the loss
    @property
    def lipschitz(self) -> float:
        """L = ‖A‖₂‖B‖₂, the largest Hessian eigenvalue: ‖∇E(W) − ∇E(W')‖ ≤ L‖W − W'‖."""
        return float(self.a.max() * self.b.max())

    def loss(self, W) -> float:
        """E(W) = ½‖X W Z − C‖²_F (W dense or LowRankMatrix)."""
        R = self.X @ dense_of(W) @ self.Z - self.C  # (p, m)(m, n)(n, q) -> (p, q)
        return 0.5 * float(np.sum(R * R))

    def grad(self, W) -> np.ndarray:
        """∇E(W) = A W B − D (m×n)."""
        return self.A @ dense_of(W) @ self.B - self.D  # (m, m)(m, n)(n, n)

    def field(self, t, Y) -> np.ndarray:
        """The gradient-flow field F(Y) = −∇E(Y), for :func:`dlrt_ref.integrators.integrate`."""
        return -self.grad(Y)

    def rhs(self, t, W):
        """The same field on dense matrices (solve_ivp cross-checks)."""
        return -self.grad(W)

    # ------------------------------------------------------------ exact flow
    def flow(self, t: float, W0=None) -> np.ndarray:
        """Exact W(t) of Ẇ = −∇E(W), W(0) = W0 (default Y0): entry-wise in the eigenbases."""
        W0t = self._W0_tilde if W0 is None else self.Pa.T @ dense_of(W0) @ self.Pb
        lt = self._lam * t
        phi = np.where(lt > 0, -np.expm1(-lt) / np.where(self._lam > 0, self._lam, 1.0), t)  # φ1(λ, t)
        Wt = np.exp(-lt) * W0t + phi * self._D_tilde  # (m, n)
        return self.Pa @ Wt @ self.Pb.T

    def problem(self) -> Problem:
        """The same problem as a :class:`dlrt_ref.ode.problem.Problem` (for the ode helpers)."""
        return Problem(name="least_squares", field=self.field, Y0=self.Y0, t0=0.0, T=self.T,
                       reference=self.flow, rhs=self.rhs, exact=True, lipschitz=self.lipschitz,
                       loss=self.loss, params=dict(self.params))


def least_squares(m: int = 40, n: int = 30, r: int = 4, *, L: float = 1.0, kappa: float = 10.0,
                  eta: float = 0.0, gamma: float = 0.0, sigma_min: float = 0.1, T: float = 2.0,
                  p: Optional[int] = None, q: Optional[int] = None, seed: int = 0) -> LeastSquares:
    """Build E(W) = ½‖X W Z − C‖² with smoothness ``L``, normal-component knobs ``gamma``, ``eta``.

    Parameters
    ----------
    m, n, r : W is m×n, the start Y0 has rank r.
    L : smoothness constant (= largest Hessian eigenvalue), > 0.
    kappa : condition number of A = XᵀX (≥ 1); κ > 1 makes the singular vectors rotate.
    eta : spread of the spectrum of B = ZZᵀ, in [0, 1): b ∈ [1 − η, 1]. η = 0: B = I.
    gamma : ‖D‖_F = ‖XᵀCZᵀ‖_F ≥ 0, the full-rank target term.
    sigma_min : σ_r(Y0) ∈ (0, 1]; σ_1(Y0) = 1.
    T : final time. p, q : rows of X and columns of Z (default m + 5, n + 5).
    """
    if not (1 <= r <= min(m, n)):
        raise ValueError(f"least_squares: rank r must be in [1, {min(m, n)}], got {r}")
    if not (np.isfinite(L) and L > 0):
        raise ValueError(f"least_squares: L must be finite and > 0, got {L}")
    if not (np.isfinite(kappa) and kappa >= 1):
        raise ValueError(f"least_squares: kappa must be >= 1, got {kappa}")
    if not (0 <= eta < 1):
        raise ValueError(f"least_squares: eta must be in [0, 1), got {eta}")
    if not (np.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"least_squares: gamma must be finite and >= 0, got {gamma}")
    if not (np.isfinite(sigma_min) and 0 < sigma_min <= 1):
        raise ValueError(f"least_squares: sigma_min must be in (0, 1], got {sigma_min}")
    if not (np.isfinite(T) and T > 0):
        raise ValueError(f"least_squares: T must be finite and > 0, got {T}")
    p = m + 5 if p is None else p
    q = n + 5 if q is None else q
    if p < m or q < n:
        raise ValueError(f"least_squares: need p >= m and q >= n, got p={p}, q={q}")
    rng = np.random.default_rng(seed)
    a = L * np.logspace(0.0, -np.log10(kappa), m)  # eigenvalues of A, max = L
    b = np.linspace(1.0, 1.0 - eta, n)  # eigenvalues of B, max = 1
    Pa, Pb = random_orthonormal(rng, m, m), random_orthonormal(rng, n, n)
    X = random_orthonormal(rng, p, m) @ (np.sqrt(a)[:, None] * Pa.T)  # (p, m)(m, m) -> (p, m)
    Z = (Pb * np.sqrt(b)) @ random_orthonormal(rng, q, n).T  # (n, n)(n, q) -> (n, q)
    C_hat = rng.standard_normal((p, q))
    C = gamma * C_hat / np.linalg.norm(X.T @ C_hat @ Z.T)  # so that ‖D‖_F = γ
    U0, V0 = random_orthonormal(rng, m, r), random_orthonormal(rng, n, r)
    sig = np.logspace(0.0, np.log10(sigma_min), r) if r > 1 else np.array([1.0])
    Y0 = LowRankMatrix(U0, np.diag(sig), V0)
    return LeastSquares(X, Z, C, a, Pa, b, Pb, Y0, float(T),
                        params=dict(m=m, n=n, r=r, L=L, kappa=kappa, eta=eta, gamma=gamma,
                                    sigma_min=sigma_min, T=T, p=p, q=q, seed=seed))
