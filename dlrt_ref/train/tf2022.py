r"""An emulation of the 2022 TensorFlow DLRT training step of [P], for measurements only.

The library's :class:`~dlrt_ref.train.dlrt.DLRT` is the algorithm of the papers.
The fully-connected results of [P] (Schotthöfer et al., NeurIPS 2022, Table 1 and
the rank-evolution figures) were produced by a TensorFlow implementation whose
step differs from the algorithm in ways the papers do not describe. This module
re-implements *that step* in NumPy, written from a reading of the public
repository CSMMLab/DLRT-Net (``src/networks/dense_layers.py``, class
``DLRALayerAdaptive``, and the training loop of ``src/mnist_DLRA.py``; read, not
copied), so that the effect of each difference on the ranks can be measured.
Every difference is a switch, so each can be turned off on its own:

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
    maps them, see :mod:`dlrt_ref.train.optim`.) ``"reset"``: the moments of
    K, L and S are dropped at every step (what Keras does for a variable that
    is re-created, as in earlier versions of that code); Adam's step counter
    keeps running. ``"mapped"``: the moments are mapped into the new bases before
    each update, as the library does (:mod:`dlrt_ref.train.optim`): for K (frame
    Vᵀ) m ← m V_old V_newᵀ, for Lᵀ (frame U) m ← U_newᵀ U_old m, for S̃ (frame
    Û, V̂) m ← Û_newᵀ Û_old m V̂_oldᵀ V̂_new, second moments with the entrywise
    squares of these matrices; needs ``drift=False``.
``truncation="2022"``
    The new output-side basis is built from the first r *rows* of the matrix
    of right singular vectors of S (a transposition, see
    :func:`dlrt_ref.lowrank.truncate` ``compat_2022``), and the tail sum
    leaves out the last singular value; if no cut is found the rank stays.
    ``"correct"``: columns, full tail, rank up to 2r.

Always as in that code: the augmented bases are the Q factors of [K | U] and
[Lᵀ | V] (K first), the relative threshold is τ‖σ(Ŝ)‖₂, the cap is
R = ⌊min(n_in, n_out)/2⌋ (start rank min(start, R)), r ≥ 2, the classifier is
dense and trained in the S-step only, Keras Adam (ε = 1e-7, bias correction by
the global iteration count, which advances three times per batch).

Orientation as in TensorFlow: a layer computes relu(x W + b) with
W = U S Vᵀ (n_in×n_out), U (n_in×r), V (n_out×r), x (N×n_in). Notation of the
step as in [P], Algorithm 1.

Not emulated: Keras' probability clipping in the loss, the shuffle buffer of
1024, float32 round-off of TensorFlow's kernels, and the sign conventions of
TensorFlow's SVD (which matter where stale state meets sign flips).
"""
from __future__ import annotations

import numpy as np

__all__ = ["TF2022Emulation"]

KERAS_STDDEV = 0.05  # keras.initializers.RandomNormal default


class _Adam:
    """Keras (TF 2.x) Adam on a dict of arrays, state per array entry (positional)."""

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


def _relu_layer_backward(x, P, Q, pre, dout):
    """For pre = (x P) Q + b, out = relu(pre): gradients of P, Q, b and x (products in the comments)."""
    dpre = dout * (pre > 0)  # (N, n_out)
    xP = x @ P  # (N, n_in) @ (n_in, k) -> (N, k)
    dpQt = dpre @ Q.T  # (N, n_out) @ (n_out, k) -> (N, k)
    return x.T @ dpQt, xP.T @ dpre, dpre.sum(axis=0), dpQt @ P.T  # dP (n_in, k), dQ (k, n_out), db, dx (N, n_in)


