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

The exceptions of this policy live in ``dlrt_ref/errors.py``: the commands
import them from there, so no command imports this file back. ``--threads N``
(BLAS/OpenMP threads) must take effect before NumPy is loaded, so :func:`main`
hands the raw argument list to ``dlrt_ref.threads.set_threads`` before any
command module is imported. This file therefore imports nothing that loads
NumPy at module level.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from dlrt_ref import __version__
# errors.py and threads.py import nothing that loads NumPy; the names stay importable from here
from dlrt_ref.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, CommandError, UsageError  # noqa: F401
from dlrt_ref.threads import add_threads_argument, apply_threads, describe_threads, set_threads  # noqa: F401
from dlrt_ref.threads import threads_info  # noqa: F401

# command name -> (module, one-line help)
COMMANDS = {
    "ode": ("dlrt_ref.ode.cli", "integrate a matrix ODE with a low-rank integrator"),
    "train": ("dlrt_ref.train.cli", "train a network with DLRT or a baseline"),
    "evaluate": ("dlrt_ref.train.evaluate", "evaluate a training checkpoint on the test set (no training)"),
    "figures": ("dlrt_ref.experiments.cli", "regenerate figures and their JSON data"),
}
# commands that accept --threads (the others run small problems)
THREADED = ("train", "evaluate", "figures", "ode")


def prog_name() -> str:
    """``dlrt-ref`` when run as the console script, else ``python -m dlrt_ref``."""
    base = os.path.basename(sys.argv[0] or "")
    return "dlrt-ref" if base.startswith("dlrt-ref") else "python -m dlrt_ref"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


# ----------------------------------------------------------------------------- parser and dispatch

def _version() -> str:
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
    for mod, name in (("dlrt_ref.data.idx", "DataError"), ("dlrt_ref.train.checkpoint", "CheckpointError"),
                      ("dlrt_ref.train.dlrt", "NonFiniteLossError"), ("dlrt_ref.train.loop", "DivergenceError")):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, name):
            kinds.append(getattr(m, name))
    return tuple(kinds)


def main(argv=None) -> int:
    """Run one command; returns the exit code (see the module docstring for the policy)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv[: argv.index("--")] if "--" in argv else "--debug" in argv
    set_threads(argv)  # before any command module imports NumPy
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
