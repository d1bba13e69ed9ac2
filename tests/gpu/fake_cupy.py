"""A strict stand-in for CuPy on the CPU, for tests: device arrays that refuse to become NumPy arrays.

CuPy's arrays live on the GPU. Reading one on the host (``.get()``, ``cupy.asnumpy``,
and implicitly ``float(a)``, ``bool(a)``, ``a.item()``, ``a.tolist()``) waits for the
device: a *host synchronisation*. ``numpy.asarray(a)`` raises ``TypeError`` (CuPy
refuses implicit conversion), and mixing a CuPy array with a NumPy array in one
operation raises too. On a CPU-only machine none of this shows: with NumPy every
array is a host array, so a library can leak host round trips and NumPy calls into
its GPU path without any test noticing.

This module plays CuPy with NumPy underneath (:func:`install` registers it through
:func:`dlrt_ref.backend.use_cupy_standin`). Its arrays (:class:`ndarray`, whose type
claims to live in ``cupy`` so that the library's backend checks treat them as
CuPy's) behave like CuPy's where it matters, and stricter:

* ``numpy.asarray(a)``/``a.__array__`` raise (as CuPy);
* every NumPy function or ufunc that receives one (``np.linalg.norm(a)``,
  ``np.sqrt(a)``, ``np.concatenate([a, ...])``) raises — CuPy would dispatch some of
  those to itself, but the library's rule is that it never calls NumPy on an array
  it did not create (DESIGN, "One backend rule");
* a host NumPy array mixed into a device operation (``a + np.ones(3)``,
  ``xp.concatenate([a, host])``, ``a[idx_host]``) raises: an array was created on the
  wrong backend;
* implicit conversions to host scalars (``float``, ``int``, ``bool``, ``operator.index``,
  ``.item()``, ``.tolist()``, ``format``) raise when ``strict`` (default): every host
  synchronisation must be explicit (``dlrt_ref.backend.to_numpy`` → ``.get()``), so it
  can be counted and documented; with ``strict=False`` they are allowed, as in CuPy,
  and counted;
* every host synchronisation is counted in :data:`STATS` with the library line that
  caused it (``STATS.syncs``); uploads (host → device) in ``STATS.uploads``.

Violations raise ``TypeError`` *and* are recorded in ``STATS.violations``, so a
test still sees them if library code catches exceptions broadly.

``linalg.cholesky`` behaves as CuPy's does by default (no exception for a matrix
that is not positive definite: LAPACK's partial factor is returned, as cuSOLVER's
``potrf`` leaves it), so guards written for NumPy's ``LinAlgError`` are tested on the
GPU behaviour.
"""
from __future__ import annotations

import os
import sys
import traceback
import types
from contextlib import contextmanager

import numpy as np
import scipy.linalg
import scipy.linalg.lapack

__all__ = ["ndarray", "STATS", "install", "asarray", "asnumpy", "linalg", "scipy_linalg", "cuda"]

_HERE = os.path.abspath(__file__)
_BACKEND = os.path.join("dlrt_ref", "backend.py")


class Stats:
    """What the stand-in saw: host synchronisations, uploads, violations (with the library line of each)."""

    def __init__(self):
        self.strict = True
        self.reset()

    def reset(self):
        self.syncs: list[tuple[str, str]] = []  # (kind, site)
        self.uploads: list[str] = []
        self.violations: list[str] = []

    def sync_sites(self) -> dict:
        """{site: count} of the host synchronisations so far."""
        out: dict = {}
        for _, site in self.syncs:
            out[site] = out.get(site, 0) + 1
        return out


STATS = Stats()


def _site() -> str:
    """The first stack frame outside this module and dlrt_ref/backend.py: 'path:line (function)'."""
    for fr in reversed(traceback.extract_stack()[:-1]):
        f = os.path.abspath(fr.filename)
        if f == _HERE or f.endswith(_BACKEND):
            continue
        parts = f.split(os.sep)
        short = os.sep.join(parts[-3:]) if "dlrt_ref" not in parts else os.sep.join(parts[parts.index("dlrt_ref"):])
        return f"{short}:{fr.lineno} ({fr.name})"
    return "?"


def _violation(msg: str):
    full = f"{msg} [at {_site()}]"
    STATS.violations.append(full)
    raise TypeError(full)


def _sync(kind: str):
    STATS.syncs.append((kind, _site()))


