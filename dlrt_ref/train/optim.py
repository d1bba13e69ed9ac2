r"""Optimisers: SGD, SGD with momentum, Adam — as updates and as integrator sub-steps.

In DLRT the K-, L- and S-sub-flows of the integrator are gradient flows
(F = −∇L), and one explicit Euler step of length h is one SGD step with
learning rate h (Schotthöfer et al. 2022, Sec. 4; Zangrando 2022, ch. 4).
What the other optimisers are, as sub-steps:

* **Momentum** (heavy ball, m ← μ m + g, y ← y − h m) is, for small h, a
  consistent discretisation of the gradient flow with time rescaled by
  1/(1 − μ): the same sub-flows, run faster.
* **Adam is not** a sub-step of the same sub-flows. As lr → 0 it follows a
  coordinate-dependent, diagonally preconditioned flow
  ẏ = −D(t)⁻¹ ∇_y L, D = diag(√v̂ + ε), whose preconditioner depends on the
  basis the factor is written in. The robust error and descent bounds of the
  integrators (Ceruti & Lubich 2022, Thm. 2; Ceruti, Kusch & Lubich 2022,
  Thm. 2; Schotthöfer et al. 2022, Thm. 1) cover exact and Euler (= SGD)
  sub-steps only; with Adam they are not claimed here.

Optimiser state belongs to a basis
----------------------------------
The factor K = W V is expressed in the basis V, L = Wᵀ U in U, and S = Uᵀ W V in
(U, V). Those bases change every step (augmentation, truncation). A state array
(momentum buffer, Adam moments) kept for K in the old basis B (columns b_i) is
meaningless in the new basis B' (columns b'_j). Every state carries the *frame*
it is expressed in, and before it is used in a new frame it is mapped by one of
the policies of :data:`STATE_POLICIES`; it is never reused silently in a stale
basis. With ``T = Bᴴ B'`` (old × new; for S one such matrix per side,
``T_U = U'ᴴ U`` on the left and ``T_V = Vᴴ V'`` on the right):

``"transport"`` (default) — derivation
    *Linear state* (momentum, Adam's first moment m) is a vector of W-space
    written in coordinates; seen in the new coordinates it is ``m' = m T``
    (S: ``m' = T_U m T_V``), exact for the part of the new directions that
    lies in the old span, and zero for the rest.

    *Adam's bias correction.* Adam's moments are exponential averages started
    at zero, m_t = (1−β₁) Σ_{s≤t} β₁^{t−s} g_s, and the bias correction
    divides by their total weight c₁(t) = (1−β₁) Σ_{s≤t} β₁^{t−s} = 1 − β₁ᵗ.
    That weight is itself the same average of the constant 1:

    .. math:: c_1 \leftarrow \beta_1 c_1 + (1-\beta_1), \quad c_2 \leftarrow \beta_2 c_2 + (1-\beta_2),
              \quad \hat m = m / c_1, \quad \hat v = v / c_2 .

    So instead of one step count per factor we keep a *per-coordinate weight*
    (c₁, c₂) — for K and L one per column (shape (1, r), a column is one
    direction), for S one per entry — and transport it with the state.
    Direction b'_j decomposes as Σ_i T_ij b_i + (I − BBᴴ) b'_j; the history of
    the gradient along b_i is known with weight c_i, the part outside the
    old span was never recorded (weight 0). Counting each old direction with
    the fraction |T_ij|² of b'_j it makes up gives

    .. math:: c' = c\,(T\circ\bar T), \qquad v' = v\,(T\circ\bar T)
              \qquad (S:\ (T_U\circ\bar T_U)\,c\,(T_V\circ\bar T_V)),

    the same map as for the second moment, whose entries are per-coordinate
    scales (averages of |g|²), not vectors. Consequences, each tested in
    ``tests/train/test_train_optim.py``:

    1. an old direction kept (b'_j = ±b_i, a column of T is ±e_i) continues
       exactly as if the basis had not changed (m, v, c₁, c₂ carried over);
       a rotation B' = B Q of the old span with equal weights keeps every
       c — the bias correction stays 1 − βᵗ — and m exactly (v' is the
       squared-entry heuristic as before; exact for permutations and signs);
    2. a direction new to the basis (b'_j ⟂ span B: column j of T is zero)
       gets m = v = c₁ = c₂ = 0: a fresh Adam parameter with its own count,
       whose first step is m̂/√v̂ = g/|g|, of magnitude lr (for |g| ≫ ε);
    3. T∘T̄ ≥ 0 entrywise, so v ≥ 0 and c ≥ 0 after any transport;
    4. in between (a direction partly in the old span, weight κ_j = Σ_i|T_ij|²),
       v̂' = v'/c₂' is a convex combination of the old v̂_i: the scale of the
       second moment is kept, whatever κ_j.

    Momentum has no bias correction: ``m' = m T`` alone already gives a new
    direction the state of a fresh heavy-ball parameter (m = 0), so its rule
    is the same under both transport policies.

``"transport-shared-t"`` — the rule before issue 11, kept for comparison
    m and v transported as above, but one step count t per factor, so the
    bias correction 1 − βᵗ of a direction that is new to the basis counts the
    factor's whole history. The k-th step of a direction that entered at
    factor step t has magnitude (1 − β₁ᵏ)·√(1 − β₂ᵗ)/√(1 − β₂ᵏ)·lr for a
    constant gradient — up to ≈ 3·lr at t = 235 and ≈ 6.5·lr at t = 5000
    (near k = 12) — where a fresh Adam parameter, and ``"transport"``, move by lr.

``"reset"``
    The state is dropped, so the factor restarts with zero state. The bases
    change at every step, so this turns Adam into sign descent and momentum
    into plain SGD.

``"stale"`` — the per-entry state of the 2022 codes
    What the public 2022 implementations of [P] do (Schotthöfer et al. 2022;
    CSMMLab/DLRT-Net, read, not copied): K, L and S live in fixed-size arrays
    (n×r_max, 2r_max×2r_max) of which the leading block is in use, and the
    optimiser keeps its moments per *entry* of those arrays. The moments are
    never mapped: after a basis change, entry (i, j) of m and v, recorded for
    the old basis vector j, is used as the state of the new basis vector j.
    Here the state lives in a buffer the size of the largest array the factor
    has had (what r_max-sized arrays hold: entries never used stay zero); the
    gradient is embedded in its leading block (zeros elsewhere,
    :func:`embed_leading`), the whole buffer is updated — so the moments of
    entries outside the current rank decay as in the fixed-size arrays — and
    the parameter moves by the leading block of the step. One step count t
    per factor gives the bias correction 1 − βᵗ (no per-coordinate weights;
    Keras counts globally, see :mod:`dlrt_ref.experiments.tf2022_step`, whose
    emulation of the 2022 step keeps its state the same way). With a fixed
    basis this is Adam, equal to ``"transport"`` to round-off; after a
    rotation B' = B Q it differs (transport: m' = m Q; stale: m' = m).
    ``dlrt_ref/experiments/adam_state_policy.py`` measures the three policies
    side by side on [P]'s MLP.

Dense parameters (biases, dense layers) have no frame and keep their state.
"""
from __future__ import annotations

