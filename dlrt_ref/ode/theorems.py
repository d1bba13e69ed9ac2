r"""The two DLRT theorems of [SZ22] as measurements: a per-step descent check and error fits.

Both work on any problem object with ``Y0``, ``loss(W)``, ``grad(W)`` and
``field(t, Y)`` (:class:`~dlrt_ref.ode.least_squares.LeastSquares`,
:class:`~dlrt_ref.ode.network_flow.TeacherStudent`); the integrator is used
only through its public step functions.

Descent ([SZ22] Thm. 2). One explicit-Euler step of the rank-adaptive BUG
integrator from Y0 with G = ∇E(Y0) builds the augmented bases Û ⊇ [U0, GV0],
V̂ ⊇ [V0, GᵀU0] and, before truncation, Ŷ1 = Y0 − h ÛÛᵀ G V̂V̂ᵀ. Since the
tangent projection P(Y0)G = U0U0ᵀG + GV0V0ᵀ − U0U0ᵀGV0V0ᵀ lies in the range of
P̂: Z ↦ ÛÛᵀZV̂V̂ᵀ, ‖P̂G‖ ≥ ‖P(Y0)G‖, and L-smoothness gives, for h ≤ 2/L,
E(Ŷ1) ≤ E(Y0) − h(1 − Lh/2)‖P̂G‖² ≤ E(Y0) − h(1 − Lh/2)‖P(Y0)G‖². The
truncation Y1 of Ŷ1 adds at most β‖Y1 − Ŷ1‖ with β = max of ‖∇E‖ on the
segment [Ŷ1, Y1] (mean-value theorem), and ‖Y1 − Ŷ1‖ ≤ ϑ. Hence

.. math:: E(Y_1) \le E(Y_0) - h\,(1 - Lh/2)\,\|P(Y_0)\nabla E(Y_0)\|^2 + \beta\,\|Y_1 - \hat Y_1\|,
          \qquad \|Y_1 - \hat Y_1\| \le \vartheta .

:func:`descent_check` evaluates both sides at every step. For h > 2/L the
factor 1 − Lh/2 is negative, P̂ ⊋ P(Y0) turns the inequality the wrong way,
and descent is lost: the negative control.

Approximation ([SZ22] Thm. 1): ‖W(t_n) − Y_n‖ ≤ c1 ε + c2 h + c3 ϑ/h, with
ε the normal component of the field along the trajectory, c_i independent of
the singular values. :func:`loglog_slope` and :func:`fit_bound` turn measured
errors into slopes and constants.

.. [SZ22] S. Schotthöfer, E. Zangrando, J. Kusch, G. Ceruti, F. Tudisco,
   "Low-rank lottery tickets: finding efficient low-rank neural networks via
   matrix differential equations", NeurIPS 2022 (arXiv:2205.13571), Sec. 5.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Optional, Sequence

import numpy as np
from scipy.optimize import linprog, nnls

from dlrt_ref.integrators import ra_bug_step
from dlrt_ref.lowrank import LowRankMatrix, tangent_project

__all__ = ["DescentStep", "DescentRun", "descent_check", "loglog_slope", "fit_bound"]


@dataclass
class DescentStep:
    """One step of :func:`descent_check`; all numbers are floats (JSON-ready via ``vars``)."""

    n: int
    loss0: float  # E(Y0)
    loss1: float  # E(Y1)
    loss_hat: float  # E(Ŷ1), before truncation
    proj_grad_sq: float  # ‖P(Y0)∇E(Y0)‖²
    decrease: float  # h(1 − Lh/2)‖P(Y0)∇E(Y0)‖² (negative for h > 2/L)
    dist: float  # ‖Y1 − Ŷ1‖_F, measured
    tail: float  # the truncation's discarded tail, ‖σ_discarded‖₂
    theta: float  # ϑ applied by the truncation
    beta: float  # max ‖∇E‖ on the segment [Ŷ1, Y1]
    bound: float  # E(Y0) − decrease + β·dist
    slack: float  # bound − E(Y1) (≥ 0: the inequality holds)
    rel_slack: float  # slack / (|decrease| + β·dist)
    rank: int  # rank of Y1


@dataclass
class DescentRun:
    """The steps of one :func:`descent_check` run and their summary."""

    h: float
    L: float
    steps: list = dc_field(default_factory=list)
    iterates: list = dc_field(default_factory=list)  # Y_0, Y_1, …, Y_n (LowRankMatrix)

    @property
    def holds(self) -> bool:
        """Whether the inequality held at every step (up to the round-off allowance ``tol`` of each step)."""
        return all(s.slack >= -s_tol for s, s_tol in zip(self.steps, self.tolerances))

    @property
    def tolerances(self) -> list:
        """Round-off allowance per step: 1e3·eps·(E(Y0) + |decrease| + β·dist)."""
        eps = np.finfo(float).eps
        return [1e3 * eps * (s.loss0 + abs(s.decrease) + s.beta * s.dist) for s in self.steps]

    @property
    def violations(self) -> int:
        return sum(s.slack < -tol for s, tol in zip(self.steps, self.tolerances))

    @property
    def resolved(self) -> list:
        """Steps whose bound terms |decrease| + β·dist exceed 1e6 × the round-off allowance.

        At the others (the loss already at its minimum to round-off) a relative
        slack is a ratio of round-off errors and says nothing.
        """
        return [s for s, tol in zip(self.steps, self.tolerances) if abs(s.decrease) + s.beta * s.dist > 1e6 * tol]

    @property
    def worst_rel_slack(self) -> float:
        """min over the resolved steps of (bound − E(Y1)) / (|decrease| + β·dist); NaN if none."""
        res = self.resolved
        return float(min(s.rel_slack for s in res)) if res else float("nan")

    @property
    def losses(self) -> list:
        return [self.steps[0].loss0] + [s.loss1 for s in self.steps] if self.steps else []

    def summary(self) -> dict:
        res = self.resolved
        worst = min(res, key=lambda s: s.rel_slack) if res else None
        return dict(h=self.h, L=self.L, hL=self.h * self.L, steps=len(self.steps), holds=self.holds,
                    violations=self.violations, resolved_steps=len(res),
                    worst_rel_slack=worst.rel_slack if worst else None, worst_step=worst.n if worst else None,
                    min_slack=min(s.slack for s in self.steps),
                    max_dist=max(s.dist for s in self.steps), max_dist_minus_theta=max(s.dist - s.theta for s in self.steps),
                    loss_first=self.losses[0], loss_last=self.losses[-1],
                    ascents=int(sum(s.loss1 > s.loss0 + tol for s, tol in zip(self.steps, self.tolerances))),
                    max_rank=max(s.rank for s in self.steps))


def _dense(Y):
    return Y.to_dense() if isinstance(Y, LowRankMatrix) else np.asarray(Y)


def descent_check(problem, h: float, n_steps: int, L: float, *, theta: Optional[float] = None,
                  tau: Optional[float] = None, r_max: Optional[int] = None, Y0: Optional[LowRankMatrix] = None,
                  beta_points: int = 2) -> DescentRun:
    """Run ``n_steps`` explicit-Euler rank-adaptive BUG steps and evaluate the descent inequality at each.

    ``theta`` (absolute) or ``tau`` (relative, ϑ = τ‖Ŝ‖) is the truncation rule,
    ``r_max`` an optional rank cap (then ‖Y1 − Ŷ1‖ may exceed ϑ; the inequality
    uses the measured distance). Ŷ1 is the same step with ϑ = 0 (nothing
    discarded). ``beta_points`` equispaced points of [Ŷ1, Y1] give β; 2 (the
    end points) is exact for a convex quadratic E, since ‖∇E‖ is then convex
    along a segment.
    """
    if not (np.isfinite(h) and h > 0):
        raise ValueError(f"descent_check: h must be finite and > 0, got {h}")
    if not (np.isfinite(L) and L > 0):
        raise ValueError(f"descent_check: L must be finite and > 0, got {L}")
    if n_steps < 1:
        raise ValueError(f"descent_check: n_steps must be >= 1, got {n_steps}")
    if (theta is None) == (tau is None):
        raise ValueError("descent_check: give exactly one of theta or tau")
    if beta_points < 2:
        raise ValueError(f"descent_check: beta_points must be >= 2, got {beta_points}")
    rule = dict(theta=theta) if theta is not None else dict(tau=tau)
    if r_max is not None:
        rule["r_max"] = r_max
    run = DescentRun(h=float(h), L=float(L))
    Y = problem.Y0 if Y0 is None else Y0
    run.iterates.append(Y)
    for n in range(n_steps):
        t = n * h
        G = problem.grad(Y)  # (m, n)
        pg2 = float(np.sum(tangent_project(Y, G) ** 2))
        res = ra_bug_step(problem.field, t, Y, h, substep="euler", **rule)
        full = ra_bug_step(problem.field, t, Y, h, substep="euler", theta=0.0)  # Ŷ1: nothing discarded
        Y1d, Yhd = _dense(res.Y), _dense(full.Y)
        Delta = Y1d - Yhd  # (m, n)
        dist = float(np.linalg.norm(Delta))
        beta = max(float(np.linalg.norm(problem.grad(Yhd + s * Delta))) for s in np.linspace(0, 1, beta_points))
        loss0, loss1 = problem.loss(Y), problem.loss(res.Y)
        dec = h * (1.0 - L * h / 2.0) * pg2
        bound = loss0 - dec + beta * dist
        slack = bound - loss1
        scale = abs(dec) + beta * dist
        run.steps.append(DescentStep(
            n=n, loss0=loss0, loss1=loss1, loss_hat=problem.loss(Yhd), proj_grad_sq=pg2, decrease=dec,
            dist=dist, tail=res.truncation.tail, theta=float(res.truncation.theta), beta=beta, bound=bound,
            slack=slack, rel_slack=slack / scale if scale > 0 else 0.0, rank=res.Y.rank))
        Y = res.Y
        run.iterates.append(Y)
    return run


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (finite, positive pairs only; NaN if < 2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def fit_bound(eps: Sequence[float], h: Sequence[float], theta: Sequence[float], err: Sequence[float]) -> dict:
    """Constants c_i ≥ 0 of the bound err ≤ c1 ε + c2 h + c3 ϑ/h from measured errors.

    Two fits over the points with a finite, positive error:

    * ``envelope``: the bound as an upper bound — minimise Σ model_i / err_i subject to
      model_i ≥ err_i for every point (a linear programme, HiGHS);
    * ``relative``: least squares of model_i / err_i − 1 with c ≥ 0 (NNLS).

    For each, the constants and the range of err / model (≤ 1 everywhere for the envelope;
    its median says how tight the bound is).
    """
    eps, h, theta, err = (np.asarray(v, float) for v in (eps, h, theta, err))
    ok = np.isfinite(err) & (err > 0)
    X = np.stack([eps, h, theta / h], axis=1)[ok]  # (k, 3): the three terms per point
    e = err[ok]
    out = {"points": int(ok.sum())}
    c_rel, _ = nnls(X / e[:, None], np.ones(e.size))
    lp = linprog(c=(X / e[:, None]).sum(axis=0), A_ub=-X, b_ub=-e, bounds=[(0, None)] * 3, method="highs")
    for name, c in (("relative", c_rel), ("envelope", lp.x if lp.success else None)):
        if c is None:
            out[name] = None
            continue
        ratio = e / (X @ c)
        out[name] = dict(c1=float(c[0]), c2=float(c[1]), c3=float(c[2]), ratio_min=float(ratio.min()),
                         ratio_median=float(np.median(ratio)), ratio_max=float(ratio.max()))
    return out
