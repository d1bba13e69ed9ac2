r"""An emulation of the 2022 TensorFlow DLRT training step of [P], for the experiment
:mod:`dlrt_ref.experiments.tf2022_emulation` only.

The library's :class:`~dlrt_ref.train.dlrt.DLRT` is the algorithm of the papers.
The fully-connected results of [P] (Schotthöfer et al., NeurIPS 2022, Table 1 and
the rank-evolution figures) were produced by a TensorFlow implementation whose
step differs from the algorithm in ways the papers do not describe. This module
re-implements *that step* in NumPy, written from a reading of the public
repository CSMMLab/DLRT-Net (``src/networks/dense_layers.py``, class
``DLRALayerAdaptive``, and the training loop of ``src/mnist_DLRA.py``; read, not
copied), so that the effect of each difference on the ranks can be measured.

**Reused from the library**, because the 2022 code does the same there: the
network's forward and backward (:class:`~dlrt_ref.nn.LowRankLinear`,
:class:`~dlrt_ref.nn.ReLU`, :class:`~dlrt_ref.nn.Dense` in a
:class:`~dlrt_ref.nn.Sequential`; the factor gradients are the layer's
``grad_K``/``grad_L``/``grad_S``), the loss
(:class:`~dlrt_ref.nn.SoftmaxCrossEntropy`) and the truncation
(:func:`dlrt_ref.truncation.truncate`, with ``compat_2022`` for the 2022 rule).

**The deviations under study**, each a switch that can be turned off on its own:

``init="tf2022"``
    The factors U (n_in×r), S (r×r), Vᵀ (r×n_out), the biases and the dense
    classifier are drawn entrywise from N(0, 0.05²) (Keras ``random_normal``),
    U and V not orthonormal. ``"library"``: the library's initialisation
    (:mod:`dlrt_ref.nn.init`, He-scaled, orthonormal bases).
``drift=True``
    One Keras Adam optimiser serves the three gradient applications of a batch
    (K-, L- and S-gradients) over *all* trainable variables, with zero
    gradients where a variable is not differentiated. Adam still moves such a
    variable by its first moment: S and the biases take two momentum-only
    steps per batch before the S-step, K and L one each. ``False``: a variable
    is only updated when it has a gradient.
``state="positional"``
    K, L and S live in fixed-size variables (n_in×R, R×n_out, 2R×2R) of which
    the leading block is used; Adam's moments are kept per *entry* and never
    mapped into the new bases after the QR and SVD basis changes. (The library
    maps them, see :mod:`dlrt_ref.train.optim`; its ``state_policy="stale"`` is
    this rule, with the same :func:`~dlrt_ref.train.optim.embed_leading` of a
    factor's gradient into the fixed-size array.) ``"reset"``: the moments of
    K, L and S are dropped at every step (what Keras does for a variable that
    is re-created, as in earlier versions of that code); Adam's step counter
    keeps running. ``"mapped"``: the moments are mapped into the new bases before
    each update, as the library does (:mod:`dlrt_ref.train.optim`): for K (frame
    Vᵀ) m ← m V_old V_newᵀ, for Lᵀ (frame U) m ← U_newᵀ U_old m, for S̃ (frame
    Û, V̂) m ← Û_newᵀ Û_old m V̂_oldᵀ V̂_new, second moments with the entrywise
    squares of these matrices; needs ``drift=False``.
``truncation="2022"``
    The new output-side basis is built from the first r *rows* of the matrix
    of right singular vectors of S (a transposition), and the tail sum leaves
    out the last singular value; if no cut is found the rank stays
    (:func:`dlrt_ref.truncation.truncate` with ``compat_2022=True``; its fallback
    k//2 of the 2r×2r core is the current rank r). ``"correct"``: columns,
    full tail, rank up to 2r.

Always as in that code (mechanics of the emulation, not switches): the
augmented bases are the Q factors of [K | U] and [Lᵀ | V] (K first), the
relative threshold is τ‖σ(Ŝ)‖₂, the cap is R = ⌊min(n_in, n_out)/2⌋ (start rank
min(start, R)), r ≥ 2, the classifier is dense and trained in the S-step only,
the gradients of K and L are taken at the same point W0 = U S Vᵀ (the 2022 code
records them in two passes, with W = K Vᵀ and W = U Lᵀ, which are equal; here
one pass gives both), and Keras Adam (ε = 1e-7 added to √v, bias correction by
the global iteration count, which advances three times per batch).

Orientation as in TensorFlow: a layer computes relu(x W + b) with
W = U S Vᵀ (n_in×n_out), U (n_in×r), V (n_out×r), x (N×n_in). The library's
layers hold the transpose, W_lib = V Sᵀ Uᵀ (n_out×n_in), see :meth:`TF2022Emulation._pass`.
Notation of the step as in [P], Algorithm 1.

Not emulated: Keras' probability clipping in the loss, the shuffle buffer of
1024, float32 round-off of TensorFlow's kernels, and the sign conventions of
TensorFlow's SVD (which matter where stale state meets sign flips).
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.nn import Dense, LowRankLinear, ReLU, Sequential, SoftmaxCrossEntropy
from dlrt_ref.nn import init as lib_init
from dlrt_ref.train.optim import embed_leading
from dlrt_ref.truncation import truncate

__all__ = ["TF2022Emulation", "KerasAdam"]

KERAS_STDDEV = 0.05  # keras.initializers.RandomNormal default


class KerasAdam:
    r"""Keras (TF 2.x) Adam on a dict of arrays, state per array entry (positional).

    Differs from :class:`dlrt_ref.train.optim.Adam`: ε is added to √v before the
    bias correction (step lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m/(√v + ε)), one iteration count t
    serves all variables and advances at every :meth:`apply`, and a variable
    without a gradient is moved by its first moment when ``drift`` is set.
    """

    def __init__(self, lr, beta1=0.9, beta2=0.999, eps=1e-7):
        self.lr, self.b1, self.b2, self.eps = lr, beta1, beta2, eps
        self.t = 0
        self.m, self.v = {}, {}

    def apply(self, params: dict, grads: dict, names, drift: bool) -> None:
        """One ``apply_gradients`` over ``names``; a missing gradient is zero (drift) or skips the variable."""
        self.t += 1
        lr_t = self.lr * np.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        for name in names:
            g = grads.get(name)
            if g is None:
                if not drift:
                    continue
                g = np.zeros_like(params[name])
            m = self.m.setdefault(name, np.zeros_like(params[name]))
            v = self.v.setdefault(name, np.zeros_like(params[name]))
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            params[name] -= lr_t * m / (np.sqrt(v) + self.eps)

    def reset(self, names) -> None:
        for name in names:
            self.m.pop(name, None)
            self.v.pop(name, None)


class TF2022Emulation:
    """MLP 784 → d … → 10 with low-rank hidden layers, trained by the emulated 2022 step.

    Parameters
    ----------
    widths : list of int
        Layer widths; every layer but the last is low-rank (needs min(n_in, n_out) >= 4,
        so that the cap R >= 2), the last is dense.
    tau : float
        Relative truncation tolerance.
    start_rank : int, optional
        Start rank (default: the cap R = ⌊min(n_in, n_out)/2⌋ of each layer).
    lr : float
        Adam learning rate.
    init, drift, state, truncation : see the module docstring.
    seed : int
    dtype : numpy dtype (float32 as in the original; float64 for gradient checks)
    """

    def __init__(self, widths, tau, start_rank=None, lr=1e-3, init="tf2022", drift=True, state="positional",
                 truncation="2022", seed=0, dtype=np.float32):
        if init not in ("tf2022", "library") or state not in ("positional", "reset", "mapped") or \
                truncation not in ("2022", "correct"):
            raise ValueError(f"unknown option: init={init!r}, state={state!r}, truncation={truncation!r}")
        if state == "mapped" and drift:
            raise ValueError("state='mapped' needs drift=False (a drifting variable has no frame to map from)")
        if not tau >= 0:
            raise ValueError(f"tau must be >= 0, got {tau}")
        self.widths, self.tau, self.drift, self.state, self.truncation = list(widths), float(tau), drift, state, truncation
        if len(self.widths) < 3 or min(min(a, b) for a, b in zip(self.widths[:-2], self.widths[1:-1])) < 4:
            raise ValueError(f"widths: need >= 3 widths and min(n_in, n_out) >= 4 for every low-rank layer, "
                             f"got {self.widths}")
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self.p = {}  # every variable, by name (full, fixed-size arrays)
        self.layers = []  # per low-rank layer: dict(name prefix, n_in, n_out, R, r)
        for k, (n_in, n_out) in enumerate(zip(self.widths[:-2], self.widths[1:-1])):
            R = min(n_in, n_out) // 2
            r = R if start_rank is None else max(2, min(int(start_rank), R))
            self.layers.append(dict(k=k, n_in=n_in, n_out=n_out, R=R, r=r))
            self._init_layer(k, n_in, n_out, R, r, init, rng)
        n_in, n_out = self.widths[-2], self.widths[-1]
        if init == "tf2022":
            self.p["W_out"] = rng.normal(0, KERAS_STDDEV, (n_in, n_out))
            self.p["b_out"] = rng.normal(0, KERAS_STDDEV, n_out)
        else:
            self.p["W_out"] = lib_init.dense_weight(n_out, n_in, rng, "linear").T  # (n_in, n_out)
            self.p["b_out"] = np.zeros(n_out)
        self.p = {k: np.asarray(v, self.dtype) for k, v in self.p.items()}
        self.opt = KerasAdam(lr)
        self._frames = {}  # state="mapped": variable name -> the basis its moments are expressed in
        self._build_network()

    def _init_layer(self, k, n_in, n_out, R, r, init, rng):
        p = self.p
        p[f"K{k}"] = np.zeros((n_in, R))
        p[f"Lt{k}"] = np.zeros((R, n_out))
        p[f"S{k}"] = rng.normal(0, KERAS_STDDEV, (2 * R, 2 * R))
        p[f"U{k}"] = rng.normal(0, KERAS_STDDEV, (n_in, R))
        p[f"Vt{k}"] = rng.normal(0, KERAS_STDDEV, (R, n_out))
        p[f"b{k}"] = rng.normal(0, KERAS_STDDEV, n_out)
        if init == "library":
            U, S, V = lib_init.lowrank_factors(n_out, n_in, r, rng, "relu")  # W_lib (n_out, n_in) = U S Vᵀ = W_tfᵀ
            p[f"U{k}"][:, :r], p[f"S{k}"][:r, :r], p[f"Vt{k}"][:r, :] = V, S.T, U.T
            p[f"b{k}"] = np.zeros(n_out)

    def _build_network(self):
        """The library's layers, sharing the bias and classifier arrays of ``self.p`` (updated in place)."""
        self.lowrank, layers = [], []
        for L in self.layers:
            layer = LowRankLinear(L["n_in"], L["n_out"], 1, dtype=self.dtype)  # factors set by each pass
            layer.params["b"] = self.p[f"b{L['k']}"]
            self.lowrank.append(layer)
            layers += [layer, ReLU()]
        self.out = Dense(self.widths[-2], self.widths[-1], activation="linear", dtype=self.dtype)
        self.out.params = {"W": self.p["W_out"].T, "b": self.p["b_out"]}  # Dense: y = x Wᵀ + b, W (10, d) a view
        self.net = Sequential(layers + [self.out])
        self.loss = SoftmaxCrossEntropy()

    # -- evaluation ---------------------------------------------------------
    def ranks(self) -> list:
        return [L["r"] for L in self.layers]

    def _current(self):
        """Per layer, the point W0 = U S Vᵀ as factors (A, C, B) = (U, S, V) for :meth:`_pass`."""
        p = self.p
        return [(p[f"U{k}"][:, :r], p[f"S{k}"][:r, :r], p[f"Vt{k}"][:r, :].T)
                for k, r in ((L["k"], L["r"]) for L in self.layers)]

    def logits(self, x):
        self._set_points(self._current())
        return self.net.forward(x)  # (N, n_in) -> (N, 10)

    # -- one pass with every layer at a chosen W_k = A_k C_k B_kᵀ -----------
    def _set_points(self, points):
        for layer, (A, C, B) in zip(self.lowrank, points):
            layer.set_factors(B, C.T, A)  # W_lib = W_kᵀ = B Cᵀ Aᵀ: U_lib = B (n_out, q), S_lib = Cᵀ, V_lib = A (n_in, q)

    def _pass(self, x, y, points) -> float:
        """Forward and backward with low-rank layer k at W_k = A_k C_k B_kᵀ (A (n_in, q), C (q, q), B (n_out, q)).

        Returns the loss; the gradients are left in the layers. In Keras orientation,
        for W = A C Bᵀ with G = ∂L/∂W (n_in×n_out) = G_libᵀ, the library's layer gives
        ``grad_L()`` = G_libᵀ U_lib = G B (n_in, q), ``grad_K()`` = G_lib V_lib = Gᵀ A (n_out, q)
        and ``grad_S()`` = U_libᵀ G_lib V_lib = (Aᵀ G B)ᵀ (q, q).
        """
        self._set_points(points)
        loss = self.loss.forward(self.net.forward(x), y)
        self.net.backward(self.loss.backward())
        return loss

    def _names(self, with_out):
        names = [f"{v}{L['k']}" for L in self.layers for v in ("K", "Lt", "S", "b")]
        return names + (["W_out", "b_out"] if with_out else [])

    def _kl_gradients(self, x, y):
        """∂L/∂K (W = K Vᵀ) and ∂L/∂Lᵀ (W = U Lᵀ) at W0, embedded in the fixed-size variables."""
        p, grads = self.p, {}
        self._pass(x, y, self._current())
        for L, layer in zip(self.layers, self.lowrank):
            k, r = L["k"], L["r"]
            grads[f"K{k}"] = embed_leading(layer.grad_L(), p[f"K{k}"].shape)  # G V: (n_in, r) in (n_in, R)
            grads[f"Lt{k}"] = embed_leading(layer.grad_K().T, p[f"Lt{k}"].shape)  # Uᵀ G: (r, n_out) in (R, n_out)
        return grads

    def _s_gradients(self, x, y, hat):
        """Loss and ∂L/∂S̃ (W = Û S̃ V̂ᵀ), biases and classifier at the augmented point, embedded."""
        p = self.p
        pts = [(hat[L["k"]][0], p[f"S{L['k']}"][:2 * L["r"], :2 * L["r"]], hat[L["k"]][1].T) for L in self.layers]
        loss = self._pass(x, y, pts)
        grads = {"W_out": self.out.grads["W"].T, "b_out": self.out.grads["b"]}  # (d, 10), (10,)
        for L, layer in zip(self.layers, self.lowrank):
            k, r = L["k"], L["r"]
            grads[f"S{k}"] = embed_leading(layer.grad_S().T, p[f"S{k}"].shape)  # Ûᵀ G V̂: (2r, 2r) in (2R, 2R)
            grads[f"b{k}"] = layer.grads["b"]
        return loss, grads

    def step(self, x, y) -> float:
        """One batch: K- and L-gradients, two Adam applications, basis augmentation, S-step, truncation."""
        p, dt = self.p, self.dtype
        for L in self.layers:  # K = U S, Lᵀ = S Vᵀ (pre-processing)
            k, r = L["k"], L["r"]
            S = p[f"S{k}"][:r, :r]
            p[f"K{k}"][:, :r] = p[f"U{k}"][:, :r] @ S  # (n_in, r) @ (r, r)
            p[f"Lt{k}"][:r, :] = S @ p[f"Vt{k}"][:r, :]  # (r, r) @ (r, n_out)
        if self.state == "reset":
            self.opt.reset([f"{v}{L['k']}" for L in self.layers for v in ("K", "Lt", "S")])
        grads = self._kl_gradients(x, y)
        if self.state == "mapped":
            for L in self.layers:
                k, r = L["k"], L["r"]
                self._map(f"K{k}", (p[f"Vt{k}"][:r, :].copy(),))
                self._map(f"Lt{k}", (p[f"U{k}"][:, :r].copy(),))
        for v in ("K", "Lt"):  # two apply_gradients, K then L
            self.opt.apply(p, {f"{v}{L['k']}": grads[f"{v}{L['k']}"] for L in self.layers}, self._names(False),
                           self.drift)
        hat = {}
        for L in self.layers:  # augmented bases, K first (Q of [K | U]); S̃ = N S Mᵀ
            k, r = L["k"], L["r"]
            U0, Vt0 = p[f"U{k}"][:, :r], p[f"Vt{k}"][:r, :]
            Uh = np.linalg.qr(np.concatenate([p[f"K{k}"][:, :r], U0], axis=1))[0]  # (n_in, 2r)
            Vh = np.linalg.qr(np.concatenate([p[f"Lt{k}"][:r, :].T, Vt0.T], axis=1))[0]  # (n_out, 2r)
            N, M = Uh.T @ U0, Vh.T @ Vt0.T  # (2r, r) each
            p[f"S{k}"][:2 * r, :2 * r] = N @ p[f"S{k}"][:r, :r] @ M.T  # (2r, r)(r, r)(r, 2r)
            hat[k] = (Uh.astype(dt), Vh.T.astype(dt))
        if self.state == "mapped":
            for L in self.layers:
                self._map(f"S{L['k']}", hat[L["k"]])
        loss, grads = self._s_gradients(x, y, hat)
        self.opt.apply(p, grads, self._names(True), self.drift)
        for L in self.layers:
            self._truncate(L, hat[L["k"]])
        return float(loss)

    def _map(self, name, frame):
        """Map Adam's moments of ``name`` from its previous frame into ``frame`` (state="mapped")."""
        old = self._frames.get(name)
        self._frames[name] = frame
        if old is None or name not in self.opt.m:
            return
        if name[0] == "K":  # K Vᵀ = W: K_new = K_old (Vᵀ_old Vᵀ_newᵀ)
            T = old[0] @ frame[0].T  # (r_old, n_out) @ (n_out, r) -> (r_old, r)
            f = lambda A, T: A[:, :T.shape[0]] @ T
            sl = np.s_[:, :T.shape[1]]
        elif name[0] == "L":  # U Lᵀ = W: Lᵀ_new = (U_newᵀ U_old) Lᵀ_old
            T = frame[0].T @ old[0]  # (r, n_in) @ (n_in, r_old) -> (r, r_old)
            f = lambda A, T: T @ A[:T.shape[1], :]
            sl = np.s_[:T.shape[0], :]
        else:  # Û S̃ V̂ᵀ = W: S̃_new = (Û_newᵀ Û_old) S̃_old (V̂ᵀ_old V̂ᵀ_newᵀ)
            Tl, Tr = frame[0].T @ old[0], old[1] @ frame[1].T  # (2r, 2r_old), (2r_old, 2r)
            f = lambda A, T: T[0] @ A[:T[0].shape[1], :T[1].shape[0]] @ T[1]
            T, sl = (Tl, Tr), np.s_[:Tl.shape[0], :Tr.shape[1]]
        sq = tuple(t * t for t in T) if isinstance(T, tuple) else T * T
        for store, TT in ((self.opt.m, T), (self.opt.v, sq)):
            block = f(store[name], TT)
            store[name][...] = 0
            store[name][sl] = block

    def _truncate(self, L, hat):
        """Ŝ = P diag(σ) Qᵀ cut to the new rank (library :func:`~dlrt_ref.truncation.truncate`, 2022 rule or correct)."""
        p, k, r = self.p, L["k"], L["r"]
        Uh, Vth = hat
        tr = truncate(p[f"S{k}"][:2 * r, :2 * r].astype(np.float64), tau=self.tau, r_min=2, r_max=L["R"],
                      compat_2022=self.truncation == "2022")
        new = tr.rank
        p[f"S{k}"][:new, :new] = np.diag(tr.sigma)
        p[f"U{k}"][:, :new] = Uh @ tr.P  # (n_in, 2r) @ (2r, new)
        p[f"Vt{k}"][:new, :] = tr.Q.T @ Vth  # (new, 2r) @ (2r, n_out); 2022: Q = rows of the right singular vectors
        L["r"] = new