class TF2022Emulation:
    """MLP 784 → d … → 10 with low-rank hidden layers, trained by the emulated 2022 step.

    Parameters
    ----------
    widths : list of int
        Layer widths; every layer but the last is low-rank, the last is dense.
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
            from dlrt_ref.nn import init as lib_init
            self.p["W_out"] = lib_init.dense_weight(n_out, n_in, rng, "linear").T  # (n_in, n_out)
            self.p["b_out"] = np.zeros(n_out)
        self.p = {k: np.asarray(v, self.dtype) for k, v in self.p.items()}
        self.opt = _Adam(lr)
        self._frames = {}  # state="mapped": variable name -> the basis its moments are expressed in

    def _init_layer(self, k, n_in, n_out, R, r, init, rng):
        p = self.p
        p[f"K{k}"] = np.zeros((n_in, R))
        p[f"Lt{k}"] = np.zeros((R, n_out))
        p[f"S{k}"] = rng.normal(0, KERAS_STDDEV, (2 * R, 2 * R))
        p[f"U{k}"] = rng.normal(0, KERAS_STDDEV, (n_in, R))
        p[f"Vt{k}"] = rng.normal(0, KERAS_STDDEV, (R, n_out))
        p[f"b{k}"] = rng.normal(0, KERAS_STDDEV, n_out)
        if init == "library":
            from dlrt_ref.nn import init as lib_init
            U, S, V = lib_init.lowrank_factors(n_out, n_in, r, rng, "relu")  # W_lib (n_out, n_in) = U S Vᵀ = W_tfᵀ
            p[f"U{k}"][:, :r], p[f"S{k}"][:r, :r], p[f"Vt{k}"][:r, :] = V, S.T, U.T
            p[f"b{k}"] = np.zeros(n_out)

    # -- evaluation ---------------------------------------------------------
    def ranks(self) -> list:
        return [L["r"] for L in self.layers]

    def logits(self, x):
        p = self.p
        for L in self.layers:
            k, r = L["k"], L["r"]
            z = ((x @ p[f"U{k}"][:, :r]) @ p[f"S{k}"][:r, :r]) @ p[f"Vt{k}"][:r, :]  # (N,n_in)(n_in,r)(r,r)(r,n_out)
            x = np.maximum(z + p[f"b{k}"], 0)
        return x @ p["W_out"] + p["b_out"]  # (N, d) @ (d, 10)

    # -- one pass with every layer at a chosen (P, Q) -------------------------
    def _pass(self, x, y, points, with_out):
        """Forward/backward with layer k computing relu((x P_k) Q_k + c_k); returns loss and per-layer grads."""
        p = self.p
        cache = []
        for (P, Q, c) in points:
            pre = (x @ P) @ Q + c  # (N, n_in)(n_in, k)(k, n_out)
            cache.append((x, P, Q, pre))
            x = np.maximum(pre, 0)
        z = x @ p["W_out"] + p["b_out"]  # (N, d) @ (d, 10)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        N = len(y)
        loss = -logp[np.arange(N), y].mean()
        dz = np.exp(logp)
        dz[np.arange(N), y] -= 1
        dz /= N  # (N, 10)
        out_grads = {"W_out": x.T @ dz, "b_out": dz.sum(axis=0)} if with_out else {}
        dx = dz @ p["W_out"].T  # (N, 10) @ (10, d)
        grads = [None] * len(points)
        for i in reversed(range(len(points))):
            xi, P, Q, pre = cache[i]
            dP, dQ, db, dx = _relu_layer_backward(xi, P, Q, pre, dx)
            grads[i] = (dP, dQ, db)
        return loss, grads, out_grads

    def _names(self, with_out):
        names = [f"{v}{L['k']}" for L in self.layers for v in ("K", "Lt", "S", "b")]
        return names + (["W_out", "b_out"] if with_out else [])

    def step(self, x, y) -> float:
        """One batch: K- and L-gradients, two Adam applications, basis augmentation, S-step, truncation."""
        p, dt = self.p, self.dtype
        aux_b = {}
        for L in self.layers:  # K = U S, Lᵀ = S Vᵀ (pre-processing)
            k, r = L["k"], L["r"]
            S = p[f"S{k}"][:r, :r]
            p[f"K{k}"][:, :r] = p[f"U{k}"][:, :r] @ S  # (n_in, r) @ (r, r)
            p[f"Lt{k}"][:r, :] = S @ p[f"Vt{k}"][:r, :]  # (r, r) @ (r, n_out)
            aux_b[k] = p[f"b{k}"].copy()
        if self.state == "reset":
            self.opt.reset([f"{v}{L['k']}" for L in self.layers for v in ("K", "Lt", "S")])
        ks = [L["k"] for L in self.layers]
        rs = [L["r"] for L in self.layers]
        _, gK, _ = self._pass(x, y, [(p[f"K{k}"][:, :r], p[f"Vt{k}"][:r, :], aux_b[k]) for k, r in zip(ks, rs)], False)
        _, gL, _ = self._pass(x, y, [(p[f"U{k}"][:, :r], p[f"Lt{k}"][:r, :], aux_b[k]) for k, r in zip(ks, rs)], False)
        full = lambda name, block, sl: _embed(p[name], block, sl)
        if self.state == "mapped":
            for k, r in zip(ks, rs):
                self._map(f"K{k}", (p[f"Vt{k}"][:r, :].copy(),))
                self._map(f"Lt{k}", (p[f"U{k}"][:, :r].copy(),))
        self.opt.apply(p, {f"K{k}": full(f"K{k}", g[0], np.s_[:, :r]) for k, r, g in zip(ks, rs, gK)},
                       self._names(False), self.drift)
        self.opt.apply(p, {f"Lt{k}": full(f"Lt{k}", g[1], np.s_[:r, :]) for k, r, g in zip(ks, rs, gL)},
                       self._names(False), self.drift)
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
            for k in ks:
                self._map(f"S{k}", hat[k])
        pts = [(hat[k][0] @ p[f"S{k}"][:2 * r, :2 * r], hat[k][1], p[f"b{k}"]) for k, r in zip(ks, rs)]
        loss, gS, gout = self._pass(x, y, pts, True)
        grads = dict(gout)
        for k, r, (dP, dQ, db) in zip(ks, rs, gS):
            # P = Û S̃: dS̃ = Ûᵀ dP  ((2r, n_in) @ (n_in, 2r))
            grads[f"S{k}"] = _embed(p[f"S{k}"], hat[k][0].T @ dP, np.s_[:2 * r, :2 * r])
            grads[f"b{k}"] = db
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
        p, k, r, R = self.p, L["k"], L["r"], L["R"]
        Uh, Vth = hat
        Sh = p[f"S{k}"][:2 * r, :2 * r].astype(np.float64)
        u2, d, vh = np.linalg.svd(Sh)  # Ŝ = u2 diag(d) vh, vh = v2ᵀ
        tol = self.tau * np.linalg.norm(d)
        tails = np.sqrt(np.cumsum(d[::-1] ** 2))[::-1]  # tails[j] = ‖d[j:]‖
        if self.truncation == "2022":
            tails_2022 = np.sqrt(np.cumsum(d[-2::-1] ** 2))[::-1]  # ‖d[j:2r-1]‖, j < 2r-1 (last σ left out)
            cut = np.nonzero(tails_2022 < tol)[0]
            new = int(cut[0]) if cut.size else r
        else:
            cut = np.nonzero(np.append(tails, 0.0) <= tol)[0]
            new = int(cut[0])
        new = max(min(new, R), 2)
        p[f"S{k}"][:new, :new] = np.diag(d[:new])
        p[f"U{k}"][:, :new] = Uh @ u2[:, :new]  # (n_in, 2r) @ (2r, new)
        rows = vh[:, :new].T if self.truncation == "2022" else vh[:new, :]  # 2022: rows of v2 = columns of vh
        p[f"Vt{k}"][:new, :] = rows @ Vth  # (new, 2r) @ (2r, n_out)
        L["r"] = new


def _embed(full, block, sl):
    """A zero array shaped like ``full`` with ``block`` written at ``sl`` (a gradient of a sliced variable)."""
    g = np.zeros_like(full)
    g[sl] = block
    return g
