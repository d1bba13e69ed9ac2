"""BLAS/OpenMP threads: chosen before NumPy loads (``--threads N``, else one thread).

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
DEFAULT_THREADS = 1


def default_threads() -> tuple:
    """(threads, reason): one BLAS thread unless ``--threads N`` or a thread variable says otherwise.

    Why one, whatever the machine and its load:

    * **Reproducible digits.** BLAS with more threads sums in another order, so the last bits of
      a run depend on the thread count. A default that followed the machine load (as this one did
      until issue 14's last session) made the same command give different digits from one minute
      to the next (the quickstart: 93.05 % with 1 thread, 93.09 % with 2).
    * **Speed.** A DLRT step is made of many small products and factorisations (r ≤ a few hundred),
      where threads cost more than they give. Measured on the idle 2-core development machine
      (OpenBLAS 0.3.31; ``benchmarks/blas_threads.py``, ``benchmarks/results/blas_threads.json``):
      a ra-bug step of the thesis net at rank 80 took 80 ms with 2 threads against 12.4 ms with 1,
      and even the dense step was slower (7.2 against 5.8 ms), although one isolated product of its
      pass ran 1.9× faster with 2 threads.

    More threads are one option away (``--threads N``) for large dense layers on an idle machine.
    """
    return DEFAULT_THREADS, "default"


def load_average(ndigits=None) -> list:
    """The 1-, 5- and 15-minute load averages (rounded to ``ndigits`` if given); [] where the platform has none.

    The one reader of the machine load: the load recorded beside every timing
    (experiments/timing.py, benchmarks/step_time.py, benchmarks/blas_threads.py).
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
                   help="BLAS/OpenMP threads, set before NumPy loads (default: 1, for reproducible digits and "
                        "because small factorisations are slower threaded; an existing OMP_NUM_THREADS/"
                        "OPENBLAS_NUM_THREADS is respected)")


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
