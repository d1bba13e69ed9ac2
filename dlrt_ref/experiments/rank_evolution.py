"""Rank evolution of the four layers against epochs, 784-200×4-10 on MNIST ([P] Fig. 3).

Published setup ([P] Sec. 6.1 and its rank-evolution figures): 784 → 200 ×4
→ 10, dense output layer, ra-bug, Adam lr 1e-3, batch 256, 50k/10k/10k split,
start rank 300 (capped by the layer), 250 epochs, one figure per τ. For
example τ = 0.07: [65, 63, 62, 62] after epoch 1, [49, 52, 55, 55] at epoch
10, [37, 40, 45, 48] at epoch 250; τ = 0.17 ends at [11, 15, 15, 16].

Ours: the same network, data, optimiser and batch, correct truncation, start
rank at the cap ⌊min(m, n)/2⌋ = 100 (a 200-wide layer cannot hold rank 300;
the published first-epoch ranks are already below 100). He-scaled half-normal
initial spectrum. Ranks are logged after every step and every epoch. The same runs with the
2022 reference codes' truncation (``compat_2022_truncation=True``, the one
the published numbers were obtained with) are drawn beside them.

Budget. ``full``: τ ∈ {0.07, 0.11, 0.17} with the correct truncation and
τ ∈ {0.07, 0.17} with the 2022 codes', 1 seed, ``EPOCHS_FULL`` = 12 epochs on
the 50k split — 5.5 min measured on one core (250 epochs ≈ 2 h per τ are out of
reach). ``quick``: 784-32×4-10, 2 τ (+ 1 compat), 2 epochs on 2000 images.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.experiments.runs import RunSpec, serial_runner
from dlrt_ref.experiments.train_common import load_dataset, train_record
from dlrt_ref.nn import mlp
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.loop import fit
from dlrt_ref.train.optim import Adam

NAME = "rank_evolution"
EPOCHS_FULL = 12
PRESETS = {
    "quick": dict(d=32, taus=[0.07, 0.17], compat_taus=[0.07], epochs=2, subset=2000, test_subset=1000,
                  validation="last:500", seed=0),
    "full": dict(d=200, taus=[0.07, 0.11, 0.17], compat_taus=[0.07, 0.17], epochs=EPOCHS_FULL, subset=None,
                 test_subset=None, validation="last", seed=0),
    # [P] rank-evolution figures / published_results.md: d = 200, 250 epochs on the 50k split, one figure per
    # tau (the 8 tau of [P]'s table; the 2022 codes' truncation at the two tau whose ranks are quoted)
    "paper": dict(d=200, taus=[0.03, 0.05, 0.07, 0.09, 0.11, 0.13, 0.15, 0.17], compat_taus=[0.07, 0.17],
                  epochs=250, subset=None, test_subset=None, validation="last", seed=0),
}
KNOBS = {"epochs": ["epochs"], "subset": ["subset"], "taus": ["taus"]}
KNOBS_NOTE = "one seed per tau"


def count_runs(cfg) -> int:
    """One run per tau, correct and compat-2022 truncation."""
    return len(cfg["taus"]) + len(cfg.get("compat_taus", []))
LR, BATCH = 1e-3, 256
# [P]: tau -> {epoch: ranks of layers 1-4}
PUBLISHED = {0.07: {1: [65, 63, 62, 62], 10: [49, 52, 55, 55], 250: [37, 40, 45, 48]},
             0.17: {250: [11, 15, 15, 16]}}


def _widths(cfg):
    d = cfg["d"]
    widths = [784, d, d, d, d, 10]
    return widths, [min(a, b) // 2 for a, b in zip(widths[:-2], widths[1:-1])]


def specs(cfg, backend: str) -> list:
    """One ra-bug run per tau, then one per tau of the 2022 codes' truncation."""
    jobs = [(t, False) for t in cfg["taus"]] + [(t, True) for t in cfg.get("compat_taus", [])]
    return [RunSpec(NAME, f"tau={tau} compat-2022" if compat else f"tau={tau}",
                    dict(d=cfg["d"], tau=tau, compat=compat, seed=cfg["seed"], epochs=cfg["epochs"],
                         subset=cfg["subset"], test_subset=cfg["test_subset"], validation=cfg["validation"],
                         backend=backend))
            for tau, compat in jobs]


