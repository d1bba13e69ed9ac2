r"""A small teacher–student network whose full gradient flow is computed to high accuracy.

The "soft committee machine" (Saad & Solla 1995): a student
f_W(x) = A tanh(W x) with a fixed read-out A (o×k) learns the outputs of a
teacher f_{W*} of the same form on N fixed inputs x_i ∈ ℝ^d. The trained
weight W (k×d, a few hundred entries) is the one matrix that DLRT keeps
low-rank; everything is float64. With X = [x_1 … x_N] (d×N) and the targets
T = A tanh(W* X) (o×N),

.. math:: E(W) = \frac{1}{2N}\|A\tanh(WX) - T\|_F^2,\qquad
          \nabla E(W) = \frac1N\big[(A^T R)\odot(1 - \tanh^2(WX))\big]X^T,\quad R = A\tanh(WX) - T,

the backward written next to the forward in :meth:`TeacherStudent.grad`.
The full (dense) gradient flow Ẇ = −∇E(W), W(0) = Y0, is integrated by scipy
``solve_ivp`` (DOP853, rtol = atol = 1e-13 by default) once, with dense output;
:meth:`TeacherStudent.flow` evaluates it at any t ∈ [0, T]. This plays the
role of the exact solution W(t) of [SZ22] Sec. 5 (the "full training" flow).

The teacher is W* = U* diag(s*) V*ᵀ (rank ``teacher_rank``) + ν·N with N
Gaussian, ‖N‖_F = 1: ``nu`` (= ν) moves the flow off the rank-r manifold; the
measured normal component ε is :meth:`TeacherStudent.epsilon`. E is not
globally L-smooth; :meth:`TeacherStudent.curvature` returns the largest
|eigenvalue| of the Hessian at a point (Lanczos on Hessian–vector products,
each a central difference of the analytic gradient — no QR/SVD inside), used
as the local L along a trajectory.

.. [SZ22] S. Schotthöfer, E. Zangrando, J. Kusch, G. Ceruti, F. Tudisco, NeurIPS 2022 (arXiv:2205.13571).
.. [SS95] D. Saad, S. A. Solla, "On-line learning in soft committee machines", Phys. Rev. E 52, 4225, 1995.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.integrate import solve_ivp
from scipy.sparse.linalg import LinearOperator, eigsh

from dlrt_ref.linalg import random_orthonormal
from dlrt_ref.lowrank import LowRankMatrix
from dlrt_ref.ode.problem import GradientFlow, dense_of

__all__ = ["TeacherStudent", "teacher_student"]

IVP_TOL = 1e-13


class TeacherStudent(GradientFlow):
    """E(W) = (1/2N)‖A tanh(W X) − T‖²_F with its full gradient flow W(t) (solve_ivp DOP853)."""

    def __init__(self, A, X, W_star, Y0: LowRankMatrix, T: float, rtol: float = IVP_TOL,
                 atol: float = IVP_TOL, params: Optional[dict] = None):
        self.A, self.X, self.W_star, self.Y0, self.T = A, X, W_star, Y0, float(T)
        self.targets = A @ np.tanh(W_star @ X)  # (o, k)(k, d)(d, N) -> (o, N)
        self.N = X.shape[1]
        self.rtol, self.atol = rtol, atol
        self.params = dict(params or {})
        self._sol = None
        self.ivp_evaluations = 0

    # ------------------------------------------------------- forward/backward
    def loss(self, W) -> float:
        """E(W) = (1/2N)‖A tanh(W X) − T‖²_F."""
        R = self.A @ np.tanh(dense_of(W) @ self.X) - self.targets  # (o, N)
        return 0.5 * float(np.sum(R * R)) / self.N

    def grad(self, W) -> np.ndarray:
        """∇E(W) (k×d), hand-written backward of :meth:`loss`."""
        H = np.tanh(dense_of(W) @ self.X)  # forward: (k, d)(d, N) -> (k, N)
        R = self.A @ H - self.targets  # forward: (o, k)(k, N) -> (o, N);  ∂E/∂(AH) = R / N
        dH = self.A.T @ R  # backward of A H: (k, o)(o, N) -> (k, N)
        dZ = dH * (1.0 - H * H)  # backward of tanh: tanh' = 1 − tanh²
        return (dZ @ self.X.T) / self.N  # backward of W X: (k, N)(N, d) -> (k, d)

    def field(self, t, Y) -> np.ndarray:
        """F(Y) = −∇E(Y), for :func:`dlrt_ref.integrators.integrate`."""
        return -self.grad(Y)

    def rhs(self, t, W):
        return -self.grad(W)

    # ------------------------------------------------------------ full flow
    def _solve(self):
        if self._sol is None:
            shape = self.shape

            def f(t, w):
                self.ivp_evaluations += 1
                return -self.grad(w.reshape(shape)).reshape(-1)

            sol = solve_ivp(f, (0.0, self.T), self.Y0.to_dense().reshape(-1), method="DOP853",
                            rtol=self.rtol, atol=self.atol, dense_output=True)
            if not sol.success:
                raise RuntimeError(f"teacher_student: solve_ivp failed: {sol.message}")
            self._sol = sol
        return self._sol

    def flow(self, t: float) -> np.ndarray:
        """W(t) of the full gradient flow (DOP853 dense output; exact end point at t = T)."""
        sol = self._solve()
        if not (0.0 <= t <= self.T):
            raise ValueError(f"teacher_student: t must be in [0, {self.T}], got {t}")
        w = sol.y[:, -1] if t == self.T else sol.sol(t)
        return np.asarray(w).reshape(self.shape)

    def curvature(self, W, rel_step: float = 1e-5) -> float:
        """Largest |eigenvalue| of the Hessian of E at W (Lanczos, central-difference HVPs)."""
        W = dense_of(W)
        shape, n = W.shape, W.size
        d = rel_step * max(1.0, float(np.linalg.norm(W)))

        def hvp(v):
            V = np.asarray(v).reshape(shape) / max(np.linalg.norm(v), 1e-300)
            Hv = (self.grad(W + d * V) - self.grad(W - d * V)) / (2 * d)
            return Hv.reshape(-1) * np.linalg.norm(v)

        op = LinearOperator((n, n), matvec=hvp, dtype=float)
        val = eigsh(op, k=1, which="LM", tol=1e-8, v0=np.ones(n) / np.sqrt(n), return_eigenvectors=False)
        return float(abs(val[0]))


def teacher_student(d: int = 24, k: int = 16, o: int = 4, n_samples: int = 128, r: int = 4,
                    teacher_rank: int = 4, nu: float = 0.0, scale: float = 2.0, init_scale: float = 0.5,
                    sigma_min: float = 0.1, T: float = 4.0, seed: int = 0,
                    rtol: float = IVP_TOL, atol: float = IVP_TOL) -> TeacherStudent:
    """Build the teacher–student problem (float64, seeded).

    Inputs x_i standard Gaussian (d entries), read-out A Gaussian / √k. Teacher W* = (scale/√d)·U* diag(linspace(1, 0.5))V*ᵀ
    (rank ``teacher_rank``) + ν N. Student start Y0 = (init_scale/√d)·U0 diag(logspace(0, log10 σ_min, r)) V0ᵀ.
    """
    if not (1 <= r <= min(k, d)) or not (1 <= teacher_rank <= min(k, d)):
        raise ValueError(f"teacher_student: ranks must be in [1, {min(k, d)}], got r={r}, teacher_rank={teacher_rank}")
    if not (np.isfinite(nu) and nu >= 0):
        raise ValueError(f"teacher_student: nu must be finite and >= 0, got {nu}")
    if not (0 < sigma_min <= 1):
        raise ValueError(f"teacher_student: sigma_min must be in (0, 1], got {sigma_min}")
    if not (np.isfinite(T) and T > 0):
        raise ValueError(f"teacher_student: T must be finite and > 0, got {T}")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((d, n_samples))  # (d, N)
    A = rng.standard_normal((o, k)) / np.sqrt(k)  # (o, k)
    Us, Vs = random_orthonormal(rng, k, teacher_rank), random_orthonormal(rng, d, teacher_rank)
    W_star = (scale / np.sqrt(d)) * (Us * np.linspace(1.0, 0.5, teacher_rank)) @ Vs.T  # (k, d)
    Nz = rng.standard_normal((k, d))
    W_star = W_star + nu * Nz / np.linalg.norm(Nz)
    U0, V0 = random_orthonormal(rng, k, r), random_orthonormal(rng, d, r)
    sig = np.logspace(0.0, np.log10(sigma_min), r) if r > 1 else np.array([1.0])
    Y0 = LowRankMatrix(U0, np.diag((init_scale / np.sqrt(d)) * sig), V0)
    return TeacherStudent(A, X, W_star, Y0, T, rtol, atol,
                          params=dict(d=d, k=k, o=o, n_samples=n_samples, r=r, teacher_rank=teacher_rank, nu=nu,
                                      scale=scale, init_scale=init_scale, sigma_min=sigma_min, T=T, seed=seed,
                                      rtol=rtol, atol=atol))