# --------------------------------------------------------------------------- #
# Wrapping and unwrapping
# --------------------------------------------------------------------------- #
def _wrap(x):
    """NumPy results become device arrays (0-d for scalars, as CuPy's reductions return 0-d arrays)."""
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic) and not isinstance(x, (np.str_, np.bytes_)):
        return ndarray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    if hasattr(x, "_fields") and isinstance(x, tuple):  # pragma: no cover - namedtuples handled above
        return type(x)(*(_wrap(v) for v in x))
    return x


def _unwrap(x, what: str):
    """Device arrays to their NumPy data; a host NumPy array here is a wrong-backend array."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        _violation(f"a host NumPy array {x.shape} was passed to the device operation {what}: "
                   "an array was created on the wrong backend")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, what) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v, what) for k, v in x.items()}
    return x


def _device_call(fn, name):
    def call(*args, **kwargs):
        out = fn(*_unwrap(args, name), **_unwrap(kwargs, name))
        return _wrap(out)

    call.__name__ = name
    return call


# --------------------------------------------------------------------------- #
# The device array
# --------------------------------------------------------------------------- #
class ndarray:
    """A "device" array: NumPy data that only leaves through ``.get()`` (counted)."""

    __slots__ = ("_a",)
    __array_priority__ = 1000

    def __init__(self, a):
        if not isinstance(a, np.ndarray):  # pragma: no cover - internal misuse
            raise TypeError("fake_cupy.ndarray wraps a numpy.ndarray")
        self._a = a

    # -- the explicit way to the host -------------------------------------
    def get(self, stream=None, out=None, order="C", blocking=True):
        """Copy to a host ``numpy.ndarray``: one host synchronisation."""
        _sync("get")
        return self._a.copy()

    # -- implicit conversions: refused (strict) or counted (CuPy-like) -----
    def __array__(self, *args, **kwargs):
        _violation("implicit conversion of a device array to a NumPy array (numpy.asarray / __array__); "
                   "use to_numpy (.get())")

    def _implicit(self, what):
        if STATS.strict:
            _violation(f"implicit host synchronisation {what} on a device array; use to_numpy (.get()) explicitly")
        _sync(what)
        return self._a

    def __float__(self):
        return float(self._implicit("float()"))

    def __int__(self):
        return int(self._implicit("int()"))

    def __index__(self):
        return int(self._implicit("operator.index()"))

    def __bool__(self):
        return bool(self._implicit("bool()"))

    def __complex__(self):
        return complex(self._implicit("complex()"))

    def __format__(self, spec):
        return format(self._implicit("format()").item() if self._a.ndim == 0 else self._a, spec)

    def item(self, *args):
        return self._implicit(".item()").item(*args)

    def tolist(self):
        return self._implicit(".tolist()").tolist()

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (ndarray(np.asarray(row)) for row in self._a)

    # NumPy functions and ufuncs must not receive device arrays
    def __array_function__(self, func, types_, args, kwargs):
        _violation(f"NumPy function numpy.{getattr(func, '__name__', func)} received a device array")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # A NumPy *scalar* on the left of an operator (np.float64(h) * a) arrives here, as it does in CuPy,
        # which serves it on the device; a direct ufunc call on device arrays only (np.sqrt(a)) is a NumPy call.
        if any(isinstance(x, np.ndarray) for x in inputs) or "out" in kwargs:
            _violation(f"NumPy ufunc numpy.{ufunc.__name__} mixed a host array with a device array")
        if not any(isinstance(x, np.generic) for x in inputs):
            _violation(f"NumPy ufunc numpy.{ufunc.__name__} received a device array")
        args = [x._a if isinstance(x, ndarray) else x for x in inputs]
        return _wrap(getattr(ufunc, method)(*args, **kwargs))

    # -- attributes and methods: run on the "device" -----------------------
    @property
    def shape(self):
        return self._a.shape

    @property
    def dtype(self):
        return self._a.dtype

    @property
    def ndim(self):
        return self._a.ndim

    @property
    def size(self):
        return self._a.size

    @property
    def nbytes(self):
        return self._a.nbytes

    @property
    def itemsize(self):
        return self._a.itemsize

    @property
    def T(self):
        return ndarray(self._a.T)

    @property
    def real(self):
        return ndarray(np.asarray(self._a.real))

    @property
    def imag(self):
        return ndarray(np.asarray(self._a.imag))

    def __len__(self):
        return len(self._a)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            return _device_call(attr, f"ndarray.{name}")
        return _wrap(attr)

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, "indexing")])

    def __setitem__(self, key, value):
        self._a[_unwrap(key, "indexing")] = _unwrap(value, "item assignment")

    def __repr__(self):
        return f"fake_cupy.ndarray(shape={self._a.shape}, dtype={self._a.dtype})"

    __hash__ = None


def _binary(name):
    op = getattr(np.ndarray, name)

    def method(self, other):
        if isinstance(other, np.ndarray):
            _violation(f"device array {name} host NumPy array {other.shape}: an array was created on the wrong backend")
        o = other._a if isinstance(other, ndarray) else other
        if not isinstance(o, (np.ndarray, int, float, complex, bool, np.generic)):
            return NotImplemented
        return _wrap(op(self._a, o))

    method.__name__ = name
    return method


for _n in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
           "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__pow__", "__rpow__", "__matmul__", "__rmatmul__",
           "__and__", "__rand__", "__or__", "__ror__", "__xor__", "__rxor__", "__lt__", "__le__", "__gt__", "__ge__",
           "__eq__", "__ne__", "__iadd__", "__isub__", "__imul__", "__itruediv__"):
    setattr(ndarray, _n, _binary(_n))
for _n in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(ndarray, _n, (lambda op: lambda self: _wrap(op(self._a)))(getattr(np.ndarray, _n)))
ndarray.__module__ = "cupy._core.fake"  # the library recognises CuPy arrays by their module


# --------------------------------------------------------------------------- #
# The module namespace: numpy's functions, run on the "device"
# --------------------------------------------------------------------------- #
def asarray(a, dtype=None, order=None):
    """Host data (or a device array) onto the device; an upload when it comes from the host."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == np.dtype(dtype) else ndarray(a._a.astype(dtype))
    STATS.uploads.append(_site())
    return ndarray(np.array(a, dtype=dtype, order=order or "K", copy=True))


