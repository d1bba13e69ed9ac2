r"""Convolutions as matrix products (im2col / col2im), dense and low-rank, and pooling (max, average, global average).

Layout is NCHW. A kernel of shape (C_out, C_in, k, k) is stored as the matrix
:math:`W \in \mathbb R^{C_\text{out} \times C_\text{in} k^2}` (row-major over
(C_in, k, k)). With :math:`X = \operatorname{im2col}(x)` of shape
(B·H_out·W_out, C_in·k²), one row per output pixel,

.. math::

    Y = X W^T + b \quad (B H_\text{out} W_\text{out} \times C_\text{out}), \qquad
    H_\text{out} = \left\lfloor \frac{H + 2p - k}{s} \right\rfloor + 1,

and the convolution is exactly a linear layer over the unfolded input, so its
gradient :math:`\partial L/\partial W = \Delta^T X` is again a sum of outer
products (Zangrando 2022, §3 on convolutional layers; Schotthöfer et al. 2022,
§4.2). ``col2im`` is the adjoint of ``im2col`` (it sums overlapping patches).
Both loop over the k×k kernel offsets only; every pixel is handled by slicing.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.backend import array_module
from dlrt_ref.linalg import svd_factors
from dlrt_ref.nn import init
from dlrt_ref.nn.errors import ShapeError, check_shape
from dlrt_ref.nn.layers import Layer
from dlrt_ref.nn.lowrank_layers import LowRankFactors, check_rank

__all__ = ["im2col", "col2im", "conv_output_size", "Conv2d", "LowRankConv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d"]


def conv_output_size(size: int, k: int, stride: int = 1, padding: int = 0) -> int:
    """:math:`\\lfloor (size + 2p - k)/s \\rfloor + 1`."""
    return (size + 2 * padding - k) // stride + 1


def im2col(x, k: int, stride: int = 1, padding: int = 0):
    """Unfold x (B, C, H, W) into X (B·Ho·Wo, C·k·k); row (b, i, j) is the patch under output pixel (i, j)."""
    xp = array_module(x)
    B, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    if padding:
        x = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    patches = xp.empty((B, C, k, k, Ho, Wo), dtype=x.dtype)
    for i in range(k):  # kernel offsets only; all pixels at once by strided slicing
        for j in range(k):
            patches[:, :, i, j] = x[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride]  # (B, C, Ho, Wo)
    return patches.transpose(0, 4, 5, 1, 2, 3).reshape(B * Ho * Wo, C * k * k)  # rows (b, i, j), cols (c, ki, kj)


def col2im(cols, x_shape, k: int, stride: int = 1, padding: int = 0):
    """Adjoint of :func:`im2col`: fold (B·Ho·Wo, C·k·k) back to (B, C, H, W), summing overlaps."""
    xp = array_module(cols)
    B, C, H, W = x_shape
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    patches = cols.reshape(B, Ho, Wo, C, k, k).transpose(0, 3, 4, 5, 1, 2)  # (B, C, k, k, Ho, Wo)
    x = xp.zeros((B, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    for i in range(k):
        for j in range(k):
            x[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride] += patches[:, :, i, j]
    return x[:, :, padding : padding + H, padding : padding + W]


class _ConvGeometry:
    """Shared argument checks and the input unfolding of Conv2d / LowRankConv2d."""

    def _set_geometry(self, c_in, c_out, k, stride, padding):
        self.c_in, self.c_out, self.k, self.stride, self.padding = map(int, (c_in, c_out, k, stride, padding))
        if min(self.c_in, self.c_out, self.k, self.stride) < 1 or self.padding < 0:
            raise ShapeError(
                f"{type(self).__name__}: need c_in, c_out, k, stride >= 1 and padding >= 0, got "
                f"c_in={c_in}, c_out={c_out}, k={k}, stride={stride}, padding={padding}"
            )
        self.n_in, self.n_out = self.c_in * self.k * self.k, self.c_out

    def _unfold(self, x):
        x = self._input(x, (None, self.c_in, None, None))
        B, _, H, W = x.shape
        Ho = conv_output_size(H, self.k, self.stride, self.padding)
        Wo = conv_output_size(W, self.k, self.stride, self.padding)
        if Ho < 1 or Wo < 1:
            raise ShapeError(
                f"{self!r}: input of spatial size {H}x{W} is smaller than the kernel {self.k}x{self.k} "
                f"(padding {self.padding})"
            )
        self._cache = (x.shape, Ho, Wo)
        return im2col(x, self.k, self.stride, self.padding), (B, Ho, Wo)  # (B·Ho·Wo, C_in k²)

    def _upstream_matrix(self, dy):
        x_shape, Ho, Wo = self._cached()
        dy = self._upstream(dy, (x_shape[0], self.c_out, Ho, Wo))
        return dy.transpose(0, 2, 3, 1).reshape(-1, self.c_out)  # (B, C_out, Ho, Wo) -> (B·Ho·Wo, C_out)

    def _fold(self, dX):
        x_shape = self._cache[0]
        return col2im(dX, x_shape, self.k, self.stride, self.padding)  # (B·Ho·Wo, C_in k²) -> (B, C_in, H, W)

    def _geometry_repr(self):
        return f"{self.c_in}->{self.c_out}, k={self.k}, stride={self.stride}, padding={self.padding}"


class Conv2d(_ConvGeometry, Layer):
    r"""Dense 2-D convolution through im2col: :math:`Y = X W^T + b` on unfolded rows.

    Attributes
    ----------
    params : {"W": (c_out, c_in·k·k), "b": (c_out,)} (He/Glorot init with fan-in c_in·k²)
    grads : same keys after backward: :math:`\partial L/\partial W = \Delta^T X`,
        :math:`\partial L/\partial b = \mathbf 1^T \Delta` with Δ reshaped to (B·Ho·Wo, c_out).
    """

    input_grad_optional = True  # backward(dy, input_grad=False): no col2im (see dlrt_ref.nn.layers)

    def __init__(self, c_in, c_out, k, stride=1, padding=0, *, activation="relu", backend="numpy", dtype=np.float32, seed=0):
        Layer.__init__(self, backend, dtype)
        self._set_geometry(c_in, c_out, k, stride, padding)
        W = init.dense_weight(self.n_out, self.n_in, seed, activation)
        self.params = {"W": self.backend.asarray(W, self.dtype), "b": self.backend.xp.zeros(self.c_out, dtype=self.dtype)}

    def forward(self, x):
        X, (B, Ho, Wo) = self._unfold(x)  # (N, C_in k²), N = B·Ho·Wo
        W, b = self.params["W"], self.params["b"]
        self._X = X
        Y = X @ W.T + b  # (N, C_in k²) @ (C_in k², C_out) -> (N, C_out)
        return Y.reshape(B, Ho, Wo, self.c_out).transpose(0, 3, 1, 2)  # (B, C_out, Ho, Wo)

    def backward(self, dy, input_grad=True):
        D = self._upstream_matrix(dy)  # (N, C_out)
        X, W = self._X, self.params["W"]
        self.grads["W"] = D.T @ X  # Y = X W^T: (C_out, N) @ (N, C_in k²) -> (C_out, C_in k²)
        self.grads["b"] = D.sum(axis=0)  # Y = ... + b: (C_out,)
        if not input_grad:
            return None
        return self._fold(D @ W)  # Y = X W^T: (N, C_out) @ (C_out, C_in k²) -> (N, C_in k²), then col2im

    @property
    def shape(self):
        return (self.n_out, self.n_in)

    def __repr__(self):
        return f"Conv2d({self._geometry_repr()})"


class LowRankConv2d(_ConvGeometry, LowRankFactors):
    r"""Low-rank 2-D convolution: the (c_out, c_in·k²) kernel matrix is :math:`W = U S V^T`.

    Same interface as :class:`~dlrt_ref.nn.lowrank_layers.LowRankLinear` (``U`` c_out×r,
    ``S`` r×r, ``V`` c_in·k²×r, ``grad_op``, ``grad_K``, ``grad_L``, ``grad_S``,
    ``set_factors``, ``to_dense``), with X the im2col unfolding of the input and
    Δ the upstream gradient reshaped to (B·Ho·Wo, c_out).
    """

    def __init__(self, c_in, c_out, k, rank, stride=1, padding=0, *, activation="relu", decay=None, spectrum="halfnormal",
                 backend="numpy", dtype=np.float32, seed=0):
        Layer.__init__(self, backend, dtype)
        self._set_geometry(c_in, c_out, k, stride, padding)
        self._init_factors(rank, seed, activation, decay, spectrum)

    @classmethod
    def from_dense(cls, conv, rank):
        """Truncated SVD of a :class:`Conv2d`'s kernel matrix (bias, backend, dtype copied)."""
        if not isinstance(conv, Conv2d):
            raise TypeError(f"LowRankConv2d.from_dense needs a Conv2d layer, got {type(conv).__name__}")
        rank = check_rank("LowRankConv2d.from_dense", rank, conv.n_out, conv.n_in)
        layer = cls(conv.c_in, conv.c_out, conv.k, rank, conv.stride, conv.padding, backend=conv.backend, dtype=conv.dtype)
        layer.set_factors(*svd_factors(conv.params["W"], rank))  # U (c_out, r), S (r, r), V (c_in k², r)
        layer.params["b"] = conv.params["b"].copy()
        return layer

    def forward(self, x):
        X, (B, Ho, Wo) = self._unfold(x)  # (N, C_in k²)
        Y = self._lr_forward(X)  # (N, C_out), never forming W
        return Y.reshape(B, Ho, Wo, self.c_out).transpose(0, 3, 1, 2)  # (B, C_out, Ho, Wo)

    def backward(self, dy, input_grad=True):
        D = self._upstream_matrix(dy)  # (N, C_out)
        dX = self._lr_backward(D, input_grad)  # (N, C_in k²) or None
        return self._fold(dX) if input_grad else None  # -> (B, C_in, H, W)

    def __repr__(self):
        return f"LowRankConv2d({self._geometry_repr()}, rank={self.rank if hasattr(self, 'S') else '?'})"


