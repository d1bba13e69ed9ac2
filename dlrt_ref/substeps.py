"""Sub-flows of the low-rank integrators and the sub-steps that solve them.

Every integrator in :mod:`dlrt_ref.integrators` reduces one step to small
matrix ODEs ("sub-flows") for K (m×r), L (n×r) or S (r×r):

.. math::

    \\dot K = F(t, K V_0^*) V_0, \\qquad
    \\dot L = F(t, U_0 L^*)^* U_0, \\qquad
    \\dot S = \\pm U^* F(t, U S V^*) V.

A :class:`SubFlow` says, for a value y of the sub-flow's variable, at which
low-rank point the field is needed (``point(y)``) and how the field value
becomes ẏ (``project(F)``). A *sub-step* advances a sub-flow over one step.

Sub-steps are generator functions: ``y1 = yield from substep(flow=..., t0=..., y0=..., h=...)``.
Each time a sub-step needs the field it yields a :class:`Request` (time t,
point Y, the sub-flows it serves) and receives the field value F at (t, Y).
:func:`drive` is the one loop that serves requests: it runs any number of
stage generators in lock-step and hands each round of requests to a
``serve(requests) -> fields`` callable — a plain function F(t, Y) for matrix
ODEs (:func:`dlrt_ref.integrators.run_stages`, :func:`solve_subflow`), or one
forward/backward pass of a whole network for all its layers at once
(:meth:`dlrt_ref.train.dlrt.DLRT.step`). In training the sub-step is the optimiser
(:mod:`dlrt_ref.train.optim`); here there are three:

``euler``         explicit Euler, y1 = y0 + h f(t0, y0) (an SGD step when F = −∇L);
``rk4``           the classical fourth-order Runge–Kutta method;
``exact``         the exact flow of a linear Sylvester-type sub-flow
                  ẏ = P y + y Q + R (time independent), from the exponential
                  of a block matrix (no inverse; exact also for singular systems).

Fields given as increments (:class:`dlrt_ref.ode.fields.Increments`) are
constant over each step, so Euler solves their sub-flows exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import scipy.linalg as sla

from dlrt_ref.backend import array_module, to_numpy
from dlrt_ref.operators import as_operator

__all__ = [
    "Request", "drive", "SubFlow", "request_slope", "euler", "rk4", "exact_linear", "SUBSTEPS", "get_substep",
    "solve_subflow",
]

FLOW_NAMES = frozenset({"K", "L", "S"})


@dataclass(frozen=True)
class Request:
    """A stage generator's request for the field F at the low-rank point Y at time t.

    Attributes
    ----------
    t : float
        Time at which the field is needed.
    Y : LowRankMatrix
        The point (factors not necessarily orthonormal).
    flows : frozenset of {"K", "L", "S"}
        The sub-flows whose right-hand sides this one field value serves: a
        sub-step asks for its own flow (``{"K"}``, ...); the BUG family asks
        once at Y0 for ``{"K", "L"}`` or ``{"K", "L", "S"}``. In training, the
        pass that serves an S-flow also updates the dense parameters.
    """

    t: float
    Y: Any
    flows: frozenset

    def __post_init__(self):
        flows = frozenset(self.flows)
        if not flows or not flows <= FLOW_NAMES:
            raise ValueError(f"Request flows must be a non-empty subset of {sorted(FLOW_NAMES)}, got {sorted(flows)}")
        object.__setattr__(self, "flows", flows)

    def serves(self, flow: str) -> bool:
        """Whether this request's field value is used for the sub-flow ``flow`` ("K", "L" or "S")."""
        return flow in self.flows


def drive(stages: Iterable, serve: Callable[[Sequence[Request]], Sequence[Any]]) -> tuple[list, int]:
    """Run stage generators in lock-step, serving each round of requests at once; the one driver.

    Every generator (an integrator's ``*_stages`` or a single sub-step) yields
    :class:`Request` objects and finally returns its result. In each round,
    every generator advances to its next request; ``serve(requests)`` returns
    one field value per request (in order), and each is sent back to its
    generator. A field function serves a round request by request; a network
    serves it with one forward/backward pass with every layer at its
    requested point. All generators must finish in the same round (they run
    the same method).

    Returns ``(results, rounds)``: the generators' return values and the number
    of rounds served (= field evaluations, or network passes).
    """
    gens = list(stages)
    fields: list = [None] * len(gens)  # send(None) starts a generator
    results: list = [None] * len(gens)
    rounds = 0
    while True:
        requests, finished = [], 0
        for i, g in enumerate(gens):
            try:
                requests.append(g.send(fields[i]))
            except StopIteration as stop:
                results[i], finished = stop.value, finished + 1
        if finished == len(gens):
            return results, rounds
        if finished:
            raise RuntimeError("stage generators finished in different rounds; lock-step needs the same method for all")
        fields = list(serve(requests))
        if len(fields) != len(requests):
            raise RuntimeError(f"serve returned {len(fields)} field values for {len(requests)} requests")
        rounds += 1