from typing import Hashable

import numpy as np

from dlrt_ref.backend import array_module, to_numpy
from dlrt_ref.linalg import H
from dlrt_ref.substeps import request_slope

__all__ = ["Optimizer", "SGD", "Momentum", "Adam", "make_optimizer", "OPTIMIZERS", "STATE_POLICIES", "embed_leading",
           "leading_block"]

STATE_POLICIES = ("transport", "transport-shared-t", "reset", "stale")


def embed_leading(block, shape: tuple):
    """A zero array of ``shape`` with ``block`` in its leading corner (``[:a, :b]``): a block of a
    fixed-size array as the 2022 codes hold K, L and S (policy ``"stale"``; the 2022 emulation)."""
    if len(shape) != block.ndim or any(b > s for b, s in zip(block.shape, shape)):
        raise ValueError(f"embed_leading: block of shape {block.shape} does not fit in shape {tuple(shape)}")
    out = array_module(block).zeros(shape, dtype=block.dtype)
    out[tuple(slice(0, b) for b in block.shape)] = block
    return out


def leading_block(full, shape: tuple):
    """The leading ``shape`` block of ``full`` (the inverse of :func:`embed_leading`)."""
    return full[tuple(slice(0, b) for b in shape)]


def _same_frame(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _transport(state, old: tuple, new: tuple, square: bool):
    """Map a state array from frame ``old`` to frame ``new`` (module docstring): ``m T`` or ``v (T∘T̄)``."""
    if len(old) == 1:  # K or L: right multiplication by T = B_oldᴴ B_new
        T = H(old[0]) @ new[0]  # (r_old, n)(n, r_new) -> (r_old, r_new)
        return state @ ((T * T.conj()).real if square else T)  # (·, r_old)(r_old, r_new)
    Tl = H(new[0]) @ old[0]  # (k_new, m)(m, k_old)
    Tr = H(old[1]) @ new[1]  # (l_old, n)(n, l_new)
    if square:
        Tl, Tr = (Tl * Tl.conj()).real, (Tr * Tr.conj()).real
    return Tl @ state @ Tr  # (k_new, k_old)(k_old, l_old)(l_old, l_new)


def _weight_shape(p, frame: tuple) -> tuple:
    """Shape of the per-coordinate weights (c₁, c₂) of a parameter in ``frame``.

    No frame: one weight (shape (1,), broadcast over the parameter). K, L (one
    basis, on the right): one per column, (1, r). S (two bases): one per entry.
    """
    return (1,) if len(frame) == 0 else (1, p.shape[1]) if len(frame) == 1 else p.shape


class Optimizer:
    """Base class: per-key state with frames, ``update``, and the integrator sub-step.

    Parameters
    ----------
    lr : float
        Learning rate (also the step size h of the integrator).
    state_policy : {"transport", "transport-shared-t", "reset", "stale"}
        What happens to a factor's state when its frame (basis) changes (module docstring).
    """

    name = "base"
    state_names: tuple = ()  # arrays of state per key, shaped like the parameter
    square_state: tuple = ()  # which of them are second moments (transported with T∘T̄)
    weight_names: tuple = ()  # per-coordinate weights (bias correction), transported with T∘T̄

    def __init__(self, lr: float, state_policy: str = "transport"):
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"{type(self).__name__}: lr must be a finite positive number, got {lr}")
        if state_policy not in STATE_POLICIES:
            raise ValueError(f"state_policy must be one of {STATE_POLICIES}, got {state_policy!r}")
        self.lr = float(lr)
        self.state_policy = state_policy
        self.state: dict[Hashable, dict] = {}
        self.transports = 0  # how many frame changes were mapped (for tests/diagnostics)
        self.resets = 0

    def hyper(self) -> dict:
        """Every setting that defines the update rule (checked when a checkpoint is loaded)."""
        return {"name": self.name, "lr": self.lr, "state_policy": self.state_policy}

    def _weights(self) -> tuple:
        return self.weight_names if self.state_policy not in ("transport-shared-t", "stale") else ()

    # -- state in frames ------------------------------------------------------
    def _state_for(self, key, p, frame: tuple) -> dict:
        st = self.state.get(key)
        weights = self._weights()
        if self.state_policy == "stale" and st is not None:
            return self._stale_buffer(key, st, p, frame)
        if st is not None and not _same_frame(st["frame"], frame):
            if self.state_policy != "reset" and len(st["frame"]) == len(frame) > 0:
                for nm in self.state_names + weights:
                    st[nm] = _transport(st[nm], st["frame"], frame, nm in self.square_state or nm in weights)
                self.transports += 1
            else:
                st = None
                self.resets += 1
        if st is not None:
            shapes = [(nm, st[nm].shape, p.shape) for nm in self.state_names]
            shapes += [(nm, st[nm].shape, _weight_shape(p, frame)) for nm in weights]
            for nm, have, want in shapes:
                if have != want:
                    raise RuntimeError(f"optimiser state {nm!r} for {key!r} has shape {have}, expected {want} "
                                       f"for the parameter {p.shape}")
        if st is None:
            xp = array_module(p)
            st = {nm: xp.zeros_like(p) for nm in self.state_names}
            real = xp.zeros(0, dtype=p.dtype).real.dtype
            st.update({nm: xp.zeros(_weight_shape(p, frame), dtype=real) for nm in weights})
            st["t"] = 0
        st["frame"] = frame
        self.state[key] = st
        return st

    def update(self, key: Hashable, p, g, lr: float | None = None, frame: tuple = ()):
        """Return the updated parameter p (a new array) for gradient g; state kept under ``key``."""
        st = self._state_for(key, p, frame) if self.state_names else {"t": 0}
        lr = self.lr if lr is None else lr
        if self.state_names and st[self.state_names[0]].shape != p.shape:  # "stale": p is the leading block
            shape = st[self.state_names[0]].shape
            return leading_block(self._apply(st, embed_leading(p, shape), embed_leading(g, shape), lr), p.shape)
        return self._apply(st, p, g, lr)

    def _stale_buffer(self, key, st, p, frame: tuple) -> dict:
        """Policy ``"stale"``: keep the state per entry, never mapped; grow its buffer to hold ``p``."""
        have = st[self.state_names[0]].shape
        if len(have) != p.ndim:
            raise RuntimeError(f"optimiser state for {key!r} has shape {have}, expected {p.ndim} dimensions "
                               f"for the parameter {p.shape}")
        shape = tuple(max(a, b) for a, b in zip(have, p.shape))
        if shape != have:
            for nm in self.state_names:
                st[nm] = embed_leading(st[nm], shape)  # entries never used: zero, as in an r_max-sized array
        st["frame"] = frame
        return st

    def _apply(self, st, p, g, lr):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- as an integrator sub-step ------------------------------------------
    def substep(self, owner: Hashable):
        """A sub-step generator function for the integrators of :mod:`dlrt_ref.integrators`.

        For the sub-flow ẏ = −∇_y L it takes ∇_y L = −ẏ(t0, y0) and returns
        ``update((owner, flow.name), y0, ∇_y L, lr=h, frame=flow.frame)``. With
        SGD this is exactly explicit Euler with step h.
        """

        def optimiser_substep(flow, t0, y0, h):
            slope = flow.rhs0 if flow.rhs0 is not None else (yield from request_slope(flow, t0, y0))
            return self.update((owner, flow.name), y0, -slope, lr=h, frame=flow.frame)

        return optimiser_substep

    def forget(self, owner: Hashable) -> None:
        """Drop every state of ``owner`` (e.g. a layer replaced by another)."""
        for key in [k for k in self.state if isinstance(k, tuple) and k and k[0] == owner]:
            del self.state[key]

    # -- checkpoints and roll-back -------------------------------------------
    def state_dict(self) -> dict:
        """Host copy of the state (frames included), for checkpoints."""
        out = {}
        for key, st in self.state.items():
            out[key] = {k: (int(v) if k == "t" else (tuple(to_numpy(a).copy() for a in v) if k == "frame" else to_numpy(v).copy()))
                        for k, v in st.items()}
        return {"name": self.name, "lr": self.lr, "state_policy": self.state_policy, "hyper": self.hyper(),
                "state": out, "transports": self.transports, "resets": self.resets}

    def load_state_dict(self, d: dict, backend) -> None:
        """Restore :meth:`state_dict` output; arrays go to ``backend`` (a Backend).

        State written before the per-coordinate weights existed (no ``c1``/``c2``)
        gets the weights its step count implies, 1 − βᵗ for every coordinate.
        """
        if d["name"] != self.name:
            raise ValueError(f"checkpoint optimiser is {d['name']!r}, this run uses {self.name!r}")
        self.state = {}
        for key, st in d["state"].items():
            new = {k: (v if k == "t" else (tuple(backend.asarray(a) for a in v) if k == "frame" else backend.asarray(v)))
                   for k, v in st.items()}
            for nm in self._weights():
                if nm not in new:
                    p = new[self.state_names[0]]
                    new[nm] = backend.xp.full(_weight_shape(p, new["frame"]), self._weight_of_count(nm, new["t"]),
                                              dtype=p.real.dtype)
            self.state[key] = new
        self.transports, self.resets = d.get("transports", 0), d.get("resets", 0)

    def _weight_of_count(self, name, t):  # pragma: no cover - only optimisers with weights
        raise NotImplementedError

    def snapshot(self):
        """The whole state as it is now, for an all-or-nothing step (see :meth:`restore`).

        State arrays are never modified in place (every update and transport
        makes new arrays), so shallow copies of the per-key dicts suffice;
        frames keep their identity, which is how a frame is recognised.
        """
        return {key: dict(st) for key, st in self.state.items()}, self.transports, self.resets

    def restore(self, snap) -> None:
        """Put back the state of :meth:`snapshot` exactly."""
        state, self.transports, self.resets = snap
        self.state = {key: dict(st) for key, st in state.items()}

    def __repr__(self):
        return f"{type(self).__name__}(lr={self.lr}, state_policy={self.state_policy!r})"


