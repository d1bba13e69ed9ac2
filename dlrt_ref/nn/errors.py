"""Errors raised by the network layers and the gradient checks.

All are :class:`ValueError` subclasses (as is :class:`~dlrt_ref.backend.BackendError`),
and every message names the layer (its ``repr``) and the expected vs given values.
"""
from __future__ import annotations

from dlrt_ref.backend import BackendError
from dlrt_ref.backend import backend_name as _backend_of

__all__ = ["ShapeError", "RankError", "NonFiniteError", "BackendError", "check_backend", "check_shape"]


class ShapeError(ValueError):
    """An array has the wrong number of dimensions or the wrong size."""


class RankError(ValueError):
    """A rank outside ``1 <= r <= min(n_in, n_out)``."""


class NonFiniteError(ValueError):
    """A NaN or infinity where a gradient check needs finite numbers."""


def check_backend(owner, a, what: str, backend_name: str) -> None:
    """Raise :class:`BackendError` unless ``a`` lives on ``backend_name``."""
    got = _backend_of(a)
    if got != backend_name:
        raise BackendError(
            f"{owner!r}: {what} is a {got} array, but the layer lives on backend "
            f"{backend_name!r}; move it with get_backend({backend_name!r}).asarray(...)"
        )


def _fmt(pattern) -> str:
    items = ["B" if p is None else str(p) for p in pattern]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def check_shape(owner, a, what: str, pattern: tuple) -> None:
    """Raise :class:`ShapeError` unless ``a.shape`` matches ``pattern``.

    ``pattern`` is a tuple of ints, with ``None`` for a free (batch) dimension.
    """
    shape = getattr(a, "shape", None)
    if shape is None:
        raise ShapeError(f"{owner!r}: {what} must be an array of shape {_fmt(pattern)}, got {type(a).__name__}")
    if len(shape) != len(pattern) or any(p is not None and p != s for p, s in zip(pattern, shape)):
        raise ShapeError(f"{owner!r}: {what} must have shape {_fmt(pattern)}, got {tuple(shape)}")
