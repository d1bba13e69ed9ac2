r"""The DLRT optimiser: the low-rank integrators with a network's gradient as the field.

For a network with low-rank layers :math:`W_\ell = U_\ell S_\ell V_\ell^T`, DLRT
integrates, per layer, the *projected* gradient flow

.. math:: \dot W_\ell = -P(W_\ell)\,\nabla_{W_\ell} \mathcal L

on the manifold of rank-r matrices (P(W) the orthogonal projection onto its
tangent space), with the rank-adaptive methods adding augmentation (Û = [U0 | new
directions]) and truncation (ϑ = τ‖σ‖) to each step — not the full flow
Ẇ = −∇L (Schotthöfer et al. 2022, Alg. 1 and Thm. 1; Zangrando 2022, ch. 3).
The field of layer ℓ at a point is
:math:`F_\ell = -G_\ell = -\Delta_\ell^T X_\ell`, available after one forward and
backward pass as the lazy operator ``layer.grad_op`` — it is never formed.

One step of the chosen integrator is run per layer, **with the same code that
integrates matrix ODEs** (:mod:`dlrt_ref.integrators`): each integrator is a
generator of field requests, one generator per layer, and all layers' requests
of a round are served by *one* forward/backward pass with every layer set to its
requested point. The sub-step is the optimiser (:mod:`dlrt_ref.train.optim`).

Passes per step
---------------
``ra-bug`` 1 (since Û S̃0 V̂ᵀ = W0 the S-step gradient is the one already
computed), ``parallel`` 1, ``bug`` 2, ``ksl`` 3 — with Euler-type sub-steps (SGD,
momentum, Adam: one gradient per sub-flow) on one batch, and a network whose
forward is a fixed function of its parameters (no dropout, no batch
statistics), so that "the gradient at Û S̃0 V̂ᵀ" is the gradient at W0. A
sub-step that evaluates the field several times (RK4) needs more. The passes are
counted by the network (``net.forward_calls``/``backward_calls``), not declared
here: :attr:`StepInfo.passes` is what the step actually ran.

Dense parameters (biases, dense layers)
---------------------------------------
Every pass of a step sees the dense parameters as they were at the start of the
step. They take one optimiser step per batch, after the last pass, with the
gradient of the pass that serves the S-step (the pass whose
:class:`~dlrt_ref.substeps.Request` serves an S-flow, as the biases are trained
in the S-step of Schotthöfer et al. 2022, Alg. 1): ``ra-bug`` and ``parallel``
their only pass, ``bug`` its 2nd (last) pass, ``ksl`` its 2nd of 3 (so ksl's
L pass, the 3rd, still sees the start values).

All or nothing
--------------
A step that fails in any pass (e.g. :class:`NonFiniteLossError` in the 2nd
pass of bug or ksl, or an interrupt) leaves the network (factors and dense
parameters) and the optimiser state exactly as they were before the step,
and re-raises.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from dlrt_ref.integrators import ADAPTIVE, STAGES, drive
from dlrt_ref.lowrank import LowRankMatrix
from dlrt_ref.nn.loss import SoftmaxCrossEntropy
from dlrt_ref.train.optim import Optimizer

__all__ = ["Trainer", "DLRT", "StepInfo", "TRAIN_METHODS", "TOL_RULES", "NonFiniteLossError"]

TRAIN_METHODS = ("ra-bug", "bug", "ksl", "parallel")
TOL_RULES = ("relative", "absolute", "step")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite."""


@dataclass
class StepInfo:
    """What one optimiser step did."""

    loss: float  # loss at the first pass (the batch loss at W0)
    passes: int  # forward+backward passes run, as counted by the network
    ranks: list = field(default_factory=list)  # rank per low-rank layer after the step
    seconds: float = 0.0
    # rank-adaptive methods: per low-rank layer, the tolerance ϑ applied and the norm of the
    # discarded singular values (‖Ŷ1 − Y1‖_F); empty for fixed-rank methods
    thetas: list = field(default_factory=list)
    tails: list = field(default_factory=list)


