r"""Baselines trained under the same loop as DLRT.

* **Dense**: a network without low-rank layers trained by
  :class:`~dlrt_ref.train.dlrt.DLRT` is plain optimiser steps on its dense
  parameters, one pass per batch (:func:`dense_trainer`).
* **Vanilla UVᵀ** (:class:`UVTrainer`): W = U Vᵀ trained directly by gradient
  descent on U and V (Zangrando 2022, the comparison with DLRT of ch. 5;
  Schotthöfer et al. 2022, Sec. 6.2). From the same initial draw
  W₀ = U₀ S V₀ᵀ it starts at U = U₀ S^{1/2}, V = V₀ S^{1/2}. The gradients are
  ∂L/∂U = G V and ∂L/∂V = Gᵀ U with G = ∂L/∂W, from the lazy ``grad_op``.
  The factors are not orthonormal and the rank is fixed.
* **SVD truncation then fixed-rank DLRT** (:func:`svd_truncate`): the best
  rank-r approximation of each weight of a trained dense network
  (Eckart–Young), retrained with ``DLRT(method="bug")``.
* **S-only fine-tuning** (:class:`SOnlyTrainer`): bases U, V frozen, only the
  core S (gradient Uᵀ G V) and the dense parameters train (Zangrando 2022,
  fine-tuning phase after DLRT; Schotthöfer et al. 2022, Sec. 4).

Every trainer has ``.net``, ``.opt``, ``.step(x, y) -> StepInfo`` and ``.ranks()``.
"""
from __future__ import annotations

import time

from dlrt_ref.nn.conv import Conv2d, LowRankConv2d
from dlrt_ref.nn.layers import Dense
from dlrt_ref.nn.lowrank_layers import LowRankLinear
from dlrt_ref.nn.network import Sequential, copy_layer
from dlrt_ref.train.dlrt import DLRT, StepInfo, Trainer
from dlrt_ref.train.optim import Optimizer

__all__ = ["dense_trainer", "UVTrainer", "SOnlyTrainer", "svd_truncate"]


def dense_trainer(net, optimizer: Optimizer, **kw) -> DLRT:
    """The dense baseline: ``DLRT`` on a network without low-rank layers (one pass per step)."""
    if net.lowrank_layers():
        raise ValueError("dense_trainer: the network has low-rank layers; build it with ranks=None")
    return DLRT(net, optimizer, method="bug", **kw)


class _FactorTrainer(Trainer):
    """Baselines that update factors directly (no integrator): one pass per step."""


class UVTrainer(_FactorTrainer):
    """Vanilla W = U Vᵀ trained by the optimiser on U and V directly.

    Parameters
    ----------
    net : Sequential
        Its low-rank layers hold W₀ = U₀ S V₀ᵀ (orthonormal U₀, V₀). They are
        reset to the factors (U₀ P Σ^{1/2}, I, V₀ Q Σ^{1/2}) with S = P Σ Qᵀ
        (for the diagonal S of the init, P = Q = I: U = U₀ S^{1/2}, V = V₀ S^{1/2}),
        which leaves W₀ unchanged.
    optimizer : Optimizer
        Updates U, V (keys ``(i, "U")``, ``(i, "V")``, no frame: U and V are
        the parameters themselves, not coordinates in a basis) and the dense
        parameters.
    """

    def __init__(self, net, optimizer: Optimizer, loss=None):
        super().__init__(net, optimizer, loss)
        for l in self.layers:
            xp = l.backend.xp
            P, sigma, Qh = xp.linalg.svd(l.S)  # S = P Σ Qᵀ: (r, r), (r,), (r, r)
            root = xp.sqrt(sigma)
            U = (l.U @ P) * root  # (m, r)(r, r) -> (m, r), columns scaled by Σ^{1/2}
            V = (l.V @ Qh.T) * root  # (n, r)(r, r) -> (n, r)
            l.set_factors(U, xp.eye(l.rank, dtype=l.S.dtype), V)

    def step(self, x, y) -> StepInfo:
        """One gradient step on every U, V and dense parameter (one pass)."""
        t0 = time.perf_counter()
        loss = self._pass(x, y)
        new = []
        for i, l in enumerate(self.layers):
            G = l.grad_op  # ∂L/∂W = Δᵀ X (m, n), lazy
            gU = G @ l.V  # ∂L/∂U = G V: (m, n)(n, r) -> (m, r)
            gV = G.H @ l.U  # ∂L/∂V = Gᵀ U: (n, m)(m, r) -> (n, r)
            new.append((self.opt.update((i, "U"), l.U, gU), self.opt.update((i, "V"), l.V, gV)))
        for l, (U, V) in zip(self.layers, new):
            l.set_factors(U, l.S, V)
        self._update_dense()
        self.steps += 1
        return StepInfo(loss, 1, self.ranks(), time.perf_counter() - t0)


