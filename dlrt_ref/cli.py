"""Command line: ``python -m dlrt_ref <command> ...``.

Each command lives in its own module, which provides ``add_arguments(parser)``
and ``run(args) -> int``. This file only dispatches. Bad arguments give a
one-line error and exit code 2 (argparse's convention); a :class:`UsageError`
raised while running does the same.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help)
COMMANDS = {
    "ode": ("dlrt_ref.ode.cli", "integrate a matrix ODE with a low-rank integrator"),
    "train": ("dlrt_ref.train.cli", "train a network with DLRT or a baseline"),
    "figures": ("dlrt_ref.figures_cli", "regenerate figures and their JSON data"),
}


class UsageError(ValueError):
    """A bad command-line value detected after parsing (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dlrt_ref", description=__doc__.splitlines()[0])
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
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_missing", None):
        parser.error(f"command {args.command!r} is not available ({args._missing} missing)")
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:
        sys.stderr.write(f"python -m dlrt_ref {args.command}: error: {exc}\n")
        return 2
