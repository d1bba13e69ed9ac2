"""Effect of S-only fine-tuning after DLRT ([T] ch. 5, CIFAR-10 table; [P] Sec. 4).

Published setup ([T]): CIFAR-10; VGG16, AlexNet, LeNet5, ResNet20 trained 20
epochs with ra-bug at θ = τ = 0.1, then 20 epochs with the bases frozen and
only the cores S (and dense parameters) trained. LeNet5: 44.0 → 58.7 % test
accuracy (VGG16 39.5 → 67.7, AlexNet 42.9 → 58.6, ResNet20 45.8 → 64.2).

**Substitution.** CIFAR-10 cannot be obtained offline here, so ours runs on
**Fashion-MNIST and MNIST** (both 1×28×28): the thesis's LeNet5
(:func:`dlrt_ref.nn.lenet5`; conv1, conv2, fc1 low-rank from the caps
[10, 25, 250], classifier dense), ra-bug at τ = 0.1, SGD lr 0.05, batch 128,
then :class:`~dlrt_ref.train.baselines.SOnlyTrainer` with a fresh SGD(0.05) —
the optimiser state of the DLRT phase is not carried over. These data sets are
much easier than CIFAR-10, so the gain from fine-tuning is expected to be far
smaller; the experiment checks the mechanism (ranks frozen, accuracy does not
drop, c.r. unchanged), not the size of the CIFAR gain. **Control:** from a copy
of the network after the DLRT phase, the same number of further epochs (same
batches, fresh SGD) of plain DLRT — so the S-only gain can be told apart from
the gain of simply training longer.

**CIFAR-10 (the thesis's setting)**, for a user with the python-version
batches: :func:`dlrt_ref.data.cifar.load_cifar10` (tested on generated files)
reads them, and :func:`lenet5_rgb` builds LeNet5 for 3×32×32 inputs::

    from dlrt_ref.experiments.finetune import run_setting
    run_setting("cifar10", dlrt_epochs=20, sonly_epochs=20, subset=None,
                cifar_path="/path/to/cifar-10-python.tar.gz")

Budget. ``full``: both data sets, 1 seed, (2 DLRT + 2 S-only, and 2 control
DLRT) epochs on a 6k stratified training subset, full test set. ``quick``: MNIST only, 1 + 1 epochs on 512 images.

Runs (:mod:`dlrt_ref.experiments.runs`): per data set DS, ``DS dlrt`` (phase 1), then ``DS s-only`` and
``DS dlrt-control``, which declare phase 1 as their dependency: its result carries the trained network
(:func:`net_state`, exact), so with ``figures --jobs``/``--dask`` both phase-2 runs start, in parallel,
as soon as their own phase 1 has ended, and their cache entries are keyed by phase 1's.
"""
from __future__ import annotations

import base64

import numpy as np

from dlrt_ref.backend import to_numpy
from dlrt_ref.data.cifar import load_cifar10
from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.experiments.runs import RunSpec, run_serial, serial_runner
from dlrt_ref.experiments.train_common import load_dataset, train_record
from dlrt_ref.nn import LowRankLinear, lenet5
from dlrt_ref.nn.conv import Conv2d, LowRankConv2d, MaxPool2d
from dlrt_ref.nn.layers import Dense, Flatten, ReLU
from dlrt_ref.nn.network import Sequential, net_backend
from dlrt_ref.train.baselines import SOnlyTrainer
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import SGD

NAME = "finetune"
EPOCHS_FULL = (2, 2)
PRESETS = {
    "quick": dict(datasets=["mnist"], dlrt_epochs=1, sonly_epochs=1, subset=512, test_subset=500, seed=0),
    "full": dict(datasets=["fashion_mnist", "mnist"], dlrt_epochs=EPOCHS_FULL[0], sonly_epochs=EPOCHS_FULL[1],
                 subset=6000, test_subset=None, seed=0),
    # [T] fine-tuning table / published_results.md: 20 epochs DLRT then 20 S-only, all training images
    # (CIFAR-10 is not obtainable here: Fashion-MNIST and MNIST stand in)
    "paper": dict(datasets=["fashion_mnist", "mnist"], dlrt_epochs=20, sonly_epochs=20, subset=None,
                  test_subset=None, seed=0),
}
KNOBS = {"epochs": ["dlrt_epochs", "sonly_epochs"], "subset": ["subset"]}
KNOBS_NOTE = "one seed, fixed tau = 0.1 as in [T]"


