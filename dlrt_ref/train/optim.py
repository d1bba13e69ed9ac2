r"""Optimisers: SGD, SGD with momentum, Adam — as updates and as integrator sub-steps.

In DLRT the K-, L- and S-sub-flows of the integrator are gradient flows
(F = −∇L), and one explicit Euler step of length h is one SGD step with
learning rate h. An optimiser with state (momentum, Adam) is another sub-step
for the same sub-flows (Schotthöfer et al. 2022, Sec. 4; Zangrando 2022, ch. 4).

Optimiser state belongs to a basis
----------------------------------
The factor K = W V is expressed in the basis V, L = Wᵀ U in U, and S = Uᵀ W V in
(U, V). Those bases change every step (augmentation, truncation). A state array
(momentum buffer, Adam moments) kept for K in the old basis V_old is meaningless
in the new basis V_new. Every state carries the *frame* it is expressed in, and
before it is used in a new frame it is either

* ``"transport"`` (default): mapped as the quantity it represents in W-space,
  seen in the new coordinates — for K: ``m ← m V_oldᵀ V_new``; for L:
  ``m ← m U_oldᵀ U_new``; for S: ``m ← (U_newᵀ U_old) m (V_oldᵀ V_new)``.
  Linear states (momentum, Adam's first moment) map exactly this way.
  Adam's second moment is a per-coordinate scale, not a vector; it is mapped
  with the entrywise squares of the same matrices, ``v ← v (T∘T)``, which keeps
  it positive and is exact when the basis change permutes or flips coordinates
  (a heuristic otherwise — documented, and testable by switching to "reset");
* ``"reset"``: dropped, so the factor restarts with zero state.

It is never reused silently in a stale basis. Dense parameters (biases, dense
layers) have no frame and keep their state.
"""
from __future__ import annotations

from typing import Any, Hashable

import numpy as np

from dlrt_ref.backend import array_module, to_numpy
from dlrt_ref.substeps import request_slope

__all__ = ["Optimizer", "SGD", "Momentum", "Adam", "make_optimizer", "OPTIMIZERS", "STATE_POLICIES"]

STATE_POLICIES = ("transport", "reset")


def _H(A):
    return A.conj().T


def _same_frame(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _transport(state, old: tuple, new: tuple, square: bool):
    """Map a state array from frame ``old`` to frame ``new`` (see module docstring)."""
    if len(old) == 1:  # K or L: right multiplication by (B_old^T B_new)
        T = _H(old[0]) @ new[0]  # (r_old, m)(m, r_new) -> (r_old, r_new)
        return state @ (T * T.conj() if square else T)
    Tl = _H(new[0]) @ old[0]  # (k_new, m)(m, k_old)
    Tr = _H(old[1]) @ new[1]  # (l_old, n)(n, l_new)
    if square:
        Tl, Tr = Tl * Tl.conj(), Tr * Tr.conj()
    return Tl @ state @ Tr  # (k_new, k_old)(k_old, l_old)(l_old, l_new)


class Optimizer:
    """Base class: per-key state with frames, ``update``, and the integrator sub-step.

    Parameters
    ----------
    lr : float
        Learning rate (also the step size h of the integrator).
    state_policy : {"transport", "reset"}
        What happens to a factor's state when its frame (basis) changes.
    """

    name = "base"
    state_names: tuple = ()  # arrays of state per key
    square_state: tuple = ()  # which of them are second moments

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

    # -- state in frames ------------------------------------------------------
    def _state_for(self, key, p, frame: tuple) -> dict:
        st = self.state.get(key)
        if st is not None and not _same_frame(st["frame"], frame):
            if self.state_policy == "transport" and len(st["frame"]) == len(frame) > 0:
                for nm in self.state_names:
                    st[nm] = _transport(st[nm], st["frame"], frame, nm in self.square_state)
                self.transports += 1
            else:
                st = None
                self.resets += 1
        if st is not None and any(st[nm].shape != p.shape for nm in self.state_names):
            raise RuntimeError(f"optimiser state for {key!r} has shape {st[self.state_names[0]].shape}, parameter {p.shape}")
        if st is None:
            xp = array_module(p)
            st = {nm: xp.zeros_like(p) for nm in self.state_names}
            st["t"] = 0
        st["frame"] = frame
        self.state[key] = st
        return st

    def update(self, key: Hashable, p, g, lr: float | None = None, frame: tuple = ()):
        """Return the updated parameter p (a new array) for gradient g; state kept under ``key``."""
        st = self._state_for(key, p, frame) if self.state_names else {"t": 0}
        return self._apply(st, p, g, self.lr if lr is None else lr)

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

    # -- checkpoints ----------------------------------------------------------
    def state_dict(self) -> dict:
        """Host copy of the state (frames included), for checkpoints."""
        out = {}
        for key, st in self.state.items():
            out[key] = {k: (int(v) if k == "t" else (tuple(to_numpy(a).copy() for a in v) if k == "frame" else to_numpy(v).copy()))
                        for k, v in st.items()}
        return {"name": self.name, "lr": self.lr, "state_policy": self.state_policy, "state": out,
                "transports": self.transports, "resets": self.resets}

    def load_state_dict(self, d: dict, backend) -> None:
        """Restore :meth:`state_dict` output; arrays go to ``backend`` (a Backend)."""
        if d["name"] != self.name:
            raise ValueError(f"checkpoint optimiser is {d['name']!r}, this run uses {self.name!r}")
        self.state = {}
        for key, st in d["state"].items():
            self.state[key] = {k: (v if k == "t" else (tuple(backend.asarray(a) for a in v) if k == "frame" else backend.asarray(v)))
                               for k, v in st.items()}
        self.transports, self.resets = d.get("transports", 0), d.get("resets", 0)

    def __repr__(self):
        return f"{type(self).__name__}(lr={self.lr}, state_policy={self.state_policy!r})"


class SGD(Optimizer):
    """p ← p − lr·g (explicit Euler on the gradient flow)."""

    name = "sgd"

    def _apply(self, st, p, g, lr):
        return p - lr * g


class Momentum(Optimizer):
    """Heavy-ball SGD: m ← μ m + g;  p ← p − lr·m."""

    name = "momentum"
    state_names = ("m",)

    def __init__(self, lr: float, mu: float = 0.9, state_policy: str = "transport"):
        super().__init__(lr, state_policy)
        if not 0 <= mu < 1:
            raise ValueError(f"Momentum: mu must be in [0, 1), got {mu}")
        self.mu = float(mu)

    def _apply(self, st, p, g, lr):
        st["m"] = self.mu * st["m"] + g
        return p - lr * st["m"]


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015): bias-corrected first and second moments."""

    name = "adam"
    state_names = ("m", "v")
    square_state = ("v",)

    def __init__(self, lr: float, beta1=0.9, beta2=0.999, eps=1e-8, state_policy: str = "transport"):
        super().__init__(lr, state_policy)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _apply(self, st, p, g, lr):
        xp = array_module(p)
        st["t"] += 1
        t = st["t"]
        st["m"] = self.beta1 * st["m"] + (1 - self.beta1) * g
        st["v"] = self.beta2 * st["v"] + (1 - self.beta2) * (g * g.conj()).real
        m_hat = st["m"] / (1 - self.beta1**t)
        v_hat = st["v"] / (1 - self.beta2**t)
        return p - lr * m_hat / (xp.sqrt(v_hat) + self.eps)


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(name: str, lr: float, **kw) -> Optimizer:
    """Build an optimiser by name ("sgd", "momentum", "adam")."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}") from None
    return cls(lr, **kw)
