"""The exceptions the commands raise for the dispatcher, and their exit codes.

The command modules (``ode/cli.py``, ``train/cli.py``, ``train/evaluate.py``,
``experiments/cli.py``) raise these; ``dlrt_ref/cli.py`` imports the command
modules and turns these into exit codes. Keeping them here, in a module that
imports nothing, is what keeps the dispatcher and its commands free of a cycle.

* :class:`UsageError`: a bad command-line value found after parsing, exit 2;
* :class:`CommandError`: a runtime failure with a ready one-line message, exit 1
  (or its ``exit_code``).
"""
from __future__ import annotations

EXIT_USAGE, EXIT_RUNTIME, EXIT_INTERRUPTED = 2, 1, 130

__all__ = ["UsageError", "CommandError", "EXIT_USAGE", "EXIT_RUNTIME", "EXIT_INTERRUPTED"]


class UsageError(ValueError):
    """A bad command-line value detected after parsing (exit code 2)."""


class CommandError(RuntimeError):
    """A runtime failure with a ready one-line message (exit code 1), e.g. divergence or an interrupted run."""

    def __init__(self, message: str, exit_code: int = EXIT_RUNTIME):
        super().__init__(message)
        self.exit_code = exit_code
