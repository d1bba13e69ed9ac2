"""Shared pieces of the CIFAR experiments ([T] Zangrando 2022, ch. 5): data (real or synthetic) and models.

``dataset="synthetic"`` is a tiny data set **in CIFAR format** (uint8 (N, 3, 32, 32), 10 classes, split and
scaled like the real loaders), generated here for the quick presets and the tests only: each class is a
smooth random mean image plus noise. It says nothing about CIFAR and is never presented as a result.
``cifar10``/``cifar100`` are the official archives (:mod:`dlrt_ref.data.cifar`): not shipped; they are looked
for in ``--data-dir`` / ``$DLRT_REF_DATA_DIR`` and the cache, and their absence is the loaders' one-line
:class:`~dlrt_ref.data.idx.DataError`, raised by :func:`require_data` before any run starts.
Augmentation (:func:`make_augment`): the thesis's random crop with padding 4, horizontal flip and per-channel
normalisation (:mod:`dlrt_ref.train.augment`), handed to :func:`~dlrt_ref.train.loop.fit` through
``train_record(..., augment=)``; the presets say whether they use it (``augment``) and the JSON records it.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.data.cifar import find_cifar, load_cifar10, load_cifar100
from dlrt_ref.data.splits import make_dataset
from dlrt_ref.nn.cifar_models import CIFAR_MODELS
from dlrt_ref.train.augment import Augment

__all__ = ["SYNTHETIC_NOTE", "synthetic_cifar", "load_data", "require_data", "build_model", "classes_of",
           "make_augment", "AUGMENTATION"]

SYNTHETIC_NOTE = ("SYNTHETIC data in CIFAR format (generated in code, tests only): not CIFAR, not a result; "
                  "the real tables need --preset full/paper with the CIFAR archives in --data-dir")
_LOADERS = {"cifar10": load_cifar10, "cifar100": load_cifar100}


def classes_of(dataset: str) -> int:
    return 100 if dataset == "cifar100" else 10


def synthetic_cifar(n_train=200, n_test=100, classes=10, seed=0, subset=None, test_subset=None):
    """A learnable CIFAR-format :class:`~dlrt_ref.data.splits.Dataset`: smooth class means (8×8 upsampled) + noise."""
    rng = np.random.default_rng([seed, 17])
    means = np.kron(rng.uniform(40, 215, (classes, 3, 8, 8)), np.ones((1, 1, 4, 4)))  # (classes, 3, 32, 32)

    def draw(n):
        y = np.arange(n) % classes
        x = means[y] + rng.normal(0, 40, (n, 3, 32, 32))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    return make_dataset("synthetic-cifar", x_tr, y_tr, x_te, y_te, flatten=False, dtype=np.float32, validation=0,
                        seed=seed, subset=subset, test_subset=test_subset,
                        classes=tuple(str(c) for c in range(classes)), info={"note": SYNTHETIC_NOTE})


def require_data(dataset: str) -> None:
    """Nothing for ``synthetic``; for CIFAR the loaders' one-line DataError (where to put it) if it is absent."""
    if dataset != "synthetic" and find_cifar(dataset) is None:
        _LOADERS[dataset]()  # finds nothing: raises the one-line DataError naming the folders


def load_data(dataset: str, seed: int, subset, test_subset):
    """The (N, 3, 32, 32) Dataset of ``dataset`` (``synthetic``, ``cifar10`` or ``cifar100``)."""
    if dataset == "synthetic":
        return synthetic_cifar(seed=seed, subset=subset, test_subset=test_subset)
    return _LOADERS[dataset](flatten=False, seed=seed, subset=subset, test_subset=test_subset)


AUGMENTATION = ("random crop (zero padding 4), horizontal flip, per-channel normalisation by the training "
                "split's mean and std ([T] ch. 5; dlrt_ref.train.augment), seeded by the run's seed")


def record_header(cfg, lr: float, batch: int) -> dict:
    """The fields every CIFAR experiment's JSON starts with: the data (and whether it is the synthetic
    stand-in), models, width, seeds, optimiser and augmentation."""
    synthetic = cfg["dataset"] == "synthetic"
    return {"dataset": cfg["dataset"], "synthetic": synthetic,
            "note": SYNTHETIC_NOTE if synthetic else "real CIFAR data", "models": cfg["models"],
            "width": cfg["width"], "seeds": cfg["seeds"], "optimizer": "sgd", "lr": lr, "batch": batch,
            "augmentation": AUGMENTATION if cfg["augment"] else None}


def make_augment(data, seed: int, on: bool):
    """The run's :class:`~dlrt_ref.train.augment.Augment` for ``data``'s training split (None when ``on`` is False)."""
    return Augment.for_training_set(data.x_train, pad=4, flip=True, seed=seed) if on else None


def build_model(model: str, dataset: str, lowrank, width: float, seed: int, backend: str, rank=None):
    """``dlrt_ref.nn.cifar_models.CIFAR_MODELS[model]`` for ``dataset``'s classes."""
    return CIFAR_MODELS[model](classes=classes_of(dataset), lowrank=lowrank, rank=rank, width=width, seed=seed,
                               backend=backend)
