r"""The DLRT optimiser: the low-rank integrators with a network's gradient as the field.

For a network with low-rank layers :math:`W_\ell = U_\ell S_\ell V_\ell^T`, DLRT
integrates the gradient flow :math:`\dot W_\ell = -\nabla_{W_\ell} \mathcal L`
on the rank manifolds (Schotthöfer et al. 2022, Alg. 1; Zangrando 2022, ch. 3).
The field of layer ℓ at a point is
:math:`F_\ell = -G_\ell = -\Delta_\ell^T X_\ell`, available after one forward and
backward pass as the lazy operator ``layer.grad_op`` — it is never formed.

One step of the chosen integrator is run per layer, **with the same code that
integrates matrix ODEs** (:mod:`dlrt_ref.integrators`): each integrator is a
generator of field requests, one generator per layer, and all layers' requests
of a round are served by *one* forward/backward pass with every layer set to its
requested point. The sub-step is the optimiser (:mod:`dlrt_ref.train.optim`).
Passes per batch: ``ra-bug`` 1 (since Û S̃0 V̂ᵀ = W0 the S-step gradient is the
one already computed), ``parallel`` 1, ``bug`` 2, ``ksl`` 3.

Dense parameters (biases, dense layers) are updated with their gradient from
the S-step pass (the pass whose :class:`~dlrt_ref.substeps.Request` serves an S-flow).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from dlrt_ref.integrators import ADAPTIVE, STAGES, drive
from dlrt_ref.lowrank import LowRankMatrix
from dlrt_ref.nn.loss import SoftmaxCrossEntropy
from dlrt_ref.train.optim import Optimizer

__all__ = ["Trainer", "DLRT", "StepInfo", "TRAIN_METHODS", "NonFiniteLossError"]

TRAIN_METHODS = ("ra-bug", "bug", "ksl", "parallel")
PASSES = {"ra-bug": 1, "parallel": 1, "bug": 2, "ksl": 3}


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite."""


@dataclass
class StepInfo:
    """What one optimiser step did."""

    loss: float  # loss at the first pass (the batch loss at W0)
    passes: int  # forward+backward passes used
    ranks: list = field(default_factory=list)  # rank per low-rank layer after the step
    seconds: float = 0.0
    # rank-adaptive methods: per low-rank layer, the tolerance ϑ applied and the norm of the
    # discarded singular values (‖Ŷ1 − Y1‖_F); empty for fixed-rank methods
    thetas: list = field(default_factory=list)
    tails: list = field(default_factory=list)


class Trainer:
    """What every trainer shares: one forward/backward pass, dense-parameter updates, ranks.

    Subclasses (:class:`DLRT`, and the baselines of :mod:`dlrt_ref.train.baselines`)
    implement ``step(x, y) -> StepInfo``.
    """

    def __init__(self, net, optimizer: Optimizer, loss=None):
        self.net, self.opt = net, optimizer
        self.loss = loss if loss is not None else SoftmaxCrossEntropy()
        self.layers = net.lowrank_layers()
        self.steps = 0

    def _pass(self, x, y) -> float:
        """One forward and backward pass; returns the loss."""
        logits = self.net.forward(x)
        loss = self.loss.forward(logits, y)
        if not np.isfinite(loss):
            raise NonFiniteLossError(f"non-finite loss {loss} at step {self.steps}")
        self.net.backward(self.loss.backward())
        return loss

    def _update_dense(self):
        """Optimiser step on every ordinary parameter (biases, dense layers) with its gradient of the last pass."""
        index = {id(l): k for k, l in enumerate(self.net.layers)}
        for layer, name in self.net.dense_params():
            key = ("dense", index[id(layer)], name)  # stable across checkpoints
            layer.params[name] = self.opt.update(key, layer.params[name], layer.grads[name])

    def ranks(self) -> list:
        """Current rank of every low-rank layer, in forward order."""
        return [l.rank for l in self.layers]


