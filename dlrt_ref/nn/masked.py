r"""Masked (pruned) dense and convolutional layers: a binary mask kept through training.

Magnitude pruning (Han et al. 2015; the lottery-ticket protocol of Frankle &
Carbin 2019) trains a network whose weight is :math:`W \odot M` for a fixed
binary mask :math:`M \in \{0, 1\}^{m \times n}`. ``experiments/dlrt_vs_pruning`` (issue 16 §5)
compares DLRT with such networks at equal parameter counts ([P]'s abstract: DLRT finds the
small network *during* training, pruning needs a trained dense one first).

A masked layer stores the full weight ``params["W"]`` (m×n) and the mask
``state["M"]`` (m×n, the layer's dtype, entries 0 or 1). ``state`` is the home
of non-trainable arrays (:mod:`dlrt_ref.nn.network`), so the mask travels with
checkpoints, copies and the trainer's snapshot, and no optimiser ever sees it.

.. math::

    Y = X (W \odot M)^T + b, \qquad
    \frac{\partial L}{\partial W} = (\Delta^T X) \odot M, \qquad
    \frac{\partial L}{\partial X} = \Delta (W \odot M).

Why a pruned weight can never come back, whatever the optimiser:

1. the forward uses :math:`W \odot M`, so the value stored at a pruned entry
   has no effect on any output or gradient;
2. the gradient of a pruned entry is exactly 0 (the chain rule of line 1), and
   the stored entry is set to 0 when the mask is applied; SGD, momentum and
   Adam (:mod:`dlrt_ref.train.optim`, no weight decay) move an entry whose
   gradient history is all zeros by exactly 0 (Adam: m̂ = 0, 0/(√0 + ε) = 0),
   so the stored entry stays exactly 0 too.

No change to the trainers is needed: the layer is an ordinary dense parameter
holder for :class:`~dlrt_ref.train.dlrt.DLRT` (``net.dense_params()``). The
memory a masked layer holds in training is that of a dense one plus the mask.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.nn.conv import Conv2d
from dlrt_ref.nn.errors import ShapeError, check_backend
from dlrt_ref.nn.layers import Dense

__all__ = ["MaskedDense", "MaskedConv2d", "masked_copy"]


class _Masked:
    """The mask handling shared by :class:`MaskedDense` and :class:`MaskedConv2d`."""

    masked = True

    def _set_mask(self, mask):
        """Check ``mask`` (shape of W, entries 0/1, layer backend), store it in ``state["M"]``, zero W off the mask."""
        W = self.params["W"]
        xp = self.backend.xp
        if getattr(mask, "shape", None) != W.shape:
            raise ShapeError(f"{self!r}: mask must have the shape of W {tuple(W.shape)}, got {getattr(mask, 'shape', None)}")
        check_backend(self, mask, "mask", self.backend.name)
        M = mask.astype(self.dtype)
        if not bool(xp.all((M == 0) | (M == 1))):
            raise ValueError(f"{self!r}: mask entries must be 0 or 1 (or bool)")
        self.state = {"M": M}
        self.params["W"] = W * M  # pruned entries stored as exact zeros

    @property
    def mask(self):
        return self.state["M"]

    def nnz(self) -> int:
        """Number of unpruned weights (the ones of the mask)."""
        return int(self.backend.xp.count_nonzero(self.state["M"]))

    def num_params(self) -> int:
        """Unpruned weights plus the bias."""
        return self.nnz() + int(self.params["b"].size)

    def effective_weight(self):
        """W ⊙ M, the weight the forward uses."""
        return self.params["W"] * self.state["M"]  # (m, n) ⊙ (m, n)


class MaskedDense(_Masked, Dense):
    r"""Dense layer :math:`y = x (W\odot M)^T + b` with a fixed binary mask M (module docstring).

    Parameters
    ----------
    n_in, n_out, activation, backend, dtype, seed : as :class:`~dlrt_ref.nn.layers.Dense`
    mask : array (n_out, n_in) of 0/1 or bool on the layer's backend; default all ones

    Build one from a trained layer with :func:`masked_copy`.
    """

    def __init__(self, n_in, n_out, *, mask=None, activation="relu", backend="numpy", dtype=np.float32, seed=0):
        super().__init__(n_in, n_out, activation=activation, backend=backend, dtype=dtype, seed=seed)
        self._set_mask(self.backend.xp.ones((self.n_out, self.n_in), dtype=self.dtype) if mask is None else mask)

    def forward(self, x):
        x = self._input(x, (None, self.n_in))
        WM = self.effective_weight()  # (n_out, n_in)
        self._cache = (x, WM)
        return x @ WM.T + self.params["b"]  # (B, n_in) @ (n_in, n_out) -> (B, n_out)

    def backward(self, dy, input_grad=True):
        x, WM = self._cached()
        dy = self._upstream(dy, (x.shape[0], self.n_out))
        self.grads["W"] = (dy.T @ x) * self.state["M"]  # y = x (W⊙M)^T: (n_out, B) @ (B, n_in) -> (n_out, n_in), ⊙ M
        self.grads["b"] = dy.sum(axis=0)  # (n_out,)
        return dy @ WM if input_grad else None  # (B, n_out) @ (n_out, n_in) -> (B, n_in)

    def __repr__(self):
        return f"MaskedDense({self.n_in}->{self.n_out})"


class MaskedConv2d(_Masked, Conv2d):
    r"""Convolution :math:`Y = X (W\odot M)^T + b` on the unfolded input, W the (c_out, c_in·k²) kernel matrix.

    Parameters as :class:`~dlrt_ref.nn.conv.Conv2d`, plus ``mask`` (c_out, c_in·k²) of 0/1 or bool.
    """

    def __init__(self, c_in, c_out, k, stride=1, padding=0, *, mask=None, activation="relu", backend="numpy",
                 dtype=np.float32, seed=0):
        super().__init__(c_in, c_out, k, stride, padding, activation=activation, backend=backend, dtype=dtype, seed=seed)
        self._set_mask(self.backend.xp.ones((self.n_out, self.n_in), dtype=self.dtype) if mask is None else mask)

    def forward(self, x):
        X, (B, Ho, Wo) = self._unfold(x)  # (N, C_in k²), N = B·Ho·Wo
        WM = self.effective_weight()  # (C_out, C_in k²)
        self._X, self._WM = X, WM
        Y = X @ WM.T + self.params["b"]  # (N, C_in k²) @ (C_in k², C_out) -> (N, C_out)
        return Y.reshape(B, Ho, Wo, self.c_out).transpose(0, 3, 1, 2)  # (B, C_out, Ho, Wo)

    def backward(self, dy, input_grad=True):
        D = self._upstream_matrix(dy)  # (N, C_out)
        X, WM = self._X, self._WM
        self.grads["W"] = (D.T @ X) * self.state["M"]  # (C_out, N) @ (N, C_in k²) -> (C_out, C_in k²), ⊙ M
        self.grads["b"] = D.sum(axis=0)  # (C_out,)
        if not input_grad:
            return None
        return self._fold(D @ WM)  # (N, C_out) @ (C_out, C_in k²) -> (N, C_in k²), then col2im

    def __repr__(self):
        return f"MaskedConv2d({self._geometry_repr()})"


def masked_copy(layer, mask):
    """A :class:`MaskedDense` / :class:`MaskedConv2d` with the weights and bias of ``layer`` (a Dense or Conv2d,
    left unchanged) and ``mask``; pruned weights are zeroed in the copy."""
    if isinstance(layer, Conv2d):
        new = MaskedConv2d.__new__(MaskedConv2d)
        new.__dict__.update(layer.__dict__)
    elif isinstance(layer, Dense):
        new = MaskedDense.__new__(MaskedDense)
        new.__dict__.update(layer.__dict__)
    else:
        raise TypeError(f"masked_copy: layer must be a Dense or Conv2d, got {type(layer).__name__}")
    new.params = {k: v.copy() for k, v in layer.params.items()}
    new.grads, new._cache = {}, None
    new._set_mask(mask)
    return new