def count_runs(cfg) -> int:
    """DLRT, S-only and control, per data set."""
    return 3 * len(cfg["datasets"])


TAU, LR, BATCH = 0.1, 0.05, 128
PUBLISHED_CIFAR10 = {"VGG16": (39.5, 67.7), "AlexNet": (42.9, 58.6), "LeNet5": (44.0, 58.7),
                     "ResNet20": (45.8, 64.2)}


def lenet5_rgb(ranks=(10, 25, 250, None), seed=0, backend="numpy"):
    """LeNet5 for (B, 3, 32, 32) inputs (CIFAR-10): conv 3→20, pool, conv 20→50, pool, fc 1250→500, fc 500→10."""
    rng = np.random.default_rng(seed)

    def conv(c_in, c_out, r):
        return (Conv2d(c_in, c_out, 5, seed=rng, backend=backend) if r is None
                else LowRankConv2d(c_in, c_out, 5, r, seed=rng, backend=backend))

    def lin(n_in, n_out, r, act):
        return (Dense(n_in, n_out, activation=act, seed=rng, backend=backend) if r is None
                else LowRankLinear(n_in, n_out, r, activation=act, seed=rng, backend=backend))

    return Sequential([conv(3, 20, ranks[0]), MaxPool2d(2), ReLU(),  # (B,20,28,28) -> (B,20,14,14)
                       conv(20, 50, ranks[1]), MaxPool2d(2), ReLU(),  # (B,50,10,10) -> (B,50,5,5)
                       Flatten(), lin(1250, 500, ranks[2], "relu"), ReLU(), lin(500, 10, ranks[3], "linear")])


# ---- phase 1 -> phase 2: the network as a value --------------------------------------------------------------------

def _encode(a) -> dict:
    """One array as JSON, exactly: dtype, shape, memory order and its raw bytes in base64."""
    a = to_numpy(a)
    order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"
    return {"dtype": a.dtype.str, "shape": list(a.shape), "order": order,
            "b64": base64.b64encode(a.tobytes(order=order)).decode("ascii")}


def _decode(d: dict, be):
    a = np.frombuffer(base64.b64decode(d["b64"]), dtype=np.dtype(d["dtype"]))
    return be.asarray(a.reshape(d["shape"], order=d["order"]).copy(order="K"))


def net_state(net) -> dict:
    """The state of ``net`` after a phase, as a JSON value that :func:`restore_net` puts back bit for bit:
    per leaf layer its parameters, its non-trainable state (BatchNorm's running statistics), its factors
    U, S, V (low-rank layers, whatever rank they reached) and its training flag. A phase-1 result carries
    it, so that phase 2 can run in another process or on another machine (:mod:`~dlrt_ref.experiments.runs`)."""
    layers = []
    for layer in net.flat_layers():
        entry = {"type": type(layer).__name__, "training": getattr(layer, "training", None),
                 "params": {k: _encode(v) for k, v in sorted(layer.params.items())},
                 "state": {k: _encode(v) for k, v in sorted((getattr(layer, "state", None) or {}).items())}}
        if getattr(layer, "lowrank", False):
            entry["factors"] = [_encode(A) for A in (layer.U, layer.S, layer.V)]
        layers.append(entry)
    return {"training": net.training, "layers": layers}


def restore_net(net, state: dict):
    """Put a :func:`net_state` into ``net``, a network of the same architecture (e.g. freshly built); returns it."""
    leaves, be = net.flat_layers(), net_backend(net)
    if [type(layer).__name__ for layer in leaves] != [e["type"] for e in state["layers"]]:
        raise ValueError("restore_net: the state is of another architecture than the network")
    for layer, e in zip(leaves, state["layers"]):
        layer.params = {k: _decode(v, be) for k, v in e["params"].items()}
        if e["state"]:
            layer.state = {k: _decode(v, be) for k, v in e["state"].items()}
        if "factors" in e:
            layer.set_factors(*(_decode(v, be) for v in e["factors"]))
        if e["training"] is not None:
            layer.training = e["training"]
    net.training = state["training"]
    return net


