"""Array backends: NumPy (CPU) or CuPy (GPU), chosen explicitly by name.

There is no global switch. Code that creates arrays takes a :class:`Backend`
(or its name) and uses ``backend.xp`` as the array module; code that only
transforms arrays it is given uses :func:`array_module` to find the module of
its inputs. Random initial data is always drawn on the host with a seeded
``numpy.random.Generator`` and then moved with :meth:`Backend.asarray`, so both
backends start from identical numbers.

Examples
--------
>>> from dlrt_ref.backend import get_backend, to_numpy
>>> be = get_backend("numpy")
>>> x = be.asarray([1.0, 2.0])
>>> to_numpy(x).tolist()
[1.0, 2.0]
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import scipy.linalg

# CuPy (and cupyx) are optional: imported lazily, only when a CuPy array or backend is asked for.

__all__ = [
    "Backend",
    "BackendError",
    "get_backend",
    "available_backends",
    "array_module",
    "backend_name",
    "is_array",
    "to_numpy",
    "BACKEND_NAMES",
    "scipy_linalg",
    "use_cupy_standin",
]

BACKEND_NAMES = ("numpy", "cupy")


class BackendError(ValueError):
    """Raised for an unknown or unavailable backend, or mixed-backend inputs."""


@dataclass(frozen=True)
class Backend:
    """An array module plus the few helpers the library needs from it.

    Parameters
    ----------
    name : {"numpy", "cupy"}
    xp : module
        ``numpy`` or ``cupy``.
    """

    name: str
    xp: ModuleType

    def asarray(self, a: Any, dtype: Any = None):
        """Move host data (or an array of this backend) onto this backend."""
        if self.name == "numpy":
            return np.asarray(to_numpy(a), dtype=dtype)
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        return to_numpy(a)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on NumPy); needed before timing."""
        if self.name == "cupy":
            self.xp.cuda.Stream.null.synchronize()

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"Backend({self.name!r})"


#: A module that plays CuPy in tests (see :func:`use_cupy_standin`); None in normal use.
_CUPY_STANDIN: ModuleType | None = None


def use_cupy_standin(module: ModuleType | None) -> ModuleType | None:
    """Let ``module`` play CuPy (tests only); returns the previous stand-in, pass it back to restore.

    The one hook for a test-only array module (``tests/gpu/fake_cupy.py``) that behaves
    like CuPy where it matters (implicit conversion to NumPy raises, host
    synchronisations are counted) so that CI catches backend leaks without a GPU.
    While it is set, ``get_backend("cupy")``, :func:`available_backends` and
    :func:`array_module` use it in place of the real CuPy. Its arrays must be
    recognisable as CuPy's (their type's ``__module__`` starts with ``cupy``) and
    offer ``.get()``, as CuPy's do. Library code never calls this.
    """
    global _CUPY_STANDIN
    previous, _CUPY_STANDIN = _CUPY_STANDIN, module
    return previous


def _cupy_or_none() -> ModuleType | None:
    if _CUPY_STANDIN is not None:
        return _CUPY_STANDIN
    try:
        import cupy  # type: ignore  # lazy: CuPy is optional
    except Exception:
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:
        return None
    return cupy


def get_backend(name: "str | Backend" = "numpy") -> Backend:
    """Return the backend called ``name`` ("numpy" or "cupy").

    Raises
    ------
    BackendError
        If the name is unknown, or CuPy is asked for on a machine without
        CuPy or without a GPU.
    """
    if isinstance(name, Backend):
        return name
    if name == "numpy":
        return Backend("numpy", np)
    if name == "cupy":
        cp = _cupy_or_none()
        if cp is None:
            raise BackendError(
                "backend 'cupy' is not available: CuPy is not installed or no GPU is "
                "visible (install the 'gpu' extra on a CUDA machine, or use backend 'numpy')"
            )
        return Backend("cupy", cp)
    raise BackendError(f"unknown backend {name!r}; expected one of {BACKEND_NAMES}")


def available_backends() -> list[str]:
    """Names of the backends usable on this machine (always includes "numpy")."""
    return ["numpy"] + (["cupy"] if _cupy_or_none() is not None else [])


def array_module(*arrays: Any) -> ModuleType:
    """The array module (numpy or cupy) of the given arrays.

    Raises :class:`BackendError` if NumPy and CuPy arrays are mixed, which would
    otherwise fail deep inside CuPy or silently copy to the host.
    """
    mods = {backend_name(a) for a in arrays if a is not None}
    if len(mods) > 1:
        raise BackendError("mixed NumPy and CuPy arrays in one operation; move them with Backend.asarray")
    if mods == {"cupy"}:
        if _CUPY_STANDIN is not None:
            return _CUPY_STANDIN
        import cupy  # type: ignore  # lazy: CuPy is optional

        return cupy
    return np


def _library(a: Any) -> str:
    """The top-level package of ``a``'s type, e.g. "numpy" or "cupy" (the stand-in's types say "cupy")."""
    return type(a).__module__.split(".")[0]


def backend_name(a: Any) -> str:
    """"cupy" for a CuPy array (or the test stand-in's, whose type's module starts with ``cupy``), else "numpy".

    With :func:`is_array`, the one place that tells the backend of an array from its type.
    """
    return "cupy" if _library(a) == "cupy" else "numpy"


def is_array(a: Any) -> bool:
    """Whether ``a`` is a NumPy or CuPy array (not a list, scalar or other array-like)."""
    return _library(a) in BACKEND_NAMES and hasattr(a, "ndim")


def scipy_linalg(xp: ModuleType) -> ModuleType:
    """SciPy's ``linalg`` for the array module ``xp``: ``scipy.linalg`` (NumPy) or ``cupyx.scipy.linalg`` (CuPy).

    Used for what ``xp.linalg`` lacks, e.g. ``solve_triangular``. A CuPy stand-in
    provides it as its attribute ``scipy_linalg``.
    """
    if xp is np:
        return scipy.linalg
    if xp is _CUPY_STANDIN:
        return xp.scipy_linalg
    import cupyx.scipy.linalg  # type: ignore  # lazy: CuPy is optional

    return cupyx.scipy.linalg


def to_numpy(a: Any) -> np.ndarray:
    """Copy an array of any backend to a host ``numpy.ndarray`` (no copy for NumPy)."""
    if backend_name(a) == "cupy":
        return a.get()
    return np.asarray(a)
