# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 05 — One DLRT training step, dissected
#
# **You will learn**
#
# * that a DLRT step (Schotthöfer et al. 2022, Alg. 1; Zangrando 2022, ch. 3) *is* one
#   rank-adaptive BUG step (tutorial 03) of the gradient flow $\dot W = -\nabla_W\mathcal L(W)$,
#   with the field $F = -\nabla_W\mathcal L = -\Delta^\top X$ given by one forward/backward pass
#   (tutorial 04) and explicit Euler with step $h$ = learning rate, i.e. SGD, as the sub-step;
# * every intermediate of that step for a small MLP on MNIST: $K_1$, $L_1$, $\hat U$, $\hat V$, $\tilde S_0$,
#   $\hat S_1$, its singular values, $\vartheta = \tau\|\hat\sigma\|_2$ and the new rank;
# * that the step done by hand equals `DLRT.step` to rounding error, and that the loss decreases.
#
# `DLRT_QUICK=1` makes it smaller.

# %%
import numpy as np

from _tutorial import QUICK, banner, plt, savefig
from dlrt_ref.data import load_mnist
from dlrt_ref.integrators import augment, k_flow, l_flow, s_flow, truncate_core
from dlrt_ref.nn import SoftmaxCrossEntropy, mlp
from dlrt_ref.substeps import solve_subflow
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import SGD

banner("05 one DLRT step")
np.set_printoptions(precision=3, linewidth=110)
B = 128 if QUICK else 256
widths, ranks = [784, 64, 32, 10], [16, 12, None]  # two low-rank layers, dense classifier
h, tau = 0.2, 0.1  # step size = learning rate; relative truncation tolerance

data = load_mnist(subset=B, test_subset=10, seed=0)
x, y = data.x_train.astype(np.float64), data.y_train  # (B, 784), (B,)
net = mlp(widths, ranks=ranks, dtype=np.float64, seed=0)
net_ref = mlp(widths, ranks=ranks, dtype=np.float64, seed=0)  # same seed: an identical copy for DLRT.step
print(net)
print(f"batch x {x.shape}, labels {y.shape}; h = {h}, τ = {tau}")

# %% [markdown]
# ## 1. The single forward/backward pass
#
# Rank-adaptive BUG needs the field only at $W_0$ (tutorial 03: $\hat U\tilde S_0\hat V^\top = W_0$,
# so the S-step starts from the same point). One pass gives, for each low-rank layer, the lazy
# gradient $G = \Delta^\top X$ in `layer.grad_op`, and for the biases and the dense classifier their
# ordinary gradients.

# %%
loss = SoftmaxCrossEntropy()
L0 = loss.forward(net.forward(x), y)
net.backward(loss.backward())
print(f"loss at W0 on this batch: {L0:.4f}")
for i, layer in enumerate(net.lowrank_layers()):
    print(f"layer {i}: {layer!r}, W is {layer.shape}, grad_op = {layer.grad_op}")

# %% [markdown]
# ## 2. K-, L- and S-steps of every low-rank layer
#
# With $F_0 = -G$ and Euler sub-steps (Schotthöfer et al. 2022, Alg. 1, lines "K-step",
# "L-step", "S-step"):
#
# $$ K_1 = U_0S_0 - h\,\frac{\partial\mathcal L}{\partial K},\qquad L_1 = V_0S_0^\top - h\,\frac{\partial\mathcal L}{\partial L}, $$
# $$ \hat U = \operatorname{orth}[K_1\,|\,U_0],\; \hat V = \operatorname{orth}[L_1\,|\,V_0],\;
#    \tilde S_0 = \hat M S_0\hat N^\top,\qquad \hat S_1 = \tilde S_0 - h\,\hat U^\top G\hat V, $$
#
# then truncation of $\hat S_1$ at $\vartheta = \tau\|\hat\sigma\|_2$, with the rank kept in
# $[r_{\min}, r_{\max}] = [2, \lfloor\min(m,n)/2\rfloor]$ (the defaults of `DLRT`). The library's
# `k_flow`, `l_flow`, `s_flow` with `rhs0 = F_0` products and `solve_subflow("euler", ...)` do
# exactly these updates — no further pass is requested.

