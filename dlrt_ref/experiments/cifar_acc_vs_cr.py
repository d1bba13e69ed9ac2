"""Fixed-rank CIFAR networks: test accuracy against the layer-wise compression ratio ([T] ch. 5, transferred).

[T]'s accuracy-vs-compression table is for LeNet5 on MNIST (:mod:`dlrt_ref.experiments.acc_vs_cr`); the
issue asks for the same curve for the CIFAR networks. ../shared/published_results.md holds no CIFAR numbers
for it, so there is nothing published to compare with, and the protocol is **chosen**: [T]'s rank rule
r = max(⌊(1−cr)·n·m/(n+m+1)⌋, 2) for every low-rank m×n weight (a convolution's n = c_in·k·k), capped at
the builder's starting rank ⌊min(m, n)/2⌋ (:mod:`dlrt_ref.nn.cifar_models`: the factors are cut to r before
training), every hidden layer low-rank (``lowrank="all"``), output layer dense; fixed-rank DLRT with the
unconventional integrator (``method="bug"``), SGD at [T]'s lr 0.05, batch 128, against the dense network.
Every preset trains with the thesis's CIFAR augmentation (crop 4, flip, per-channel normalisation:
:func:`~dlrt_ref.experiments.cifar_common.make_augment`; the quick preset too, to exercise it).

Presets. ``quick``: **synthetic data in CIFAR format** (tests only, never a result), LeNet5-CIFAR at width
1/8, cr ∈ {0.5, 0.9} + dense, 1 epoch. ``full`` (chosen; needs CIFAR-10, in practice a GPU): LeNet5-CIFAR,
ResNet20, VGG16, AlexNet, 5 cr values + dense, 5 epochs, 1 seed. ``paper``: [T]'s MNIST protocol applied to
CIFAR-10 (7 cr values, 10 epochs, 5 seeds). Without the CIFAR archives, ``full``/``paper`` stop with the
one-line error naming where to put them; nothing has been run here with real CIFAR data.
"""
from __future__ import annotations

from dlrt_ref.experiments.acc_vs_cr import BATCH, CRS, LR
from dlrt_ref.experiments.cifar_common import (build_model, load_data, make_augment, record_header,
                                               require_data)
from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.experiments.runs import RunSpec, serial_runner
from dlrt_ref.experiments.train_common import mean_std, train_record
from dlrt_ref.train.baselines import dense_trainer
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import SGD

NAME = "cifar_acc_vs_cr"
PRESETS = {
    "quick": dict(dataset="synthetic", models=["lenet5_cifar"], width=0.125, crs=[0.5, 0.9], seeds=[0], epochs=1,
                  subset=None, test_subset=None, augment=True),
    "full": dict(dataset="cifar10", models=["lenet5_cifar", "resnet20", "vgg16", "alexnet"], width=1.0,
                 crs=[0.0, 0.5, 0.8, 0.9, 0.96], seeds=[0], epochs=5, subset=None, test_subset=None, augment=True),
    # [T]'s accuracy-vs-cr protocol (published_results.md: 10 epochs, batch 128, SGD 0.05, 5 runs) on CIFAR-10,
    # with [T]'s CIFAR augmentation
    "paper": dict(dataset="cifar10", models=["lenet5_cifar", "resnet20", "vgg16", "alexnet"], width=1.0, crs=CRS,
                  seeds=[0, 1, 2, 3, 4], epochs=10, subset=None, test_subset=None, augment=True),
}
KNOBS = {"epochs": ["epochs"], "seeds": ["seeds"], "subset": ["subset"]}
KNOBS_NOTE = "fixed rank: the ranks come from the compression ratios"


def count_runs(cfg) -> int:
    return len(cfg["models"]) * (1 + len(cfg["crs"])) * len(cfg["seeds"])


def layer_rank(cr: float, m: int, n: int, r0: int) -> int:
    """[T]'s rule r = max(⌊(1−cr)·n·m/(n+m+1)⌋, 2), at most the starting rank ``r0``."""
    return min(max(int((1 - cr) * n * m / (n + m + 1)), 2), r0)


