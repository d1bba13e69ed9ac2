"""S-only fine-tuning after DLRT on the CIFAR networks ([T] ch. 5, the fine-tuning table).

Published ([T], ../shared/published_results.md): CIFAR-10; VGG16, AlexNet, LeNet5, ResNet20 trained 20
epochs with ra-bug at θ = τ = 0.1, then 20 epochs with the bases U, V frozen and only the cores S (and the
dense parameters) trained: VGG16 39.5 → 67.7 %, AlexNet 42.9 → 58.6, LeNet5 44.0 → 58.7, ResNet20 45.8 → 64.2.

Ours: the networks of :mod:`dlrt_ref.nn.cifar_models` with their default low-rank layers (VGG16/AlexNet "fc",
ResNet20/LeNet5 "all"), the mechanics of :mod:`dlrt_ref.experiments.finetune` (ra-bug at its ``TAU``, SGD at
its ``LR`` and ``BATCH``, then :class:`~dlrt_ref.train.baselines.SOnlyTrainer` with a fresh SGD, and a control
of as many further epochs of plain DLRT from a copy of the phase-1 network). Each run records how far the
bases moved during the S-only phase (``basis_change``: max |ΔU|, |ΔV|; 0 when they are frozen). Every
phase trains with the thesis's CIFAR augmentation (crop 4, flip, per-channel normalisation:
:func:`~dlrt_ref.experiments.cifar_common.make_augment`, seeded like the phase's batches; the quick preset too).

Presets. ``quick``: **synthetic data in CIFAR format** (tests only, never a result), LeNet5-CIFAR and
ResNet20 at width 1/8, 1 + 1 epochs on 200 images. ``full`` (chosen; needs CIFAR-10 and, in practice, a
GPU): the four networks, 5 + 5 epochs, 2 seeds. ``paper``: [T]'s budget, 20 + 20 epochs, all 50k images,
one seed. Without the CIFAR archives, ``full``/``paper`` stop with the one-line error naming where to put
them; nothing has been run here with real CIFAR data.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.experiments.cifar_common import (build_model, load_data, make_augment, record_header,
                                               require_data)
from dlrt_ref.experiments.finetune import BATCH, LR, PUBLISHED_CIFAR10, TAU, net_state, restore_net
from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.experiments.runs import RunSpec, serial_runner
from dlrt_ref.experiments.train_common import train_record
from dlrt_ref.train.baselines import SOnlyTrainer
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import SGD

NAME = "cifar_finetune"
MODELS = ["vgg16", "alexnet", "lenet5_cifar", "resnet20"]
PUBLISHED_KEY = {"vgg16": "VGG16", "alexnet": "AlexNet", "lenet5_cifar": "LeNet5", "resnet20": "ResNet20"}
PRESETS = {
    "quick": dict(dataset="synthetic", models=["lenet5_cifar", "resnet20"], width=0.125, dlrt_epochs=1,
                  sonly_epochs=1, seeds=[0], subset=None, test_subset=None, augment=True),
    "full": dict(dataset="cifar10", models=MODELS, width=1.0, dlrt_epochs=5, sonly_epochs=5, seeds=[0, 1],
                 subset=None, test_subset=None, augment=True),
    # [T] fine-tuning table / published_results.md: 20 epochs DLRT (τ = 0.1), then 20 S-only, CIFAR-10
    "paper": dict(dataset="cifar10", models=MODELS, width=1.0, dlrt_epochs=20, sonly_epochs=20, seeds=[0],
                  subset=None, test_subset=None, augment=True),
}
KNOBS = {"epochs": ["dlrt_epochs", "sonly_epochs"], "seeds": ["seeds"], "subset": ["subset"]}
KNOBS_NOTE = "fixed tau = 0.1 as in [T]"


def count_runs(cfg) -> int:
    """Three runs per model x seed: DLRT, then S-only and the control (both from the DLRT network)."""
    return 3 * len(cfg["models"]) * len(cfg["seeds"])


PHASES = ("dlrt", "s-only", "dlrt-control")


def specs(cfg, backend: str) -> list:
    """Per model and seed: ``"M seed=S dlrt"`` (phase 1), then ``"... s-only"`` and ``"... dlrt-control"``, which
    depend on it (its result carries the network: :func:`~dlrt_ref.experiments.finetune.net_state`)."""
    require_data(cfg["dataset"])  # the one-line DataError before any run starts
    out = []
    for m in cfg["models"]:
        for s in cfg["seeds"]:
            c = dict(model=m, seed=s, backend=backend,
                     **{k: cfg[k] for k in ("dataset", "width", "subset", "test_subset", "augment")})
            first = RunSpec(NAME, f"{m} seed={s} dlrt", dict(c, phase="dlrt", epochs=cfg["dlrt_epochs"]))
            out += [first] + [RunSpec(NAME, f"{m} seed={s} {p}", dict(c, phase=p, epochs=cfg["sonly_epochs"]),
                                      deps=(first.key,)) for p in PHASES[1:]]
    return out


def _bases(net):
    return [(np.array(l.U, copy=True), np.array(l.V, copy=True)) for l in net.lowrank_layers()]


def run_one(c: dict, tag: str, deps: dict | None = None) -> dict:
    """One phase: ``dlrt`` (ra-bug, τ = TAU, for ``epochs``; the result carries the network), or from that
    network (the result in ``deps``) ``s-only`` (records how far the bases moved: ``basis_change``) or
    ``dlrt-control``, each with a fresh SGD and the seed + 1000 for its batches."""
    seed = c["seed"]
    data = load_data(c["dataset"], seed, c["subset"], c["test_subset"])
    net = build_model(c["model"], c["dataset"], "fc" if c["model"] in ("vgg16", "alexnet") else "all", c["width"],
                      seed, c["backend"])
    if c["phase"] == "dlrt":
        record = train_record(DLRT(net, SGD(LR), method="ra-bug", tau=TAU), data, c["epochs"], BATCH, seed, tag,
                              augment=make_augment(data, seed, c["augment"]))
        return {"record": record, "net": net_state(net)}
    (phase1,) = deps.values()
    restore_net(net, phase1["net"])
    aug = make_augment(data, seed + 1000, c["augment"])
    if c["phase"] == "dlrt-control":
        return {"record": train_record(DLRT(net, SGD(LR), method="ra-bug", tau=TAU), data, c["epochs"], BATCH,
                                       seed + 1000, tag, augment=aug)}
    before = _bases(net)
    record = train_record(SOnlyTrainer(net, SGD(LR)), data, c["epochs"], BATCH, seed + 1000, tag, augment=aug)
    change = max(float(np.max(np.abs(a - b))) for (U0, V0), (U1, V1) in zip(before, _bases(net))
                 for a, b in ((U0, U1), (V0, V1)))
    return {"record": record, "basis_change": change}


def _run(results: dict, m: str, s: int) -> dict:
    """The data of one model and seed from its three runs (as one run was recorded before the split)."""
    phase1, phase2, control = (results[f"{m} seed={s} {p}"]["record"] for p in PHASES)
    return {"dlrt": phase1, "s_only": phase2, "dlrt_control": control,
            "basis_change": results[f"{m} seed={s} s-only"]["basis_change"],
            "test_acc_after_dlrt": phase1["test_acc"][-1], "test_acc_after_sonly": phase2["test_acc"][-1],
            "test_acc_after_control": control["test_acc"][-1], "ranks": phase1["ranks"][-1],
            "ranks_after_sonly": phase2["ranks"][-1], "cr_eval": phase1["cr"][-1]["cr_eval"]}


def assemble(cfg, results: dict) -> dict:
    rows = {}
    for m in cfg["models"]:
        runs = [_run(results, m, s) for s in cfg["seeds"]]
        rows[m] = {"after_dlrt": [r["test_acc_after_dlrt"] for r in runs],
                   "after_sonly": [r["test_acc_after_sonly"] for r in runs],
                   "after_control": [r["test_acc_after_control"] for r in runs], "runs": runs}
    return {**record_header(cfg, LR, BATCH), "tau": TAU, "dlrt_epochs": cfg["dlrt_epochs"],
            "sonly_epochs": cfg["sonly_epochs"], "subset": cfg["subset"], "results": rows,
            "published_cifar10": {k: list(v) for k, v in PUBLISHED_CIFAR10.items()},
            "budget": f"{len(cfg['models'])} models x {len(cfg['seeds'])} seeds x ({cfg['dlrt_epochs']} DLRT + "
                      f"{cfg['sonly_epochs']} S-only + {cfg['sonly_epochs']} control) epochs on "
                      f"{cfg['subset'] or 'all'} {cfg['dataset']} images, width {cfg['width']}"}


run = serial_runner(PRESETS, KNOBS, specs, assemble)  # run(preset, backend): the specs, serially


def plot(data: dict, out_dir):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.8))
    names = list(data["results"])
    x = np.arange(len(names))
    for off, key, label in ((-0.27, "after_dlrt", "after DLRT"), (0.0, "after_sonly", "after S-only"),
                            (0.27, "after_control", "control: DLRT continued")):
        ax.bar(x + off, [100 * np.mean(data["results"][m][key]) for m in names], 0.27, label=label)
    pub = data["published_cifar10"]
    for xi, m in zip(x, names):
        if PUBLISHED_KEY.get(m) in pub and not data["synthetic"]:
            ax.plot([xi - 0.27, xi], pub[PUBLISHED_KEY[m]], "kx", label="[T]" if xi == 0 else None)
    ax.set_xticks(x, names)
    title = f"S-only fine-tuning, {data['dataset']}"
    if data["synthetic"]:
        title += " — SYNTHETIC test data, not a result"
    ax.set(ylabel="test accuracy [%]", ylim=(0, 100), title=title)
    ax.legend(fontsize=8)
    return save(fig, out_dir, NAME)
