"""Shared pieces of the training experiments: one run → a compact JSON record.

Every training experiment ([P] Schotthöfer et al. 2022, [T] Zangrando 2022)
trains with :func:`dlrt_ref.train.loop.fit` and keeps, per epoch, the test and
validation accuracy/loss, the ranks, the parameter counts and compression
rates under every named definition of :mod:`dlrt_ref.train.accounting`, and
the median ms per step. :func:`best_epoch` picks the row the way the thesis
does (minimum validation loss) or the last epoch.
"""
from __future__ import annotations

import time

import numpy as np

from dlrt_ref.data import load_fashion_mnist, load_mnist
from dlrt_ref.experiments.budget import run_done
from dlrt_ref.train.loop import fit

__all__ = ["train_record", "best_epoch", "mean_std", "load_dataset"]


def load_dataset(name: str, flatten: bool, validation, seed: int, subset, test_subset):
    """MNIST or Fashion-MNIST (shipped / cached copies) as a :class:`~dlrt_ref.data.splits.Dataset`."""
    loader = {"mnist": load_mnist, "fashion_mnist": load_fashion_mnist}[name]
    return loader(flatten=flatten, validation=validation, seed=seed, subset=subset, test_subset=test_subset)


def train_record(trainer, data, epochs: int, batch: int, seed: int, tag: str, augment=None) -> dict:
    """Train with :func:`~dlrt_ref.train.loop.fit`; return per-epoch lists (JSON-able).

    Keys: ``test_acc``, ``test_loss``, ``val_acc``, ``val_loss``, ``train_loss``,
    ``ranks`` (per epoch, list per low-rank layer), ``cr`` (per epoch, dict of
    every named c.r.), ``params`` (per epoch, dict), ``ms_per_step`` (median per
    epoch), ``seconds`` (wall time of the run). ``augment``: passed to ``fit`` (the CIFAR experiments'
    :class:`~dlrt_ref.train.augment.Augment`; None: the data as they are).
    """
    t0 = time.perf_counter()
    hist = fit(trainer, data, epochs, batch, seed=seed, log_every=0,
               log=lambda line: print(f"[{tag}] {line}", flush=True), augment=augment)
    E = hist.epochs
    seconds = time.perf_counter() - t0
    run_done(tag, seconds)
    return {
        "test_acc": [e["test_acc"] for e in E], "test_loss": [e["test_loss"] for e in E],
        "val_acc": [e["val_acc"] for e in E], "val_loss": [e["val_loss"] for e in E],
        "train_loss": [e["train_loss"] for e in E], "ranks": [e["ranks"] for e in E],
        "cr": [e["cr"] for e in E], "params": [e["params"] for e in E],
        "ms_per_step": [e["ms_per_step"] for e in E], "seconds": seconds,
    }


def best_epoch(rec: dict, by: str = "val_loss") -> int:
    """Index of the chosen epoch: minimum validation loss ([T]), or the last epoch (``by="last"``)."""
    if by == "last" or not rec.get(by) or rec[by][0] is None:
        return len(rec["test_acc"]) - 1
    return int(np.argmin(rec[by]))


def mean_std(values) -> tuple:
    """(mean, std) with ddof=0 of a list of floats (std 0 for one value)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std())


def band(values) -> tuple:
    """(mean, std with ddof = 1) of a list of numbers, for seed bands; std None for a single value."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if a.size > 1 else None)
