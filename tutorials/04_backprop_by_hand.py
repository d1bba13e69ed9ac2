# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 04 — Backpropagation by hand: dense and low-rank layers
#
# **You will learn**
#
# * the backward pass of a dense layer $Y = XW^\top + b$: $\partial L/\partial W = \Delta^\top X$;
# * for a low-rank layer $W = USV^\top$, the three gradients DLRT needs —
#   $\partial L/\partial K$, $\partial L/\partial L$, $\partial L/\partial S$ (Schotthöfer et al. 2022, Alg. 1;
#   Zangrando 2022, ch. 3) — derived in two lines each and computed in
#   $O(B(m+n)r)$ from $\Delta$ and $X$;
# * how to *prove* a handwritten gradient right with the gradient checker
#   (`dlrt_ref.nn.gradcheck`: directional derivative, sampled entries, Taylor remainder,
#   adjoint test), and what a wrong one looks like;
# * why the $n_\text{out}\times n_\text{in}$ gradient is never formed, measured with `tracemalloc`.
#
# `DLRT_QUICK=1` makes it smaller.

# %%
import tracemalloc

import numpy as np

from _tutorial import QUICK, banner, plt, savefig
from dlrt_ref.nn.gradcheck import (Coordinate, check_layer, check_network, factor_coordinates, layer_objective,
                                taylor_test)
from dlrt_ref.nn import Dense, LowRankConv2d, LowRankLinear, SoftmaxCrossEntropy, mlp

banner("04 backprop by hand")
rng = np.random.default_rng(0)
B, n_in, n_out, r = 16, 30, 20, 4

# %% [markdown]
# ## 1. A dense layer
#
# With the batch as rows, $X\in\mathbb R^{B\times n_\text{in}}$, $Y = XW^\top + b\in\mathbb R^{B\times n_\text{out}}$,
# and the upstream gradient $\Delta = \partial L/\partial Y$ (same shape as $Y$), the chain rule gives
#
# $$ \frac{\partial L}{\partial W} = \Delta^\top X,\qquad \frac{\partial L}{\partial b} = \mathbf 1^\top\Delta,
#    \qquad \frac{\partial L}{\partial X} = \Delta W . $$
#
# $\Delta^\top X = \sum_{i=1}^B \delta_i x_i^\top$ is a sum of $B$ outer products: its rank is at most $B$.

# %%
x = rng.standard_normal((B, n_in))
labels = rng.integers(0, n_out, B)
loss = SoftmaxCrossEntropy()
dense = Dense(n_in, n_out, dtype=np.float64, seed=1)
L = loss.forward(dense.forward(x), labels)
Delta = loss.backward()  # (B, n_out) = dL/dY
dx = dense.backward(Delta)
print(f"L = {L:.4f};  Δ {Delta.shape}, X {x.shape}, ∂L/∂W {dense.grads['W'].shape}, ∂L/∂X {dx.shape}")
print("∂L/∂W == Δ^T X:", np.allclose(dense.grads["W"], Delta.T @ x),
      "| rank of ∂L/∂W:", np.linalg.matrix_rank(dense.grads["W"]), "<= min(B, n_out, n_in)")

# %% [markdown]
# ## 2. A low-rank layer and the K-, L-, S-gradients
#
# `LowRankLinear` computes $Y = \big((XV)S^\top\big)U^\top + b$, never forming $W = USV^\top$.
# Write $G = \partial L/\partial W = \Delta^\top X$ for the gradient *as if* $W$ were free. The
# integrators move one factor at a time:
#
# * **K-step**, $W = KV^\top$ with $V$ fixed: $dL = \langle G, dK\,V^\top\rangle = \langle GV, dK\rangle$, so
#   $$\frac{\partial L}{\partial K} = GV = \Delta^\top(XV)\quad(n_\text{out}\times r);$$
# * **L-step**, $W = UL^\top$ with $U$ fixed: $dL = \langle G, U\,dL^\top\rangle = \langle G^\top U, dL\rangle$, so
#   $$\frac{\partial L}{\partial L} = G^\top U = X^\top(\Delta U)\quad(n_\text{in}\times r);$$
# * **S-step**, $W = USV^\top$ with $U, V$ fixed: $dL = \langle G, U\,dS\,V^\top\rangle$, so
#   $$\frac{\partial L}{\partial S} = U^\top GV = (\Delta U)^\top(XV)\quad(r\times r).$$
#
# Brackets matter: $XV$ is $B\times r$ and $\Delta U$ is $B\times r$, and every product above costs
# $O(B(m+n)r)$. These are exactly the products $F V$, $F^\top U$, $U^\top F V$ the integrators of
# tutorial 02 asked for, with $F = -G$.

