"""BatchNorm, Dropout, global average pooling and residual blocks: float64 gradient checks,
modes, the per-step mask/statistics rule, and their place in DLRT, copies and checkpoints."""
import numpy as np
import pytest

from dlrt_ref.nn import (BatchNorm1d, BatchNorm2d, Conv2d, Dense, Dropout, Flatten, GlobalAvgPool2d, LowRankConv2d,
                         LowRankLinear, ReLU, Residual, Sequential, SoftmaxCrossEntropy, Tanh)
from dlrt_ref.nn import gradcheck as gc
from dlrt_ref.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.loop import evaluate
from dlrt_ref.train.optim import make_optimizer

F64 = dict(dtype=np.float64)


def _perturbed_bn(bn, rng):
    """Non-trivial γ, β and running statistics, so that no term of the backward is hidden by γ = 1, β = 0."""
    C = bn.channels
    bn.params = {"gamma": rng.uniform(0.5, 2, C), "beta": rng.standard_normal(C)}
    bn.state = {"running_mean": rng.standard_normal(C), "running_var": rng.uniform(0.5, 2, C)}
    return bn


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_batchnorm_float64_gradient_check(rng, kind, training):
    bn = _perturbed_bn(BatchNorm1d(4, **F64) if kind == "1d" else BatchNorm2d(3, **F64), rng)
    bn.training = training
    x = rng.standard_normal((5, 4) if kind == "1d" else (4, 3, 3, 3)) * 2 + 0.5
    gc.check_layer(bn, x, seed=3, rtol=1e-6, h=1e-4, taylor_h0=1e-2)


