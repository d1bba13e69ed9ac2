"""Sub-flows of the low-rank integrators and the sub-steps that solve them.

Every integrator in :mod:`dlrt_ref.integrators` reduces one step to small
matrix ODEs ("sub-flows") for K (m×r), L (n×r) or S (r×r):

.. math::

    \\dot K = F(t, K V_0^*) V_0, \\qquad
    \\dot L = F(t, U_0 L^*)^* U_0, \\qquad
    \\dot S = \\pm U^* F(t, U S V^*) V.

A :class:`SubFlow` holds the right-hand side of one of them; a *sub-step*
``substep(flow, t0, y0, h) -> y1`` advances it over one step. In training the
sub-step is the optimiser; here there are three:

``euler``         explicit Euler, y1 = y0 + h f(t0, y0) (an SGD step when F = −∇L);
``rk4``           the classical fourth-order Runge–Kutta method;
``exact_linear``  the exact flow of a linear Sylvester-type sub-flow
                  ẏ = P y + y Q + R (time independent), via
                  y(h) = e^{hP}(y0 − y*) e^{hQ} + y*, with P y* + y* Q + R = 0.

Fields that are increments (``Increments``) are constant over each step, so
Euler solves their sub-flows exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import scipy.linalg as sla

from dlrt_ref.backend import array_module, to_numpy

__all__ = ["SubFlow", "euler", "rk4", "exact_linear", "SUBSTEPS", "get_substep"]


@dataclass
class SubFlow:
    """The ODE ẏ = rhs(t, y) of one sub-step.

    Attributes
    ----------
    rhs : callable (t, y) -> array shaped like y
    linear : optional (P, Q, R)
        If given, rhs(t, y) = P y + y Q + R for all t (time independent).
    rhs0 : optional array
        rhs(t0, y0), when the caller already has it (saves one field evaluation).
    """

    rhs: Callable[[float, Any], Any]
    linear: Optional[tuple] = None
    rhs0: Any = None

    def initial_slope(self, t0, y0):
        return self.rhs0 if self.rhs0 is not None else self.rhs(t0, y0)


def euler(flow: SubFlow, t0: float, y0, h: float):
    """Explicit Euler: y1 = y0 + h·f(t0, y0)."""
    return y0 + h * flow.initial_slope(t0, y0)


def rk4(flow: SubFlow, t0: float, y0, h: float):
    """Classical RK4 (order 4) on one step."""
    k1 = flow.initial_slope(t0, y0)
    k2 = flow.rhs(t0 + h / 2, y0 + (h / 2) * k1)
    k3 = flow.rhs(t0 + h / 2, y0 + (h / 2) * k2)
    k4 = flow.rhs(t0 + h, y0 + h * k3)
    return y0 + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


def exact_linear(flow: SubFlow, t0: float, y0, h: float):
    r"""Exact flow of ẏ = P y + y Q + R over a step of length h.

    With the steady state :math:`y_*` solving :math:`P y_* + y_* Q = -R`
    (``scipy.linalg.solve_sylvester``), :math:`y(h) = e^{hP}(y_0 - y_*)e^{hQ} + y_*`.
    If the Sylvester equation is singular (P and −Q share an eigenvalue) the
    vectorised system is exponentiated instead. Computed on the host in the
    widest precision of the inputs, then moved back.
    """
    if flow.linear is None:
        raise ValueError(
            "exact_linear needs a linear (Sylvester-type) sub-flow; this field does not provide "
            "its coefficients. Use 'euler' or 'rk4', or a field with k/l/s_coefficients."
        )
    xp = array_module(y0)
    P, Q, R = (to_numpy(a) for a in flow.linear)
    y0h = to_numpy(y0)
    try:
        ystar = sla.solve_sylvester(P, Q, -R)
        ok = np.all(np.isfinite(ystar)) and np.allclose(P @ ystar + ystar @ Q, -R, atol=1e-10 * (1 + np.abs(R).max()))
    except (np.linalg.LinAlgError, ValueError):
        ok = False
    if ok:
        y1 = sla.expm(h * P) @ (y0h - ystar) @ sla.expm(h * Q) + ystar  # (a,a)(a,b)(b,b)
    else:  # vec(P y + y Q + R) = (I⊗P + Q^T⊗I) vec(y) + vec(R), column-major vec
        a, b = y0h.shape
        A = np.kron(np.eye(b), P) + np.kron(Q.T, np.eye(a))
        Z = np.zeros((a * b + 1, a * b + 1), dtype=np.result_type(A, R))
        Z[:-1, :-1], Z[:-1, -1] = A, R.reshape(-1, order="F")
        z = sla.expm(h * Z) @ np.concatenate([y0h.reshape(-1, order="F"), [1.0]])
        y1 = z[:-1].reshape((a, b), order="F")
    return xp.asarray(y1.astype(np.result_type(y0h.dtype, y1.dtype)))


SUBSTEPS = {"euler": euler, "rk4": rk4, "exact": exact_linear}


def get_substep(substep):
    """A sub-step callable from its name ("euler", "rk4", "exact") or itself."""
    if callable(substep):
        return substep
    try:
        return SUBSTEPS[substep]
    except KeyError:
        raise ValueError(f"unknown sub-step {substep!r}; expected one of {sorted(SUBSTEPS)}") from None
