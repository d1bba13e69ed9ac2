"""Training and prediction time against rank, 784 → 5120 ×4 → 10, batch 500 ([P] Sec. 6.1, timing table).

Published ([P], CPU, fixed rank): seconds per training batch of 500 and seconds
to predict the 10k test set. Dense 0.320 s/batch and 1.248 s; rank 5: 0.072 /
0.247; rank 80: 0.199 / 0.252; rank 160: 0.388 s (slower than dense — that
implementation ran 3 passes per batch); rank 2560: 24.35 / 1.430.

Ours: the same network (all four 5120-wide layers low-rank at rank r — the
784 → 5120 input layer at min(r, 784) — classifier dense), fixed-rank DLRT with the unconventional integrator (``method="bug"``,
**2 passes** per batch; Householder QR), SGD; inputs a batch of 500 MNIST
training images. Prediction = forward pass over test images in batches of
1000. Timed with :func:`time.perf_counter`, median over repeats after one
warm-up step, on **one thread** (``OMP_NUM_THREADS=1``) of a shared 2-core
machine; the load average before and after is recorded. Absolute times are
not comparable with the paper's (a multi-core CPU); the ratios to dense,
measured in the same run, are.

Budget. ``full``: ranks 5 … 1280 (2560 left out: one step ≈ 4 QR of
5120×2560 per layer, minutes on one core), 3 repeats (2 for r ≥ 640 and
dense), prediction timed on 2000 test images and scaled ×5 to 10k — 1.6 min
measured. ``quick``: 784-256×4-10, ranks 4, 16, 64, 1 repeat, 500 test images.

Serial always: ``figures --jobs``/``--dask`` run it in the main process, one thing at a time, and say so
(parallel timings on shared cores are meaningless).
"""
from __future__ import annotations

import time

import numpy as np

from dlrt_ref.data import load_mnist
from dlrt_ref.experiments.budget import as_budget, configure
from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.experiments.timing import add_ratios_to_dense, machine_record, median_time
from dlrt_ref.nn import mlp
from dlrt_ref.threads import load_average
from dlrt_ref.train.baselines import dense_trainer
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import SGD

NAME = "timings_paper"
SERIAL = "it measures wall times, which parallel runs sharing the cores would distort"  # figures --jobs/--dask
PRESETS = {
    "quick": dict(width=256, ranks=[4, 16, 64], repeats=1, big_repeats=1, big_from=64, n_predict=500),
    "full": dict(width=5120, ranks=[5, 10, 20, 40, 80, 160, 320, 640, 1280], repeats=3, big_repeats=2,
                 big_from=640, n_predict=2000),
}
# [P] timings table / published_results.md: 784-5120x4-10, ranks 5 ... 2560, prediction over the 10k test set
PRESETS["paper"] = dict(width=5120, ranks=[5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560], repeats=3, big_repeats=2,
                        big_from=640, n_predict=10000)
KNOBS = {}
KNOBS_NOTE = "a timing: the network, ranks and batch are the measurement"
SEEDS = [0]  # the networks' initial weights: seed 0, fixed in code (recorded in the JSON)
BATCH = 500
# [P]: rank -> (predict s for 10k, train s per batch of 500)
PUBLISHED = {"dense": (1.248, 0.320), 5: (0.247, 0.072), 10: (0.249, 0.087), 20: (0.250, 0.099),
             40: (0.248, 0.133), 80: (0.252, 0.199), 160: (0.266, 0.388), 320: (0.329, 0.855),
             640: (0.480, 2.250), 1280: (0.797, 7.612), 2560: (1.430, 24.35)}


def _predict_seconds(net, x_test, n_target=10000):
    t0 = time.perf_counter()
    for i in range(0, len(x_test), 1000):
        net.forward(x_test[i:i + 1000])
    return (time.perf_counter() - t0) * n_target / len(x_test)


def run(preset="full", backend: str = "numpy") -> dict:
    """Run under ``preset`` (a preset name or a :class:`~dlrt_ref.experiments.budget.Budget`)."""
    budget = as_budget(preset, backend)
    backend = budget.backend

    cfg = configure(PRESETS, KNOBS, budget)
    data = load_mnist(subset=BATCH, test_subset=cfg["n_predict"])
    x, y, x_test = data.x_train, data.y_train, data.x_test
    widths = [784] + [cfg["width"]] * 4 + [10]
    load_before = load_average()
    rows = {}
    for r in [None] + cfg["ranks"]:
        if r is None:
            net = mlp(widths, seed=0, backend=backend)
            trainer = dense_trainer(net, SGD(0.01))
        else:
            # the 784 -> 5120 input layer holds rank <= 784 (the 5120 x 5120 layers take r as given)
            net = mlp(widths, ranks=[min(r, widths[0])] + [r] * 3 + [None], seed=0, backend=backend)
            trainer = DLRT(net, SGD(0.01), method="bug")
        reps = cfg["big_repeats"] if r is None or r >= cfg["big_from"] else cfg["repeats"]
        train_s = median_time(lambda: trainer.step(x, y), reps)
        predict_s = _predict_seconds(net, x_test)
        rows["dense" if r is None else str(r)] = {"train_s_per_batch": train_s, "predict_s_10k": predict_s}
        print(f"[{NAME}] rank {r}: train {train_s:.3f} s/batch, predict {predict_s:.3f} s/10k", flush=True)
    add_ratios_to_dense(rows, {"train_s_per_batch": "train_ratio_to_dense", "predict_s_10k": "predict_ratio_to_dense"})
    return {"widths": widths, "batch": BATCH, "method": "bug (fixed rank, 2 passes)", **machine_record(load_before),
            "n_predict_timed": cfg["n_predict"], "rows": rows,
            "published": {str(k): list(v) for k, v in PUBLISHED.items()},
            "budget": f"ranks {cfg['ranks']} + dense, median of {cfg['repeats']} steps ({cfg['big_repeats']} for "
                      f"r >= {cfg['big_from']} and dense), predict timed on {cfg['n_predict']} images scaled to 10k"}


def plot(data: dict, out_dir):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    rows = data["rows"]
    ranks = [k for k in rows if k != "dense"]
    rx = np.array([float(k) for k in ranks])
    pub = data["published"]
    px = np.array([float(k) for k in pub if k != "dense"])
    for ax, key, pk, what in ((axes[0], "train_ratio_to_dense", 1, "train time per batch"),
                              (axes[1], "predict_ratio_to_dense", 0, "prediction time (10k test images)")):
        ax.plot(rx, [rows[k][key] for k in ranks], "o-", label="ours (bug, 2 passes, 1 thread)")
        ax.plot(px, [pub[k][pk] / pub["dense"][pk] for k in pub if k != "dense"], "x--", color="k",
                label="[P] (3 passes, multi-core CPU)")
        ax.axhline(1.0, color="gray", linestyle=":", label="dense (= 1)")
        ax.set(xscale="log", yscale="log", xlabel="rank r of each 5120×5120 layer",
               ylabel=f"{what} / dense, same run", title=what)
        ax.legend(fontsize=8)
    d = rows["dense"]
    la = ", ".join(f"{v:.1f}" for v in data["load_avg_before"])
    fig.suptitle(f"784-5120×4-10, batch {data['batch']}: time relative to dense (ours dense: "
                 f"{d['train_s_per_batch']:.2f} s/batch, {d['predict_s_10k']:.1f} s/10k; load avg {la})")
    return save(fig, out_dir, NAME)