# ---- the runs ------------------------------------------------------------------------------------------------------

def setting_specs(dataset, dlrt_epochs, sonly_epochs, subset, test_subset=None, seed=0, backend="numpy",
                  cifar_path=None) -> list:
    """The three runs of one data set: ``"DS dlrt"`` (phase 1), then ``"DS s-only"`` and ``"DS dlrt-control"``,
    which both start from phase 1's network and so declare it as their dependency."""
    c = dict(dataset=dataset, seed=seed, subset=subset, test_subset=test_subset, backend=backend)
    if cifar_path is not None:
        c["cifar_path"] = str(cifar_path)
    first = RunSpec(NAME, f"{dataset} dlrt", dict(c, phase="dlrt", epochs=dlrt_epochs))
    return [first] + [RunSpec(NAME, f"{dataset} {phase}", dict(c, phase=phase, epochs=sonly_epochs),
                              deps=(first.key,)) for phase in ("s-only", "dlrt-control")]


def specs(cfg, backend: str) -> list:
    for ds in cfg["datasets"]:  # an absent data set: its one-line DataError before any run starts
        load_dataset(ds, False, 0, cfg["seed"], 10, 10)
    return [s for ds in cfg["datasets"] for s in setting_specs(ds, cfg["dlrt_epochs"], cfg["sonly_epochs"],
                                                               cfg["subset"], cfg["test_subset"], cfg["seed"], backend)]


def run_one(c: dict, tag: str, deps: dict | None = None) -> dict:
    """One phase: ``dlrt`` (ra-bug, τ = 0.1; its result carries the network), or, from that network (the
    result in ``deps``), ``s-only`` (:class:`~dlrt_ref.train.baselines.SOnlyTrainer`) or ``dlrt-control``
    (as many further epochs of DLRT: does S-only beat just training on?). Both phase-2 runs have a fresh
    SGD and visit the epochs with the seed + 1000, so their batches differ from phase 1's."""
    seed = c["seed"]
    if c["dataset"] == "cifar10":
        data = load_cifar10(c.get("cifar_path"), flatten=False, seed=seed, subset=c["subset"],
                            test_subset=c["test_subset"])
        net = lenet5_rgb(seed=seed, backend=c["backend"])
    else:
        data = load_dataset(c["dataset"], False, 0, seed, c["subset"], c["test_subset"])
        net = lenet5(ranks=[10, 25, 250, None], seed=seed, backend=c["backend"])
    if c["phase"] == "dlrt":
        record = train_record(DLRT(net, SGD(LR), method="ra-bug", tau=TAU), data, c["epochs"], BATCH, seed, tag)
        return {"record": record, "net": net_state(net)}
    (phase1,) = deps.values()
    restore_net(net, phase1["net"])
    trainer = SOnlyTrainer(net, SGD(LR)) if c["phase"] == "s-only" else DLRT(net, SGD(LR), method="ra-bug", tau=TAU)
    return {"record": train_record(trainer, data, c["epochs"], BATCH, seed + 1000, tag)}


def setting_row(results: dict, dataset: str) -> dict:
    """The data of one data set from the results of its three runs."""
    phase1, phase2, control = (results[f"{dataset} {p}"]["record"] for p in ("dlrt", "s-only", "dlrt-control"))
    return {"dlrt": phase1, "s_only": phase2, "dlrt_control": control,
            "test_acc_after_dlrt": phase1["test_acc"][-1], "test_acc_after_sonly": phase2["test_acc"][-1],
            "test_acc_after_control": control["test_acc"][-1], "ranks": phase1["ranks"][-1],
            "ranks_control": control["ranks"][-1], "cr_eval": phase1["cr"][-1]["cr_eval"]}


def run_setting(dataset, dlrt_epochs, sonly_epochs, subset, test_subset=None, seed=0, backend="numpy",
                cifar_path=None) -> dict:
    """DLRT (ra-bug, τ = 0.1) for ``dlrt_epochs``, then S-only (and the control) for ``sonly_epochs``, here."""
    return setting_row(run_serial(setting_specs(dataset, dlrt_epochs, sonly_epochs, subset, test_subset, seed,
                                                backend, cifar_path)), dataset)