array = asarray


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    """``cupy.asnumpy``: a device array to the host (one host synchronisation); host data passes through."""
    if isinstance(a, ndarray):
        return a.get()
    return np.asarray(a)


def get_array_module(*args):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else np


_PASS_THROUGH = {"finfo", "iinfo", "result_type", "dtype", "promote_types", "can_cast", "issubdtype", "ndim",
                 "shape", "isscalar"}  # metadata only (CuPy's versions accept its arrays): no data moves


def _meta_call(fn):
    def call(*args, **kwargs):
        strip = lambda v: v._a if isinstance(v, ndarray) else v  # noqa: E731
        return fn(*(strip(a) for a in args), **{k: strip(v) for k, v in kwargs.items()})

    return call


def _namespace(src, name, overrides=None):
    mod = types.ModuleType(name)

    def getattr_(attr):
        obj = getattr(src, attr)
        if isinstance(obj, (type, np.dtype)) or not callable(obj):
            return obj
        if attr in _PASS_THROUGH:
            return _meta_call(obj)
        return _device_call(obj, f"{name}.{attr}")

    mod.__getattr__ = getattr_
    for k, v in (overrides or {}).items():
        setattr(mod, k, v)
    return mod


def _cholesky(a):
    """CuPy's default: no error for a matrix that is not positive definite (cuSOLVER potrf's partial factor)."""
    A = _unwrap(a, "linalg.cholesky")
    potrf = scipy.linalg.lapack.get_lapack_funcs("potrf", (A,))
    c, info = potrf(A, lower=1, clean=1)
    return ndarray(np.tril(c))


linalg = _namespace(np.linalg, "fake_cupy.linalg", {"cholesky": _cholesky, "LinAlgError": np.linalg.LinAlgError})
scipy_linalg = _namespace(scipy.linalg, "fake_cupy.scipy_linalg")


class _Stream:
    def synchronize(self):
        _sync("stream.synchronize")


cuda = types.SimpleNamespace(Stream=types.SimpleNamespace(null=_Stream()),
                             runtime=types.SimpleNamespace(getDeviceCount=lambda: 1,
                                                           getDeviceProperties=lambda i: {"name": b"fake_cupy (CPU stand-in)"}))


def __getattr__(attr):  # module-level: every other numpy name, run on the device
    obj = getattr(np, attr)
    if isinstance(obj, (type, np.dtype)) or not callable(obj):
        return obj
    if attr in _PASS_THROUGH:
        return _meta_call(obj)
    return _device_call(obj, f"fake_cupy.{attr}")


@contextmanager
def install(strict: bool = True):
    """Let this module play CuPy inside the ``with`` block (fresh :data:`STATS`); restores afterwards."""
    from dlrt_ref.backend import use_cupy_standin

    STATS.reset()
    STATS.strict = strict
    previous = use_cupy_standin(sys.modules[__name__])
    try:
        yield STATS
    finally:
        use_cupy_standin(previous)
        STATS.strict = True