# %%
lr = LowRankLinear(n_in, n_out, r, dtype=np.float64, seed=1)
L = loss.forward(lr.forward(x), labels)
Delta = loss.backward()
lr.backward(Delta)
U, S, V = lr.U, lr.S, lr.V
print(f"U {U.shape}, S {S.shape}, V {V.shape};  XV {(x @ V).shape}, ΔU {(Delta @ U).shape}")
G = Delta.T @ x  # (n_out, n_in), formed here ONLY to check the factored formulas
for name, lib, ref in (("∂L/∂K", lr.grad_K(), G @ V), ("∂L/∂L", lr.grad_L(), G.T @ U),
                       ("∂L/∂S", lr.grad_S(), U.T @ G @ V)):
    print(f"{name} {lib.shape}: layer vs from G: max diff {np.abs(lib - ref).max():.1e}")
print("the lazy gradient:", lr.grad_op, "-> to_dense() == Δ^T X:", np.allclose(lr.grad_op.to_dense(), G))

# %% [markdown]
# ## 3. Checking gradients
#
# A formula that matches another formula can still be wrong. `check_layer` compares each
# gradient with finite differences of the *forward* pass, in float64, in the factor
# coordinates K, L, S (the layer is rewritten as $W = KV^\top$ etc., no QR/SVD involved):
#
# * directional: $\frac{d}{d\varepsilon}L(\theta+\varepsilon d)\big|_0$ (4-point difference) vs $\langle\nabla L, d\rangle$;
# * entries: the same along a few coordinate axes;
# * Taylor: $r(h) = |L(\theta+hd) - L(\theta) - h\langle\nabla L, d\rangle| = O(h^2)$ — slope 2 on a log–log
#   plot; a wrong gradient leaves $O(h)$, slope 1. No tolerance to tune;
# * adjoint: $\langle Jv, w\rangle = \langle v, J^\top w\rangle$ for the input gradient.

# %%
res = check_layer(lr, x)
for f in ("K", "L", "S"):
    d, t = res[f]["directional"], res[f]["taylor"]
    worst = max(e.rel_error for e in res[f]["entries"])
    print(f"{f}: directional rel. error {d.rel_error:.1e}, worst entry {worst:.1e}, Taylor slope {t.slope:.3f}")
print(f"adjoint test rel. error {res['adjoint'].rel_error:.1e}")

conv = LowRankConv2d(3, 6, 3, 2, dtype=np.float64, seed=1)  # kernel matrix 6 x (3·3·3), rank 2
xc = rng.standard_normal((2, 3, 8, 8))
resc = check_layer(conv, xc)
print(f"LowRankConv2d (X = im2col of the input): Taylor slopes "
      + ", ".join(f"{f} {resc[f]['taylor'].slope:.3f}" for f in "KLS"))

# %% [markdown]
# Now a planted bug: a classic one is to transpose the S-gradient, $(XV)^\top(\Delta U)$ instead of
# $(\Delta U)^\top(XV)$. We hand the Taylor test a coordinate whose `grad` returns it.

# %%
taylor = {}
for f in ("K", "L", "S"):
    with factor_coordinates(lr, f) as coords:
        obj = layer_objective(lr, x, coords, wrt_input=False)
        taylor[f] = taylor_test(obj, min_slope=None)
with factor_coordinates(lr, "S") as coords:
    c = coords[0]
    wrong = Coordinate("S (transposed gradient)", c.get, c.set, lambda: c.grad().T)
    obj = layer_objective(lr, x, [wrong], wrt_input=False)
    taylor["S, wrong: transposed"] = taylor_test(obj, min_slope=None)
