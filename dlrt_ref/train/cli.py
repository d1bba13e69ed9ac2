"""``python -m dlrt_ref train``: train an MLP or LeNet5 on MNIST, or a CIFAR network, with DLRT or a baseline.

The CIFAR networks (``--model vgg16|alexnet|resnet20|lenet5-cifar``, :mod:`dlrt_ref.nn.cifar_models` with
their default low-rank layers, or ``--lowrank fc|all`` for the fully connected layers only or every layer;
``--dataset cifar10`` (default for them) or ``cifar100``) need the CIFAR archive or folder in ``--data-dir`` / ``$DLRT_REF_DATA_DIR`` or the cache; without it the command ends
with one line saying where to put it (exit 1). They train with the thesis's augmentation by default
(random crop with padding 4, horizontal flip, per-channel normalisation by the training split's mean and
std: :mod:`dlrt_ref.train.augment`, seeded by ``--seed``); ``--no-augment`` trains on the plain images.
MNIST is never augmented (``--augment`` with it is a usage error). The start line says which.

Examples::

    dlrt-ref train --model mlp --method ra-bug --tau 0.1 --epochs 5 --json
    dlrt-ref train --model lenet5 --method ra-bug --tau 0.11 --optimizer sgd --lr 0.05 --batch-size 128
    dlrt-ref train --model mlp --widths 784,256,10 --method dense --optimizer sgd --lr 0.1
    dlrt-ref train --model resnet20 --dataset cifar10 --data-dir ~/data --method ra-bug --tau 0.1 --optimizer sgd --lr 0.05 --batch-size 128
    dlrt-ref train --model mlp --method bug --rank 20 --out runs/bug20
    dlrt-ref train --resume runs/bug20/checkpoint.npz --epochs 10 --out runs/bug20
    dlrt-ref evaluate runs/bug20/checkpoint.npz

(``dlrt-ref`` is ``.venv/bin/python -m dlrt_ref`` after the README's quickstart.)

Errors: exit 2 for a bad option or value, exit 1 for a runtime failure (a
diverged run, an unreadable checkpoint or data file, an unwritable ``--out``),
130 for Ctrl-C; each with one line on stderr (``--debug``: the traceback).
A run never overwrites another run's ``--out`` folder unless ``--overwrite``
is given (or it continues that run with ``--resume``).

Methods: ``ra-bug`` (default), ``bug``, ``ksl``, ``parallel`` (DLRT,
:mod:`dlrt_ref.train.dlrt`), ``dense`` and ``uv`` (baselines,
:mod:`dlrt_ref.train.baselines`). The MLP's classifier is dense by default, as
in Schotthöfer et al. 2022 (``--lowrank-last`` factorises it too); LeNet5's
classifier is dense by default, as in Zangrando 2022.

Every default that is a tuning choice (optimiser, learning rate, initial rank,
τ, epochs, batch size) is in :data:`DEFAULTS` below, and only there.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from dlrt_ref.backend import available_backends
from dlrt_ref.data import DATA_DIR_ENV, MNIST_FACTS, fashion_folder, load_mnist, mnist_folder
from dlrt_ref.data import data_dir as env_data_dir
from dlrt_ref.data import set_data_dir
from dlrt_ref.data.cifar import CIFAR_ARCHIVES, find_cifar, load_cifar10, load_cifar100
from dlrt_ref.data.splits import validation_size
from dlrt_ref.errors import CommandError, UsageError
from dlrt_ref.integrators import ADAPTIVE
from dlrt_ref.nn import lenet5, mlp
from dlrt_ref.nn.cifar_models import CIFAR_MODELS
from dlrt_ref.nn.network import LENET5_SHAPES
from dlrt_ref.threads import threads_info
from dlrt_ref.train import console
from dlrt_ref.train.augment import Augment
from dlrt_ref.train.baselines import UVTrainer, dense_trainer
from dlrt_ref.train.checkpoint import CheckpointError, load_checkpoint, read_manifest
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.loop import fit
from dlrt_ref.train.optim import make_optimizer

# The one place for tuning defaults (the lead tunes these).
DEFAULTS = {
    "model": "mlp",
    "dataset": "mnist",  # cifar10/cifar100 for the CIFAR models (not shipped: --data-dir)
    "widths": {"mlp": "784,500,500,500,500,10"},
    "method": "ra-bug",
    "optimizer": "adam",
    "ortho": "cholqr2",  # orthonormalisation of K, L: CholeskyQR2 (GEMM-based, ~3x faster ra-bug steps at width 5120, same results to round-off; falls back to Householder when ill-conditioned)
    "lr": 1e-3,
    "tau": 0.1,  # rank-adaptive methods only
    "tol_rule": "relative",  # ϑ = τ‖Ŝ‖ as published; "absolute"/"step" need --theta (measured: experiments/rank_dynamics.py)
    "initial_rank_adaptive": "r_max",  # ra-bug/parallel start at r_max = ⌊min(m, n)/2⌋ (or --r-max)
    "initial_rank_fixed": 20,  # bug/ksl/uv: the (fixed) rank
    "r_min": 2,
    "state_policy": "transport",  # optimiser state across basis changes (dlrt_ref.train.optim): per-coordinate Adam bias correction
    "init_spectrum": "halfnormal",  # shape of the low-rank layers' initial singular values (dlrt_ref.nn.init)
    "epochs": 5,
    "batch_size": 256,
    "backend": "numpy",
    "dtype": "float32",
    "seed": 0,
    "validation": "0",
    "log_every": 50,
    "eval_batch": 1000,
    "divergence_factor": 100.0,  # see dlrt_ref.train.loop.DIVERGENCE_FACTOR
    "augment": {"mnist": False, "cifar10": True, "cifar100": True},  # per dataset: the thesis augments CIFAR only
}
MNIST_SIZES = {"train": MNIST_FACTS["n_train"], "test": MNIST_FACTS["n_test"]}

# the CIFAR networks of Zangrando 2022 (dlrt_ref.nn.cifar_models): command-line name -> builder name
CIFAR_CLI_MODELS = {"vgg16": "vgg16", "alexnet": "alexnet", "resnet20": "resnet20", "lenet5-cifar": "lenet5_cifar"}
MODELS = ("mlp", "lenet5") + tuple(CIFAR_CLI_MODELS)
DATASETS = ("mnist", "cifar10", "cifar100")
DATASET_SIZES = {"mnist": MNIST_SIZES, "cifar10": {"train": 50000, "test": 10000},
                 "cifar100": {"train": 50000, "test": 10000}}
METHODS = ("dense", "ra-bug", "bug", "ksl", "parallel", "uv")
ADAPTIVE_METHODS = tuple(m for m in METHODS if m in ADAPTIVE)  # ("ra-bug", "parallel"): the rank-adaptive integrators
# options that define a run; with --resume they come from the checkpoint
RUN_OPTIONS = ("model", "dataset", "widths", "method", "tau", "rank", "r_min", "r_max", "optimizer", "lr", "batch_size",
               "backend", "dtype", "seed", "subset", "test_subset", "validation", "compat_2022_truncation", "ortho",
               "dense_last", "init_spectrum", "state_policy", "tol_rule", "theta", "augment", "lowrank")


def add_arguments(p) -> None:
    """Options of ``train`` (defaults None: filled from :data:`DEFAULTS` in :func:`resolve`)."""
    a = p.add_argument
    a("--model", choices=MODELS, help=f"network (default {DEFAULTS['model']})")
    a("--dataset", choices=DATASETS, help="mnist for mlp/lenet5 (default); cifar10 or cifar100 for the CIFAR models "
      "(not shipped: the archive or extracted folder in --data-dir)")
    a("--widths", help=f"MLP widths, comma separated (default {DEFAULTS['widths']['mlp']})")
    a("--method", choices=METHODS, help=f"training method (default {DEFAULTS['method']})")
    a("--tau", type=float, help=f"relative truncation tolerance, ra-bug/parallel (default {DEFAULTS['tau']})")
    a("--tol-rule", choices=("relative", "absolute", "step"), help="truncation rule: ϑ = τ‖Ŝ‖ (relative), ϑ = theta "
      f"(absolute), ϑ = theta·h·‖Ŝ1 − S̃0‖ (step); default {DEFAULTS['tol_rule']}")
    a("--theta", type=float, help="ϑ of --tol-rule absolute, or the constant c of --tol-rule step")
    a("--rank", type=int, help="initial rank of every low-rank layer (the fixed rank for bug/ksl/uv), capped at "
      "min(m, n); default r_max for ra-bug/parallel, "
      f"{DEFAULTS['initial_rank_fixed']} otherwise")
    a("--r-min", type=int, help=f"smallest rank after truncation (default {DEFAULTS['r_min']})")
    a("--r-max", type=int, help="largest rank (default ⌊min(m, n)/2⌋ per layer)")
    a("--optimizer", choices=("sgd", "momentum", "adam"), help=f"default {DEFAULTS['optimizer']}")
    a("--ortho", choices=("householder", "cholqr2"),
      help="orthonormalisation of the K/L bases (DLRT methods): householder (LAPACK QR) or cholqr2 (CholeskyQR2, "
           f"GEMM-based, falls back to householder when ill-conditioned); default {DEFAULTS['ortho']}")
    a("--init-spectrum", choices=("halfnormal", "linear", "gaussian-product"),
      help=f"shape of the initial singular values of low-rank layers (default {DEFAULTS['init_spectrum']})")
    a("--state-policy", choices=("transport", "transport-shared-t", "reset", "stale"),
      help="optimiser state when a basis changes (dlrt_ref.train.optim): transport with per-coordinate Adam bias "
           "correction, so new directions start fresh (default); transport-shared-t, one Adam step count per factor "
           "(the rule before issue 11); reset; stale, kept per entry and never mapped (the 2022 codes)")
    a("--lr", type=float, help=f"learning rate = integrator step h (default {DEFAULTS['lr']})")
    a("--epochs", type=int, help=f"total epochs (default {DEFAULTS['epochs']})")
    a("--batch-size", type=int, help=f"default {DEFAULTS['batch_size']}")
    a("--backend", choices=("numpy", "cupy"), help=f"default {DEFAULTS['backend']}")
    a("--dtype", choices=("float32", "float64"), help=f"default {DEFAULTS['dtype']}")
    a("--seed", type=int, help="seed of the init and the shuffle (default 0)")
    a("--subset", type=int, help="train on a seeded stratified subset of this many images")
    a("--test-subset", type=int, help="evaluate on a seeded stratified subset of the test set")
    a("--validation", help="validation split: K (seeded random K), 'last' (the paper's last 10k) or 'last:K'; default 0")
    a("--compat-2022-truncation", action="store_true", default=None,
      help="reproduce the 2022 reference codes' (incorrect) truncation, for comparison only")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dense-last", dest="dense_last", action="store_true", default=None,
                   help="keep the classifier dense (default)")
    g.add_argument("--lowrank-last", dest="dense_last", action="store_false", help="factorise the classifier too")
    a("--lowrank", choices=("fc", "all"), help="CIFAR models: which hidden layers are low-rank, the fully connected "
      "ones (fc) or also every convolution (all), the thesis's two VGG variants; default: the builder's (fc for "
      "vgg16/alexnet, all for resnet20/lenet5-cifar)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--augment", dest="augment", action="store_true", default=None,
                   help="CIFAR: random crop (pad 4), horizontal flip, per-channel normalisation, seeded by --seed "
                        "(default for cifar10/cifar100; not for mnist)")
    g.add_argument("--no-augment", dest="augment", action="store_false", help="CIFAR: train on the plain images")
    a("--data-dir", help=f"folder with the MNIST IDX files (or a mnist/ subfolder), verified by checksum; default "
                         f"${DATA_DIR_ENV} if set, else the copy shipped with the package. CIFAR: the folder holding "
                         "cifar-10-python.tar.gz / cifar-100-python.tar.gz or their extracted folders (default "
                         f"${DATA_DIR_ENV}, then the cache)")
    a("--out", help="folder for config.json, results.json and checkpoint.npz (must not hold another run)")
    a("--overwrite", action="store_true", help="allow --out to replace the run already in that folder")
    a("--resume", help="continue from a checkpoint (its run options are used; --epochs is the new total)")
    a("--checkpoint-every", type=int, help="also checkpoint every N steps (needs --out)")
    a("--log-every", type=int, help=f"progress line on the first step and every N steps (default "
                                    f"{DEFAULTS['log_every']}; 0: none)")
    a("--divergence-factor", type=float, help=f"stop (exit 1) when a step's loss exceeds this many times the first "
                                              f"loss (default {DEFAULTS['divergence_factor']:g}; 0: only NaN/inf)")
    a("--quiet", action="store_true", help="no start line and no progress lines on stderr")
    a("--json", action="store_true", help="print one final JSON object on stdout")


def _parse_widths(text) -> list:
    try:
        widths = [int(w) for w in str(text).split(",")]
    except ValueError:
        raise UsageError(f"--widths must be comma-separated integers, got {text!r}") from None
    if len(widths) < 2 or min(widths) < 1:
        raise UsageError(f"--widths needs at least two positive widths, got {text!r}")
    if widths[0] != 784 or widths[-1] != 10:
        raise UsageError(f"--widths must start with 784 (MNIST pixels) and end with 10 (classes), got {text!r}")
    return widths


def _parse_validation(text):
    """The ``validation`` argument of the loaders for ``--validation`` text: K (an int), 'last' or 'last:K'."""
    text = str(text)
    if text.isdigit():
        return int(text)
    try:
        validation_size(text)  # the loaders' own check of the format
    except ValueError:
        if text.startswith("last:"):
            raise UsageError(f"--validation last:K needs an integer K, got {text!r}") from None
        raise UsageError(f"--validation must be K, 'last' or 'last:K', got {text!r}") from None
    return text


def validation_count(run) -> int:
    """How many training images ``--validation`` holds out (K, or 10 000 for 'last')."""
    return validation_size(_parse_validation(run["validation"]))[1]


def resolve(args) -> dict:
    """The run options: command line over :data:`DEFAULTS` (or over the checkpoint's with --resume), checked."""
    given = {k: getattr(args, k) for k in RUN_OPTIONS if getattr(args, k, None) is not None}
    if args.resume:
        if not Path(args.resume).exists():  # a wrong path is a usage error (2); a damaged file a runtime one (1)
            raise UsageError(f"--resume: checkpoint {args.resume!r} does not exist")
        manifest = read_manifest(args.resume)
        try:
            saved = dict(manifest["config"]["run"])
            int(manifest["position"]["epoch"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"checkpoint {args.resume!r} holds no run options or position (not written by "
                                  "'train')") from None
        saved.setdefault("ortho", "householder")  # checkpoints from before --ortho used Householder QR
        saved.setdefault("init_spectrum", "halfnormal")  # and the half-normal initial spectrum
        saved.setdefault("state_policy", "transport-shared-t")  # and one Adam step count per factor
        saved.setdefault("tol_rule", "relative")  # and the relative tolerance
        saved.setdefault("theta", None)
        saved.setdefault("dataset", "mnist")  # checkpoints from before --dataset trained on MNIST
        saved.setdefault("augment", False)  # and checkpoints from before --augment without augmentation
        saved.setdefault("lowrank", None)  # and the builders' default low-rank layers
        for k, v in given.items():
            if v != saved.get(k):
                raise UsageError(f"--{k.replace('_', '-')} {v} differs from the checkpoint's {saved.get(k)}; "
                             "a resumed run keeps its options")
        run = dict(saved)
    else:
        run = {k: given.get(k) for k in RUN_OPTIONS}
        if run["dataset"] is None:
            run["dataset"] = "cifar10" if run["model"] in CIFAR_CLI_MODELS else DEFAULTS["dataset"]
        for k in ("model", "method", "optimizer", "ortho", "lr", "batch_size", "backend", "dtype", "seed", "validation",
                  "r_min", "init_spectrum", "state_policy", "tol_rule"):
            if run[k] is None:
                run[k] = DEFAULTS[k]
        if run["model"] == "mlp" and run["widths"] is None:
            run["widths"] = DEFAULTS["widths"]["mlp"]
        if run["method"] in ADAPTIVE_METHODS and run["tau"] is None:
            run["tau"] = DEFAULTS["tau"]
        run["compat_2022_truncation"] = bool(run["compat_2022_truncation"])
        run["dense_last"] = True if run["dense_last"] is None else run["dense_last"]
        run["augment"] = DEFAULTS["augment"][run["dataset"]] if run["augment"] is None else bool(run["augment"])
        run["validation"] = str(run["validation"])
    _check(run)
    return run


def _check(run) -> None:
    if run["model"] != "mlp" and run["widths"] is not None:
        raise UsageError("--widths is for --model mlp")
    if (run["model"] in CIFAR_CLI_MODELS) != (run["dataset"] != "mnist"):
        raise UsageError(f"--model {run['model']} does not fit --dataset {run['dataset']}: mlp/lenet5 train on mnist, "
                         f"{'/'.join(CIFAR_CLI_MODELS)} on cifar10/cifar100")
    if run["lowrank"] is not None and run["model"] not in CIFAR_CLI_MODELS:
        raise UsageError(f"--lowrank is for the CIFAR models ({'/'.join(CIFAR_CLI_MODELS)}); mlp/lenet5 take --rank "
                         "and --dense-last/--lowrank-last")
    if run["lowrank"] is not None and run["method"] == "dense":
        raise UsageError("--lowrank does not apply to --method dense (no low-rank layer)")
    if run["augment"] and run["dataset"] == "mnist":
        raise UsageError("--augment is for --dataset cifar10/cifar100 (crop and flip do not suit digits)")
    if run["model"] == "mlp":
        _parse_widths(run["widths"])
    _parse_validation(run["validation"])
    adaptive = run["method"] in ADAPTIVE_METHODS
    if run["tau"] is not None and not adaptive:
        raise UsageError(f"--tau applies to {'/'.join(ADAPTIVE_METHODS)}, not to --method {run['method']}")
    if run["tol_rule"] != "relative" and not (adaptive and run["theta"] is not None):
        raise UsageError(f"--tol-rule {run['tol_rule']} needs --method {'/'.join(ADAPTIVE_METHODS)} and --theta")
    if run["theta"] is not None and not (run["tol_rule"] != "relative" and math.isfinite(run["theta"]) and run["theta"] >= 0):
        raise UsageError(f"--theta (a finite number >= 0) applies to --tol-rule absolute/step, got {run['theta']}")
    if run["compat_2022_truncation"] and not adaptive:
        raise UsageError(f"--compat-2022-truncation applies to {'/'.join(ADAPTIVE_METHODS)} only")
    if run["tau"] is not None and not (math.isfinite(run["tau"]) and 0 <= run["tau"] < 1):
        raise UsageError(f"--tau must be in [0, 1) (it is relative: ϑ = τ‖σ‖), got {run['tau']}")
    if run["seed"] < 0:
        raise UsageError(f"--seed must be >= 0, got {run['seed']}")
    if not (math.isfinite(run["lr"]) and run["lr"] > 0):
        raise UsageError(f"--lr must be a finite positive number, got {run['lr']}")
    for k in ("batch_size", "rank", "r_min", "r_max", "subset", "test_subset"):
        if run[k] is not None and run[k] < 1:
            raise UsageError(f"--{k.replace('_', '-')} must be >= 1, got {run[k]}")
    if run["r_max"] is not None and run["r_max"] < run["r_min"]:
        raise UsageError(f"--r-max ({run['r_max']}) must be >= --r-min ({run['r_min']})")
    if run["method"] == "dense" and (run["rank"] is not None or run["r_max"] is not None):
        raise UsageError("--rank/--r-max do not apply to --method dense")
    _check_sizes(run)
    if run["backend"] not in available_backends():
        raise UsageError(f"--backend {run['backend']} is not available here (available: {available_backends()})")


def _check_sizes(run) -> None:
    """--validation, --subset and --test-subset against the data set's sizes, before any data is loaded."""
    sizes = DATASET_SIZES[run.get("dataset", "mnist")]
    n_train, n_test = sizes["train"], sizes["test"]
    k = validation_count(run)
    if k >= n_train:
        raise UsageError(f"--validation {run['validation']} leaves no training images ({n_train} in all); "
                     f"use at most {n_train - 1}")
    if run["subset"] is not None and run["subset"] > n_train - k:
        raise UsageError(f"--subset {run['subset']} is larger than the {n_train - k} training images left after "
                     f"--validation {run['validation']}")
    if run["test_subset"] is not None and run["test_subset"] > n_test:
        raise UsageError(f"--test-subset {run['test_subset']} is larger than the {n_test} test images")


def _layer_shapes(run) -> list:
    if run["model"] == "mlp":
        w = _parse_widths(run["widths"])
        return [(n_out, n_in) for n_in, n_out in zip(w[:-1], w[1:])]
    return list(LENET5_SHAPES)


def initial_ranks(run) -> list:
    """Initial rank per weight layer (None: dense), from --rank / DEFAULTS, capped at min(m, n) (r_max when adaptive)."""
    if run["model"] in CIFAR_CLI_MODELS:
        return None  # chosen per layer by the builder (dlrt_ref.nn.cifar_models: rank, or r_max = min(m, n)/2)
    shapes = _layer_shapes(run)
    if run["method"] == "dense":
        return [None] * len(shapes)
    ranks = []
    for k, (m, n) in enumerate(shapes):
        if k == len(shapes) - 1 and run["dense_last"]:
            ranks.append(None)
            continue
        cap = min(m, n)
        if run["method"] in ADAPTIVE_METHODS:
            r_max = min(run["r_max"] if run["r_max"] is not None else max(1, cap // 2), cap)
            r = run["rank"] if run["rank"] is not None else r_max
            ranks.append(max(1, min(r, r_max)))
        else:
            r = run["rank"] if run["rank"] is not None else DEFAULTS["initial_rank_fixed"]
            ranks.append(max(1, min(r, cap)))
    return ranks


def build_trainer(run):
    """The trainer (network + optimiser + method) for resolved run options."""
    dtype = np.dtype(run["dtype"])
    ranks = initial_ranks(run)
    kw = dict(ranks=ranks, backend=run["backend"], dtype=dtype, seed=run["seed"], spectrum=run["init_spectrum"])
    if run["model"] in CIFAR_CLI_MODELS:
        builder = CIFAR_MODELS[CIFAR_CLI_MODELS[run["model"]]]
        # --lowrank, else the builder's own choice (fc for VGG16/AlexNet, all for ResNet20/LeNet5); dense for
        # --method dense
        choice = "none" if run["method"] == "dense" else run.get("lowrank")
        net = builder(classes=100 if run["dataset"] == "cifar100" else 10, rank=run["rank"], backend=run["backend"],
                      dtype=dtype, seed=run["seed"], spectrum=run["init_spectrum"],
                      **({"lowrank": choice} if choice is not None else {}))
    else:
        net = mlp(_parse_widths(run["widths"]), **kw) if run["model"] == "mlp" else lenet5(**kw)
    opt = make_optimizer(run["optimizer"], run["lr"], state_policy=run["state_policy"])
    if run["method"] == "dense":
        return dense_trainer(net, opt)
    if run["method"] == "uv":
        return UVTrainer(net, opt)
    return DLRT(net, opt, method=run["method"], tau=run["tau"] if run["tau"] is not None else 0.0,
                r_min=run["r_min"], r_max=run["r_max"], compat_2022_truncation=run["compat_2022_truncation"],
                ortho=run["ortho"], tol_rule=run["tol_rule"], theta=run["theta"])


def mnist_path(data_dir):
    """The MNIST folder for ``--data-dir`` (None: ``$DLRT_REF_DATA_DIR`` or the shipped copy); UsageError if absent."""
    if data_dir is None:
        root, what = env_data_dir(), f"${DATA_DIR_ENV}"
        if root is None:
            return None
    else:
        root, what = Path(data_dir), "--data-dir"
    if not root.is_dir():
        raise UsageError(f"{what} {root} is not a folder")
    folder = mnist_folder(root)
    if folder is None and fashion_folder(root) == root:
        raise UsageError(f"{what} {root} holds Fashion-MNIST; train and evaluate use MNIST (its files in {root} or "
                     f"{root / 'mnist'})")
    if folder is None:
        raise UsageError(f"{what} {root} holds no MNIST IDX files (train-images-idx3-ubyte[.gz] and the other three, "
                     f"in it or in {root / 'mnist'})")
    return folder


def cifar_path(dataset, data_dir):
    """The CIFAR archive or folder for ``--data-dir`` (or ``$DLRT_REF_DATA_DIR``, the cache).

    Absent data: the loaders' one-line :class:`~dlrt_ref.data.idx.DataError` (exit 1) naming where to put it.
    """
    if data_dir is not None and not Path(data_dir).is_dir():
        archive, folder = CIFAR_ARCHIVES[dataset]
        raise UsageError(f"--data-dir {data_dir} is not a folder; create it and put {archive} "
                         f"(https://www.cs.toronto.edu/~kriz/cifar.html) or its extracted {folder}/ in it")
    if data_dir is not None:
        set_data_dir(data_dir)  # this process only: find_cifar and the error message look there
    found = find_cifar(dataset)
    if found is None:
        {"cifar10": load_cifar10, "cifar100": load_cifar100}[dataset]()  # raises the one-line DataError
    return found


def load_data(run, path=None, test_only=False):
    """The :class:`~dlrt_ref.data.splits.Dataset` of a run (``test_only``: a 10-image training split)."""
    if run.get("dataset", "mnist") != "mnist":  # CIFAR: (N, 3, 32, 32), no augmentation here
        loader = {"cifar10": load_cifar10, "cifar100": load_cifar100}[run["dataset"]]
        return loader(path, flatten=False, dtype=np.dtype(run["dtype"]),
                      validation=_parse_validation(run["validation"]), seed=run["seed"],
                      subset=10 if test_only else run["subset"], test_subset=run["test_subset"])
    return load_mnist(flatten=run["model"] == "mlp", dtype=np.dtype(run["dtype"]),
                      validation=_parse_validation(run["validation"]), seed=run["seed"],
                      subset=10 if test_only else run["subset"], test_subset=run["test_subset"], path=path)


def build(run, path=None):
    """(trainer, dataset) for resolved run options."""
    return build_trainer(run), load_data(run, path)


def make_augment(run, data):
    """The run's :class:`~dlrt_ref.train.augment.Augment` (None without ``augment``): the thesis's crop 4 and flip,
    normalised by the channel statistics of ``data.x_train`` (the training split actually used), seeded by ``seed``."""
    if not run.get("augment"):
        return None
    return Augment.for_training_set(data.x_train, pad=4, flip=True, seed=run["seed"])


def run(args) -> int:
    opts = resolve(args)
    epochs = args.epochs if args.epochs is not None else DEFAULTS["epochs"]
    log_every = args.log_every if args.log_every is not None else DEFAULTS["log_every"]
    factor = args.divergence_factor if args.divergence_factor is not None else DEFAULTS["divergence_factor"]
    if epochs < 0:
        raise UsageError(f"--epochs must be >= 0, got {epochs}")
    if log_every < 0 or (args.checkpoint_every is not None and args.checkpoint_every < 1):
        raise UsageError("--log-every must be >= 0 and --checkpoint-every >= 1")
    if not (math.isfinite(factor) and factor >= 0) or 0 < factor <= 1:
        raise UsageError(f"--divergence-factor must be 0 (off) or a finite number > 1, got {factor}")
    if args.resume:
        done = read_manifest(args.resume)["position"]["epoch"]  # readable: resolve() read it
        if epochs <= done:
            raise UsageError(f"--resume {args.resume} has completed {done} epoch(s); --epochs is the new total and must "
                         f"be more than {done} (got {epochs})")
    console.check_out(args)
    data_folder = mnist_path(args.data_dir) if opts["dataset"] == "mnist" else cifar_path(opts["dataset"], args.data_dir)
    if args.resume:  # read every array now (exit 1 on a damaged file), before the data is loaded
        load_checkpoint(args.resume, build_trainer(opts))
    if args.out:
        console.writable(Path(args.out))
    log = (lambda line: None) if args.quiet else None
    if args.quiet:
        log_every = 0
    else:
        sys.stderr.write(console.start_line(opts, epochs, args, data_folder, validation_count(opts),
                                            DATASET_SIZES[opts["dataset"]]) + "\n")
        sys.stderr.flush()
    try:
        trainer, data = build(opts, data_folder)
    except KeyboardInterrupt:
        raise KeyboardInterrupt("interrupted while loading the data, before training; no checkpoint was written")
    augment = make_augment(opts, data)
    config = {"command": "train", "run": opts, "initial_ranks": initial_ranks(opts),
              "fit": {"epochs": epochs, "batch_size": opts["batch_size"], "seed": opts["seed"],
                      "eval_batch": DEFAULTS["eval_batch"], "divergence_factor": factor},
              "threads": threads_info(), "data": str(data_folder) if data_folder is not None else "shipped"}
    if augment is not None:
        config["augment"] = augment.to_config()  # evaluate reads the normalisation from here
    hist = fit(trainer, data, epochs, opts["batch_size"], seed=opts["seed"], log_every=log_every,
               out_dir=args.out, checkpoint_every=args.checkpoint_every, resume=args.resume,
               eval_batch=DEFAULTS["eval_batch"], config=config, log=log, divergence_factor=factor or None,
               augment=augment)
    summary = hist.summary()
    if args.json:
        print(json.dumps(dict(summary, config=config, history=hist.epochs)))
    else:
        print(console.final_line(opts, summary, args.out))
    if hist.status != "finished":  # pragma: no cover - fit raises instead
        raise CommandError(f"the run ended with status {hist.status}: {hist.message}")
    return 0