class SOnlyTrainer(_FactorTrainer):
    """Fine-tuning with frozen bases: only S (and the dense parameters) train.

    The S-gradient at W = U S Vᵀ is Uᵀ G V = ``grad_op.core(U, V)`` (r×r). The
    optimiser state of S (key ``(i, "S")``) is kept with an empty frame: U and
    V never change here, so the coordinates of S stay the same. State left by a
    previous DLRT phase under the same key has a non-empty frame and is reset
    (see :mod:`dlrt_ref.train.optim`); a fresh optimiser is the clean choice.
    """

    def step(self, x, y) -> StepInfo:
        t0 = time.perf_counter()
        loss = self._pass(x, y)
        new = []
        for i, l in enumerate(self.layers):
            gS = l.grad_op.core(l.U, l.V)  # Uᵀ G V: (r, m)(m, n)(n, r) -> (r, r), lazily
            new.append(self.opt.update((i, "S"), l.S, gS))
        for l, S in zip(self.layers, new):
            l.set_factors(l.U, S, l.V)
        self._update_dense()
        self.steps += 1
        return StepInfo(loss, 1, self.ranks(), time.perf_counter() - t0)


def svd_truncate(dense_net, ranks) -> Sequential:
    """A low-rank copy of a trained network: each weight replaced by its truncated SVD.

    Parameters
    ----------
    dense_net : Sequential
        Left unchanged.
    ranks : list
        One entry per dense weight layer (Dense, Conv2d) in the order of ``dense_net.flat_layers()``, that is
        forward order with the layers of a residual block in place (its branch, then its shortcut): an int
        (replace by ``LowRankLinear/LowRankConv2d.from_dense`` of that rank) or None (keep the layer dense, e.g.
        the classifier). Layers that are already low-rank keep their factors and take no entry.

    Returns
    -------
    Sequential
        A new network: every layer copied by :func:`~dlrt_ref.nn.network.copy_layer` (biases, BatchNorm's
        parameters and running statistics, Dropout's p and seed, the training mode), residual blocks rebuilt
        around their converted layers; the input network is unchanged. Retrain it with
        ``DLRT(net, opt, method="bug")`` (fixed rank).
    """
    slots = [l for l in dense_net.flat_layers() if isinstance(l, (Dense, Conv2d))]
    ranks = list(ranks)
    if len(ranks) != len(slots):
        raise ValueError(f"svd_truncate: {len(slots)} weight layers, got {len(ranks)} ranks: {ranks}")
    todo = iter(ranks)

    def convert(layer):  # copy_layer, with the weight layers replaced (containers call it on their children)
        if hasattr(layer, "copy_with"):
            return layer.copy_with(convert)  # a residual block: its branch, then its shortcut
        new = copy_layer(layer)
        if not isinstance(layer, (Dense, Conv2d)):
            return new
        r = next(todo)
        if r is None:
            return new
        cls = LowRankConv2d if isinstance(layer, Conv2d) else LowRankLinear
        low = cls.from_dense(new, int(r))
        if hasattr(new, "training"):
            low.training = new.training
        return low

    net = Sequential([convert(l) for l in dense_net.layers])
    net.training = dense_net.training
    return net