def test_batchnorm_normalises_in_training_and_uses_running_statistics_in_eval(rng):
    bn = BatchNorm2d(3, **F64)
    x = rng.standard_normal((6, 3, 4, 4)) * 3 + 2
    y = bn.forward(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)  # ε = 1e-5
    N = 6 * 16
    np.testing.assert_allclose(bn.state["running_mean"], 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(bn.state["running_var"], 0.9 + 0.1 * x.var(axis=(0, 2, 3)) * N / (N - 1), rtol=1e-12)
    bn.training = False
    rm, rv = bn.state["running_mean"], bn.state["running_var"]
    np.testing.assert_allclose(bn.forward(x), (x - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5))
    assert bn.state["running_mean"] is rm  # eval leaves the statistics alone


def test_batchnorm_updates_running_statistics_once_per_step(rng):
    bn = BatchNorm1d(2, **F64)
    x = rng.standard_normal((8, 2))
    bn.begin_step(0)
    bn.forward(x)
    after_first = dict(bn.state)
    bn.forward(x + 5)  # a second pass of the same step (bug, ksl)
    assert all(bn.state[k] is after_first[k] for k in after_first)
    bn.begin_step(1)
    bn.forward(x)
    assert not np.allclose(bn.state["running_mean"], after_first["running_mean"])


def test_dropout_mask_is_fixed_per_step_and_identity_in_eval(rng):
    d = Dropout(0.5, seed=7)
    x = rng.standard_normal((50, 40))
    y0 = d.forward(x)
    np.testing.assert_array_equal(d.forward(x), y0)  # same step: same mask
    kept = y0 != 0
    np.testing.assert_allclose(y0[kept], 2 * x[kept])  # inverted: kept entries scaled by 1/(1-p)
    assert 0.4 < kept.mean() < 0.6
    d.begin_step(1)
    assert not np.array_equal(d.forward(x) != 0, kept)  # a new step draws a new mask
    d.begin_step(0)
    np.testing.assert_array_equal(d.forward(x), y0)  # the mask is a function of (seed, step)
    d.training = False
    assert d.forward(x) is x and d.backward(x) is x


def test_dropout_and_global_pool_float64_gradient_checks(rng):
    gc.check_layer(Dropout(0.3, seed=1), rng.standard_normal((4, 6)), seed=2, rtol=1e-7, h=1e-6, taylor_h0=1e-4)
    gc.check_layer(GlobalAvgPool2d(), rng.standard_normal((3, 2, 4, 5)), seed=4, rtol=1e-7, h=1e-6, taylor_h0=1e-4)


def test_global_avgpool_values():
    x = np.arange(2 * 3 * 2 * 2, dtype=float).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(GlobalAvgPool2d().forward(x), x.mean(axis=(2, 3)))


def _block_net(rng, projection):
    g = np.random.default_rng(5)
    c_out, stride = (4, 2) if projection else (3, 1)
    branch = [LowRankConv2d(3, c_out, 3, 2, stride=stride, padding=1, seed=g, **F64), BatchNorm2d(c_out, **F64), Tanh(),
              Conv2d(c_out, c_out, 3, padding=1, seed=g, **F64), BatchNorm2d(c_out, **F64)]
    short = [Conv2d(3, c_out, 1, stride=stride, seed=g, **F64), BatchNorm2d(c_out, **F64)] if projection else None
    for layer in branch + (short or []):
        if isinstance(layer, BatchNorm2d):
            _perturbed_bn(layer, rng)
    stem = Conv2d(3, 3, 1, seed=g, **F64)  # a layer before the block: its gradient passes through both paths
    return Sequential([stem, Residual(branch, short), Tanh(), GlobalAvgPool2d(),
                       LowRankLinear(c_out, 3, 2, activation="linear", seed=g, **F64)])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("projection", [False, True])
def test_residual_block_network_float64_gradient_check(rng, projection, training):
    net = _block_net(rng, projection).train(training)
    x = rng.standard_normal((4, 3, 6, 6))
    labels = np.array([0, 1, 2, 1])
    # in training mode the bias of a layer feeding a BatchNorm has gradient exactly 0 (the batch mean removes
    # it), which the per-entry check cannot compare relatively: there the directional and Taylor checks
    # (all coordinates at once) do the work; in eval mode every entry is checked too
    gc.check_network(net, SoftmaxCrossEntropy(), x, labels, seed=1, rtol=1e-6, n_entries=0 if training else 2)


def test_layers_inside_blocks_are_found_copied_and_integrated(rng):
    net = _block_net(rng, projection=True)
    block = net.layers[1]
    assert net.lowrank_layers() == [block.branch[0], net.layers[4]]
    assert {id(l) for l, _ in net.dense_params()} >= {id(block.branch[1]), id(block.shortcut[0])}
    twin = net.copy()
    twin.layers[1].branch[0].S[0, 0] += 1.0
    twin.layers[1].shortcut[1].state["running_mean"][0] += 1.0
    assert block.branch[0].S[0, 0] != twin.layers[1].branch[0].S[0, 0]
    assert block.shortcut[1].state["running_mean"][0] != twin.layers[1].shortcut[1].state["running_mean"][0]
    tr = DLRT(net, make_optimizer("sgd", 0.1), method="ra-bug", tau=0.1)
    before = [l.to_dense() for l in net.lowrank_layers()] + [block.shortcut[0].params["W"].copy()]
    tr.step(rng.standard_normal((4, 3, 6, 6)), np.array([0, 1, 2, 1]))
    after = [l.to_dense() for l in net.lowrank_layers()] + [block.shortcut[0].params["W"]]
    assert all(not np.allclose(a, b) for a, b in zip(before, after))  # inner low-rank and dense layers moved


def test_dlrt_passes_of_one_step_share_the_dropout_mask_and_bn_updates_once(rng):
    d = Dropout(0.5, seed=3)
    net = Sequential([LowRankLinear(6, 8, 2, **F64), BatchNorm1d(8, **F64), ReLU(), d,
                      Dense(8, 3, activation="linear", **F64)])
    masks, real = [], d.forward
    d.forward = lambda x: (masks.append(d.mask(x.shape).copy()), real(x))[1]
    bn = net.layers[1]
    tr = DLRT(net, make_optimizer("sgd", 0.05), method="bug")
    x, y = rng.standard_normal((10, 6)), rng.integers(0, 3, 10)
    h0 = x @ net.layers[0].to_dense().T  # the BN input at the step's start point Y0 (bias 0)
    tr.step(x, y)
    assert len(masks) == 2 and np.array_equal(masks[0], masks[1])  # bug: two passes, one mask
    # one update per step, with the statistics of the first pass (at Y0), not of the second (at the K/L point)
    np.testing.assert_allclose(bn.state["running_mean"], 0.1 * h0.mean(axis=0), rtol=1e-10, atol=1e-14)
    tr.step(x, y)
    assert len(masks) == 4 and not np.array_equal(masks[1], masks[2])  # the next step: a new mask


def test_failed_step_restores_running_statistics(rng):
    net = Sequential([BatchNorm1d(4, **F64), LowRankLinear(4, 3, 2, **F64)])
    tr = DLRT(net, make_optimizer("sgd", 0.1))
    before = dict(net.layers[0].state)
    with pytest.raises(ValueError):
        tr.step(rng.standard_normal((5, 4)), np.array([0, 1, 2, 0, 7]))  # label 7 of 3 classes: the loss refuses
    assert all(net.layers[0].state[k] is before[k] for k in before)
    x = rng.standard_normal((5, 4))
    tr.step(x, np.array([0, 1, 2, 0, 1]))  # the retried step updates the restored statistics, once
    np.testing.assert_allclose(net.layers[0].state["running_mean"], 0.1 * x.mean(axis=0), rtol=1e-12)


def test_evaluate_runs_in_eval_mode_and_restores_training(rng):
    net = Sequential([BatchNorm1d(4, **F64), Dropout(0.9), Dense(4, 3, **F64)])
    x, y = rng.standard_normal((20, 4)), rng.integers(0, 3, 20)
    loss1, _ = evaluate(net, x, y)
    loss2, _ = evaluate(net, x, y, batch_size=3)  # eval mode: no batch statistics, no dropout
    assert loss1 == pytest.approx(loss2, rel=1e-12)
    assert net.training and net.layers[1].training


def test_checkpoint_round_trip_carries_running_statistics_of_layers_in_blocks(rng, tmp_path):
    def build():
        return _block_net(np.random.default_rng(0), projection=True)

    net = build()
    tr = DLRT(net, make_optimizer("sgd", 0.1))
    x, y = rng.standard_normal((4, 3, 6, 6)), np.array([0, 1, 2, 1])
    tr.step(x, y)
    tr.step(x, y)
    path = save_checkpoint(tmp_path / "c.npz", tr, {}, {}, {})
    fresh = build()
    load_checkpoint(path, DLRT(fresh, make_optimizer("sgd", 0.1)))
    for a, b in zip(net.flat_layers(), fresh.flat_layers()):
        for name in getattr(a, "state", {}):
            np.testing.assert_array_equal(a.state[name], b.state[name])
        for name in a.params:
            np.testing.assert_array_equal(a.params[name], b.params[name])
        if a.lowrank:
            np.testing.assert_array_equal(a.to_dense(), b.to_dense())
    net.eval(), fresh.eval()
    np.testing.assert_array_equal(net.forward(x), fresh.forward(x))
    plain = Sequential([Conv2d(3, 3, 1, **F64), Residual([Conv2d(3, 4, 3, stride=2, padding=1, **F64), Tanh()],
                                 [Conv2d(3, 4, 1, stride=2, **F64), Tanh()]),
                        Tanh(), GlobalAvgPool2d(), LowRankLinear(4, 3, 2, **F64)])
    with pytest.raises(CheckpointError, match="layer"):
        load_checkpoint(path, DLRT(plain, make_optimizer("sgd", 0.1)))
