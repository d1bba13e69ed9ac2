r"""Parameter counts and compression rates under named definitions.

The compression rate of a method is

.. math:: \mathrm{c.r.} = 1 - \frac{\text{params}_\text{method}}{\text{params}_\text{dense}},

counted over **weights only** (no biases). The papers count
:math:`\text{params}_\text{method}` differently, so every count here is made
under a *named* definition, and every result in this package names the one it
uses (JSON keys such as ``cr_eval``, ``cr_train`` with ``cr_train_definition``).

For a low-rank layer of shape (m, n) = ``layer.shape`` (n_out × n_in; for a
convolution the kernel matrix c_out × c_in·k²) and rank r:

=====================  ==================================  =====================
definition             low-rank layer                      dense layer (m × n)
=====================  ==================================  =====================
``eval``               r(m + n)                            m n
``train-paper``        2r(m + n) + 4r²                     m n
``train-lenet``        r(m + n + r)                        m n
``thesis-test``        r(m + 1)                            m n
``thesis-train``       4r(m + n) + 8r²                     m n
``thesis-train-grads`` 5r(m + n) + 12r²                    2 m n
=====================  ==================================  =====================

A pruned (masked) dense layer, :mod:`dlrt_ref.nn.masked`, counts its nonzeros ``nnz`` under
``eval`` and ``thesis-test`` (what the trained network stores, biases excluded as
everywhere) and m n under the training definitions (it trains as a dense m×n array);
so ``eval`` compares pruning (nonzeros) with factorisation (r(m+n)) at equal footing,
and :math:`\text{params}_\text{dense} = \sum m n` over all weight layers (``2 Σ m n``
for ``thesis-train-grads``, which counts every weight's gradient too).

Sources
-------
* ``eval`` and ``train-paper``: Schotthöfer et al. 2022 (NeurIPS), fully connected
  MNIST table — the evaluation network stores U, V (S is absorbed); training
  holds the augmented factors Û (m×2r), V̂ (n×2r) and the 2r×2r core.
  Checked in the tests: d = 500, τ = 0.07, ranks [52, 67, 73, 72] give 75.26 %
  and 44.78 %.
* ``train-lenet``: the same paper's LeNet5 table, U, V and S: r(m+n) + r².
* ``thesis-test``: Zangrando 2022, LeNet5 τ table, column "c.r. test". The
  thesis's count is Σ r(n_out + 1) — it leaves out the V factor. It
  reproduces the published "params test" exactly, e.g. ranks [10, 20, 48] with
  the dense classifier → 30 278 params, c.r. 93.0 %. Reported only to compare
  with the thesis; ``eval`` is the honest count (81.7 % for the same ranks).
* ``thesis-train`` and ``thesis-train-grads``: the thesis's "params train"
  (Zangrando 2022; the counting routine of the DLRT-Net code that produced its
  tables) for a *rank-adaptive* layer holds K (m×r), L (n×r), U (m×r),
  V (n×r), Û (m×2r), V̂ (n×2r), Ŝ (2r×2r), M̂ and N̂ (2r×r each):
  4r(m+n) + 8r². "With gradients" adds a gradient for each of K, L and Ŝ:
  5r(m+n) + 12r², and counts dense weights twice (weight + gradient) both in
  the method and in the dense reference. Checked in the tests against the
  published "params train" (with gradients): ranks [10, 20, 48] → 412 898,
  c.r. 52.0 %; [10, 23, 62] → 532 176, 38.2 %. The thesis counts fixed-rank
  layers without Û, V̂; we use the adaptive count for every low-rank layer and
  say so here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = [
    "WeightShape", "DEFINITIONS", "weight_table", "count_params", "dense_count",
    "compression_rate", "compression_rates", "param_counts", "cr_keys",
]


@dataclass(frozen=True)
class WeightShape:
    """One weight layer: shape (m, n) = (n_out, n_in) and rank (None for a dense layer)."""

    m: int
    n: int
    rank: Optional[int] = None
    nnz: Optional[int] = None  # a masked (pruned) dense layer: its unpruned weights (see PRUNED_COUNTS)


def _eval(m, n, r):
    return r * (m + n)


def _train_paper(m, n, r):
    return 2 * r * (m + n) + 4 * r * r


def _train_lenet(m, n, r):
    return r * (m + n + r)


def _thesis_test(m, n, r):
    return r * (m + 1)


def _thesis_train(m, n, r):
    return 4 * r * (m + n) + 8 * r * r


def _thesis_train_grads(m, n, r):
    return 5 * r * (m + n) + 12 * r * r


# name -> (count of a low-rank layer (m, n, r), factor on m·n for dense layers and the dense reference)
DEFINITIONS = {
    "eval": (_eval, 1),
    "train-paper": (_train_paper, 1),
    "train-lenet": (_train_lenet, 1),
    "thesis-test": (_thesis_test, 1),
    "thesis-train": (_thesis_train, 1),
    "thesis-train-grads": (_thesis_train_grads, 2),
}


# definitions that count what a trained network stores: a pruned layer counts its nonzeros there; the training
# definitions count it as the dense layer it is during training (W, its gradient and state are m×n arrays)
PRUNED_COUNTS = ("eval", "thesis-test")


def _definition(name):
    try:
        return DEFINITIONS[name]
    except KeyError:
        raise ValueError(f"unknown parameter-count definition {name!r}; expected one of {sorted(DEFINITIONS)}") from None


def weight_table(net) -> list:
    """The weight layers of a network as :class:`WeightShape` rows, in forward order.

    Low-rank layers (``layer.lowrank``) give (m, n, rank); dense layers with a
    weight ``params["W"]`` (Dense, Conv2d) give (m, n, None). Biases are not
    weights and are not counted.
    """
    rows = []
    for layer in net.flat_layers() if hasattr(net, "flat_layers") else net.layers:
        if getattr(layer, "lowrank", False):
            m, n = layer.shape
            rows.append(WeightShape(int(m), int(n), int(layer.rank)))
        elif "W" in getattr(layer, "params", {}):
            m, n = layer.shape
            rows.append(WeightShape(int(m), int(n), None, layer.nnz() if getattr(layer, "masked", False) else None))
    return rows


def _rows(net_or_rows):
    if hasattr(net_or_rows, "layers"):
        return weight_table(net_or_rows)
    return [r if isinstance(r, WeightShape) else WeightShape(*r) for r in net_or_rows]


def count_params(net_or_rows, definition: str) -> int:
    """Weight count of a network (or of :class:`WeightShape` rows / (m, n, r) tuples) under ``definition``."""
    per_layer, dense_factor = _definition(definition)
    total = 0
    for w in _rows(net_or_rows):
        if w.rank is not None:
            total += per_layer(w.m, w.n, w.rank)
        elif w.nnz is not None and definition in PRUNED_COUNTS:
            total += w.nnz
        else:
            total += dense_factor * w.m * w.n
    return int(total)


def dense_count(net_or_rows, definition: str = "eval") -> int:
    """The dense reference: Σ m n over all weight layers (2 Σ m n for ``thesis-train-grads``)."""
    _, dense_factor = _definition(definition)
    return int(sum(dense_factor * w.m * w.n for w in _rows(net_or_rows)))


def compression_rate(net_or_rows, definition: str) -> float:
    """c.r. = 1 − params/params_dense under ``definition`` (a fraction, not %; may be negative)."""
    return 1.0 - count_params(net_or_rows, definition) / dense_count(net_or_rows, definition)


def cr_keys(definition: str) -> str:
    """JSON key of a definition's compression rate: ``"eval"`` -> ``"cr_eval"``, ``"train-paper"`` -> ``"cr_train_paper"``."""
    _definition(definition)
    return "cr_" + definition.replace("-", "_")


def compression_rates(net_or_rows) -> dict:
    """``{cr_key(definition): c.r.}`` for every definition."""
    rows = _rows(net_or_rows)
    return {cr_keys(d): compression_rate(rows, d) for d in DEFINITIONS}


def param_counts(net_or_rows) -> dict:
    """``{definition: params}`` for every definition, plus ``"dense"`` (Σ m n)."""
    rows = _rows(net_or_rows)
    out = {d: count_params(rows, d) for d in DEFINITIONS}
    out["dense"] = dense_count(rows)
    return out
