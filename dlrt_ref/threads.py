"""BLAS/OpenMP threads: chosen before NumPy loads (``--threads N`` or a load-aware default).

``--threads N`` must take effect before NumPy is loaded, so ``dlrt_ref.cli.main``
calls :func:`set_threads` on the raw argument list, which sets the usual
environment variables (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``MKL_NUM_THREADS``, ...) before any command module is imported, and records the
decision for the commands' start lines (:func:`threads_info`,
:func:`describe_threads`). This module imports nothing that loads NumPy.
"""
from __future__ import annotations

import os
import sys

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")
MAX_DEFAULT_THREADS = 4

def default_threads() -> tuple:
    """(threads, reason): min(cores, 4), lowered by the 1-minute load average so that a busy machine gets fewer.

    BLAS threads that compete with other processes for cores slow NumPy down a
    lot (on a busy 2-core machine the quickstart took over 400 s with 2 threads
    against 26 s with 1), so the default is ``max(1, min(cores, 4) - ⌊load⌋)``
    clipped to ``cores - ⌊load⌋`` idle cores.
    """
    cores = os.cpu_count() or 1
    load = (load_average() or [0.0])[0]
    idle = max(1, cores - int(load))
    n = max(1, min(cores, MAX_DEFAULT_THREADS, idle))
    return n, f"auto: {cores} cores, load {load:.1f}"


def load_average(ndigits=None) -> list:
    """The 1-, 5- and 15-minute load averages (rounded to ``ndigits`` if given); [] where the platform has none.

    The one reader of the machine load: the default thread count here, and the
    load recorded beside every timing (experiments/timing.py, benchmarks/step_time.py).
    """
    try:
        la = os.getloadavg()
    except (AttributeError, OSError):  # not on every platform
        return []
    return [x if ndigits is None else round(x, ndigits) for x in la]


def _scan_threads(argv):
    """The value of ``--threads`` in ``argv`` (a string), or None. Malformed values are left to argparse."""
    for i, a in enumerate(argv):
        if a == "--":
            break
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return None


def apply_threads(argv) -> dict:
    """Set the BLAS/OpenMP thread variables from ``--threads`` (or a safe default) before NumPy loads.

    Returns a description for the start line: ``{"threads": n, "source": ..., "applied": bool}``.
    ``applied`` is False when NumPy was already imported in this process (an in-process call,
    e.g. from tests), where the variables can no longer change the BLAS thread count.
    """
    applied = "numpy" not in sys.modules
    given = _scan_threads(argv)
    if given is not None:
        try:
            n = int(given)
        except ValueError:
            return {"threads": None, "source": "invalid", "applied": False}  # argparse reports it
        if n < 1:
            return {"threads": None, "source": "invalid", "applied": False}
        source = "--threads"
    else:
        env = next((v for v in THREAD_VARS if os.environ.get(v, "").strip().isdigit()), None)
        if env is not None:
            return {"threads": int(os.environ[env]), "source": f"from ${env}", "applied": True}  # set before NumPy
        n, source = default_threads()
    if applied:
        for var in THREAD_VARS:
            os.environ[var] = str(n)
    return {"threads": n, "source": source, "applied": applied}


def add_threads_argument(p) -> None:
    """``--threads N``, for commands that do heavy linear algebra (read early by :func:`apply_threads`)."""
    p.add_argument("--threads", type=int, metavar="N",
                   help="BLAS/OpenMP threads, set before NumPy loads (default: min(cores, 4) lowered by the "
                        "load average; an existing OMP_NUM_THREADS/OPENBLAS_NUM_THREADS is respected)")


def threads_info() -> dict:
    """What :func:`apply_threads` decided in this process (for the start line)."""
    return dict(_THREADS)


_THREADS: dict = {"threads": None, "source": "not set", "applied": False}


def describe_threads() -> str:
    t = _THREADS
    if t["threads"] is None:
        return "threads: not set"
    note = "" if t["applied"] else ", NumPy already loaded: not applied"
    return f"threads {t['threads']} ({t['source']}{note})"


def set_threads(argv) -> dict:
    """:func:`apply_threads` for this process's command, remembered for :func:`threads_info`."""
    _THREADS.clear()
    _THREADS.update(apply_threads(argv))
    return dict(_THREADS)