class _Pool2d(Layer):
    """What the pooling layers share: k×k windows with stride s (default k), no parameters."""

    def __init__(self, k, stride=None):
        self.params, self.grads, self._cache = {}, {}, None
        self.k = int(k)
        self.stride = self.k if stride is None else int(stride)
        if self.k < 1 or self.stride < 1:
            raise ShapeError(f"{type(self).__name__}: k and stride must be >= 1, got k={k}, stride={stride}")

    def __repr__(self):
        return f"{type(self).__name__}(k={self.k}, stride={self.stride})"


class MaxPool2d(_Pool2d):
    r"""Max pooling over k×k windows with stride s (default k), no padding.

    Forward :math:`y_{bcij} = \max_{(u,v)} x_{b,c,si+u,sj+v}`; the backward sends
    :math:`\Delta_{bcij}` to the (first) arg-max of each window (a subgradient at ties).

    ``frozen``: an arg-max pattern (B, C, Ho, Wo) to select with instead of the
    arg-max, or None. With the pattern of a point θ frozen, the layer is the
    smooth (linear) piece active at θ, whose derivative the backward computes;
    gradient checks freeze it so that finite differences never straddle a kink
    (see :func:`dlrt_ref.nn.gradcheck.frozen_pooling`).
    """

    def __init__(self, k, stride=None):
        super().__init__(k, stride)
        self.frozen = None

    def forward(self, x):
        check_shape(self, x, "forward input", (None, None, None, None))
        xp = array_module(x)
        B, C, H, W = x.shape
        k, s = self.k, self.stride
        Ho, Wo = conv_output_size(H, k, s), conv_output_size(W, k, s)
        if Ho < 1 or Wo < 1:
            raise ShapeError(f"{self!r}: input of spatial size {H}x{W} is smaller than the window {k}x{k}")
        windows = xp.stack(
            [x[:, :, i : i + s * Ho : s, j : j + s * Wo : s] for i in range(k) for j in range(k)]
        )  # (k², B, C, Ho, Wo): window offset first
        if self.frozen is None:
            arg = windows.argmax(axis=0)  # (B, C, Ho, Wo), offset index i*k + j
        else:
            arg = self.frozen
            check_shape(self, arg, "frozen arg-max pattern", (B, C, Ho, Wo))
        self._cache = (x.shape, arg)
        return xp.take_along_axis(windows, arg[None], axis=0)[0]  # (B, C, Ho, Wo): the selected entries

    def backward(self, dy):
        x_shape, arg = self._cached()
        self._upstream(dy, arg.shape)
        xp = array_module(dy)
        k, s = self.k, self.stride
        Ho, Wo = arg.shape[2:]
        dx = xp.zeros(x_shape, dtype=dy.dtype)
        for i in range(k):
            for j in range(k):  # y = x[window][arg]  ->  dx[window][arg] += dy
                dx[:, :, i : i + s * Ho : s, j : j + s * Wo : s] += dy * (arg == i * k + j)
        return dx