@dataclass
class SubFlow:
    """The ODE ẏ = project(F(t, point(y))) of one sub-step.

    Attributes
    ----------
    name : {"K", "L", "S"}
        Which factor the variable is (used to key optimiser state).
    point : callable y -> LowRankMatrix
        The low-rank matrix at which the field is evaluated for the value y.
    project : callable F -> array shaped like y
        ẏ from the field value F (e.g. ``F @ V0`` for the K-step).
    frame : tuple of arrays
        The orthonormal bases in which y is expressed (K = Y V0: ``(V0,)``;
        L = Y^* U0: ``(U0,)``; S = U^* Y V: ``(U, V)``). An optimiser uses it to
        carry its state into the next step's bases.
    linear : optional (P, Q, R)
        If given, ẏ = P y + y Q + R for all t (time independent).
    rhs0 : optional array
        ẏ at (t0, y0), when the caller already has it (saves a field evaluation).
    """

    name: str
    point: Callable[[Any], Any]
    project: Callable[[Any], Any]
    frame: tuple = ()
    linear: Optional[tuple] = None
    rhs0: Any = None


def request_slope(flow: SubFlow, t, y):
    """Generator: ẏ at (t, y), requesting the field at flow.point(y)."""
    F = yield Request(t=t, Y=flow.point(y), flows={flow.name})
    return flow.project(F)


def euler(flow: SubFlow, t0: float, y0, h: float):
    """Explicit Euler: y1 = y0 + h·f(t0, y0). One field evaluation (none if rhs0 is known)."""
    k1 = flow.rhs0 if flow.rhs0 is not None else (yield from request_slope(flow, t0, y0))
    return y0 + h * k1


def rk4(flow: SubFlow, t0: float, y0, h: float):
    """Classical RK4 (order 4) on one step; four field evaluations (three if rhs0 is known)."""
    k1 = flow.rhs0 if flow.rhs0 is not None else (yield from request_slope(flow, t0, y0))
    k2 = yield from request_slope(flow, t0 + h / 2, y0 + (h / 2) * k1)
    k3 = yield from request_slope(flow, t0 + h / 2, y0 + (h / 2) * k2)
    k4 = yield from request_slope(flow, t0 + h, y0 + h * k3)
    return y0 + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


def exact_linear(flow: SubFlow, t0: float, y0, h: float):
    r"""Exact flow of ẏ = P y + y Q + R (a×b, time independent) over a step of length h; no field evaluation.

    With z = y − y0, ż = P z + z Q + R' where R' = P y0 + y0 Q + R, z(0) = 0. The
    exponential of the block matrix (Van Loan's construction)

    .. math:: \exp\Big(h\begin{pmatrix} P & R' \\ 0 & -Q \end{pmatrix}\Big)
              = \begin{pmatrix} e^{hP} & X \\ 0 & e^{-hQ} \end{pmatrix},\qquad
              X = \int_0^h e^{(h-s)P} R' e^{-sQ}\,ds,

    gives z(h) = X e^{hQ} (differentiate Z = X e^{hQ}: Ż = P Z + Z Q + R'), so
    y(h) = y0 + X e^{hQ}: two ``scipy.linalg.expm`` calls of sizes (a+b) and b,
    no inverse and no Sylvester solve, hence exact to round-off also when P and
    −Q share eigenvalues (singular Sylvester operator), nearly do, or P = Q = 0
    (y0 + hR). Computed on the host, then moved back to the backend of y0.
    """
    if flow.linear is None:
        raise ValueError(
            "the 'exact' sub-step needs a linear (Sylvester-type) sub-flow; this field does not provide "
            "k/l/s_coefficients. Use 'euler' or 'rk4', or a field such as SylvesterField."
        )
    xp = array_module(y0)
    P, Q, R = (to_numpy(c) for c in flow.linear)
    y0h = to_numpy(y0)
    a, b = y0h.shape
    R1 = P @ y0h + y0h @ Q + R  # (a, b): ż at z = 0
    Z = np.zeros((a + b, a + b), dtype=np.result_type(P, Q, R1, float(h)))
    Z[:a, :a], Z[:a, a:], Z[a:, a:] = P, R1, -Q
    X = sla.expm(h * Z)[:a, a:]  # (a, b)
    y1 = y0h + X @ sla.expm(h * Q)  # (a, b) @ (b, b)
    return xp.asarray(y1.astype(np.result_type(y0h.dtype, y1.dtype)))
    yield  # pragma: no cover - makes this a generator function like the others


SUBSTEPS = {"euler": euler, "rk4": rk4, "exact": exact_linear}


def get_substep(substep):
    """A sub-step generator function from its name ("euler", "rk4", "exact") or itself."""
    if callable(substep):
        return substep
    try:
        return SUBSTEPS[substep]
    except KeyError:
        raise ValueError(f"unknown sub-step {substep!r}; expected one of {sorted(SUBSTEPS)}") from None


def solve_subflow(substep, flow: SubFlow, field, t0: float, y0, h: float):
    """Run one sub-step with a plain field function ``field(t, Y) -> F``; returns y1.

    Convenience for tests and tutorials that look at a single sub-flow.
    """
    (y1,), _ = drive([get_substep(substep)(flow=flow, t0=t0, y0=y0, h=h)],
                     serve=lambda requests: [as_operator(field(q.t, q.Y)) for q in requests])
    return y1
