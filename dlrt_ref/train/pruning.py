r"""Small networks at a parameter budget, by pruning or by truncated SVD of a trained dense network.

The baselines DLRT is compared with at equal parameters (issue 16 §5; the
argument of [P]'s abstract, Schotthöfer et al. 2022, that DLRT finds a small network
*during* training where pruning needs a trained dense one first):

* **Global magnitude pruning** (Han et al. 2015), one-shot: after dense
  training, keep the ``keep`` weights of largest |w| over all prunable layers
  together, set the others to zero for good (:mod:`dlrt_ref.nn.masked`), then
  retrain the masked network. :func:`prune` with ``rewind=net0`` instead puts
  the kept weights back to their values in ``net0`` (the initial network: the
  lottery-ticket rewinding of Frankle & Carbin 2019, one round, no iteration).
* **SVD truncation** of a trained dense network (Eckart–Young), with ranks
  chosen to land on the budget (:func:`svd_ranks`), optionally retrained as
  fixed-rank DLRT (``DLRT(net, opt, method="bug")`` on
  :func:`~dlrt_ref.train.baselines.svd_truncate`'s network).
* **Uniform ranks** for the factorised networks trained from scratch (fixed-rank
  DLRT, vanilla UVᵀ): :func:`uniform_ranks`.

Budgets are counted with :mod:`dlrt_ref.train.accounting`'s ``eval``
definition: weights only (no biases), a factorised layer r(m+n), a pruned layer
its nonzeros, a dense layer m n. The layers not compressed (``compress`` False,
e.g. the classifier) are dense in every method and count m n.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.backend import to_numpy
from dlrt_ref.nn.conv import Conv2d
from dlrt_ref.nn.layers import Dense
from dlrt_ref.nn.masked import masked_copy
from dlrt_ref.nn.network import Sequential, copy_layer

__all__ = ["weight_layers", "default_compress", "magnitude_masks", "prune", "uniform_ranks", "svd_ranks",
           "factorised_count"]


def weight_layers(net) -> list:
    """Indices into ``net.layers`` of the dense weight layers (Dense, Conv2d and their masked forms), in order."""
    return [k for k, l in enumerate(net.layers) if isinstance(l, (Dense, Conv2d))]


def default_compress(net) -> list:
    """One bool per weight layer: every layer but the last (the classifier stays dense, as in [P] and [T])."""
    n = len(weight_layers(net))
    return [k < n - 1 for k in range(n)]


def _check_compress(net, compress):
    slots = weight_layers(net)
    compress = default_compress(net) if compress is None else [bool(c) for c in compress]
    if len(compress) != len(slots):
        raise ValueError(f"compress: one bool per weight layer ({len(slots)}), got {len(compress)}")
    return slots, compress


def magnitude_masks(net, keep: int, compress=None) -> list:
    """Global magnitude pruning masks: the ``keep`` largest |W_ij| over the compressed layers together.

    Returns one host bool array per weight layer (None for a layer not compressed). Ties at the
    threshold are broken by position (a stable sort), so exactly ``keep`` entries are kept.
    """
    slots, compress = _check_compress(net, compress)
    weights = [to_numpy(net.layers[k].params["W"]) for k, c in zip(slots, compress) if c]
    total = sum(w.size for w in weights)
    if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or not 0 <= keep <= total:
        raise ValueError(f"magnitude_masks: keep must be an integer in [0, {total}], got {keep!r}")
    flat = np.concatenate([np.abs(w).ravel() for w in weights])  # (Σ m n,)
    order = np.argsort(-flat, kind="stable")  # largest first, ties by position
    chosen = np.zeros(total, dtype=bool)
    chosen[order[:keep]] = True
    masks, start = [], 0
    for c, k in zip(compress, slots):
        if not c:
            masks.append(None)
            continue
        shape = net.layers[k].params["W"].shape
        size = int(np.prod(shape))
        masks.append(chosen[start : start + size].reshape(shape))
        start += size
    return masks


def prune(net, keep: int, compress=None, rewind=None) -> Sequential:
    """A pruned copy of ``net`` (left unchanged): the compressed layers become masked layers keeping ``keep`` weights.

    ``rewind``: a network of the same architecture (the one training started from); the kept
    weights and all biases of the pruned layers are reset to its values (lottery-ticket
    rewinding, Frankle & Carbin 2019). Default None: one-shot pruning, the trained values are kept.
    """
    slots, compress = _check_compress(net, compress)
    masks = magnitude_masks(net, keep, compress)
    new = Sequential([copy_layer(l) for l in net.layers])
    for k, mask in zip(slots, masks):
        if mask is None:
            continue
        layer = new.layers[k]
        if rewind is not None:
            src = rewind.layers[k]
            if not isinstance(src, type(layer)) or src.params["W"].shape != layer.params["W"].shape:
                raise ValueError(f"prune: rewind network differs from net at layer {k}: {src!r} vs {layer!r}")
            layer.params = {name: a.copy() for name, a in src.params.items()}
        new.layers[k] = masked_copy(layer, layer.backend.asarray(mask, layer.dtype))
    return new


def _shapes(net, compress):
    slots, compress = _check_compress(net, compress)
    return [tuple(int(s) for s in net.layers[k].shape) for k in slots], compress


def _cap(m, n) -> int:
    """Largest useful rank: at most min(m, n), and r(m+n) ≤ m n (a factorisation never costs more than dense)."""
    return max(1, min(m, n, (m * n) // (m + n)))


def factorised_count(shapes, ranks) -> int:
    """``eval`` count: Σ r(m+n) over factorised layers (rank int) + m n over dense ones (rank None)."""
    return int(sum(m * n if r is None else r * (m + n) for (m, n), r in zip(shapes, ranks)))


def uniform_ranks(net, budget: int, compress=None) -> list:
    """One rank for every compressed layer (capped per layer by :func:`_cap`), the largest whose ``eval`` count
    is within ``budget``; None for the layers kept dense. Refuses a budget below rank 1 everywhere."""
    shapes, compress = _shapes(net, compress)

    def ranks_at(r):
        return [min(r, _cap(m, n)) if c else None for (m, n), c in zip(shapes, compress)]

    if factorised_count(shapes, ranks_at(1)) > budget:
        raise ValueError(f"uniform_ranks: budget {budget} is below rank 1 in every compressed layer "
                         f"({factorised_count(shapes, ranks_at(1))} weights)")
    r, r_top = 1, max(_cap(m, n) for (m, n), c in zip(shapes, compress) if c)
    while r < r_top and factorised_count(shapes, ranks_at(r + 1)) <= budget:
        r += 1
    return ranks_at(r)


def svd_ranks(net, budget: int, compress=None) -> list:
    r"""Ranks of a trained network's compressed layers for its truncated SVD to fit ``budget`` (``eval``).

    Greedy over the singular values of all compressed layers together: each step keeps the
    next singular value with the largest relative energy per weight,
    :math:`(\sigma_i / \|W_\ell\|_F)^2 / (m_\ell + n_\ell)`, while the count stays within the
    budget (every compressed layer keeps rank ≥ 1, capped as in :func:`uniform_ranks`). Within a
    layer the values are taken in order, so the result is a rank per layer; by Eckart–Young it
    minimises Σ_ℓ ‖W_ℓ − W_ℓ,r‖²_F/‖W_ℓ‖²_F among rank choices of the same cost up to the last
    partial step. None for the layers kept dense.
    """
    shapes, compress = _shapes(net, compress)
    slots = weight_layers(net)
    ranks = [1 if c else None for c in compress]
    if factorised_count(shapes, ranks) > budget:
        raise ValueError(f"svd_ranks: budget {budget} is below rank 1 in every compressed layer")
    gains = {}
    for j, (k, c) in enumerate(zip(slots, compress)):
        if c:
            s = np.linalg.svd(to_numpy(net.layers[k].params["W"]).astype(np.float64), compute_uv=False)
            gains[j] = (s / np.linalg.norm(s)) ** 2 / sum(shapes[j])  # per weight, σ descending
    used = factorised_count(shapes, ranks)
    while True:
        best, best_gain = None, -1.0
        for j, g in gains.items():
            m, n = shapes[j]
            if ranks[j] < _cap(m, n) and used + m + n <= budget and g[ranks[j]] > best_gain:
                best, best_gain = j, g[ranks[j]]
        if best is None:
            return ranks
        ranks[best] += 1
        used += sum(shapes[best])
