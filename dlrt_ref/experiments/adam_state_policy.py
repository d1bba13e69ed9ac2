"""Adam's optimiser-state policies side by side on [P]'s MLP (issue 16 §4).

Adam is not a sub-step of the K-, L- and S-flows (:mod:`dlrt_ref.train.optim`): its moments are
written in the factors' bases, which change at every step. The library's default maps them into the
new bases (``"transport"``: m ← m T, v and the per-coordinate bias-correction weights ← · (T∘T̄),
derived in the optimiser's module docstring); no published code does. This experiment trains the
same network with the three policies:

``transport``
    the library's default (moments mapped, a direction new to the basis starts fresh);
``reset``
    the moments dropped at every basis change (each step a sign-descent step);
``stale``
    the 2022 codes' state: kept per entry of the fixed-size factor arrays, never mapped
    (Schotthöfer et al. 2022's TensorFlow code; emulated in :mod:`~dlrt_ref.experiments.tf2022_step`).

Network and protocol of :mod:`~dlrt_ref.experiments.fc_tau_sweep` (784 → 500 ×4 → 10, dense
classifier, 50k/10k split, batch 256, Adam lr 1e-3, ra-bug with relative τ = 0.11, correct
truncation, start rank 250); the table row per seed at the epoch of minimum validation loss;
mean ± std (ddof = 1) over seeds (:func:`~dlrt_ref.experiments.fc_seed_bands.summarise`).

Budget. ``full``: τ = 0.11, 3 policies × seeds 0, 1, 2, ``EPOCHS_FULL`` = 10 epochs on the 50k split
(as ``fc_seed_bands``; its transport runs are the bands' τ = 0.11 runs, bit for bit). ``quick``:
d = 32, 2 seeds, 2 epochs on 1000 images. No published protocol (``paper`` runs ``full``).
"""
from __future__ import annotations

from dlrt_ref.experiments.fc_seed_bands import budget_text, draw_arm, summarise
from dlrt_ref.experiments.fc_tau_sweep import BATCH, LR, PUBLISHED, run_one
from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.experiments.runs import RunSpec, code_version, serial_runner

__all__ = ["run", "plot", "specs", "run_one", "assemble", "POLICIES", "PRESETS"]

NAME = "adam_state_policy"
POLICIES = ["transport", "reset", "stale"]
EPOCHS_FULL = 10
PRESETS = {
    "quick": dict(d=32, taus=[0.11], policies=POLICIES, seeds=[0, 1], epochs=2, subset=1000, test_subset=500,
                  validation="last:300"),
    "full": dict(d=500, taus=[0.11], policies=POLICIES, seeds=[0, 1, 2], epochs=EPOCHS_FULL, subset=None,
                 test_subset=None, validation="last"),
}
KNOBS = {"epochs": ["epochs"], "seeds": ["seeds"], "subset": ["subset"], "taus": ["taus"]}
KNOBS_NOTE = "no published protocol: a comparison of the library's options"


def count_runs(cfg) -> int:
    return len(cfg["taus"]) * len(cfg["policies"]) * len(cfg["seeds"])


def _key(policy, tau, seed) -> str:
    return f"{policy} tau={tau} seed={seed}"


def specs(cfg, backend: str) -> list:
    """One ra-bug run per (τ, policy, seed)."""
    code_version()  # the code at the start of the runs
    return [RunSpec(NAME, _key(policy, tau, seed), dict(
        d=cfg["d"], tau=tau, seed=seed, epochs=cfg["epochs"], subset=cfg["subset"], test_subset=cfg["test_subset"],
        validation=cfg["validation"], backend=backend, state_policy=policy))
        for tau in cfg["taus"] for policy in cfg["policies"] for seed in cfg["seeds"]]


def assemble(cfg, results: dict) -> dict:
    """Per τ and policy: the runs by seed, bands and row (:func:`~dlrt_ref.experiments.fc_seed_bands.summarise`)."""
    d = cfg["d"]
    budget = budget_text(cfg)
    out = {"config": cfg, "optimizer": "adam", "lr": LR, "batch": BATCH, "method": "ra-bug (correct truncation)",
           "row": "per seed, the epoch of minimum validation loss", "std": "ddof = 1 over the seeds",
           "cr_definitions": {"cr_eval": "eval", "cr_train_paper": "train-paper"}, "budget": budget,
           "code": code_version(),
           "policies": {"transport": "moments mapped into the new bases, per-coordinate bias correction (default)",
                        "reset": "moments dropped at every basis change",
                        "stale": "moments kept per entry of the factor arrays, never mapped (the 2022 codes)"},
           "published": {str(t): list(PUBLISHED[d]["rows"][t]) for t in cfg["taus"]
                         if d in PUBLISHED and t in PUBLISHED[d]["rows"]},
           "taus": {}}
    for tau in cfg["taus"]:
        arms = {}
        for policy in cfg["policies"]:
            runs = {seed: results[_key(policy, tau, seed)] for seed in cfg["seeds"]}
            arms[policy] = dict(summarise(runs), runs={str(s): r for s, r in runs.items()})
        out["taus"][str(tau)] = arms
    return out


run = serial_runner(PRESETS, KNOBS, specs, assemble)  # run(preset, backend): the specs, serially

COLORS = {"transport": "C0", "reset": "C3", "stale": "C2"}


def plot(data: dict, out_dir):
    plt = pyplot()
    taus = list(data["taus"])
    fig, axes = plt.subplots(len(taus), 3, figsize=(16, 4.8 * len(taus)), squeeze=False)
    for row_axes, tau in zip(axes, taus):
        for policy, arm in data["taus"][tau].items():
            r = arm["row"]
            label = (f"{policy}: {100 * r['test_acc']['mean']:.2f} ± {100 * (r['test_acc']['std'] or 0):.2f} %, "
                     f"c.r. {100 * r['cr_eval']['mean']:.1f} %")
            draw_arm(row_axes, arm, label, COLORS.get(policy, "gray"))
        pub = data["published"].get(tau)
        if pub:
            row_axes[2].plot([pub[2]], [pub[0]], "kx", markersize=9, label="[P] (2022 code, 250 + 100 epochs)")
        row_axes[0].set(xlabel="epoch", ylabel="test accuracy [%]", title=f"τ = {tau}: test accuracy (mean ± std)")
        row_axes[1].set(xlabel="epoch", ylabel="mean rank of the 4 layers", title="ranks (mean ± std)")
        row_axes[2].set(xlabel="eval compression rate [%]", ylabel="test accuracy [%]",
                        title="row at min val loss (mean ± std)")
        for ax in row_axes:
            ax.legend(fontsize=7)
    fig.suptitle(f"Adam's state policy, MLP 784-{data['config']['d']}×4-10, ra-bug: {data['budget']}; std ddof = 1")
    return save(fig, out_dir, NAME)
