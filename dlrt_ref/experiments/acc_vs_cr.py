"""Fixed-rank LeNet5: test accuracy against the layer-wise compression ratio ([T] ch. 5).

Published setup ([T]): LeNet5 with conv1, conv2 and fc1 factorised at fixed
rank r = max(⌊(1−cr)·n·m/(n+m+1)⌋, 2) for a layer of shape m×n (the rank at
which r(n+m+1) ≈ (1−cr)·n·m), classifier dense; 10 epochs, batch 128, SGD lr
0.05, 5 runs. cr = 0 → 98.86 ± 0.06 %, 0.9 → 97.90 ± 0.20 %, 0.98 → 90.55 ±
1.26 %; dense 98.82 ± 0.06 %.

Ours: the same network, rank rule, optimiser and batch; fixed-rank DLRT with
the unconventional integrator (``method="bug"``, 2 passes per batch),
He-scaled half-normal initial spectrum. The ranks are not capped at
⌊min(m, n)/2⌋ (fixed rank needs no room to augment), except by min(m, n).
The overall eval c.r. (Σ r(m+n) + classifier against all weights) is
recorded beside the layer-wise cr.

Budget. ``full``: 7 cr values + dense, 1 seed (no std: the shared cores did
not allow more), ``EPOCHS_FULL`` = 3 epochs on the full 60k training set
(1407 SGD steps), full 10k test set — 42.6 min measured on one core (the thesis
trains 10 epochs on 60k, 5 runs). An earlier full preset (2 epochs on a 6k
subset, 94 steps) left every row far from convergence. ``quick``: 3 cr values
+ dense, 1 seed, 1 epoch on 512 images.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.experiments.runs import RunSpec, serial_runner
from dlrt_ref.experiments.train_common import load_dataset, mean_std, train_record
from dlrt_ref.nn import lenet5
from dlrt_ref.train.baselines import dense_trainer
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import SGD

NAME = "acc_vs_cr"
CRS = [0.0, 0.5, 0.8, 0.9, 0.94, 0.96, 0.98]
EPOCHS_FULL = 3
PRESETS = {
    "quick": dict(crs=[0.0, 0.9, 0.98], seeds=[0], epochs=1, subset=512, test_subset=500),
    "full": dict(crs=CRS, seeds=[0], epochs=EPOCHS_FULL, subset=None, test_subset=None),
    # [T] accuracy vs layer-wise compression / published_results.md: 10 epochs, 5 runs, all 60k images
    "paper": dict(crs=CRS, seeds=[0, 1, 2, 3, 4], epochs=10, subset=None, test_subset=None),
}
KNOBS = {"epochs": ["epochs"], "seeds": ["seeds"], "subset": ["subset"]}
KNOBS_NOTE = "fixed rank: the ranks come from the compression ratios"


def count_runs(cfg) -> int:
    """(dense + each cr) x seeds."""
    return (1 + len(cfg["crs"])) * len(cfg["seeds"])
LR, BATCH = 0.05, 128
SHAPES = [(20, 25), (50, 500), (500, 800)]  # (m, n) of conv1, conv2, fc1
PUBLISHED = {"dense": (98.82, 0.06), 0.0: (98.86, 0.06), 0.5: (98.60, 0.17), 0.8: (98.36, 0.17),
             0.9: (97.90, 0.20), 0.94: (96.89, 0.37), 0.96: (95.62, 0.86), 0.98: (90.55, 1.26)}


def layer_ranks(cr: float) -> list:
    """[T]'s rule r = max(⌊(1−cr)·n·m/(n+m+1)⌋, 2), at most min(m, n), for conv1, conv2, fc1."""
    return [min(max(int((1 - cr) * n * m / (n + m + 1)), 2), min(m, n)) for m, n in SHAPES]


def specs(cfg, backend: str) -> list:
    """One run per (dense or cr) x seed."""
    return [RunSpec(NAME, f"cr={cr} seed={seed}", dict(cr=cr, seed=seed, epochs=cfg["epochs"], subset=cfg["subset"],
                                                      test_subset=cfg["test_subset"], backend=backend))
            for cr in [None] + cfg["crs"] for seed in cfg["seeds"]]