# %%
new_factors, spectra = [], []
for i, layer in enumerate(net.lowrank_layers()):
    m, n = layer.shape
    U0, S0, V0 = layer.U, layer.S, layer.V
    F0 = layer.grad_op.scaled(-1.0)  # F = -G, lazily
    print(f"--- layer {i}: W {m}x{n}, rank r = {layer.rank}")

    K1 = solve_subflow("euler", k_flow(V0, F0), None, 0.0, U0 @ S0, h)  # (m, r)
    L1 = solve_subflow("euler", l_flow(U0, F0), None, 0.0, V0 @ S0.T, h)  # (n, r)
    print(f"  K1 {K1.shape} = K0 - h ∂L/∂K: {np.allclose(K1, U0 @ S0 - h * layer.grad_K())};"
          f"  L1 {L1.shape} = L0 - h ∂L/∂L: {np.allclose(L1, V0 @ S0.T - h * layer.grad_L())}")

    U_hat, M_hat = augment(K1, U0)  # (m, 2r), (2r, r)
    V_hat, N_hat = augment(L1, V0)  # (n, 2r), (2r, r)
    S_tilde0 = M_hat @ S0 @ N_hat.T  # (2r, 2r)
    print(f"  Û {U_hat.shape}, V̂ {V_hat.shape}, S̃0 {S_tilde0.shape};  "
          f"||Û S̃0 V̂^T - W0||_F = {np.linalg.norm(U_hat @ S_tilde0 @ V_hat.T - layer.to_dense()):.1e}")

    S_hat1 = solve_subflow("euler", s_flow(U_hat, V_hat, F0), None, 0.0, S_tilde0, h)  # (2r, 2r)
    rule = dict(tau=tau, r_min=2, r_max=min(m, n) // 2)
    Y1, tr = truncate_core(U_hat, S_hat1, V_hat, **rule)
    sig = np.linalg.svd(S_hat1, compute_uv=False)
    spectra.append((layer, sig, tr))
    print(f"  Ŝ1 {S_hat1.shape}, σ(Ŝ1) = {sig}")
    print(f"  ϑ = τ||σ||_2 = {tr.theta:.3f}; new rank r1 = {tr.rank} (r_max {rule['r_max']}); "
          f"discarded tail {tr.tail:.3f};  U1 {Y1.U.shape}, S1 {Y1.S.shape}, V1 {Y1.V.shape}")
    new_factors.append(Y1)

# %% [markdown]
# ## 3. Dense parameters, then the new network
#
# Biases and the dense classifier take a plain SGD step with their gradient from the same
# pass. Then every low-rank layer gets its new factors, possibly of a new rank.

# %%
opt = SGD(lr=h)
for k, layer in enumerate(net.layers):
    for name in layer.params:
        layer.params[name] = opt.update(("dense", k, name), layer.params[name], layer.grads[name])
for layer, Y1 in zip(net.lowrank_layers(), new_factors):
    layer.set_factors(Y1.U, Y1.S, Y1.V)
L1_batch = loss.forward(net.forward(x), y)
print(f"ranks {ranks[:-1]} -> {[l.rank for l in net.lowrank_layers()]}")
print(f"loss on the batch: {L0:.4f} -> {L1_batch:.4f}  (decreased: {L1_batch < L0})")

# %% [markdown]
# ## 4. The same step by `DLRT.step`
#
# `DLRT` runs `ra_bug_stages` for every layer in lockstep and serves each round of field
# requests with one pass; the optimiser is the sub-step. On the identical copy:

# %%
trainer = DLRT(net_ref, SGD(lr=h), method="ra-bug", tau=tau)
info = trainer.step(x, y)
print(f"DLRT.step: loss at W0 {info.loss:.4f}, passes {info.passes}, ranks {info.ranks}")
for a, b in zip(net.lowrank_layers(), net_ref.lowrank_layers()):
    print(f"  {a!r}: ||W(hand) - W(DLRT.step)||_F = {np.linalg.norm(a.to_dense() - b.to_dense()):.1e}, "
          f"bias diff {np.abs(a.params['b'] - b.params['b']).max():.1e}")

# %% [markdown]
# ## 5. A few more steps
#
# Schotthöfer et al. 2022 (Thm. 2) show that the loss decreases along DLRT steps for $h$ small
# enough, up to a term of order $\vartheta$ from the truncation. On one fixed batch:

# %%
n_more = 10 if QUICK else 40
losses, rank_hist = [info.loss], [info.ranks]
for _ in range(n_more):
    st = trainer.step(x, y)
    losses.append(st.loss)
    rank_hist.append(st.ranks)
print("batch loss:", np.round(losses[:: max(1, n_more // 10)], 4))
print("ranks:     ", rank_hist[-1])

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
for ax, (layer, sig, tr) in zip(axes[:2], spectra):
    j = np.arange(1, len(sig) + 1)
    tail = np.sqrt(np.cumsum((sig ** 2)[::-1])[::-1])  # tail[j-1] = (Σ_{i>=j} σ_i²)^½
    ax.semilogy(j, sig, "o", color="C0", label=r"$\hat\sigma_j$ of $\hat S_1$")
    ax.semilogy(j[1:], tail[1:], "s-", color="C1", markersize=3,
                label=r"tail $(\sum_{i\geq j}\hat\sigma_i^2)^{1/2}$: error if $j-1$ are kept")
    ax.axhline(tr.theta, color="C3", linestyle="--", label=rf"$\vartheta = \tau\|\hat\sigma\|_2$ = {tr.theta:.2f}")
    ax.axvline(tr.rank + 0.5, color="k", linestyle=":", label=f"new rank r1 = {tr.rank}")
    ax.set_xlabel("index j")
    ax.set_ylabel("singular value / tail norm (weight units)")
    ax.set_title(f"layer {layer.shape[0]}×{layer.shape[1]}: augmented core $\\hat S_1$ {len(sig)}×{len(sig)}", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
ax = axes[2]
ax.plot(np.arange(len(losses)), losses, "o-", markersize=3, color="C0")
ax.set_xlabel("DLRT step (same batch)")
ax.set_ylabel("cross-entropy loss at the step's start (nats)")
ax.set_title(f"descent, h = {h}, τ = {tau}; final ranks {rank_hist[-1]}", fontsize=9)
savefig(fig, "05_one_dlrt_step")

# %% [markdown]
# ## Exercises
#
# 1. Replace `SGD` by `Momentum` in `DLRT`. The momentum buffer of $K$ lives in the basis $V_0$;
#    read `dlrt_ref/train/optim.py` to see how it is carried into the next step's basis.
# 2. Set `h = 5.0`. Does the loss still decrease? Compare with the smoothness constant of the
#    cross-entropy loss (Schotthöfer et al. 2022, Thm. 2 needs $h \le 1/L$).
# 3. Change `τ` to 0.01 and 0.3. Predict the new ranks from the left panels before running.
# 4. Use `method="bug"` (fixed rank) and count passes per step (`info.passes`). Why does BUG
#    need two passes when the rank-adaptive version needs one?