class DLRT(Trainer):
    """Dynamical low-rank training of a :class:`~dlrt_ref.nn.Sequential`.

    Parameters
    ----------
    net : Sequential
        Any network of :mod:`dlrt_ref.nn`; its low-rank layers (linear or conv)
        are integrated, everything else is a dense parameter.
    optimizer : Optimizer
        The sub-step for K, L, S and the update rule for dense parameters.
        Its ``lr`` is the step size h.
    method : {"ra-bug", "bug", "ksl", "parallel"}
    tau : float
        Relative truncation tolerance, ϑ = τ‖σ‖₂ of the augmented core
        (rank-adaptive methods only).
    r_min : int
        Smallest rank after truncation (default 2).
    r_max : int or None
        Largest rank; default ⌊min(m, n)/2⌋ per layer, which leaves room to augment.
    compat_2022_truncation : bool
        Reproduce the 2022 reference codes' truncation (see
        :func:`dlrt_ref.lowrank.truncate`); off by default, which is the correct one.
    ortho : {"householder", "cholqr2"}
        Orthonormalisation of the K and L bases.
    loss : object with forward(logits, y) and backward(); default softmax cross-entropy.
    """

    def __init__(self, net, optimizer: Optimizer, method: str = "ra-bug", tau: float = 0.1, r_min: int = 2,
                 r_max=None, compat_2022_truncation: bool = False, ortho: str = "householder", loss=None):
        if method not in TRAIN_METHODS:
            raise ValueError(f"unknown DLRT method {method!r}; expected one of {TRAIN_METHODS}")
        if method in ADAPTIVE and not (np.isfinite(tau) and tau >= 0):
            raise ValueError(f"tau must be a finite number >= 0, got {tau}")
        if r_min < 1:
            raise ValueError(f"r_min must be >= 1, got {r_min}")
        super().__init__(net, optimizer, loss)
        self.method = method
        self.tau, self.r_min, self.r_max = float(tau), int(r_min), r_max
        self.compat = bool(compat_2022_truncation)
        self.ortho = ortho

    # -- pieces ---------------------------------------------------------------
    def _rule(self, layer) -> dict:
        if self.method not in ADAPTIVE:
            return {}
        m, n = layer.shape
        r_max = self.r_max if self.r_max is not None else max(1, min(m, n) // 2)
        return dict(tau=self.tau, r_min=min(self.r_min, r_max), r_max=r_max, compat_2022=self.compat)

    # -- one step -------------------------------------------------------------
    def step(self, x, y) -> StepInfo:
        """One DLRT step on the batch (x, y): one integrator step per low-rank layer, in lock-step.

        Every layer runs its own ``*_stages`` generator; :func:`~dlrt_ref.substeps.drive` collects
        one :class:`~dlrt_ref.substeps.Request` per layer per round and ``serve`` answers the round
        with one forward/backward pass (see the "life of a request" in :mod:`dlrt_ref.integrators`).
        """
        t_start = time.perf_counter()
        layers = self.layers
        losses = []

        def serve(requests):
            """One pass with every layer at its requested point; returns F = −∂L/∂W per layer, lazily."""
            for layer, q in zip(layers, requests):
                layer.set_factors(q.Y.U, q.Y.S, q.Y.V)
            losses.append(self._pass(x, y))
            if requests[0].serves("S"):  # the S-step pass: dense parameters take their step with it
                self._update_dense()
            return [layer.grad_op.scaled(-1.0) for layer in layers]

        stages = STAGES[self.method]
        generators = [
            stages(t0=0.0, Y0=LowRankMatrix(l.U, l.S, l.V), h=self.opt.lr, substep=self.opt.substep(i),
                   ortho=self.ortho, lin=None, **self._rule(l))
            for i, l in enumerate(layers)
        ]
        if generators:
            results, passes = drive(generators, serve=serve)
        else:  # no low-rank layer: one ordinary step of the dense parameters
            losses.append(self._pass(x, y))
            self._update_dense()
            results, passes = [], 1
        for l, res in zip(layers, results):
            l.set_factors(res.Y.U, res.Y.S, res.Y.V)
        self.steps += 1
        truncs = [res.truncation for res in results if res.truncation is not None]
        return StepInfo(losses[0], passes, [l.rank for l in layers], time.perf_counter() - t_start,
                        thetas=[t.theta for t in truncs], tails=[t.tail for t in truncs])
