"""Pruning and budgeted SVD truncation (train/pruning.py) and their parameter counts (train/accounting.py)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlrt_ref.nn import Dense, MaskedConv2d, MaskedDense, lenet5, mlp
from dlrt_ref.train import accounting as acc
from dlrt_ref.train import pruning as P
from dlrt_ref.train.baselines import dense_trainer, svd_truncate
from dlrt_ref.train.optim import Adam


def test_global_magnitude_masks_keep_the_largest_entries_over_all_layers():
    net = mlp([6, 5, 4, 3], seed=0)
    keep = 17
    masks = P.magnitude_masks(net, keep)
    assert masks[-1] is None  # the classifier is not compressed by default
    kept = np.concatenate([np.abs(net.layers[k].params["W"])[m] for k, m in zip(P.weight_layers(net), masks) if m is not None])
    dropped = np.concatenate([np.abs(net.layers[k].params["W"])[~m] for k, m in zip(P.weight_layers(net), masks)
                              if m is not None])
    assert kept.size == keep and kept.min() >= dropped.max()  # global, not per layer
    # one layer's weights scaled up takes the whole budget: the threshold is global
    net.layers[0].params["W"] = net.layers[0].params["W"] * 100
    masks = P.magnitude_masks(net, 20)
    assert masks[0].sum() == 20 and masks[1].sum() == 0


@settings(max_examples=10, deadline=None)
@given(widths=st.lists(st.integers(2, 9), min_size=3, max_size=5), frac=st.floats(0, 1), seed=st.integers(0, 99))
def test_pruned_count_is_the_budget(widths, frac, seed):
    net = mlp(widths, seed=seed)
    rows = acc.weight_table(net)
    prunable = sum(r.m * r.n for r in rows[:-1])
    keep = int(frac * prunable)
    pruned = P.prune(net, keep)
    classifier = rows[-1].m * rows[-1].n
    assert acc.count_params(pruned, "eval") == keep + classifier  # nonzeros + the dense classifier
    assert acc.count_params(pruned, "thesis-test") == keep + classifier
    assert acc.count_params(pruned, "train-paper") == acc.dense_count(net)  # trains as a dense net
    assert acc.dense_count(pruned) == acc.dense_count(net)
    assert all(isinstance(l, MaskedDense) for l in pruned.layers[:-1:2]) and isinstance(pruned.layers[-1], Dense)


def test_prune_keeps_trained_values_or_rewinds_to_the_initial_ones():
    net0 = mlp([8, 6, 3], seed=1)
    net = net0.copy()
    rng = np.random.default_rng(0)
    trainer = dense_trainer(net, Adam(0.05))
    x = rng.standard_normal((32, 8)).astype(np.float32)
    for _ in range(5):
        trainer.step(x, rng.integers(0, 3, 32))
    one_shot, rewound = P.prune(net, 20), P.prune(net, 20, rewind=net0)
    M = one_shot.layers[0].mask.astype(bool)
    np.testing.assert_array_equal(rewound.layers[0].mask, one_shot.layers[0].mask)  # mask from the trained weights
    np.testing.assert_array_equal(one_shot.layers[0].params["W"][M], net.layers[0].params["W"][M])
    np.testing.assert_array_equal(rewound.layers[0].params["W"][M], net0.layers[0].params["W"][M])
    np.testing.assert_array_equal(rewound.layers[0].params["b"], net0.layers[0].params["b"])
    assert np.all(one_shot.layers[0].params["W"][~M] == 0) and np.all(rewound.layers[0].params["W"][~M] == 0)
    assert np.any(net.layers[0].params["W"][~M] != 0)  # the input network is left unchanged
    with pytest.raises(ValueError, match="keep must be an integer"):
        P.prune(net, 10**6)


def test_lenet5_prunes_its_convolutions_too():
    net = lenet5(seed=0)
    pruned = P.prune(net, 20000)
    assert [type(pruned.layers[k]).__name__ for k in P.weight_layers(pruned)] == [
        "MaskedConv2d", "MaskedConv2d", "MaskedDense", "Dense"]
    assert isinstance(pruned.layers[0], MaskedConv2d)
    assert acc.count_params(pruned, "eval") == 20000 + 10 * 500
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    assert pruned.forward(x).shape == (2, 10)


@pytest.mark.parametrize("frac", [0.05, 0.2, 0.5])
def test_uniform_and_svd_ranks_land_within_the_budget(frac):
    net = mlp([784, 100, 100, 10], seed=0)
    budget = int(frac * acc.dense_count(net))
    for ranks in (P.uniform_ranks(net, budget), P.svd_ranks(net, budget)):
        assert ranks[-1] is None and all(r >= 1 for r in ranks[:-1])
        low = svd_truncate(net, ranks)
        count = acc.count_params(low, "eval")
        assert count == sum(r * (m + n) for r, (m, n) in zip(ranks[:-1], [(100, 784), (100, 100)])) + 1000
        assert count <= budget
        # within one rank step of the budget: one more rank in any layer would not fit
        assert budget - count < 884 + 200 or any(r == min(m, n, m * n // (m + n)) for r, (m, n)
                                                 in zip(ranks[:-1], [(100, 784), (100, 100)]))
    uni = P.uniform_ranks(net, budget)
    assert uni[0] == uni[1] or uni[1] == 50  # one rank, capped at mn/(m+n) = 50 in the 100×100 layer


def test_svd_ranks_favour_the_layer_with_the_decaying_spectrum():
    rng = np.random.default_rng(0)
    net = mlp([60, 60, 60, 5], seed=0)
    U, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    V, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    net.layers[0].params["W"] = ((U * 0.5 ** np.arange(60)) @ V.T).astype(np.float32)  # rank-few energy
    ranks = P.svd_ranks(net, 20 * 120 + 300)
    assert ranks[1] > 3 * ranks[0]
    with pytest.raises(ValueError, match="below rank 1"):
        P.svd_ranks(net, 100)
    with pytest.raises(ValueError, match="below rank 1"):
        P.uniform_ranks(net, 100)