for k, t in taylor.items():
    print(f"{k:22s} Taylor slope {t.slope:.3f}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.5))
for i, (k, t) in enumerate(taylor.items()):
    ax.loglog(t.hs, t.remainders, "o-" if "wrong" not in k else "x--", color=f"C{i}",
              label=f"{k}: slope {t.slope:.2f}")
hs = taylor["K"].hs
ax.loglog(hs, 5 * taylor["K"].remainders[0] * (hs / hs[0]) ** 2, ":", color="0.5", label="reference slope 2 (shifted)")
ax.loglog(hs, 5 * taylor["S, wrong: transposed"].remainders[0] * (hs / hs[0]), "-.", color="0.5",
          label="reference slope 1 (shifted)")
ax.set_xlabel("step h along a random direction d (dimensionless)")
ax.set_ylabel(r"Taylor remainder $|L(\theta+hd)-L(\theta)-h\langle\nabla L,d\rangle|$")
ax.set_title(f"Taylor test, LowRankLinear {n_in}→{n_out}, r = {r}")
ax.legend()
savefig(fig, "04_taylor_test")

# %% [markdown]
# The whole network at once: `check_network` puts every low-rank layer in the same factor
# coordinates and checks the loss of the full forward pass (here an MLP with two low-rank
# layers and a dense classifier).

# %%
net = mlp([20, 16, 16, 5], ranks=[3, 3, None], dtype=np.float64, seed=2)
xn, yn = rng.standard_normal((12, 20)), rng.integers(0, 5, 12)
resn = check_network(net, SoftmaxCrossEntropy(), xn, yn)
for f in ("K", "L", "S"):
    print(f"network, {f}-coordinates: directional rel. error {resn[f]['directional'].rel_error:.1e}, "
          f"Taylor slope {resn[f]['taylor'].slope:.3f}")

# %% [markdown]
# ## 4. Why no $n_\text{out}\times n_\text{in}$ gradient is ever formed
#
# `layer.grad_op` is an `OuterProductOperator` holding $(\Delta, X)$: $B(n_\text{out}+n_\text{in})$
# numbers that the backward pass has anyway. The integrators only apply it to thin matrices.
# A dense layer, by contrast, writes $\Delta^\top X$ into an $n_\text{out}\times n_\text{in}$ array.
# We measure the peak memory allocated during `backward` with `tracemalloc` (NumPy reports its
# buffers to it).

# %%
n_big = 1000 if QUICK else 3000
Bb, rb = 64, 20
xb = rng.standard_normal((Bb, n_big)).astype(np.float32)
dyb = rng.standard_normal((Bb, n_big)).astype(np.float32)
for layer in (Dense(n_big, n_big, seed=0), LowRankLinear(n_big, n_big, rb, seed=0)):
    layer.forward(xb)
    tracemalloc.start()
    layer.backward(dyb)
    if layer.lowrank:  # what DLRT's K-, L- and S-steps then compute
        _ = (layer.grad_K(), layer.grad_L(), layer.grad_S())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"{layer!r:38s} peak during backward: {peak / 2**20:7.2f} MiB "
          f"(an {n_big}x{n_big} float32 array is {n_big * n_big * 4 / 2**20:.1f} MiB)")

# %% [markdown]
# ## Exercises
#
# 1. Derive $\partial L/\partial U$ and $\partial L/\partial V$ for the plain factorisation $W = UV^\top$
#    (the baseline `UVTrainer`), and check them with `Coordinate` objects as above.
# 2. Plant another bug: forget the bias gradient in a copy of `Dense.backward`, or use $\Delta^\top X$
#    with the wrong batch scaling. Which of the four checks catches it?
# 3. Where in `LowRankConv2d` does the im2col unfolding enter $X$? Verify
#    `conv.grad_op.to_dense()` against the gradient of a dense `Conv2d` with the same kernel matrix.
# 4. Run the `tracemalloc` cell with $B = 4096$. When does the lazy gradient stop being cheaper
#    than the dense one, and why does DLRT still never need the dense one?
