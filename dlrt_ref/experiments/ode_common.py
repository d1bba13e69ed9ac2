"""Helpers shared by the ``ode_*`` experiments: one guarded integration run, and error curves with a cap."""
from __future__ import annotations

import numpy as np

from dlrt_ref.integrators import ADAPTIVE, integrate


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
    if sol is None:
        return None
    with np.errstate(all="ignore"):
        e = P.error(sol.Y, P.T)
    return float(e) if np.isfinite(e) else None


def loglog_capped(ax, x, errors: dict, cap: float, style: dict) -> bool:
    """Draw one log-log error curve per method; diverged (None/inf) or > cap values are drawn at cap.

    Returns whether any value was capped (the caller says so on the axes).
    """
    from dlrt_ref.experiments.plotting import as_float

    clipped = False
    for m, values in errors.items():
        e = as_float(values)
        bad = ~np.isfinite(e) | (e > cap)
        clipped |= bool(bad.any())
        ax.loglog(x, np.where(bad, cap, e), label=m, markersize=5, linewidth=1.2, **style[m])
    return clipped