def check_rank_bounds(owner: str, r_min, r_max) -> None:
    """Rank bounds of a truncation rule: each an integer >= 1 or None (not given), and r_max >= r_min.

    One-line errors naming ``owner``: :class:`TypeError` for a non-integer, :class:`ValueError` for a
    value out of range. Used for DLRT's global bounds and for every ``layer_rules`` entry.
    """
    for name, r in (("r_min", r_min), ("r_max", r_max)):
        if r is None:
            continue
        if isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, np.integer)):
            raise TypeError(f"{owner}: {name} must be an integer, got {r!r}")
        if r < 1:
            raise ValueError(f"{owner}: {name} must be >= 1, got {r}")
    if r_min is not None and r_max is not None and r_max < r_min:
        raise ValueError(f"{owner}: r_max ({r_max}) must be >= r_min ({r_min})")


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
        """One forward and backward pass; returns the loss.

        ``net.begin_step(self.steps)`` first: every pass of one step has the same step number
        (Dropout's mask, BatchNorm's once-per-step running statistics; see :mod:`dlrt_ref.nn.network`).
        """
        if hasattr(self.net, "begin_step"):
            self.net.begin_step(self.steps)
        logits = self.net.forward(x)
        loss = self.loss.forward(logits, y)
        if not np.isfinite(loss):
            raise NonFiniteLossError(f"non-finite loss {loss} at step {self.steps}")
        self.net.backward(self.loss.backward(), input_grad=False)  # ∂L/∂x of the input is not needed
        return loss

    def _update_dense(self, grads=None):
        """Optimiser step on every ordinary parameter (biases, dense layers).

        ``grads``: ``{(layer index, name): gradient}`` as taken by :meth:`_dense_grads`;
        default the gradients of the last pass.
        """
        index = {id(l): k for k, l in enumerate(self.net.flat_layers())}
        for layer, name in self.net.dense_params():
            k = index[id(layer)]
            g = layer.grads[name] if grads is None else grads[(k, name)]
            key = ("dense", k, name)  # stable across checkpoints
            layer.params[name] = self.opt.update(key, layer.params[name], g)

    def _dense_grads(self) -> dict:
        """The dense parameters' gradients of the last pass (arrays are new at every backward)."""
        index = {id(l): k for k, l in enumerate(self.net.flat_layers())}
        return {(index[id(layer)], name): layer.grads[name] for layer, name in self.net.dense_params()}

    def _passes_so_far(self) -> tuple:
        return getattr(self.net, "forward_calls", 0), getattr(self.net, "backward_calls", 0)

    def _snapshot(self):
        """Everything a step changes: dense parameters, factors, non-trainable state (BatchNorm's running
        statistics), optimiser state, step count.

        Arrays are never modified in place by a step (every update makes new
        arrays), so references suffice; factors keep their identity, which the
        optimiser uses to recognise its frames.
        """
        layers = [(dict(l.params), (l.U, l.S, l.V) if getattr(l, "lowrank", False) else None, dict(getattr(l, "state", {})))
                  for l in self.net.flat_layers()]
        return layers, self.opt.snapshot(), self.steps

    def _restore(self, snap) -> None:
        layers, opt_state, self.steps = snap
        for layer, (params, factors, state) in zip(self.net.flat_layers(), layers):
            layer.params = dict(params)
            if state:
                layer.state = dict(state)
            if factors is not None:
                layer.set_factors(*factors)
        self.opt.restore(opt_state)

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
        (rank-adaptive methods only; used by ``tol_rule="relative"``).
    tol_rule : {"relative", "absolute", "step"}
        How ϑ is set at each step: ``"relative"`` (default, as published):
        ϑ = τ‖Ŝ1‖_F; ``"absolute"``: ϑ = ``theta``; ``"step"``: ϑ = ``theta``·h·‖Ŝ1 − S̃0‖_F,
        scaled with the step's update (derived in
        :func:`dlrt_ref.integrators.step_scaled_rule`). The relative rule stays the default;
        what each rule does to the ranks is measured in ``experiments/rank_dynamics.py``.
    theta : float
        ϑ for ``"absolute"``, the constant c for ``"step"``.
    r_min : int
        Smallest rank after truncation (default 2), >= 1.
    r_max : int or None
        Largest rank, >= max(1, r_min); default ⌊min(m, n)/2⌋ per layer (at least 1),
        which leaves room to augment to 2r ≤ min(m, n) (Zangrando 2022; DESIGN:
        rank caps). Ranks must be integers; a bad value is a ValueError/TypeError
        naming the argument, as in the ``train`` command.
    compat_2022_truncation : bool
        Reproduce the 2022 reference codes' truncation (see
        :func:`dlrt_ref.truncation.truncate`); off by default, which is the correct one.
    ortho : {"householder", "cholqr2"}
        Orthonormalisation of the K and L bases.
    loss : object with forward(logits, y) and backward(); default softmax cross-entropy.
    layer_rules : list or None
        Per-layer changes to the truncation rule (rank-adaptive methods only): one entry per
        low-rank layer, in forward order (``net.lowrank_layers()``), each None (the global rule)
        or a dict with any of ``tau_factor`` (a number > 0 multiplying the tolerance of that layer:
        τ for ``"relative"``, ϑ for ``"absolute"``, c for ``"step"``), ``r_min`` and ``r_max``
        (that layer's rank bounds). A layer at **fixed rank** r inside an adaptive network is
        ``{"r_min": r, "r_max": r}``: it is augmented and truncated back to exactly r at every
        step. Schotthöfer et al. 2022 (LeNet5 table) use 0.45τ on the linear layers and keep the
        last layer at rank 10 (:mod:`dlrt_ref.experiments.lenet_paper`).
    """

    def __init__(self, net, optimizer: Optimizer, method: str = "ra-bug", tau: float = 0.1, r_min: int = 2,
                 r_max=None, compat_2022_truncation: bool = False, ortho: str = "householder", loss=None,
                 tol_rule: str = "relative", theta=None, layer_rules=None):
        if method not in TRAIN_METHODS:
            raise ValueError(f"unknown DLRT method {method!r}; expected one of {TRAIN_METHODS}")
        if tol_rule not in TOL_RULES:
            raise ValueError(f"DLRT: tol_rule must be one of {TOL_RULES}, got {tol_rule!r}")
        if tol_rule != "relative" and not (theta is not None and np.isfinite(theta) and theta >= 0):
            raise ValueError(f"DLRT: tol_rule={tol_rule!r} needs theta, a finite number >= 0, got {theta!r}")
        if method in ADAPTIVE and (isinstance(tau, (bool, np.bool_)) or not isinstance(tau, (int, float, np.integer, np.floating))):
            raise TypeError(f"DLRT: tau must be a real number in [0, 1), got {tau!r}")
        if method in ADAPTIVE and not (np.isfinite(tau) and 0 <= tau < 1):
            raise ValueError(f"DLRT: tau must be in [0, 1) (it is relative: ϑ = τ‖σ‖₂), got {tau}")
        if r_min is None:
            raise TypeError("DLRT: r_min must be an integer >= 1, got None")
        check_rank_bounds("DLRT", r_min, r_max)
        super().__init__(net, optimizer, loss)
        self.method = method
        self.tau, self.r_min = float(tau), int(r_min)
        self.r_max = None if r_max is None else int(r_max)
        self.compat = bool(compat_2022_truncation)
        self.ortho = ortho
        self.tol_rule, self.theta = tol_rule, None if theta is None else float(theta)
        self.layer_rules = self._check_layer_rules(layer_rules)

    # -- pieces ---------------------------------------------------------------
    @staticmethod
    def default_r_max(shape) -> int:
        """⌊min(m, n)/2⌋ (at least 1): the rank cap when ``r_max`` is None."""
        return max(1, min(shape) // 2)

    def _check_layer_rules(self, rules):
        """``layer_rules`` as a list of dicts (one per low-rank layer), or None; bad input is a one-line error."""
        if rules is None:
            return None
        if self.method not in ADAPTIVE:
            raise ValueError(f"DLRT: layer_rules needs a rank-adaptive method, got method={self.method!r}")
        rules = list(rules)
        if len(rules) != len(self.layers):
            raise ValueError(f"DLRT: layer_rules needs one entry per low-rank layer ({len(self.layers)}), "
                             f"got {len(rules)}")
        out = []
        for i, rule in enumerate(rules):
            rule = dict(rule or {})
            bad = set(rule) - {"tau_factor", "r_min", "r_max"}
            if bad:
                raise ValueError(f"DLRT: layer_rules[{i}] has unknown keys {sorted(bad)}; "
                                 f"expected tau_factor, r_min, r_max")
            f = rule.get("tau_factor", 1.0)
            if isinstance(f, (bool, np.bool_)) or not isinstance(f, (int, float, np.integer, np.floating)) \
                    or not (np.isfinite(f) and f > 0):
                raise ValueError(f"DLRT: layer_rules[{i}]['tau_factor'] must be a finite number > 0, got {f!r}")
            if self.tol_rule == "relative" and not f * self.tau < 1:
                raise ValueError(f"DLRT: layer_rules[{i}]: tau_factor*tau must be < 1, got {f}*{self.tau}")
            check_rank_bounds(f"DLRT: layer_rules[{i}]", rule.get("r_min"), rule.get("r_max"))
            out.append({k: (float(v) if k == "tau_factor" else int(v)) for k, v in rule.items()})
        return out

    def _rule(self, layer, i: int) -> dict:
        """The truncation rule of low-rank layer ``i`` (``layer``): the global one, changed by ``layer_rules[i]``."""
        if self.method not in ADAPTIVE:
            return {}
        own = self.layer_rules[i] if self.layer_rules is not None else {}
        f = own.get("tau_factor", 1.0)  # this layer's factor on the tolerance (1: the global rule)
        r_max = own.get("r_max", self.r_max if self.r_max is not None else self.default_r_max(layer.shape))
        r_min = own.get("r_min", self.r_min)
        tol = dict(tau=f * self.tau) if self.tol_rule == "relative" else \
            {"absolute": dict(theta=f * self.theta), "step": dict(c_step=f * self.theta)}[self.tol_rule]
        return dict(tol, r_min=min(r_min, r_max), r_max=r_max, compat_2022=self.compat)

    def config(self) -> dict:
        """The settings that define the step (stored in and checked against checkpoints)."""
        cfg = {"method": self.method, "tau": self.tau, "r_min": self.r_min, "r_max": self.r_max,
               "ortho": self.ortho, "compat_2022_truncation": self.compat}
        if self.tol_rule != "relative":  # only then: checkpoints of the default rule keep their old keys
            cfg.update(tol_rule=self.tol_rule, theta=self.theta)
        if self.layer_rules is not None:  # likewise only when given
            cfg["layer_rules"] = self.layer_rules
        return cfg

    # -- one step -------------------------------------------------------------
    def step(self, x, y) -> StepInfo:
        """One DLRT step on the batch (x, y): one integrator step per low-rank layer, in lock-step.

        Every layer runs its own ``*_stages`` generator; :func:`~dlrt_ref.substeps.drive` collects
        one :class:`~dlrt_ref.substeps.Request` per layer per round and ``serve`` answers the round
        with one forward/backward pass (see the "life of a request" in :mod:`dlrt_ref.integrators`).
        All or nothing: if any pass fails, everything is restored and the error re-raised.
        """
        t_start = time.perf_counter()
        snap = self._snapshot()
        counted = self._passes_so_far()
        try:
            info = self._step(x, y)
        except BaseException:
            self._restore(snap)
            raise
        forwards, backwards = (a - b for a, b in zip(self._passes_so_far(), counted))
        info.passes = max(forwards, backwards)  # counted by the network, whatever the method says
        info.seconds = time.perf_counter() - t_start
        return info

    def _step(self, x, y) -> StepInfo:
        layers = self.layers
        losses, dense = [], {}

        def serve(requests):
            """One pass with every layer at its requested point; returns F = −∂L/∂W per layer, lazily."""
            for layer, q in zip(layers, requests):
                layer.set_factors(q.Y.U, q.Y.S, q.Y.V)
            losses.append(self._pass(x, y))
            if requests[0].serves("S"):  # the S-step pass supplies the dense gradient (applied at the end)
                dense.update(self._dense_grads())
            return [layer.grad_op.scaled(-1.0) for layer in layers]

        stages = STAGES[self.method]
        generators = [
            stages(t0=0.0, Y0=LowRankMatrix(l.U, l.S, l.V), h=self.opt.lr, substep=self.opt.substep(i),
                   ortho=self.ortho, lin=None, **self._rule(l, i))
            for i, l in enumerate(layers)
        ]
        if generators:
            results, _ = drive(generators, serve=serve)
        else:  # no low-rank layer: one ordinary step of the dense parameters
            losses.append(self._pass(x, y))
            dense.update(self._dense_grads())
            results = []
        self._update_dense(dense)  # after the last pass: every pass saw the start values
        for l, res in zip(layers, results):
            l.set_factors(res.Y.U, res.Y.S, res.Y.V)
        self.steps += 1
        truncs = [res.truncation for res in results if res.truncation is not None]
        return StepInfo(losses[0], 0, [l.rank for l in layers],
                        thetas=[t.theta for t in truncs], tails=[t.tail for t in truncs])
