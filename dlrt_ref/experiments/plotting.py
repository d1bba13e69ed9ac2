"""Shared plotting helpers: one style, PNG + PDF output, JSON-safe numbers."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "font.size": 10, "axes.grid": True,
                         "grid.alpha": 0.3, "legend.fontsize": 8})
    return plt


def save(fig, out_dir, name: str, tight: bool = True) -> list[Path]:
    """Write ``out_dir/name.png`` and ``out_dir/name.pdf``; close the figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    if tight:
        fig.tight_layout()
    for p in paths:
        fig.savefig(p, metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
    pyplot().close(fig)
    return paths


def finite_or_none(x):
    """A float, or None where it is NaN/inf (JSON has no NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


def jsonable(obj):
    """Recursively convert NumPy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return finite_or_none(obj)
    return obj


def as_float(values):
    """JSON list (None for missing) -> float array with NaN, for plotting."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


# one colour/marker per integrator, shared by all ode figures
STYLE = {
    "ksl": dict(color="C0", marker="o"), "lsk": dict(color="C9", marker="v"),
    "strang": dict(color="C1", marker="s"), "bug": dict(color="C2", marker="^"),
    "ra-bug": dict(color="C3", marker="D"), "parallel": dict(color="C4", marker="P"),
    "naive": dict(color="k", marker="x", linestyle="--"),
}