def run_one(c: dict, tag: str) -> dict:
    """One run: dense LeNet5 (``cr`` None) or fixed-rank DLRT at [T]'s ranks for ``cr``."""
    seed, backend = c["seed"], c["backend"]
    data = load_dataset("mnist", False, 0, seed, c["subset"], c["test_subset"])
    if c["cr"] is None:
        trainer = dense_trainer(lenet5(seed=seed, backend=backend), SGD(LR))
    else:
        net = lenet5(ranks=layer_ranks(c["cr"]) + [None], seed=seed, backend=backend)
        trainer = DLRT(net, SGD(LR), method="bug")
    return train_record(trainer, data, c["epochs"], BATCH, seed, tag)


def assemble(cfg, results: dict) -> dict:
    """The figure's data from the runs' results by key."""
    out = {}
    for cr in [None] + cfg["crs"]:
        runs = [results[f"cr={cr} seed={seed}"] for seed in cfg["seeds"]]
        m, s = mean_std([r["test_acc"][-1] for r in runs])
        out["dense" if cr is None else str(cr)] = {
            "ranks": None if cr is None else layer_ranks(cr), "test_acc_mean": m, "test_acc_std": s,
            "cr_eval_overall": runs[0]["cr"][-1]["cr_eval"], "ms_per_step": runs[0]["ms_per_step"][-1],
            "runs": runs}
    return {"crs": cfg["crs"], "seeds": cfg["seeds"], "epochs": cfg["epochs"], "subset": cfg["subset"],
            "optimizer": "sgd", "lr": LR, "batch": BATCH, "method": "bug (fixed rank)", "row": "last epoch",
            "results": out, "published": {str(k): list(v) for k, v in PUBLISHED.items()},
            "cr_definitions": {"layer-wise cr": "[T] rank rule r(n+m+1) ≈ (1-cr) n m",
                               "cr_eval_overall": "eval"},
            "budget": f"{len(cfg['crs'])} cr + dense x {len(cfg['seeds'])} seeds x {cfg['epochs']} epochs "
                      f"on {cfg['subset'] or 'all 60000'} images"}


run = serial_runner(PRESETS, KNOBS, specs, assemble)  # run(preset, backend): the specs, serially


def plot(data: dict, out_dir):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    res = data["results"]
    crs = [c for c in res if c != "dense"]
    x = np.array([float(c) for c in crs])
    acc = np.array([100 * res[c]["test_acc_mean"] for c in crs])
    std = np.array([100 * res[c]["test_acc_std"] for c in crs])
    ax.errorbar(x, acc, yerr=std, fmt="o-", capsize=3,
                label=f"ours ({data['epochs']} epochs on {data['subset'] or '60k'}, {len(data['seeds'])} seed(s))")
    for c, xi, a in zip(crs, x, acc):
        ax.annotate(str(res[c]["ranks"]), (xi, a), textcoords="offset points", xytext=(0, -14), fontsize=7,
                    ha="center")
    pub = data["published"]
    px = np.array([float(c) for c in pub if c != "dense"])
    ax.errorbar(px, [pub[c][0] for c in pub if c != "dense"], yerr=[pub[c][1] for c in pub if c != "dense"],
                fmt="x--", color="k", capsize=3, label="[T] (10 epochs on 60k, 5 runs; best epoch, not last)")
    dm, ds = 100 * res["dense"]["test_acc_mean"], 100 * res["dense"]["test_acc_std"]
    ax.axhspan(dm - max(ds, 0.03), dm + max(ds, 0.03), color="C0", alpha=0.2, label="ours dense ± std")
    ax.axhspan(pub["dense"][0] - pub["dense"][1], pub["dense"][0] + pub["dense"][1], color="k", alpha=0.25,
               label="[T] dense ± std")
    ax.set(xlabel="layer-wise compression ratio cr (ranks [conv1, conv2, fc1] annotated)",
           ylabel="test accuracy [%] (ours: last epoch; [T]: best epoch)",
           title=f"Fixed-rank LeNet5 on MNIST (bug, SGD {data['lr']}, batch {data['batch']}): ours vs [T]")
    ax.legend(fontsize=8, loc="lower left")
    return save(fig, out_dir, NAME)
