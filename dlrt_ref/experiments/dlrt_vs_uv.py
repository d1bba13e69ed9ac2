"""Fixed-rank DLRT against vanilla UVᵀ training on LeNet5 at rank 20 ([T] ch. 5, [P] Sec. 6.2).

Published setup: LeNet5 with conv1, conv2 and fc1 at fixed rank 20, classifier
dense; initial singular values s_k / d^k for d ∈ {1, 2, 10}; SGD lr 0.01,
batch 128, 20 epochs, 10 runs. DLRT keeps orthonormal bases (its S-step sees
the conditioning of S only through a Galerkin projection), while UVᵀ's
gradient ∂L/∂U = G V scales with the small singular values, so UVᵀ slows down
as the initial spectrum decays: after epoch 1, DLRT 81.0 / 56.0 / 39.1 % and
UVᵀ 32.6 / 17.2 / 16.0 % for d = 1 / 2 / 10; after 20 epochs 97.81 vs 93.74 %
(d = 1) and 97.07 vs 86.24 % (d = 10).

Ours: the same network, ranks, decay, optimiser and batch. DLRT =
``DLRT(method="bug")`` (fixed-rank unconventional integrator, 2 passes);
UVᵀ = :class:`~dlrt_ref.train.baselines.UVTrainer` started from the *same*
initial W₀ = U₀SV₀ᵀ (U = U₀S^{1/2}, V = V₀S^{1/2}). Our spectrum is
He-scaled (half-normal shape times d^{-k}); the thesis's is unit-scale, so
its absolute values differ from ours at equal d. Two more arms repeat d = 1
with other initial spectra: "1 unit", S = I (a perfectly conditioned start),
and "1 thesis", the spectrum of the thesis code (the r sorted values of
|N(0, 1)| draws, unit scale, no He factor; read from COMPiLELab/DLRT-Net,
``UV_vanilla/Linear_layer_lr_new_vanilla.py``), whose smallest values are close
to 0 even at d = 1 — unlike our He-scaled shape, the top r of 2r draws.

Budget. ``full``: 2 seeds, ``EPOCHS_FULL`` = 5 "epochs" of a 12 032-image
stratified subset (94 batches each, 470 SGD steps in all ≈ one published
epoch of 469 steps), test accuracy on 2000 test images after each. The x axis
is SGD steps, so the published epochs sit at 469·e steps: our last point is
[T]'s epoch 1. ``quick``: d ∈ {1, 10} and the two d = 1 arms, 1 seed, 2 × 3 steps.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.experiments.runs import RunSpec, serial_runner
from dlrt_ref.experiments.train_common import load_dataset, train_record
from dlrt_ref.nn import lenet5
from dlrt_ref.train.baselines import UVTrainer
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import SGD

NAME = "dlrt_vs_uv"
EPOCHS_FULL = 5
PRESETS = {
    "quick": dict(decays=[1, 10], unit=True, seeds=[0], epochs=2, subset=384, test_subset=500),
    "full": dict(decays=[1, 2, 10], unit=True, seeds=[0, 1], epochs=EPOCHS_FULL, subset=12032, test_subset=2000),
    # [T]/[P] DLRT vs vanilla UV^T / published_results.md: 20 epochs of all 60k images, 10 runs, full test set
    "paper": dict(decays=[1, 2, 10], unit=True, seeds=list(range(10)), epochs=20, subset=None, test_subset=None),
}
KNOBS = {"epochs": ["epochs"], "seeds": ["seeds"], "subset": ["subset"]}
KNOBS_NOTE = "fixed rank 20"


def count_runs(cfg) -> int:
    """arms x 2 methods x seeds."""
    return (len(cfg["decays"]) + (2 if cfg["unit"] else 0)) * 2 * len(cfg["seeds"])
LR, BATCH, RANK = 0.01, 128, 20
STEPS_PER_PUBLISHED_EPOCH = 469  # 60k / 128
UNIT_ARM = "1 unit"  # d = 1 with S = I instead of the He-scaled spectrum
THESIS_ARM = "1 thesis"  # d = 1 with the thesis code's spectrum: r sorted |N(0, 1)| draws, unit scale
# [T]: d -> method -> {epoch: test acc %}
PUBLISHED = {1: {"DLRT": {1: 81.0, 5: 95.1, 10: 96.9, 20: 97.81}, "UV": {1: 32.6, 5: 79.3, 10: 89.8, 20: 93.74}},
             2: {"DLRT": {1: 56.0, 5: 93.6, 10: 96.3, 20: 97.29}, "UV": {1: 17.2, 5: 49.1, 10: 79.5, 20: 90.91}},
             10: {"DLRT": {1: 39.1, 5: 92.6, 10: 95.9, 20: 97.07}, "UV": {1: 16.0, 5: 35.9, 10: 60.3, 20: 86.24}}}


def _arms(cfg) -> list:
    """(key, decay, spectrum) of each arm: the decays, then the unit and the thesis spectra."""
    arms = [(str(d), d, None) for d in cfg["decays"]]
    return arms + ([(UNIT_ARM, 1, "unit"), (THESIS_ARM, 1, "thesis")] if cfg["unit"] else [])


def specs(cfg, backend: str) -> list:
    """One run per arm x method x seed."""
    return [RunSpec(NAME, f"d={key} {method} s={seed}",
                    dict(decay=d, spectrum=spectrum, method=method, seed=seed, epochs=cfg["epochs"],
                         subset=cfg["subset"], test_subset=cfg["test_subset"], backend=backend))
            for key, d, spectrum in _arms(cfg) for method in ("DLRT", "UV") for seed in cfg["seeds"]]


def run_one(c: dict, tag: str) -> dict:
    """One run: LeNet5 at rank RANK with the arm's initial spectrum, trained by fixed-rank DLRT or UV^T."""
    seed, spectrum = c["seed"], c["spectrum"]
    data = load_dataset("mnist", False, 0, seed, c["subset"], c["test_subset"])
    net = lenet5(ranks=[RANK, RANK, RANK, None], seed=seed, decay=float(c["decay"]), backend=c["backend"])
    if spectrum is not None:  # same U, V; S = I, or the thesis's sorted |N(0,1)| draws
        rng = np.random.default_rng([seed, 2022])
        for l in net.lowrank_layers():
            s_k = (np.ones(l.rank) if spectrum == "unit"
                   else np.sort(np.abs(rng.standard_normal(l.rank)))[::-1])
            l.set_factors(l.U, l.backend.asarray(np.diag(s_k), l.dtype), l.V)
    trainer = DLRT(net, SGD(LR), method="bug") if c["method"] == "DLRT" else UVTrainer(net, SGD(LR))
    return train_record(trainer, data, c["epochs"], BATCH, seed, tag)


