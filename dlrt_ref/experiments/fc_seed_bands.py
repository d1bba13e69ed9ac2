"""Seed bands for the quoted fully-connected rows ([P] Table 1, d = 500; issue 16 §2).

The network and protocol of :mod:`~dlrt_ref.experiments.fc_tau_sweep` (784 → 500 ×4 → 10, ReLU,
dense classifier, 50k train / 10k validation (the last 10k of train) / 10k test, batch 256, Adam
lr 1e-3 with the library's default state policy ``"transport"``, ra-bug with relative τ and the
correct truncation, start rank = cap = 250), at the τ people quote — 0.07, 0.11, 0.15 — and the
dense net, each with several seeds (the seed sets the initialisation, the validation split is fixed,
the batch order follows the seed). Per epoch the test accuracy and the ranks are drawn as mean ± std
over the seeds (std with ddof = 1); the table row of each arm is taken, per seed, at the epoch of
minimum validation loss ([T]'s rule, as in ``fc_tau_sweep``), and reported as mean ± std of the
test accuracy, the ranks and the eval c.r. (Σ r(m+n) + the dense classifier,
:mod:`dlrt_ref.train.accounting`).

Budget. ``full``: d = 500, τ ∈ {0.07, 0.11, 0.15} + dense, seeds 0, 1, 2, ``EPOCHS_FULL`` = 10
epochs on the 50k split. ``paper``: [P]'s 250 adaptive epochs (no fixed-rank phase), 5 seeds ([P]
reports one run per row; five is the thesis's run count). ``quick``: d = 32, 2 seeds, 2 epochs on a
1000-image subset (CI).

:func:`summarise` and :func:`draw_arm` are shared with :mod:`~dlrt_ref.experiments.adam_state_policy`.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.experiments.fc_tau_sweep import BATCH, LR, PUBLISHED, run_one
from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.experiments.runs import RunSpec, code_version, serial_runner
from dlrt_ref.experiments.train_common import band

__all__ = ["run", "plot", "specs", "run_one", "assemble", "summarise", "draw_arm", "PRESETS"]

NAME = "fc_seed_bands"
TAUS = [0.07, 0.11, 0.15]
EPOCHS_FULL = 10
PRESETS = {
    "quick": dict(d=32, taus=[0.07, 0.11, 0.15], seeds=[0, 1], epochs=2, subset=1000, test_subset=500,
                  validation="last:300"),
    "full": dict(d=500, taus=TAUS, seeds=[0, 1, 2], epochs=EPOCHS_FULL, subset=None, test_subset=None,
                 validation="last"),
    # [P] Sec. 6.1: 250 rank-adaptive epochs on the 50k split (the 100 fixed-rank epochs are not run here);
    # [P] reports one run per row, 5 seeds are [T]'s run count
    "paper": dict(d=500, taus=TAUS, seeds=[0, 1, 2, 3, 4], epochs=250, subset=None, test_subset=None,
                  validation="last"),
}
KNOBS = {"epochs": ["epochs"], "seeds": ["seeds"], "subset": ["subset"], "taus": ["taus"]}


def count_runs(cfg) -> int:
    """Dense + one run per τ, for each seed."""
    return (1 + len(cfg["taus"])) * len(cfg["seeds"])


def _arm(tau) -> str:
    return "dense" if tau is None else str(tau)


def specs(cfg, backend: str) -> list:
    """One run per (arm, seed): the dense net, then ra-bug at each τ."""
    code_version()  # the code at the start of the runs
    return [RunSpec(NAME, f"{_arm(tau)} seed={seed}", dict(
        d=cfg["d"], tau=tau, seed=seed, epochs=cfg["epochs"], subset=cfg["subset"], test_subset=cfg["test_subset"],
        validation=cfg["validation"], backend=backend, state_policy="transport"))
        for tau in [None] + list(cfg["taus"]) for seed in cfg["seeds"]]


def _ms(values) -> dict:
    """Mean and std (ddof = 1; None for one value) of a list of numbers, and the values."""
    a = np.asarray(values, dtype=float)
    mean, std = band(a)
    return {"mean": mean, "std": std, "n": int(a.size), "values": a.tolist()}


def summarise(runs: dict) -> dict:
    """Bands and table row of one arm from its runs by seed (``{seed: fc_tau_sweep.run_one record}``).

    ``bands``: per epoch, mean/std (ddof = 1) over seeds of the test accuracy, the validation accuracy and
    the mean rank over the layers. ``row``: per seed at its epoch of minimum validation loss — test accuracy,
    ranks (per layer), eval and train-paper c.r. — as mean/std over seeds.
    """
    recs = list(runs.values())
    E = min(len(r["test_acc"]) for r in recs)
    lowrank = bool(recs[0]["ranks"][0])
    bands = {"epoch": list(range(1, E + 1)),
             "test_acc": [_ms([r["test_acc"][e] for r in recs]) for e in range(E)],
             "val_acc": [_ms([r["val_acc"][e] for r in recs]) for e in range(E)]}
    if lowrank:
        bands["mean_rank"] = [_ms([np.mean(r["ranks"][e]) for r in recs]) for e in range(E)]
    row = {"best_epoch": [r["best"] + 1 for r in recs], "test_acc": _ms([r["test_acc_best"] for r in recs]),
           "cr_eval": _ms([r["cr_eval_best"] for r in recs]),
           "cr_train_paper": _ms([r["cr_train_paper_best"] for r in recs]),
           "params_eval": _ms([r["params_eval_best"] for r in recs]),
           "last_epoch_test_acc": _ms([r["test_acc"][E - 1] for r in recs])}
    if lowrank:
        R = np.array([r["ranks_best"] for r in recs], dtype=float)  # (seeds, layers)
        row["ranks"] = {"per_seed": R.astype(int).tolist(), "mean": R.mean(axis=0).tolist(),
                        "std": R.std(axis=0, ddof=1).tolist() if len(R) > 1 else None}
    return {"seeds": [int(s) for s in runs], "bands": bands, "row": row,
            "seconds": sum(r["seconds"] for r in recs)}


def budget_text(cfg) -> str:
    """The budget of an FC comparison (width, seeds, epochs, data, batch, optimiser), for the JSON and title."""
    data = "the 50k split" if cfg["subset"] is None else f"{cfg['subset']} images"
    return (f"d = {cfg['d']}, {len(cfg['seeds'])} seeds {cfg['seeds']}, {cfg['epochs']} epochs on {data}, "
            f"batch {BATCH}, Adam {LR}")


def assemble(cfg, results: dict) -> dict:
    """The figure's data: per arm, its runs by seed, the bands and the row (:func:`summarise`)."""
    d = cfg["d"]
    budget = budget_text(cfg) + " (state policy transport)"
    out = {"config": cfg, "optimizer": "adam", "lr": LR, "batch": BATCH, "state_policy": "transport",
           "method": "ra-bug (correct truncation)", "row": "per seed, the epoch of minimum validation loss",
           "std": "ddof = 1 over the seeds", "cr_definitions": {"cr_eval": "eval", "cr_train_paper": "train-paper"},
           "budget": budget, "code": code_version(),
           "published": {"dense": PUBLISHED.get(d, {}).get("dense"),
                         "rows": {str(t): list(v) for t, v in PUBLISHED.get(d, {}).get("rows", {}).items()
                                  if t in cfg["taus"]}},
           "arms": {}}
    for tau in [None] + list(cfg["taus"]):
        runs = {seed: results[f"{_arm(tau)} seed={seed}"] for seed in cfg["seeds"]}
        out["arms"][_arm(tau)] = dict(summarise(runs), runs={str(s): r for s, r in runs.items()})
    return out


