"""Forward/backward time against the layer-wise compression ratio, 784-500-300-100-10 ([T] ch. 5 timing table).

Published setup ([T]): 784-500-300-100-10, last layer dense, fixed ranks
r_i = ⌊(1−cr)·n·m/(n+m+1)⌋, all 70k MNIST images as one CPU batch. Seconds:
"fwd train" (K, L and S forwards of that 3-pass implementation), "bwd train"
(those forwards plus one backward) and "fwd test". Dense 1.374 / 3.079 /
1.363; cr 0: 4.333 / 10.191 / 1.640; cr 0.8: 1.424 / 3.022 / 0.493; cr 0.95:
0.820 / 1.803 / 0.271.

Ours: the same network, rank rule and 70k batch. Our layers compute
(X V) Sᵀ Uᵀ in every mode, so one forward serves training and test; we time

* ``fwd``: one forward pass (the thesis's "fwd test"),
* ``pass``: one forward + backward pass (the unit a training step is made of),
* ``step``: one fixed-rank DLRT step, ``method="bug"`` (2 passes + QR of K and L,
  S-step), which does the work of the thesis's "bwd train" (its K, L and S
  forwards plus one backward; "fwd train" is the forward part of it, so adding
  the two would count the forwards twice),

with :func:`time.perf_counter` on **one thread** of a shared 2-core machine
(load average recorded), medians, ratios to the dense net measured in the same
run. The companion panel gives the *overall* compression (eval c.r. of the
whole network, :mod:`dlrt_ref.train.accounting`) against the layer-wise cr.

Budget. ``full``: dense + cr ∈ {0, 0.5, 0.8, 0.9, 0.95}, 70k images, fwd
median of 2, pass and step 1 each after no warm-up beyond the fwd — 39 s
measured. ``quick``: 2000 images, cr ∈ {0.5, 0.9}.

Serial always: ``figures --jobs``/``--dask`` run it in the main process, one thing at a time, and say so
(parallel timings on shared cores are meaningless).
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.data import load_mnist
from dlrt_ref.experiments.budget import as_budget, configure
from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.experiments.timing import add_ratios_to_dense, machine_record, median_time
from dlrt_ref.nn import mlp
from dlrt_ref.nn.loss import SoftmaxCrossEntropy
from dlrt_ref.threads import load_average
from dlrt_ref.train import accounting
from dlrt_ref.train.baselines import dense_trainer
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import SGD

NAME = "timings_thesis"
SERIAL = "it measures wall times, which parallel runs sharing the cores would distort"  # figures --jobs/--dask
WIDTHS = [784, 500, 300, 100, 10]
PRESETS = {"quick": dict(crs=[0.5, 0.9], n=2000, fwd_repeats=1, step_repeats=1),
           "full": dict(crs=[0.0, 0.5, 0.8, 0.9, 0.95], n=70000, fwd_repeats=2, step_repeats=1)}
# the full preset is [T]'s protocol (published_results.md "[T] Timings": all 70k images as one batch,
# cr 0 ... 0.95), so there is no separate "paper" preset
KNOBS = {}
KNOBS_NOTE = "a timing: the network, ranks and batch are the measurement"
SEEDS = [0]  # the networks' initial weights: seed 0, fixed in code (recorded in the JSON)
# [T]: column -> (fwd train, bwd train, fwd test) seconds
PUBLISHED = {"dense": (1.374, 3.079, 1.363), 0.0: (4.333, 10.191, 1.640), 0.5: (2.505, 5.719, 0.894),
             0.8: (1.424, 3.022, 0.493), 0.9: (0.986, 2.093, 0.326), 0.95: (0.820, 1.803, 0.271)}


def layer_ranks(cr: float) -> list:
    """r_i = max(⌊(1−cr)·n·m/(n+m+1)⌋, 1) for the three hidden layers ([T])."""
    return [max(int((1 - cr) * n * m / (n + m + 1)), 1) for n, m in zip(WIDTHS[:-2], WIDTHS[1:-1])]


def run(preset="full", backend: str = "numpy") -> dict:
    """Run under ``preset`` (a preset name or a :class:`~dlrt_ref.experiments.budget.Budget`)."""
    budget = as_budget(preset, backend)
    backend = budget.backend

    cfg = configure(PRESETS, KNOBS, budget)
    d = load_mnist()
    x = np.concatenate([d.x_train, d.x_test])[: cfg["n"]]  # (70000, 784)
    y = np.concatenate([d.y_train, d.y_test])[: cfg["n"]]
    loss = SoftmaxCrossEntropy()
    load_before = load_average()
    rows = {}
    for cr in [None] + cfg["crs"]:
        ranks = None if cr is None else layer_ranks(cr) + [None]
        net = mlp(WIDTHS, ranks=ranks, seed=0, backend=backend)
        trainer = dense_trainer(net, SGD(0.01)) if cr is None else DLRT(net, SGD(0.01), method="bug")

        def one_pass():
            loss.forward(net.forward(x), y)
            net.backward(loss.backward())

        fwd = median_time(lambda: net.forward(x), cfg["fwd_repeats"], warmup=1)
        pas = median_time(one_pass, cfg["step_repeats"], warmup=0)
        step = median_time(lambda: trainer.step(x, y), cfg["step_repeats"], warmup=0)
        rows["dense" if cr is None else str(cr)] = {
            "ranks": ranks, "fwd_s": fwd, "pass_s": pas, "step_s": step,
            "cr_eval_overall": accounting.compression_rate(net, "eval")}
        print(f"[{NAME}] cr {cr} ranks {ranks}: fwd {fwd:.3f} s, pass {pas:.3f} s, step {step:.3f} s", flush=True)
    add_ratios_to_dense(rows, {k: k.replace("_s", "_ratio_to_dense") for k in ("fwd_s", "pass_s", "step_s")})
    return {"widths": WIDTHS, "n_images": cfg["n"], "method": "bug (fixed rank, 2 passes)",
            **machine_record(load_before), "rows": rows, "cr_definition": "eval (overall)",
            "published": {str(k): list(v) for k, v in PUBLISHED.items()},
            "budget": f"dense + cr {cfg['crs']}, {cfg['n']} images in one batch, fwd median of "
                      f"{cfg['fwd_repeats']}, pass/step {cfg['step_repeats']}"}


def plot(data: dict, out_dir):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    rows = data["rows"]
    crs = [k for k in rows if k != "dense"]
    x = np.array([float(c) for c in crs])
    pub = data["published"]
    px = np.array([float(c) for c in pub if c != "dense"])
    pd = pub["dense"]
    ax = axes[0]
    for key, lab, c in (("fwd_s", "fwd (= fwd test)", "C0"), ("pass_s", "fwd + bwd pass", "C1"),
                        ("step_s", "train step (bug)", "C2")):
        ax.plot(x, [rows[k][key] for k in crs], "o-", color=c, label=f"ours {lab}")
        ax.axhline(rows["dense"][key], color=c, linestyle=":", label=f"ours dense {lab}")
    ax.set(xlabel="layer-wise compression ratio cr", ylabel=f"seconds ({data['n_images']} images, 1 thread)", yscale="log",
           title="ours: absolute times")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot(x, [rows[k]["fwd_ratio_to_dense"] for k in crs], "o-", color="C0", label="ours fwd / dense")
    ax.plot(x, [rows[k]["step_ratio_to_dense"] for k in crs], "o-", color="C2", label="ours train step / dense")
    ax.plot(px, [pub[c][2] / pd[2] for c in pub if c != "dense"], "x--", color="C0", label="[T] fwd test / dense")
    # [T]'s "bwd train" already contains its K, L and S forwards ("fwd train"): it is the whole training step
    ax.plot(px, [pub[c][1] / pd[1] for c in pub if c != "dense"], "x--", color="C2",
            label="[T] bwd train (= its whole step) / dense")
    ax.axhline(1, color="gray", linestyle=":")
    ax.set(xlabel="layer-wise compression ratio cr", ylabel="time / dense (same run)", yscale="log",
           title="relative to dense")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot(x, [100 * rows[k]["cr_eval_overall"] for k in crs], "o-")
    for c, xi in zip(crs, x):
        ax.annotate(str(rows[c]["ranks"][:3]), (xi, 100 * rows[c]["cr_eval_overall"]), fontsize=7,
                    textcoords="offset points", xytext=(-30, 6))
    ax.plot([0, 1], [0, 100], ":", color="gray", label="overall = layer-wise")
    ax.set(xlabel="layer-wise compression ratio cr", ylabel="overall c.r. [%] (eval, dense classifier)",
           title="companion: overall compression (ranks annotated)")
    ax.legend(fontsize=7)
    la = ", ".join(f"{v:.1f}" for v in data["load_avg_before"])
    fig.suptitle(f"MLP {'-'.join(map(str, data['widths']))}, last layer dense, {data['n_images']} images as one "
                 f"batch: ours (numpy, 1 thread, load avg {la}) vs [T]")
    return save(fig, out_dir, NAME)
