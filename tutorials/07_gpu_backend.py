# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 07 — The same DLRT step on a GPU (CuPy), with a NumPy fallback
#
# **You will learn**
#
# * how `dlrt_ref` chooses an array backend: explicitly, by name (`get_backend("numpy" | "cupy")`),
#   with no global switch; layers, factors and the lazy gradients all live on that backend,
#   and random initial data is drawn on the host so both backends start from identical numbers;
# * that one DLRT step (tutorial 05) on CuPy gives the same network as on NumPy up to rounding;
# * how the step time grows with the layer width on each backend.
#
# On a machine without CuPy or without a GPU this tutorial says so and runs everything on
# NumPy (the comparison is then NumPy against NumPy, trivially equal). Set `DLRT_BACKEND=numpy`
# to force the fallback on a GPU machine. `DLRT_QUICK=1` makes it smaller.

# %%
import os
import time

import numpy as np

from _tutorial import QUICK, banner, plt, savefig
from dlrt_ref.backend import BackendError, available_backends, get_backend, to_numpy
from dlrt_ref.data import load_mnist
from dlrt_ref.nn import mlp
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import SGD

banner("07 GPU backend")
print("available backends on this machine:", available_backends())
wanted = os.environ.get("DLRT_BACKEND", "cupy")
try:
    be = get_backend(wanted)
except BackendError as exc:
    print(f"NOTE: {exc}.\n      Falling back to NumPy: every cell below runs, on the CPU.")
    be = get_backend("numpy")
print("using backend:", be.name)

# %% [markdown]
# ## 1. One step on both backends
#
# The networks are built with the same seed; `backend=` decides where their arrays live.
# Inputs are moved with `be.asarray`. The DLRT step itself is the same code: the integrators
# find the array module of their inputs (`array_module`) and never copy to the host.

# %%
widths, ranks = [784, 128, 64, 10], [32, 16, None]
B, h, tau = 128, 0.1, 0.1
data = load_mnist(subset=B, test_subset=10, seed=0)
x, y = data.x_train.astype(np.float64), data.y_train

nets, infos = {}, {}
for name in dict.fromkeys(["numpy", be.name]):  # numpy, and the chosen backend if different
    bk = get_backend(name)
    net = mlp(widths, ranks=ranks, backend=name, dtype=np.float64, seed=0)
    trainer = DLRT(net, SGD(lr=h), method="ra-bug", tau=tau)
    infos[name] = trainer.step(bk.asarray(x), bk.asarray(y))
    nets[name] = net
    l0 = net.lowrank_layers()[0]
    print(f"{name:5s}: loss {infos[name].loss:.6f}, ranks {infos[name].ranks}, "
          f"U of layer 0 is a {type(l0.U).__module__.split('.')[0]} array of shape {l0.U.shape}")

ref = nets["numpy"]
for a, b in zip(ref.lowrank_layers(), nets[be.name].lowrank_layers()):
    diff = np.linalg.norm(to_numpy(a.to_dense()) - to_numpy(b.to_dense())) / np.linalg.norm(to_numpy(a.to_dense()))
    print(f"{a!r}: relative ||W(numpy) - W({be.name})||_F = {diff:.1e}")
if be.name == "numpy":
    print("(no GPU here: this compares NumPy with itself; on a GPU the difference is rounding error,\n"
          " which the library's GPU parity tests check)")

# %% [markdown]
# ## 2. Step time against width
#
# A square MLP `[784, w, w, 10]` with low-rank hidden layers of initial rank $w/8$, in float32,
# batch 256. On a GPU, `Backend.synchronize()` waits for queued kernels before the clock is
# read. The first step is a warm-up and not timed.

# %%
ws = [64, 128] if QUICK else [128, 256, 512, 1024]
n_time = 2 if QUICK else 5
Bt = 256
xt = load_mnist(subset=Bt, test_subset=10, seed=1)
times = {}
for name in dict.fromkeys(["numpy", be.name]):
    bk = get_backend(name)
    xb, yb = bk.asarray(xt.x_train), bk.asarray(xt.y_train)
    times[name] = []
    for wd in ws:
        net = mlp([784, wd, wd, 10], ranks=[wd // 8, wd // 8, None], backend=name, seed=0)
        trainer = DLRT(net, SGD(lr=0.05), method="ra-bug", tau=0.05)
        trainer.step(xb, yb)  # warm-up
        bk.synchronize()
        t0 = time.perf_counter()
        for _ in range(n_time):
            trainer.step(xb, yb)
        bk.synchronize()
        times[name].append(1e3 * (time.perf_counter() - t0) / n_time)
        print(f"{name:5s} width {wd:5d}: {times[name][-1]:8.2f} ms/step, ranks {trainer.ranks()}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.5))
for i, (name, tt) in enumerate(times.items()):
    ax.loglog(ws, tt, "o-", color=f"C{i}", label=f"{name} ({'GPU' if name == 'cupy' else 'CPU'})")
ax.set_xticks(ws, [str(wd) for wd in ws])
ax.xaxis.set_minor_formatter(plt.NullFormatter())
ax.set_xlabel("hidden width w of the MLP [784, w, w, 10]")
ax.set_ylabel("time per DLRT ra-bug step (ms)")
ax.set_title(f"one DLRT step, batch {Bt}, float32" + ("" if "cupy" in times else "\n(no GPU on this machine: NumPy only)"),
             fontsize=10)
ax.legend()
savefig(fig, "07_step_time_vs_width")

# %% [markdown]
# ## Exercises
#
# 1. On a GPU, repeat section 1 in float32. How large is the difference now, and where does
#    it come from (the QR of $[K_1\,|\,U_0]$, the SVD of $\hat S_1$)?
# 2. Use `ortho="cholqr2"` in `DLRT` (CholeskyQR2, GEMM-based). Is it faster on the GPU? Does the
#    result change beyond rounding?
# 3. Train tutorial 06's MLP on CuPy with `python -m dlrt_ref train --backend cupy` and compare
#    ms/step with the CPU.
