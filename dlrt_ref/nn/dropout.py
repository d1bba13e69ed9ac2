r"""Dropout (Srivastava et al. 2014), inverted: :math:`y = x \odot m`, :math:`m_i \in \{0, 1/(1-p)\}`.

The backward is :math:`\partial L/\partial x = \Delta \odot m` with the mask of
the forward. In evaluation mode (``layer.training`` False) the layer is the
identity.

**Which mask.** The mask is a function of ``(seed, step, input shape)`` only:
it is drawn from ``numpy.random.default_rng([seed, step])``, where ``step`` is
the training step given by ``begin_step(step)`` (the trainers call
``net.begin_step(trainer.steps)`` before every pass). So every pass of one
step sees **the same mask**: ra-bug (one pass) and bug/ksl/parallel (two or
three passes at different points Y) all integrate one vector field per step —
the gradient flow of the loss of one fixed sub-network — and the K-, L- and
S-steps of bug and ksl stay the splitting of that one field. A new step draws
a new mask. Without any ``begin_step`` call the step is 0, so repeated
forwards are deterministic (which the gradient checks rely on).

The mask is drawn on the host with NumPy (once per step and input shape, then
cached) and copied to the input's backend at each forward (on CuPy, one
host-to-device copy of the mask per pass and layer).
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.backend import array_module
from dlrt_ref.nn.layers import Layer

__all__ = ["Dropout"]


class Dropout(Layer):
    """Inverted dropout with drop probability ``p`` and a mask fixed per training step (see module doc).

    Parameters
    ----------
    p : float in [0, 1)
    seed : int >= 0; the mask of step k is drawn from ``default_rng([seed, k])``.
    """

    def __init__(self, p=0.5, *, seed=0):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be a number in [0, 1), got {p!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"Dropout: seed must be an integer >= 0, got {seed!r}")
        self.params, self.grads, self._cache = {}, {}, None
        self.p, self.seed = float(p), int(seed)
        self.training = True
        self.step = 0
        self._mask_key, self._mask = None, None

    def begin_step(self, step: int) -> None:
        self.step = int(step)

    def mask(self, shape, dtype=np.float64):
        """The host mask of the current step for an input of ``shape``: entries 0 or 1/(1−p)."""
        key = (self.step, tuple(shape), np.dtype(dtype))
        if key != self._mask_key:
            keep = np.random.default_rng([self.seed, self.step]).random(shape) >= self.p
            self._mask_key, self._mask = key, (keep / (1.0 - self.p)).astype(dtype)
        return self._mask

    def forward(self, x):
        if not self.training or self.p == 0:
            self._cache = None if not hasattr(x, "shape") else ("identity", x.shape)
            return x
        m = array_module(x).asarray(self.mask(x.shape, x.dtype))  # (same shape as x)
        self._cache = ("mask", m)
        return x * m  # y = x ⊙ m

    def backward(self, dy):
        kind, m = self._cached()
        if kind == "identity":
            self._upstream(dy, m)
            return dy
        self._upstream(dy, m.shape)
        return dy * m  # ∂L/∂x = Δ ⊙ m

    def __repr__(self):
        return f"Dropout(p={self.p})"