class SGD(Optimizer):
    """p ← p − lr·g (explicit Euler on the gradient flow)."""

    name = "sgd"

    def _apply(self, st, p, g, lr):
        return p - lr * g


class Momentum(Optimizer):
    """Heavy-ball SGD: m ← μ m + g;  p ← p − lr·m (a rescaled gradient flow as lr → 0, see module docstring)."""

    name = "momentum"
    state_names = ("m",)

    def __init__(self, lr: float, mu: float = 0.9, state_policy: str = "transport"):
        super().__init__(lr, state_policy)
        if not (np.isfinite(mu) and 0 <= mu < 1):
            raise ValueError(f"Momentum: mu must be in [0, 1), got {mu}")
        self.mu = float(mu)

    def hyper(self) -> dict:
        return dict(super().hyper(), mu=self.mu)

    def _apply(self, st, p, g, lr):
        st["t"] += 1
        st["m"] = self.mu * st["m"] + g
        return p - lr * st["m"]


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015): first and second moments, bias-corrected per coordinate.

    m ← β₁ m + (1−β₁) g,  v ← β₂ v + (1−β₂)|g|²,  c₁ ← β₁ c₁ + (1−β₁),
    c₂ ← β₂ c₂ + (1−β₂),  p ← p − lr·(m/c₁)/(√(v/c₂) + ε). Without a basis
    change c₁ = 1 − β₁ᵗ and c₂ = 1 − β₂ᵗ (to round-off): the usual Adam. With
    ``state_policy="transport-shared-t"`` or ``"stale"`` the factor's step count t is
    used instead (the rule before issue 11; the 2022 codes). See the module docstring.
    """

    name = "adam"
    state_names = ("m", "v")
    square_state = ("v",)
    weight_names = ("c1", "c2")

    def __init__(self, lr: float, beta1=0.9, beta2=0.999, eps=1e-8, state_policy: str = "transport"):
        super().__init__(lr, state_policy)
        for nm, b in (("beta1", beta1), ("beta2", beta2)):
            if not (np.isfinite(b) and 0 <= b < 1):
                raise ValueError(f"Adam: {nm} must be in [0, 1), got {b}")
        if not (np.isfinite(eps) and eps >= 0):
            raise ValueError(f"Adam: eps must be a finite number >= 0, got {eps}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def hyper(self) -> dict:
        return dict(super().hyper(), beta1=self.beta1, beta2=self.beta2, eps=self.eps)

    def _weight_of_count(self, name, t):
        return 1 - (self.beta1 if name == "c1" else self.beta2) ** t

    def _apply(self, st, p, g, lr):
        xp = array_module(p)
        b1, b2 = self.beta1, self.beta2
        st["t"] += 1
        st["m"] = b1 * st["m"] + (1 - b1) * g
        st["v"] = b2 * st["v"] + (1 - b2) * (g * g.conj()).real
        if self.state_policy in ("transport-shared-t", "stale"):
            c1, c2 = 1 - b1 ** st["t"], 1 - b2 ** st["t"]  # one step count for the whole factor
        else:
            st["c1"] = b1 * st["c1"] + (1 - b1)  # per-coordinate weights, broadcast over p
            st["c2"] = b2 * st["c2"] + (1 - b2)
            c1, c2 = st["c1"], st["c2"]
        m_hat = st["m"] / c1
        v_hat = st["v"] / c2
        return p - lr * m_hat / (xp.sqrt(v_hat) + self.eps)


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(name: str, lr: float, **kw) -> Optimizer:
    """Build an optimiser by name ("sgd", "momentum", "adam"); ``kw`` go to its constructor."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}") from None
    return cls(lr, **kw)
