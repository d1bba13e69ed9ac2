"""Correct truncation vs the 2022 reference codes' truncation (same seeds).

The public DLRT codes of 2022 truncate the augmented core Ŝ1 = P Σ Qᵀ with
``V ← V̂ · Vh[:, :r]`` instead of ``V̂ · Vhᵀ[:, :r]`` and leave the last
singular value out of their tail sum (see :func:`dlrt_ref.truncation.truncate`,
``compat_2022=True``; /shared/published_results.md "Known quirk"). This
experiment trains the same network from the same initial weights and batch
order twice — once with the correct truncation, once with the compat flag —
and records per-step batch loss and ranks and per-epoch test accuracy, so the
reader sees what the bug did.

Setup: MLP 784-500-500-500-500-10 (classifier dense), ra-bug, τ = 0.1,
Adam lr 1e-3, batch 256, CholeskyQR2 bases (as the train CLI), shipped MNIST. Full preset: 5 epochs on the 60k
training set, 1 seed. Quick preset: 784-64-64-10 on a 2000-image stratified
subset, 2 epochs.
"""
from __future__ import annotations

import numpy as np
from matplotlib.ticker import MaxNLocator

from dlrt_ref.data import load_mnist
from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.experiments.runs import RunSpec, serial_runner
from dlrt_ref.nn import mlp
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.loop import fit
from dlrt_ref.train.optim import Adam

NAME = "truncation_2022"
PRESETS = {
    "quick": dict(widths=[784, 64, 64, 10], subset=2000, test_subset=1000, epochs=2, seeds=[0]),
    "full": dict(widths=[784, 500, 500, 500, 500, 10], subset=None, test_subset=None, epochs=5, seeds=[0]),
}  # no published protocol: this experiment is ours (``--preset paper`` runs ``full``)
KNOBS = {"epochs": ["epochs"], "seeds": ["seeds"], "subset": ["subset"]}
KNOBS_NOTE = "fixed tau = 0.1"


def count_runs(cfg) -> int:
    """Correct and compat-2022 truncation, per seed."""
    return 2 * len(cfg["seeds"])
TAU, LR, BATCH = 0.1, 1e-3, 256


LABELS = (("correct", False), ("compat-2022", True))


def specs(cfg, backend: str) -> list:
    """One run per truncation (correct, the 2022 codes') x seed."""
    return [RunSpec(NAME, f"{label} seed={seed}", dict(compat=compat, seed=seed, widths=cfg["widths"],
                                                      epochs=cfg["epochs"], subset=cfg["subset"],
                                                      test_subset=cfg["test_subset"], backend=backend))
            for label, compat in LABELS for seed in cfg["seeds"]]


def run_one(c: dict, tag: str) -> dict:
    """One ra-bug run of the MLP with the correct or the 2022 truncation; per-step loss and ranks."""
    widths, seed = c["widths"], c["seed"]
    ranks = [min(n_in, n_out) // 2 for n_in, n_out in zip(widths[:-2], widths[1:-1])] + [None]
    net = mlp(widths, ranks=ranks, seed=seed, backend=c["backend"])
    trainer = DLRT(net, Adam(LR), method="ra-bug", tau=TAU, compat_2022_truncation=c["compat"], ortho="cholqr2")
    data = load_mnist(seed=seed, subset=c["subset"], test_subset=c["test_subset"])
    hist = fit(trainer, data, c["epochs"], BATCH, seed=seed, log_every=100,
               log=lambda line: print(f"[{tag}] {line}", flush=True))
    return {
        "step_loss": [s["loss"] for s in hist.steps],
        "step_ranks": [s["ranks"] for s in hist.steps],
        "epoch_test_acc": [e["test_acc"] for e in hist.epochs],
        "epoch_ranks": [e["ranks"] for e in hist.epochs],
        "epoch_cr_eval": [e["cr"]["cr_eval"] for e in hist.epochs],
    }


def assemble(cfg, results: dict) -> dict:
    """The figure's data from the runs' results by key."""
    runs = {label: [results[f"{label} seed={s}"] for s in cfg["seeds"]] for label, _ in LABELS}
    return {"widths": cfg["widths"], "tau": TAU, "optimizer": "adam", "lr": LR, "batch": BATCH,
            "epochs": cfg["epochs"], "subset": cfg["subset"], "seeds": cfg["seeds"], "runs": runs,
            "cr_definition": "eval"}


run = serial_runner(PRESETS, KNOBS, specs, assemble)  # run(preset, backend): the specs, serially


def plot(data: dict, out_dir):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colors = {"correct": "tab:blue", "compat-2022": "tab:red"}
    for label, runs in data["runs"].items():
        for k, r in enumerate(runs):
            lab = label if k == 0 else None
            loss = np.array(r["step_loss"], dtype=float)
            w = max(1, len(loss) // 100)  # running mean over ~1% of the run, for readability
            smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
            axes[0].plot(np.arange(len(smooth)) + w, smooth, color=colors[label], label=lab)
            acc = 100 * np.array(r["epoch_test_acc"], dtype=float)
            axes[1].plot(np.arange(1, len(acc) + 1), acc, "o-", color=colors[label], label=lab)
            ranks = np.array(r["step_ranks"], dtype=float)
            for j in range(ranks.shape[1]):
                axes[2].plot(np.arange(1, len(ranks) + 1), ranks[:, j], color=colors[label],
                             linestyle=["-", "--", ":", "-."][j % 4], label=f"{label} layer {j + 1}")
    axes[0].set(xlabel="step", ylabel="batch loss (running mean)", yscale="log", title="training loss")
    axes[1].set(xlabel="epoch", ylabel="test accuracy [%]", title="test accuracy after each epoch")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[2].set(xlabel="step", ylabel="rank", title=f"ranks (ra-bug, τ = {data['tau']})")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    axes[2].legend(fontsize=7, ncol=2)
    w = "-".join(str(x) for x in data["widths"])
    fig.suptitle(f"Correct truncation vs the 2022 codes' (Vh untransposed, last σ left out): MLP {w}, "
                 f"Adam {data['lr']}, batch {data['batch']}, same seed and batches")
    fig.tight_layout()
    return save(fig, out_dir, NAME)
