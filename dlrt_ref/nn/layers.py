r"""Dense layer, activations and Flatten, each with a handwritten backward.

Every layer follows one protocol (micrograd style, but per layer):

* ``y = layer.forward(x)`` computes the output and caches what the backward needs;
* ``dx = layer.backward(dy)`` takes :math:`\partial L/\partial y` (same shape as
  ``y``) for the cached point, returns :math:`\partial L/\partial x` and stores
  :math:`\partial L/\partial p` in ``layer.grads[name]`` for every
  ``layer.params[name]``.

Layers with parameters (``Dense``, the convolutions, the low-rank and masked layers) also
take ``backward(dy, input_grad=False)``: the parameter gradients only, no
:math:`\partial L/\partial x` (returns None). A trainer's pass does not need the
gradient with respect to the network's input, so ``Sequential.backward(dy,
input_grad=False)`` asks the first layer for that (a GEMM of B·n_in·n_out flops saved per
pass, and the col2im of a first convolution). ``input_grad_optional = True`` marks them.

The backward lines mirror the forward lines they differentiate, in reverse order.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.backend import array_module, get_backend
from dlrt_ref.nn import init
from dlrt_ref.nn.errors import ShapeError, check_backend, check_shape

__all__ = ["Layer", "Dense", "ReLU", "Tanh", "Flatten", "check_dtype"]


def check_dtype(owner: str, dtype) -> np.dtype:
    """``np.dtype(dtype)`` if it is float32 or float64, else a one-line :class:`TypeError` naming ``owner``."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{owner}: dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in Layer.DTYPES:
        raise TypeError(f"{owner}: dtype must be float32 or float64, got {dt} (integer, bool, string, float16 and "
                        "complex layers are not supported)")
    return dt


class Layer:
    """Base class: ``params``/``grads`` dicts, ``lowrank`` flag, input checks.

    Parameterised layers live on one backend with one dtype; they cast their
    input to that dtype and refuse arrays of the other backend.
    """

    lowrank = False
    #: whether ``backward(dy, input_grad=False)`` is accepted (parameter gradients only, returns None)
    input_grad_optional = False

    #: dtypes a layer may hold: real floating point only (ReLU, max-pooling and softmax need an ordering,
    #: so complex networks are not supported; integer or bool weights would silently give wrong results)
    DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

    def __init__(self, backend="numpy", dtype=np.float32):
        self.backend = get_backend(backend)
        self.dtype = check_dtype(type(self).__name__, dtype)
        self.params: dict = {}
        self.grads: dict = {}
        self._cache = None

    # -- helpers -----------------------------------------------------------
    def _input(self, x, pattern):
        """Check backend and shape of a forward input; cast to the layer dtype."""
        check_backend(self, x, "forward input", self.backend.name)
        check_shape(self, x, "forward input", pattern)
        return x.astype(self.dtype, copy=False)

    def _cached(self):
        """What forward cached; a clear error if backward comes first."""
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        return self._cache

    def _upstream(self, dy, shape):
        """Check the upstream gradient against the cached output shape."""
        if self.params:
            check_backend(self, dy, "backward input dy", self.backend.name)
        check_shape(self, dy, "backward input dy", tuple(shape))
        return dy

    def num_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self):
        return f"{type(self).__name__}()"


class Dense(Layer):
    r"""Affine layer :math:`y = x W^T + b`.

    Parameters
    ----------
    n_in, n_out : int
    activation : {"relu", "tanh", "linear", None}
        Only selects the initialisation (He / Glorot / LeCun), see :mod:`dlrt_ref.nn.init`.
    backend : str or Backend
    dtype : numpy dtype (float32 or float64)
    seed : int or numpy.random.Generator

    Attributes
    ----------
    params : {"W": (n_out, n_in), "b": (n_out,)}
    grads : same keys, filled by :meth:`backward`:

    .. math::

        \frac{\partial L}{\partial W} = \Delta^T X, \qquad
        \frac{\partial L}{\partial b} = \mathbf 1^T \Delta, \qquad
        \frac{\partial L}{\partial X} = \Delta W .
    """

    input_grad_optional = True  # backward(dy, input_grad=False): no dX (see the module docstring)

    def __init__(self, n_in, n_out, *, activation="relu", backend="numpy", dtype=np.float32, seed=0):
        super().__init__(backend, dtype)
        self.n_in, self.n_out = int(n_in), int(n_out)
        if self.n_in < 1 or self.n_out < 1:
            raise ShapeError(f"Dense: n_in and n_out must be >= 1, got n_in={n_in}, n_out={n_out}")
        W = init.dense_weight(self.n_out, self.n_in, seed, activation)
        be = self.backend
        self.params = {"W": be.asarray(W, self.dtype), "b": be.xp.zeros(self.n_out, dtype=self.dtype)}

    @property
    def shape(self):
        return (self.n_out, self.n_in)

    def forward(self, x):
        x = self._input(x, (None, self.n_in))
        W, b = self.params["W"], self.params["b"]
        self._cache = x
        return x @ W.T + b  # (B, n_in) @ (n_in, n_out) -> (B, n_out)

    def backward(self, dy, input_grad=True):
        x = self._cached()
        dy = self._upstream(dy, (x.shape[0], self.n_out))
        W = self.params["W"]
        self.grads["W"] = dy.T @ x  # y = x W^T:  (n_out, B) @ (B, n_in) -> (n_out, n_in)
        self.grads["b"] = dy.sum(axis=0)  # y = ... + b:  (n_out,)
        return dy @ W if input_grad else None  # y = x W^T:  (B, n_out) @ (n_out, n_in) -> (B, n_in)

    def __repr__(self):
        return f"Dense({self.n_in}->{self.n_out})"


class ReLU(Layer):
    r""":math:`y = \max(x, 0)`; :math:`\partial L/\partial x = \Delta \odot [x > 0]`."""

    def __init__(self):
        self.params, self.grads, self._cache = {}, {}, None

    def forward(self, x):
        mask = x > 0
        self._cache = mask
        return x * mask  # keeps dtype; max(x, 0)

    def backward(self, dy):
        mask = self._cached()
        self._upstream(dy, mask.shape)
        return dy * mask  # d max(x,0)/dx = [x > 0]

    def __repr__(self):
        return "ReLU()"


class Tanh(Layer):
    r""":math:`y = \tanh x`; :math:`\partial L/\partial x = \Delta \odot (1 - y^2)`."""

    def __init__(self):
        self.params, self.grads, self._cache = {}, {}, None

    def forward(self, x):
        xp = array_module(x)
        y = xp.tanh(x)
        self._cache = y
        return y

    def backward(self, dy):
        y = self._cached()
        self._upstream(dy, y.shape)
        return dy * (1 - y * y)  # d tanh(x)/dx = 1 - tanh(x)^2

    def __repr__(self):
        return "Tanh()"


class Flatten(Layer):
    """(B, d1, d2, ...) -> (B, d1*d2*...); the backward reshapes back."""

    def __init__(self):
        self.params, self.grads, self._cache = {}, {}, None

    def forward(self, x):
        if getattr(x, "ndim", 0) < 2:
            raise ShapeError(f"{self!r}: forward input must have shape (B, ...), got {getattr(x, 'shape', None)}")
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)  # (B, d1*d2*...)

    def backward(self, dy):
        shape = self._cached()
        self._upstream(dy, (shape[0], int(np.prod(shape[1:]))))
        return dy.reshape(shape)

    def __repr__(self):
        return "Flatten()"
