r"""Residual blocks (He et al. 2016): :math:`y = \mathcal F(x) + \mathcal S(x)`, a container layer.

The branch :math:`\mathcal F` is a list of layers (for ResNet20: conv, BN,
ReLU, conv, BN); the shortcut :math:`\mathcal S` is the identity or a list of
layers, typically a 1×1 projection (a strided 1×1 convolution and BN) where the
shape changes. The activation after the sum is an ordinary layer that follows
the block in the :class:`~dlrt_ref.nn.network.Sequential`.

Backward: both paths receive the same :math:`\Delta = \partial L/\partial y`
and their input gradients add,

.. math::

    \frac{\partial L}{\partial x} = J_{\mathcal F}(x)^T \Delta + J_{\mathcal S}(x)^T \Delta
    \qquad (J_{\mathcal S} = I \text{ for the identity}).

The block owns no parameter itself: ``children()`` lists the layers of the
branch and of the shortcut, and :meth:`Sequential.flat_layers` puts them in the
network's leaf list, so DLRT integrates a low-rank convolution inside a block,
the optimiser updates its biases and BN parameters, and checkpoints save them.
"""
from __future__ import annotations

from dlrt_ref.nn.errors import ShapeError

__all__ = ["Residual"]


class Residual:
    """``y = branch(x) + shortcut(x)``; ``shortcut=None`` is the identity (see module doc).

    Parameters
    ----------
    branch : list of layers, applied in order
    shortcut : list of layers or None (identity)
    """

    lowrank = False

    def __init__(self, branch, shortcut=None):
        self.branch = list(branch)
        self.shortcut = None if shortcut is None else list(shortcut)
        if not self.branch:
            raise ValueError("Residual: branch needs at least one layer")
        self.params, self.grads, self._cache = {}, {}, None
        self.training = True

    def children(self) -> list:
        """The branch's layers, then the shortcut's (forward order within each)."""
        return self.branch + (self.shortcut or [])

    @staticmethod
    def _run(layers, x):
        for layer in layers:
            x = layer.forward(x)
        return x

    @staticmethod
    def _back(layers, dy):
        for layer in reversed(layers):
            dy = layer.backward(dy)
        return dy

    def forward(self, x):
        fx = self._run(self.branch, x)  # F(x)
        sx = x if self.shortcut is None else self._run(self.shortcut, x)  # S(x)
        if fx.shape != sx.shape:
            raise ShapeError(f"{self!r}: branch output {fx.shape} and shortcut output {sx.shape} differ; "
                             "give a projection shortcut")
        self._cache = fx.shape
        return fx + sx  # y = F(x) + S(x)

    def backward(self, dy):
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        if getattr(dy, "shape", None) != self._cache:
            raise ShapeError(f"{self!r}: backward input dy must have shape {self._cache}, got {getattr(dy, 'shape', None)}")
        dx = self._back(self.branch, dy)  # J_F^T Δ
        return dx + (dy if self.shortcut is None else self._back(self.shortcut, dy))  # + J_S^T Δ

    def copy_with(self, copy_layer) -> "Residual":
        """An independent copy, each child copied by ``copy_layer`` in the order of :meth:`children`."""
        branch = [copy_layer(l) for l in self.branch]
        short = None if self.shortcut is None else [copy_layer(l) for l in self.shortcut]
        new = Residual(branch, short)
        new.training = self.training
        return new

    def num_params(self) -> int:
        return int(sum(l.num_params() for l in self.children() if hasattr(l, "num_params")))

    def __repr__(self):
        short = "identity" if self.shortcut is None else f"{len(self.shortcut)} layers"
        return f"Residual(branch {len(self.branch)} layers, shortcut {short})"