run = serial_runner(PRESETS, KNOBS, specs, assemble)  # run(preset, backend): the specs, serially


def draw_arm(axes, arm: dict, label: str, color) -> None:
    """Draw one arm on (accuracy vs epoch, mean rank vs epoch, accuracy vs eval c.r.): mean ± std bands."""
    b = arm["bands"]
    ep = np.array(b["epoch"])
    for ax, key, scale in ((axes[0], "test_acc", 100), (axes[1], "mean_rank", 1)):
        if key not in b:
            continue
        mu = scale * np.array([x["mean"] for x in b[key]])
        sd = scale * np.array([x["std"] or 0.0 for x in b[key]])
        ax.plot(ep, mu, "o-", color=color, markersize=3, label=label)
        ax.fill_between(ep, mu - sd, mu + sd, color=color, alpha=0.25, linewidth=0)
        ax.set_xticks(ep)  # whole epochs
    row = arm["row"]
    acc, cr = row["test_acc"], row["cr_eval"]
    axes[2].errorbar([100 * cr["mean"]], [100 * acc["mean"]], xerr=[100 * (cr["std"] or 0)],
                     yerr=[100 * (acc["std"] or 0)], fmt="o", color=color, capsize=4, label=label)


def plot(data: dict, out_dir):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    colors = {"dense": "k"}
    for i, arm in enumerate(a for a in data["arms"] if a != "dense"):
        colors[arm] = f"C{i}"
    for name, arm in data["arms"].items():
        row = arm["row"]
        label = "dense" if name == "dense" else f"τ = {name}"
        label += f": {100 * row['test_acc']['mean']:.2f} ± {100 * (row['test_acc']['std'] or 0):.2f} %"
        draw_arm(axes, arm, label, colors[name])
        if name == "dense":
            axes[2].axhline(100 * row["test_acc"]["mean"], color="k", linestyle=":", linewidth=1)
    pub = data["published"]
    for name, v in pub["rows"].items():
        axes[2].plot([v[2]], [v[0]], "x", color=colors.get(name, "gray"), markersize=9,
                     label=f"[P] τ = {name} (250 + 100 epochs, 1 run)")
    if pub.get("dense") is not None:
        axes[2].axhline(pub["dense"], color="k", linestyle="-.", alpha=0.5, linewidth=1, label="[P] dense")
    axes[0].set(xlabel="epoch", ylabel="test accuracy [%]", title="test accuracy per epoch (mean ± std)")
    axes[1].set(xlabel="epoch", ylabel="mean rank of the 4 layers", title="ranks per epoch (mean ± std)")
    axes[2].set(xlabel="eval compression rate [%]", ylabel="test accuracy [%]",
                title="row at min val loss (mean ± std) vs [P]")
    lo = min(100 * (x["mean"] - (x["std"] or 0)) for a in data["arms"].values() for x in a["bands"]["test_acc"])
    axes[0].set_ylim(bottom=max(lo - 0.5, 0))  # every band in view
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(f"MLP 784-{data['config']['d']}×4-10 on MNIST, ra-bug: {data['budget']}; "
                 f"std ddof = 1")
    return save(fig, out_dir, NAME)