class AvgPool2d(_Pool2d):
    r"""Average pooling over k×k windows with stride s (default k), no padding.

    Forward :math:`y_{bcij} = \frac{1}{k^2}\sum_{u,v<k} x_{b,c,si+u,sj+v}`, linear
    in x, so the backward is its adjoint: each window receives
    :math:`\Delta_{bcij}/k^2` at every one of its k² entries (overlapping windows,
    s < k, add up). The LeNet5 variants of Zangrando 2022 (ch. 5) pool this way.
    """

    def forward(self, x):
        check_shape(self, x, "forward input", (None, None, None, None))
        B, C, H, W = x.shape
        k, s = self.k, self.stride
        Ho, Wo = conv_output_size(H, k, s), conv_output_size(W, k, s)
        if Ho < 1 or Wo < 1:
            raise ShapeError(f"{self!r}: input of spatial size {H}x{W} is smaller than the window {k}x{k}")
        self._cache = (x.shape, (Ho, Wo))
        y = 0
        for i in range(k):
            for j in range(k):  # sum of the k² strided views, each (B, C, Ho, Wo)
                y = y + x[:, :, i : i + s * Ho : s, j : j + s * Wo : s]
        return y / (k * k)

    def backward(self, dy):
        x_shape, (Ho, Wo) = self._cached()
        self._upstream(dy, x_shape[:2] + (Ho, Wo))
        xp = array_module(dy)
        k, s = self.k, self.stride
        dx = xp.zeros(x_shape, dtype=dy.dtype)
        share = dy / (k * k)  # (B, C, Ho, Wo): ∂y_bcij/∂x = 1/k² on its window
        for i in range(k):
            for j in range(k):
                dx[:, :, i : i + s * Ho : s, j : j + s * Wo : s] += share
        return dx


class GlobalAvgPool2d(Layer):
    r"""Global average pooling (B, C, H, W) -> (B, C): :math:`y_{bc} = \frac{1}{HW}\sum_{ij} x_{bcij}`.

    Linear in x; the backward spreads :math:`\Delta_{bc}/(HW)` over every pixel
    of the channel. ResNet20's head (He et al. 2016, §4.2) pools this way.
    """

    def __init__(self):
        self.params, self.grads, self._cache = {}, {}, None

    def forward(self, x):
        check_shape(self, x, "forward input", (None, None, None, None))
        self._cache = x.shape
        return x.mean(axis=(2, 3))  # (B, C)

    def backward(self, dy):
        B, C, H, W = self._cached()
        self._upstream(dy, (B, C))
        xp = array_module(dy)
        return xp.broadcast_to((dy / (H * W))[:, :, None, None], (B, C, H, W)).copy()  # (B, C, H, W)

    def __repr__(self):
        return "GlobalAvgPool2d()"