def specs(cfg, backend: str) -> list:
    require_data(cfg["dataset"])  # the one-line DataError before any run starts
    return [RunSpec(NAME, f"{m} cr={cr} seed={s}", dict(model=m, cr=cr, seed=s, backend=backend, **{
        k: cfg[k] for k in ("dataset", "width", "epochs", "subset", "test_subset", "augment")}))
        for m in cfg["models"] for cr in [None] + cfg["crs"] for s in cfg["seeds"]]


def run_one(c: dict, tag: str) -> dict:
    """Dense (``cr`` None) or fixed-rank DLRT with every low-rank layer cut to [T]'s rank for ``cr``."""
    seed = c["seed"]
    data = load_data(c["dataset"], seed, c["subset"], c["test_subset"])
    aug = make_augment(data, seed, c["augment"])
    if c["cr"] is None:
        net = build_model(c["model"], c["dataset"], "none", c["width"], seed, c["backend"])
        return train_record(dense_trainer(net, SGD(LR)), data, c["epochs"], BATCH, seed, tag, augment=aug)
    net = build_model(c["model"], c["dataset"], "all", c["width"], seed, c["backend"])
    for l in net.lowrank_layers():
        r = layer_rank(c["cr"], l.n_out, l.n_in, l.S.shape[0])
        l.set_factors(l.U[:, :r].copy(), l.S[:r, :r].copy(), l.V[:, :r].copy())  # (m, r), (r, r), (n, r)
    rec = train_record(DLRT(net, SGD(LR), method="bug"), data, c["epochs"], BATCH, seed, tag, augment=aug)
    rec["initial_ranks"] = [int(l.S.shape[0]) for l in net.lowrank_layers()]
    return rec


def assemble(cfg, results: dict) -> dict:
    rows = {}
    for m in cfg["models"]:
        rows[m] = {}
        for cr in [None] + cfg["crs"]:
            runs = [results[f"{m} cr={cr} seed={s}"] for s in cfg["seeds"]]
            mean, std = mean_std([r["test_acc"][-1] for r in runs])
            rows[m]["dense" if cr is None else str(cr)] = {
                "test_acc_mean": mean, "test_acc_std": std, "ranks": runs[0]["ranks"][-1],
                "cr_eval": runs[0]["cr"][-1]["cr_eval"], "runs": runs}
    return {**record_header(cfg, LR, BATCH), "crs": cfg["crs"], "epochs": cfg["epochs"], "method": "bug (fixed rank)",
            "row": "last epoch", "results": rows, "published": None,
            "budget": f"{len(cfg['models'])} models x ({len(cfg['crs'])} cr + dense) x {len(cfg['seeds'])} seeds x "
                      f"{cfg['epochs']} epochs on {cfg['subset'] or 'all'} {cfg['dataset']} images, "
                      f"width {cfg['width']}"}


run = serial_runner(PRESETS, KNOBS, specs, assemble)  # run(preset, backend): the specs, serially


def plot(data: dict, out_dir):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for k, (m, rows) in enumerate(data["results"].items()):
        crs = [c for c in rows if c != "dense"]
        ax.errorbar([float(c) for c in crs], [100 * rows[c]["test_acc_mean"] for c in crs],
                    yerr=[100 * rows[c]["test_acc_std"] for c in crs], fmt="o-", color=f"C{k}", capsize=3, label=m)
        ax.axhline(100 * rows["dense"]["test_acc_mean"], color=f"C{k}", linestyle=":")
    title = f"fixed-rank DLRT (bug), {data['dataset']}, {data['epochs']} epochs; dotted: dense"
    if data["synthetic"]:
        title += "\nSYNTHETIC test data, not a result"
    ax.set(xlabel="layer-wise compression ratio cr", ylabel="test accuracy [%] (last epoch)", title=title)
    ax.legend(fontsize=8)
    return save(fig, out_dir, NAME)
