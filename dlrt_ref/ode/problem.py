"""The :class:`Problem` type: a matrix ODE with a rank-r start and a reference solution; one guarded run.

Kept apart from the constructors (:mod:`dlrt_ref.ode.problems`,
:mod:`dlrt_ref.ode.schrodinger`, :mod:`dlrt_ref.ode.least_squares`) so that each
of them imports it without importing the others.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any, Callable, Optional

import numpy as np

from dlrt_ref.integrators import ADAPTIVE, integrate
from dlrt_ref.lowrank import LowRankMatrix, best_rank_r, tangent_project

__all__ = ["Problem", "RankStart", "GradientFlow", "dense_of", "best_error_of", "run_method", "error_or_none"]


def _frob(Y) -> float:
    """‖Y‖_F of a dense array or a LowRankMatrix (‖S‖_F when U, V are orthonormal)."""
    if isinstance(Y, LowRankMatrix):
        return float(np.linalg.norm(Y.S))
    return float(np.linalg.norm(Y))


def best_error_of(A, r: int) -> float:
    """‖A − best rank-r approximation of A‖_F = (Σ_{j>r} σ_j(A)²)^{1/2} (Eckart–Young)."""
    s = np.linalg.svd(np.asarray(A), compute_uv=False)
    return float(np.sqrt(np.sum(s[r:] ** 2)))


def dense_of(Y):
    """Y as a dense array (LowRankMatrix → U S Vᵀ)."""
    return Y.to_dense() if isinstance(Y, LowRankMatrix) else np.asarray(Y)


class RankStart:
    """``shape`` and ``rank`` of a problem's rank-r start ``Y0`` (a :class:`LowRankMatrix` attribute)."""

    Y0: LowRankMatrix

    @property
    def shape(self) -> tuple:
        return self.Y0.shape

    @property
    def rank(self) -> int:
        return self.Y0.rank


class GradientFlow(RankStart):
    """A gradient flow Ẇ = −∇E(W) on [0, T] whose full solution ``flow(t)`` is known or computed.

    Subclasses give ``Y0``, ``T``, ``flow(t)`` (dense W(t)) and ``grad(W)`` (∇E, dense);
    this adds the reference, the errors and the measured ε of [SZ22] Thm. 1.
    """

    T: float

    def flow(self, t: float) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def grad(self, W) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def reference(self, t: float) -> np.ndarray:
        return self.flow(t)

    def error(self, Y, t: float) -> float:
        """‖Y − W(t)‖_F."""
        return float(np.linalg.norm(dense_of(Y) - self.flow(t)))

    def best_error(self, t: float, r: Optional[int] = None) -> float:
        """‖W(t) − best rank-r approximation‖_F (Eckart–Young), the floor of any rank-r method."""
        return best_error_of(self.flow(t), self.rank if r is None else r)

    def normal_component(self, Y: LowRankMatrix) -> float:
        """‖(I − P(Y))∇E(Y)‖_F, P(Y) the tangent projector at Y (orthonormal U, V)."""
        G = self.grad(Y)
        return float(np.linalg.norm(G - tangent_project(Y, G)))

    def epsilon(self, times=None, r: Optional[int] = None) -> float:
        """Measured ε = max_t ‖(I − P(Y(t)))∇E(Y(t))‖_F, Y(t) the best rank-r approximation of W(t).

        ``times`` defaults to 21 equispaced points of [0, T]. The max over a
        numerical trajectory Y_n is :meth:`normal_component` at each Y_n.
        """
        times = np.linspace(0.0, self.T, 21) if times is None else times
        r = self.rank if r is None else r
        return max(self.normal_component(best_rank_r(self.flow(t), r)) for t in times)


@dataclass
class Problem(RankStart):
    """A matrix ODE Ẏ = F(t, Y) on [t0, T] with a rank-r start and a reference.

    Attributes
    ----------
    name : str
    field : callable ``(t, Y: LowRankMatrix) -> array | operator``, or an :class:`~dlrt_ref.ode.fields.Increments`
    Y0 : LowRankMatrix — orthonormal U0, V0, rank r.
    t0, T : float
    reference : callable t -> dense array, the exact solution A(t) (or solve_ivp at 1e-10).
    rhs : callable (t, Y dense) -> dense, the field on full matrices (for solve_ivp cross-checks);
        None for problems given only as a trajectory.
    exact : bool — whether ``reference`` is exact (closed form / exponential) rather than solve_ivp.
    lipschitz : float or None — smoothness constant L of the loss (``lsq``).
    loss, energy : optional callables Y -> float (Y dense or LowRankMatrix).
    params : dict — the constructor's arguments, for reports.
    """

    name: str
    field: Any
    Y0: LowRankMatrix
    t0: float
    T: float
    reference: Callable[[float], Any]
    rhs: Optional[Callable] = None
    exact: bool = True
    lipschitz: Optional[float] = None
    loss: Optional[Callable] = None
    energy: Optional[Callable] = None
    params: dict = dc_field(default_factory=dict)
    _best: Optional[Callable] = None

    def norm(self, Y) -> float:
        """Frobenius norm of Y (dense or LowRankMatrix with orthonormal factors)."""
        return _frob(Y)

    def best_error(self, t: float, r: int) -> float:
        """‖A(t) − best rank-r approximation of A(t)‖_F, the floor for any rank-r method."""
        if self._best is not None:
            return float(self._best(t, r))
        return best_error_of(self.reference(t), r)

    def error(self, Y, t: float) -> float:
        """‖Y − A(t)‖_F for Y dense or LowRankMatrix."""
        Yd = Y.to_dense() if isinstance(Y, LowRankMatrix) else Y
        return float(np.linalg.norm(Yd - self.reference(t)))

    @property
    def linear(self) -> bool:
        """Whether the field provides Sylvester coefficients (sub-step "exact" works)."""
        return hasattr(self.field, "k_coefficients")


def run_method(P, method, n_steps, substep="euler", callback=None, **options):
    """Integrate problem ``P`` with ``method``; returns the Solution, or None if it broke down.

    Fixed-rank use of the adaptive methods: pass nothing (``integrate`` keeps
    the rank of Y0). The naive method may overflow or meet a singular S; such
    runs return None (plotted as "diverged").
    """
    if method not in ADAPTIVE:
        options = {k: v for k, v in options.items() if k not in ("theta", "tau", "rank", "r_min", "r_max")}
    with np.errstate(all="ignore"):
        try:
            sol = integrate(P.field, P.Y0, P.t0, P.T, n_steps, method, substep=substep, callback=callback, **options)
        except (np.linalg.LinAlgError, ValueError, FloatingPointError):
            return None
        if not np.all(np.isfinite(sol.Y.S)):
            return None
    return sol


def error_or_none(P, sol):
    """‖Y − A(T)‖_F of a run's end point, or None for a run that broke down (or a non-finite error)."""
    if sol is None:
        return None
    with np.errstate(all="ignore"):
        e = P.error(sol.Y, P.T)
    return float(e) if np.isfinite(e) else None
