"""Seed bands for the thesis LeNet5 at τ = 0.11 and its dense baseline ([T] ch. 5, LeNet5 τ table; issue 16 §2).

The network, optimiser and rule are those of :mod:`dlrt_ref.experiments.lenet_tau`
(:func:`~dlrt_ref.experiments.lenet_tau.train_lenet`): conv1, conv2, fc1 low-rank
starting at the caps [10, 25, 250], classifier dense, ra-bug, SGD lr 0.05, batch 128,
row = epoch of minimum validation loss, validation = 5000 seeded random training
images. [T]: τ = 0.11 98.21 ± 0.44 %, ranks [10, 20, 48]; dense 98.82 ± 0.06 % (20
epochs, 5 runs).

Here: several seeds of both arms at the same budget, reported as mean ± std with
ddof = 1 (per epoch and at the chosen epoch). Budget. ``full``: 3 seeds × 2 arms ×
``EPOCHS_FULL`` = 10 epochs on the 55k training images (the full 10k test set), the
budget of issue 16 §2 (committed run: ``figures --preset full --only lenet_band --jobs 2``,
whose runs equal serial ones bit for bit; 18.4 min wall on 2 cores); the per-epoch
bands show how far from converged the accuracies are. ``quick``: 2 seeds,
1 epoch on 512 images. ``paper``: [T]'s protocol, 5 seeds × 20 epochs.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.experiments.lenet_paper import tau_seed_specs
from dlrt_ref.experiments.lenet_tau import BATCH, LR, PUBLISHED, train_lenet
from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.experiments.runs import code_fields, serial_runner
from dlrt_ref.experiments.train_common import band

NAME = "lenet_band"
EPOCHS_FULL = 10
PRESETS = {
    "quick": dict(taus=[0.11], seeds=[0, 1], epochs=1, subset=512, test_subset=500, validation=300),
    "full": dict(taus=[0.11], seeds=[0, 1, 2], epochs=EPOCHS_FULL, subset=None, test_subset=None, validation=5000),
    # [T] ch. 5 LeNet5 tau table: 20 epochs, 5 runs per tau, the full training set
    "paper": dict(taus=[0.11], seeds=[0, 1, 2, 3, 4], epochs=20, subset=None, test_subset=None, validation=5000),
}
KNOBS = {"epochs": ["epochs"], "seeds": ["seeds"], "subset": ["subset"], "taus": ["taus"]}


def count_runs(cfg) -> int:
    """(dense + each tau) x seeds."""
    return (1 + len(cfg["taus"])) * len(cfg["seeds"])


def specs(cfg, backend: str) -> list:
    """Dense and each tau, for each seed."""
    return tau_seed_specs(NAME, cfg, backend)


def run_one(c: dict, tag: str) -> dict:
    """One run of :func:`~dlrt_ref.experiments.lenet_tau.train_lenet`."""
    return train_lenet(c["tau"], c["seed"], c["epochs"], c["subset"], c["test_subset"], c["validation"], c["backend"],
                       tag)


def assemble(cfg, results: dict) -> dict:
    """Per arm: the runs, and mean ± std (ddof = 1) per epoch and at the chosen epoch."""
    arms = {}
    for tau in [None] + cfg["taus"]:
        runs = [results[f"tau={tau} seed={s}"] for s in cfg["seeds"]]
        per_epoch = [band(v) for v in zip(*[r["test_acc"] for r in runs])]
        best = band([r["test_acc_best"] for r in runs])
        arm = {"test_acc_best_mean": best[0], "test_acc_best_std_ddof1": best[1],
               "test_acc_best_runs": [r["test_acc_best"] for r in runs],
               "test_acc_epoch_mean": [m for m, _ in per_epoch], "test_acc_epoch_std_ddof1": [s for _, s in per_epoch],
               "ranks_best_runs": [r["ranks_best"] for r in runs], "runs": runs}
        if tau is not None:
            arm.update(cr_eval_best_mean=band([r["cr_eval_best"] for r in runs])[0],
                       cr_thesis_test_best_mean=band([r["cr_thesis_test_best"] for r in runs])[0])
        arms["dense" if tau is None else str(tau)] = arm
    n = f"{cfg['subset']} images" if cfg["subset"] else "the 55k training images"
    return {"taus": cfg["taus"], "seeds": cfg["seeds"], "epochs": cfg["epochs"], "subset": cfg["subset"],
            "validation": cfg["validation"], "optimizer": "sgd", "lr": LR, "batch": BATCH, "arms": arms,
            "row": "epoch of minimum validation loss", "std": "ddof = 1 over seeds",
            "published": {str(k): list(v) for k, v in PUBLISHED.items() if k == "dense" or k in cfg["taus"]},
            **code_fields(),
            "budget": f"{len(cfg['seeds'])} seeds x (dense + tau {cfg['taus']}) x {cfg['epochs']} epochs on {n}, "
                      f"batch {BATCH}"}


run = serial_runner(PRESETS, KNOBS, specs, assemble)  # run(preset, backend): the specs, serially


def plot(data: dict, out_dir):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    pub = data["published"]
    n_s = len(data["seeds"])
    budget = f"{data['epochs']} ep. on {data['subset'] or '55k'}, {n_s} seeds"
    ax = axes[0]
    for k, (name, arm) in enumerate(data["arms"].items()):
        m = 100 * np.array(arm["test_acc_epoch_mean"])
        s = 100 * np.array([0.0 if v is None else v for v in arm["test_acc_epoch_std_ddof1"]])
        ep = np.arange(1, len(m) + 1)
        lab = "dense" if name == "dense" else f"DLRT τ = {name}"
        ax.plot(ep, m, "o-", color=f"C{k}", label=f"ours {lab}: mean ± std ({budget})")
        ax.fill_between(ep, m - s, m + s, color=f"C{k}", alpha=0.25)
        for r in arm["runs"]:
            ax.plot(ep, 100 * np.array(r["test_acc"]), ":", color=f"C{k}", alpha=0.5, lw=0.8)
        p = pub.get(name)
        if p:
            ax.axhspan(p[0] - p[1], p[0] + p[1], color=f"C{k}", alpha=0.12, hatch="//",
                       label=f"[T] {lab}: {p[0]} ± {p[1]} (20 ep., 5 runs)")
    ax.set(xlabel="epoch", ylabel="test accuracy [%]", title="test accuracy per epoch (dotted: single seeds)",
           xticks=list(range(1, data["epochs"] + 1)))
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[1]
    names = list(data["arms"])
    for k, name in enumerate(names):
        arm = data["arms"][name]
        vals = 100 * np.array(arm["test_acc_best_runs"])
        ax.plot([k - 0.1] * len(vals), vals, "o", color=f"C{k}", mfc="none", label="ours, each seed" if k == 0 else None)
        sd = arm["test_acc_best_std_ddof1"]
        ax.errorbar([k], [100 * arm["test_acc_best_mean"]], yerr=None if sd is None else [100 * sd], fmt="s",
                    color=f"C{k}", capsize=4, label="ours mean ± std (ddof 1)" if k == 0 else None)
        p = pub.get(name)
        if p:
            ax.errorbar([k + 0.15], [p[0]], yerr=[p[1]], fmt="x", color="k", capsize=4,
                        label="[T] mean ± std (20 ep., 5 runs)" if k == 0 else None)
    ax.set(xticks=range(len(names)), xticklabels=["dense" if n == "dense" else f"τ = {n}" for n in names],
           xlim=(-0.6, len(names) - 0.4), ylabel="test accuracy [%] at min val loss", title=f"chosen epoch ({budget})")
    ax.legend(fontsize=7)
    ax = axes[2]
    for k, name in enumerate(n for n in names if n != "dense"):
        for j, r in enumerate(data["arms"][name]["runs"]):
            rk = np.array(r["ranks"], dtype=float)
            ep = np.arange(1, len(rk) + 1)
            for li, lname in enumerate(["conv1", "conv2", "fc1"]):
                ax.plot(ep, rk[:, li], "o-", color=f"C{li + 2}", alpha=0.7,
                        label=f"{lname} (each seed)" if j == 0 and k == 0 else None)
        p = pub.get(name)
        if p and p[2]:
            for li, v in enumerate(p[2]):
                ax.axhline(v, color=f"C{li + 2}", linestyle="--", alpha=0.6,
                           label=f"[T] best run, τ = {name}" if li == 0 else None)
    ax.set(xlabel="epoch", ylabel="rank after the epoch (log)", yscale="log", title="ranks (DLRT arm)",
           xticks=list(range(1, data["epochs"] + 1)))
    ax.legend(fontsize=7, loc="center right")
    fig.suptitle(f"Thesis LeNet5 on MNIST, ra-bug τ = {', '.join(map(str, data['taus']))} vs dense, SGD {data['lr']}, "
                 f"batch {data['batch']}: seed bands, ours ({budget}) vs [T]")
    return save(fig, out_dir, NAME)
