"""Command line: ``dlrt-ref <command> ...`` or ``python -m dlrt_ref <command> ...``.

Each command lives in its own module, which provides ``add_arguments(parser)``
and ``run(args) -> int``. This file dispatches and applies one exit policy:

* exit 0: success;
* exit 2: a usage error — a bad option or value, found by argparse or later
  (:class:`UsageError`); one line on stderr;
* exit 1: a runtime failure — unreadable checkpoint or data file, a diverged
  run, a file that cannot be written, or an unexpected exception; one line on
  stderr (``--debug`` shows the full traceback instead);
* exit 130: interrupted (Ctrl-C); one line saying where the last checkpoint is.

``--threads N`` (BLAS/OpenMP threads) must take effect before NumPy is loaded,
so :func:`main` reads it from the raw argument list and sets the usual
environment variables (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``MKL_NUM_THREADS``, ...) before any command module is imported. This file
therefore imports nothing that loads NumPy at module level.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

# command name -> (module, one-line help)
COMMANDS = {
    "ode": ("dlrt_ref.ode.cli", "integrate a matrix ODE with a low-rank integrator"),
    "train": ("dlrt_ref.train.cli", "train a network with DLRT or a baseline"),
    "evaluate": ("dlrt_ref.train.evaluate", "evaluate a training checkpoint on the test set (no training)"),
    "figures": ("dlrt_ref.figures_cli", "regenerate figures and their JSON data"),
}
# commands that accept --threads (the others run small problems)
THREADED = ("train", "evaluate", "figures", "ode")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")
MAX_DEFAULT_THREADS = 4
EXIT_USAGE, EXIT_RUNTIME, EXIT_INTERRUPTED = 2, 1, 130


class UsageError(ValueError):
    """A bad command-line value detected after parsing (exit code 2)."""


class CommandError(RuntimeError):
    """A runtime failure with a ready one-line message (exit code 1), e.g. divergence or an interrupted run."""

    def __init__(self, message: str, exit_code: int = EXIT_RUNTIME):
        super().__init__(message)
        self.exit_code = exit_code


def prog_name() -> str:
    """``dlrt-ref`` when run as the console script, else ``python -m dlrt_ref``."""
    base = os.path.basename(sys.argv[0] or "")
    return "dlrt-ref" if base.startswith("dlrt-ref") else "python -m dlrt_ref"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


# ----------------------------------------------------------------------------- threads (before NumPy)

def default_threads() -> tuple:
    """(threads, reason): min(cores, 4), lowered by the 1-minute load average so that a busy machine gets fewer.

    BLAS threads that compete with other processes for cores slow NumPy down a
    lot (on a busy 2-core machine the quickstart took over 400 s with 2 threads
    against 26 s with 1), so the default is ``max(1, min(cores, 4) - ⌊load⌋)``
    clipped to ``cores - ⌊load⌋`` idle cores.
    """
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        load = 0.0
    idle = max(1, cores - int(load))
    n = max(1, min(cores, MAX_DEFAULT_THREADS, idle))
    return n, f"auto: {cores} cores, load {load:.1f}"


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


# ----------------------------------------------------------------------------- parser and dispatch

def _version() -> str:
    from dlrt_ref import __version__

    return f"dlrt-ref {__version__}"


def build_parser() -> argparse.ArgumentParser:
    prog = prog_name()
    parser = _Parser(prog=prog, description="DLRT: dynamical low-rank training in pure NumPy. "
                     f"Run '{prog} COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="command", parser_class=_Parser)
    sub.required = True
    for name, (modname, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:  # command not built yet
            if exc.name and modname.startswith(exc.name):
                p.set_defaults(_missing=modname)
                continue
            raise
        mod.add_arguments(p)
        if name in THREADED and not any("--threads" in a.option_strings for a in p._actions):
            add_threads_argument(p)
        if not any("--debug" in a.option_strings for a in p._actions):
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                           help="show the full traceback of an error")
        p.set_defaults(_run=mod.run)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def _runtime_errors() -> tuple:
    """Exception types whose message is written for users (exit 1 without 'internal error')."""
    kinds = [CommandError, OSError]
    for mod, name in (("dlrt_ref.idx", "DataError"), ("dlrt_ref.train.checkpoint", "CheckpointError"),
                      ("dlrt_ref.train.dlrt", "NonFiniteLossError"), ("dlrt_ref.train.loop", "DivergenceError")):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, name):
            kinds.append(getattr(m, name))
    return tuple(kinds)


def main(argv=None) -> int:
    """Run one command; returns the exit code (see the module docstring for the policy)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv[: argv.index("--")] if "--" in argv else "--debug" in argv
    _THREADS.clear()
    _THREADS.update(apply_threads(argv))  # before any command module imports NumPy
    prog = prog_name()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2, one line written)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if getattr(args, "_missing", None):
        sys.stderr.write(f"{prog}: error: command {args.command!r} is not available ({args._missing} missing)\n")
        return EXIT_USAGE
    if getattr(args, "threads", None) is not None and args.threads < 1:
        sys.stderr.write(f"{prog} {args.command}: error: argument --threads: must be >= 1, got {args.threads}\n")
        return EXIT_USAGE
    where = f"{prog} {args.command}"
    try:
        with warnings.catch_warnings():
            if not debug:  # NumPy's overflow/invalid warnings would add lines; divergence is detected explicitly
                warnings.simplefilter("ignore", RuntimeWarning)
            return int(args._run(args) or 0)
    except UsageError as exc:
        if debug:
            raise
        sys.stderr.write(f"{where}: error: {_one_line(exc)}\n")
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        if debug:
            raise
        msg = _one_line(exc) if str(exc) else "interrupted"
        sys.stderr.write(f"{where}: {msg}\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        if debug:
            raise
        code = getattr(exc, "exit_code", EXIT_RUNTIME)
        if isinstance(exc, _runtime_errors()):
            sys.stderr.write(f"{where}: error: {_one_line(exc)}\n")
        else:
            sys.stderr.write(f"{where}: internal error: {type(exc).__name__}: {_one_line(exc)} "
                             "(rerun with --debug for the traceback)\n")
        return code