def assemble(cfg, results: dict) -> dict:
    """The figure's data from the runs' results by key."""
    out = {}
    arms = _arms(cfg)
    for key, d, spectrum in arms:
        out[key] = {}
        for method in ("DLRT", "UV"):
            runs = [results[f"d={key} {method} s={seed}"] for seed in cfg["seeds"]]
            acc = np.array([r["test_acc"] for r in runs], dtype=float)
            out[key][method] = {"test_acc_mean": acc.mean(0).tolist(), "test_acc_std": acc.std(0).tolist(),
                                "runs": runs}
    steps_per_epoch = -(-(cfg["subset"] or 60000) // BATCH)
    return {"decays": cfg["decays"], "unit_scale_arm": UNIT_ARM if cfg["unit"] else None,
            "thesis_spectrum_arm": THESIS_ARM if cfg["unit"] else None, "seeds": cfg["seeds"], "epochs": cfg["epochs"], "subset": cfg["subset"],
            "test_subset": cfg["test_subset"], "steps_per_epoch": steps_per_epoch, "rank": RANK,
            "optimizer": "sgd", "lr": LR, "batch": BATCH, "results": out,
            "published": {str(d): {m: {str(e): a for e, a in v.items()} for m, v in p.items()}
                          for d, p in PUBLISHED.items()},
            "published_steps_per_epoch": STEPS_PER_PUBLISHED_EPOCH,
            "budget": f"{len(arms)} arms (decays {cfg['decays']}{' + unit and thesis spectra' if cfg['unit'] else ''}) x 2 methods x {len(cfg['seeds'])} seeds x {cfg['epochs']} "
                      f"epochs of {cfg['subset'] or 60000} images ({cfg['epochs'] * steps_per_epoch} steps)"}




run = serial_runner(PRESETS, KNOBS, specs, assemble)  # run(preset, backend): the specs, serially


def plot(data: dict, out_dir):
    plt = pyplot()
    ds = list(data["results"])
    ncols = min(3, len(ds))
    nrows = -(-len(ds) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.3 * ncols, 4.4 * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[len(ds):]:
        ax.axis("off")
    colors = {"DLRT": "C0", "UV": "C3"}
    spe = data["steps_per_epoch"]
    for ax, d in zip(axes.flat, ds):
        for method, res in data["results"][d].items():
            m = 100 * np.array(res["test_acc_mean"], dtype=float)
            s = 100 * np.array(res["test_acc_std"], dtype=float)
            x = spe * np.arange(1, len(m) + 1)
            ax.plot(x, m, "o-", color=colors[method], label=f"ours {method} (mean ± std, {len(data['seeds'])} seeds)")
            ax.fill_between(x, m - s, m + s, color=colors[method], alpha=0.2)
            pub = data["published"].get(d.split()[0], {}).get(method, {})
            if pub:
                ax.plot([data["published_steps_per_epoch"] * float(e) for e in pub], list(pub.values()), "x--",
                        color=colors[method], alpha=0.7, label=f"[T] {method} (epochs 1, 5, 10, 20)")
        title = ("initial S = I (d = 1)" if d == data.get("unit_scale_arm")
                 else "initial σ = sorted |N(0,1)| draws (thesis code, d = 1)" if d == data.get("thesis_spectrum_arm")
                 else f"initial σ_k ∝ 1/{d}^k (He-scaled)")
        ax.set(xscale="log", xlabel="SGD steps (batch 128; [T] epoch = 469 steps)", title=title)
    # one legend for all panels, outside the curves (per-panel legends covered the d = 1 curves)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    spare = list(axes.flat[len(ds):])
    if spare:
        spare[0].legend(handles, labels, loc="center", fontsize=9)
    else:
        fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, -0.02))
    for row in axes:
        row[0].set_ylabel("test accuracy [%]")
    fig.suptitle(f"LeNet5 at fixed rank {data['rank']} (conv1, conv2, fc1), SGD {data['lr']}: DLRT (bug) vs "
                 f"vanilla UVᵀ from the same W₀")
    return save(fig, out_dir, NAME)
