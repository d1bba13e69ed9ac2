r"""Softmax cross-entropy, computed stably with the log-sum-exp shift.

For logits :math:`z \in \mathbb R^{B\times C}` and integer labels :math:`y`,

.. math::

    L = -\frac1B \sum_b \log p_{b, y_b}, \quad
    \log p_{bc} = (z_{bc} - m_b) - \log \sum_{c'} e^{z_{bc'} - m_b}, \quad m_b = \max_c z_{bc},

and :math:`\partial L / \partial z = (p - \operatorname{onehot}(y)) / B`.
Subtracting :math:`m_b` makes every exponent :math:`\le 0`, so nothing overflows
and the largest term of each sum is 1, so nothing underflows to log(0).
"""
from __future__ import annotations

from dlrt_ref.backend import array_module, to_numpy
from dlrt_ref.nn.errors import ShapeError, check_shape

__all__ = ["SoftmaxCrossEntropy"]


class SoftmaxCrossEntropy:
    """Mean softmax cross-entropy over a batch.

    ``forward(logits (B, C), labels (B,) int) -> float``; ``backward(dloss=1.0) -> (B, C)``.
    ``probs`` holds the softmax of the last forward (useful for accuracy).
    """

    def __init__(self):
        self._cache = None
        self.probs = None

    def forward(self, logits, labels):
        check_shape(self, logits, "logits", (None, None))
        check_shape(self, labels, "labels", (logits.shape[0],))
        xp = array_module(logits, labels)
        if labels.dtype.kind not in "iu":
            raise ShapeError(f"{self!r}: labels must be integer class indices, got dtype {labels.dtype}")
        B, C = logits.shape
        shifted = logits - logits.max(axis=1, keepdims=True)  # (B, C), max 0 per row
        logZ = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))  # (B, 1)
        logp = shifted - logZ  # (B, C) log-softmax
        rows = xp.arange(B)
        # the label range is checked with the loss in ONE host synchronisation (on a GPU each read of a
        # device value waits for the device); until then, index with clipped labels so nothing is out of bounds
        loss = -logp[rows, labels.clip(0, max(C - 1, 0))].mean()
        if B:
            loss, lo, hi = (float(v) for v in to_numpy(xp.stack([loss.astype(xp.float64), labels.min().astype(xp.float64),
                                                                 labels.max().astype(xp.float64)])))
            if lo < 0 or hi >= C:
                raise ValueError(f"{self!r}: labels must lie in [0, {C}), got range [{int(lo)}, {int(hi)}]")
        else:
            loss = float(to_numpy(loss))
        self.probs = xp.exp(logp)
        self._cache = (rows, labels)
        return loss

    def backward(self, dloss=1.0):
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        rows, labels = self._cache
        d = self.probs.copy()  # softmax p
        d[rows, labels] -= 1  # p - onehot(y)
        return d * (dloss / d.shape[0])  # mean over the batch -> 1/B

    def __repr__(self):
        return "SoftmaxCrossEntropy()"