def run_one(c: dict, tag: str) -> dict:
    """One ra-bug run of 784-d×4-10; ranks per epoch and (at most ~400 samples) per step."""
    widths, caps = _widths(c)
    seed = c["seed"]
    data = load_dataset("mnist", True, c["validation"], seed, c["subset"], c["test_subset"])
    net = mlp(widths, ranks=caps + [None], seed=seed, backend=c["backend"])
    trainer = DLRT(net, Adam(LR), method="ra-bug", tau=c["tau"], compat_2022_truncation=c["compat"])
    hist = fit(trainer, data, c["epochs"], BATCH, seed=seed, log_every=0,
               log=lambda line: print(f"[{tag}] {line}", flush=True))
    steps = hist.steps
    every = max(1, len(steps) // 400)  # keep <= ~400 step samples per run in the JSON
    return {
        "epoch_ranks": [e["ranks"] for e in hist.epochs],
        "epoch_test_acc": [e["test_acc"] for e in hist.epochs],
        "epoch_cr_eval": [e["cr"]["cr_eval"] for e in hist.epochs],
        "step": [s["step"] for s in steps[::every]],
        "step_ranks": [s["ranks"] for s in steps[::every]],
        "steps_per_epoch": len(steps) // max(1, len(hist.epochs)),
    }


def assemble(cfg, results: dict) -> dict:
    """The figure's data from the runs' results by key (``"0.07"``, ``"0.07 compat-2022"``)."""
    widths, caps = _widths(cfg)
    runs = {s.key[len("tau="):]: results[s.key] for s in specs(cfg, "numpy")}
    return {"widths": widths, "start_ranks": caps, "lr": LR, "batch": BATCH, "epochs": cfg["epochs"],
            "taus": cfg["taus"], "compat_taus": cfg.get("compat_taus", []), "seed": cfg["seed"], "subset": cfg["subset"], "runs": runs,
            "published": {str(t): {str(e): r for e, r in v.items()} for t, v in PUBLISHED.items()},
            "budget": f"{len(cfg['taus'])} tau x 1 seed x {cfg['epochs']} epochs, train {cfg['subset'] or '50k'}",
            "cr_definition": "eval"}


run = serial_runner(PRESETS, KNOBS, specs, assemble)  # run(preset, backend): the specs, serially


def plot(data: dict, out_dir):
    plt = pyplot()
    taus = list(data["runs"])
    ncol = min(3, len(taus))
    nrow = -(-len(taus) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.4 * ncol, 4.4 * nrow), squeeze=False)
    for ax in axes.flat[len(taus):]:
        ax.set_visible(False)
    # one x scale for every panel (a mix of linear and log panels misleads): log when any published point lies
    # far beyond our last epoch
    n_ep = max(len(data["runs"][t]["epoch_ranks"]) for t in taus)
    pub_ep = [float(e) for t in taus for e in data["published"].get(t.split()[0], {})]
    log_x = bool(pub_ep) and max(pub_ep) > 2 * n_ep
    x_min = min(float(data["runs"][t]["step"][0] or 1) / data["runs"][t]["steps_per_epoch"] for t in taus) / 1.5
    for ax, tau in zip(axes.flat, taus):
        r = data["runs"][tau]
        spe = r["steps_per_epoch"]
        x_steps = np.array(r["step"], dtype=float) / spe
        ranks = np.array(r["step_ranks"], dtype=float)
        er = np.array(r["epoch_ranks"], dtype=float)
        for j in range(ranks.shape[1]):
            ax.plot(x_steps, ranks[:, j], color=f"C{j}", alpha=0.5, linewidth=0.8)
            ax.plot(np.arange(1, len(er) + 1), er[:, j], "o", color=f"C{j}", markersize=4, label=f"layer {j + 1}")
        pub = data["published"].get(tau.split()[0], {})
        for e, pr in pub.items():
            for j, v in enumerate(pr):
                ax.plot([float(e)], [v], "*", color=f"C{j}", markersize=11, mec="k",
                        label="[P] (stars)" if j == 0 and e == list(pub)[0] else None)
        acc = 100 * (r["epoch_test_acc"][-1] or np.nan)
        trunc = "2022 codes' truncation" if "compat" in tau else "correct truncation"
        ax.set(xlabel="epoch", ylabel="rank", ylim=(0, None),
               title=f"τ = {tau.split()[0]}, {trunc}\nfinal test acc {acc:.2f} %, c.r. eval "
                     f"{100 * r['epoch_cr_eval'][-1]:.1f} %")
        if log_x:
            ax.set(xscale="log", xlabel="epoch (log)", xlim=(x_min, 1.5 * max(pub_ep)))
        ax.legend(fontsize=7)
    w = "-".join(map(str, data["widths"]))
    fig.suptitle(f"Ranks during ra-bug training, MLP {w}, Adam {data['lr']}, batch {data['batch']}, "
                 f"start ranks {data['start_ranks']} (lines: every step; dots: end of epoch; stars: [P])")
    return save(fig, out_dir, NAME)
