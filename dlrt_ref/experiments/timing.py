"""Timing helpers shared by the timing experiments (``timings_paper``, ``timings_thesis``).

Medians of wall times after warm-up, ratios to the dense network measured in
the same run, and the thread setting and load averages recorded beside them.
"""
from __future__ import annotations

import os
import time

import numpy as np

from dlrt_ref.threads import load_average

__all__ = ["median_time", "add_ratios_to_dense", "machine_record"]


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def add_ratios_to_dense(rows: dict, names: dict) -> None:
    """For every row, ``row[ratio] = row[time] / rows["dense"][time]`` for each ``time -> ratio`` in ``names``."""
    dense = rows["dense"]
    for row in rows.values():
        for t, ratio in names.items():
            row[ratio] = row[t] / dense[t]


def machine_record(load_before) -> dict:
    """Thread setting and load averages before/after a timing run (for the JSON beside the figure)."""
    return {"threads": 1, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_avg_before": list(load_before),
            "load_avg_after": load_average()}
