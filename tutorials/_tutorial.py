"""Shared set-up of the tutorials: quick mode, output folder, a headless-safe pyplot.

Not part of the library; it only reads two environment variables:

* ``DLRT_QUICK=1`` shrinks every tutorial's problem so that it runs in seconds
  (the test suite uses it);
* ``DLRT_TUTORIAL_OUT`` is the folder for figures (default ``tutorials/output``).

Without a display (and without an explicit ``MPLBACKEND``) matplotlib's
non-interactive Agg backend is used; in Jupyter the inline backend is kept.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

if not os.environ.get("MPLBACKEND") and not os.environ.get("DISPLAY") and os.name != "nt":
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

QUICK = os.environ.get("DLRT_QUICK", "0") not in ("", "0")
OUT = Path(os.environ.get("DLRT_TUTORIAL_OUT", Path(__file__).resolve().parent / "output"))

plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120, "font.size": 10, "axes.grid": True,
                     "grid.alpha": 0.3, "legend.fontsize": 8})


def savefig(fig, name: str) -> Path:
    """Save ``fig`` as ``OUT/name.png`` and say where; close it unless a notebook will show it."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path)
    print(f"figure written: {path}")
    if matplotlib.get_backend().lower() == "agg":
        plt.close(fig)
    return path


def banner(title: str) -> None:
    """Print the tutorial's title and mode."""
    print(f"== {title} ==  ({'QUICK' if QUICK else 'full'} mode; figures -> {OUT})")