def assemble(cfg, results: dict) -> dict:
    return {"datasets": cfg["datasets"], "substitution": "Fashion-MNIST and MNIST instead of CIFAR-10 (not offline)",
            "tau": TAU, "optimizer": "sgd", "lr": LR, "batch": BATCH, "dlrt_epochs": cfg["dlrt_epochs"],
            "sonly_epochs": cfg["sonly_epochs"], "subset": cfg["subset"],
            "results": {ds: setting_row(results, ds) for ds in cfg["datasets"]},
            "published_cifar10": {k: list(v) for k, v in PUBLISHED_CIFAR10.items()}, "cr_definition": "eval",
            "budget": f"{len(cfg['datasets'])} data sets x 1 seed x ({cfg['dlrt_epochs']} DLRT + "
                      f"{cfg['sonly_epochs']} S-only) epochs on {cfg['subset'] or 'all'} images"}


run = serial_runner(PRESETS, KNOBS, specs, assemble)  # run(preset, backend): the specs, serially


def plot(data: dict, out_dir):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    ax = axes[0]
    for k, (ds, r) in enumerate(data["results"].items()):
        a1 = 100 * np.array(r["dlrt"]["test_acc"], dtype=float)
        a2 = 100 * np.array(r["s_only"]["test_acc"], dtype=float)
        ax.plot(np.arange(1, len(a1) + 1), a1, "o-", color=f"C{k}", label=f"{ds}: DLRT τ={data['tau']}")
        ax.plot(np.arange(len(a1), len(a1) + len(a2) + 1), np.r_[a1[-1], a2], "s--", color=f"C{k}",
                label=f"{ds}: S-only (ranks {r['ranks']}, c.r. eval {100 * r['cr_eval']:.1f} %)")
        if "dlrt_control" in r:
            a3 = 100 * np.array(r["dlrt_control"]["test_acc"], dtype=float)
            ax.plot(np.arange(len(a1), len(a1) + len(a3) + 1), np.r_[a1[-1], a3], "^:", color=f"C{k}",
                    label=f"{ds}: control, DLRT continued (ranks {r['ranks_control']})")
    ax.axvline(data["dlrt_epochs"], color="gray", linestyle=":")
    ax.set(xlabel="epoch (DLRT, then S-only or more DLRT after the dotted line)", ylabel="test accuracy [%]",
           title=f"ours: LeNet5, SGD {data['lr']}, {data['subset']} training images")
    ax.legend(fontsize=7)
    ax = axes[1]
    names = list(data["published_cifar10"]) + [f"ours {ds}" for ds in data["results"]]
    before = [v[0] for v in data["published_cifar10"].values()] + \
             [100 * r["test_acc_after_dlrt"] for r in data["results"].values()]
    after = [v[1] for v in data["published_cifar10"].values()] + \
            [100 * r["test_acc_after_sonly"] for r in data["results"].values()]
    # the control (the same number of further epochs of plain DLRT) is ours only: [T] has none
    control = [np.nan] * len(data["published_cifar10"]) + \
              [100 * r["test_acc_after_control"] if r.get("test_acc_after_control") is not None else np.nan
               for r in data["results"].values()]
    x = np.arange(len(names))
    ax.bar(x - 0.27, before, 0.27, label="after DLRT")
    ax.bar(x, after, 0.27, label="after S-only fine-tuning")
    ax.bar(x + 0.27, control, 0.27, color="C2", label="control: as many epochs of DLRT instead (ours only)")
    for xi, b, a, c in zip(x, before, after, control):
        gain = f"{a - b:+.1f}" + ("" if np.isnan(c) else f"\nctrl {c - b:+.1f}")
        ax.text(xi, np.nanmax([a, b, c]) + 1, gain, ha="center", fontsize=7)
    ax.set_xticks(x, [n.replace("ours ", "ours\n") for n in names], fontsize=8)
    ax.set(ylabel="test accuracy [%]", ylim=(0, 112),
           title="[T] CIFAR-10 (20+20 ep.) vs ours (MNIST-type; gain in points)")
    ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("S-only fine-tuning after rank-adaptive DLRT (bases frozen, only S and dense parameters train)")
    return save(fig, out_dir, NAME)
