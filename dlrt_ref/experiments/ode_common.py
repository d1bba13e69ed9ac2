"""Helpers shared by the ``ode_*`` experiments: error curves with a cap (and, from ``dlrt_ref.ode.problem``,
one guarded integration run)."""
from __future__ import annotations

import numpy as np

from dlrt_ref.experiments.plotting import as_float
from dlrt_ref.ode.problem import error_or_none, run_method  # noqa: F401  (used by the ode_* experiments)


def loglog_capped(ax, x, errors: dict, cap: float, style: dict) -> bool:
    """Draw one log-log error curve per method; diverged (None/inf) or > cap values are drawn at cap.

    Returns whether any value was capped (the caller says so on the axes).
    """
    clipped = False
    for m, values in errors.items():
        e = as_float(values)
        bad = ~np.isfinite(e) | (e > cap)
        clipped |= bool(bad.any())
        ax.loglog(x, np.where(bad, cap, e), label=m, markersize=5, linewidth=1.2, **style[m])
    return clipped
