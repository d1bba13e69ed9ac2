r"""Batch normalisation (Ioffe & Szegedy 2015) with a handwritten backward: BatchNorm1d and BatchNorm2d.

Over the axes that hold the N samples of one channel c (the batch for (B, C)
inputs; batch and pixels for (B, C, H, W) inputs, N = B·H·W),

.. math::

    \mu = \tfrac1N \textstyle\sum x, \quad \sigma^2 = \tfrac1N \sum (x - \mu)^2, \quad
    \hat x = (x - \mu)/\sqrt{\sigma^2 + \epsilon}, \quad y = \gamma \hat x + \beta,

and the backward (the batch statistics depend on x, hence the two sums)

.. math::

    \frac{\partial L}{\partial \gamma} = \textstyle\sum \Delta \odot \hat x, \quad
    \frac{\partial L}{\partial \beta} = \sum \Delta, \quad
    \frac{\partial L}{\partial x} = \frac{\gamma}{N\sqrt{\sigma^2+\epsilon}}
    \Big(N \Delta - \sum \Delta - \hat x \sum \Delta \odot \hat x\Big).

In evaluation mode (``layer.training`` False, set by ``Sequential.eval()``) the
layer is the affine map with the running statistics,
:math:`y = \gamma (x - \bar\mu)/\sqrt{\bar\sigma^2 + \epsilon} + \beta`, whose
backward is :math:`\Delta\,\gamma/\sqrt{\bar\sigma^2+\epsilon}`.

Running statistics (the convention of PyTorch's BatchNorm; the thesis does not state its own):
:math:`\bar\mu \leftarrow (1-m)\bar\mu + m\mu`, :math:`\bar\sigma^2 \leftarrow
(1-m)\bar\sigma^2 + m\,\tfrac{N}{N-1}\sigma^2` with momentum m = 0.1. They are
non-trainable and live in ``layer.state`` (saved in checkpoints, restored when
a step fails). Once ``begin_step(k)`` has been called (the trainers call it
before every pass), they are updated **once per training step**, at its first
training-mode pass — the point Y0 of the step; the further passes of bug and
ksl use their own batch statistics but leave the running ones alone. Without
``begin_step`` every training-mode forward updates them.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.nn.errors import ShapeError
from dlrt_ref.nn.layers import Layer

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(Layer):
    """Shared by BatchNorm1d/2d; subclasses set the input pattern and the reduction axes."""

    PATTERN: tuple = ()
    AXES: tuple = ()

    def __init__(self, channels, *, eps=1e-5, momentum=0.1, backend="numpy", dtype=np.float32):
        super().__init__(backend, dtype)
        self.channels = int(channels)
        if self.channels < 1:
            raise ShapeError(f"{type(self).__name__}: channels must be >= 1, got {channels}")
        if not (eps > 0 and 0 <= momentum <= 1):
            raise ValueError(f"{type(self).__name__}: need eps > 0 and momentum in [0, 1], got eps={eps}, "
                             f"momentum={momentum}")
        self.eps, self.momentum = float(eps), float(momentum)
        xp = self.backend.xp
        self.params = {"gamma": xp.ones(self.channels, dtype=self.dtype),  # γ (C,)
                       "beta": xp.zeros(self.channels, dtype=self.dtype)}  # β (C,)
        self.state = {"running_mean": xp.zeros(self.channels, dtype=self.dtype),  # μ̄ (C,)
                      "running_var": xp.ones(self.channels, dtype=self.dtype)}  # σ̄² (C,)
        self.training = True
        self._step = None
        self._updated = None  # (step, the state dict it produced): a restored state (a new dict) is updated again

    def begin_step(self, step: int) -> None:
        self._step = int(step)

    def _bcast(self, v):
        """(C,) -> broadcastable against the input: (1, C) or (1, C, 1, 1)."""
        return v.reshape((1, self.channels) + (1,) * (len(self.PATTERN) - 2))

    def forward(self, x):
        x = self._input(x, self.PATTERN[:1] + (self.channels,) + self.PATTERN[2:])
        xp = self.backend.xp
        gamma, beta = self._bcast(self.params["gamma"]), self._bcast(self.params["beta"])
        if not self.training:  # the running statistics are constants: an affine map of x
            inv = self._bcast(1.0 / xp.sqrt(self.state["running_var"] + self.eps))  # 1/√(σ̄²+ε) (1, C, ...)
            xhat = (x - self._bcast(self.state["running_mean"])) * inv  # x̂
            self._cache = (xhat, inv, False)
            return gamma * xhat + beta
        N = x.size // self.channels  # samples per channel
        if N < 2:
            raise ShapeError(f"{self!r}: training mode needs at least 2 values per channel, got input {x.shape}")
        mu = x.mean(axis=self.AXES, keepdims=True)  # μ (1, C, ...)
        xc = x - mu
        var = (xc * xc).mean(axis=self.AXES, keepdims=True)  # σ² (1, C, ...), biased
        inv = 1.0 / xp.sqrt(var + self.eps)  # 1/√(σ²+ε)
        xhat = xc * inv  # x̂
        if self._step is None or self._updated is None or self._updated[0] != self._step \
                or self._updated[1] is not self.state:
            m = self.momentum
            self.state = {"running_mean": (1 - m) * self.state["running_mean"] + m * mu.reshape(-1),
                          "running_var": (1 - m) * self.state["running_var"] + m * var.reshape(-1) * (N / (N - 1))}
            self._updated = (self._step, self.state)
        self._cache = (xhat, inv, True)
        return gamma * xhat + beta  # y = γ x̂ + β

    def backward(self, dy):
        xhat, inv, batch_stats = self._cached()
        dy = self._upstream(dy, xhat.shape)
        gamma = self._bcast(self.params["gamma"])
        self.grads["gamma"] = (dy * xhat).sum(axis=self.AXES)  # y = γ x̂: (C,)
        self.grads["beta"] = dy.sum(axis=self.AXES)  # y = ... + β: (C,)
        dxhat = dy * gamma  # ∂L/∂x̂
        if not batch_stats:  # eval: x̂ = (x − μ̄)/√(σ̄²+ε)
            return dxhat * inv
        N = xhat.size // self.channels
        s1 = dxhat.sum(axis=self.AXES, keepdims=True)  # Σ ∂L/∂x̂ (the path through μ)
        s2 = (dxhat * xhat).sum(axis=self.AXES, keepdims=True)  # Σ ∂L/∂x̂ ⊙ x̂ (the path through σ²)
        return inv * (dxhat - s1 / N - xhat * (s2 / N))  # ∂L/∂x

    def num_params(self) -> int:
        return 2 * self.channels

    def __repr__(self):
        return f"{type(self).__name__}({self.channels})"


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (B, C) inputs: statistics over the batch, per feature. See the module doc."""

    PATTERN = (None, None)
    AXES = (0,)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (B, C, H, W) inputs: statistics over batch and pixels, per channel."""

    PATTERN = (None, None, None, None)
    AXES = (0, 2, 3)
