"""Baselines: dense, vanilla UVᵀ, SVD truncation + fixed-rank retraining, S-only fine-tuning."""
import numpy as np
import pytest

from dlrt_ref.data import teacher_student
from dlrt_ref.nn import (BatchNorm2d, Conv2d, Dense, Dropout, LowRankConv2d, LowRankLinear, SoftmaxCrossEntropy,
                         lenet5, mlp)
from dlrt_ref.nn.cifar_models import alexnet, resnet20
from dlrt_ref.nn.residual import Residual
from dlrt_ref.train.baselines import SOnlyTrainer, UVTrainer, dense_trainer, svd_truncate
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.loop import evaluate, fit
from dlrt_ref.train.optim import SGD, Adam

WIDTHS = [20, 24, 24, 4]


@pytest.fixture(scope="module")
def data():
    return teacher_student(400, 200, WIDTHS, ranks=3, seed=3, dtype=np.float64)


def _pass(net, x, y):
    loss = SoftmaxCrossEntropy()
    value = loss.forward(net.forward(x), y)
    net.backward(loss.backward())
    return value


def test_uv_starts_from_the_same_matrix_and_takes_plain_gradient_steps(data):
    x, y = data.x_train[:32], data.y_train[:32]
    net = mlp(WIDTHS, ranks=[6, 6, None], dtype=np.float64, seed=1, decay=2.0)
    W0 = [l.to_dense() for l in net.lowrank_layers()]
    U0S = [(l.U.copy(), l.S.copy(), l.V.copy()) for l in net.lowrank_layers()]
    tr = UVTrainer(net, SGD(0.1))
    for l, W, (U0, S, V0) in zip(net.lowrank_layers(), W0, U0S):
        np.testing.assert_allclose(l.to_dense(), W, atol=1e-12)
        assert np.array_equal(l.S, np.eye(l.rank))
        root = np.sqrt(np.diag(S))  # S diagonal at init: U = U0 S^1/2, V = V0 S^1/2
        np.testing.assert_allclose(np.abs(l.U), np.abs(U0 * root), atol=1e-12)
        np.testing.assert_allclose(np.abs(l.V), np.abs(V0 * root), atol=1e-12)
    before = [(l.U.copy(), l.V.copy()) for l in net.lowrank_layers()]
    _pass(net, x, y)
    G = [l.grad_op.to_dense() for l in net.lowrank_layers()]
    info = tr.step(x, y)
    assert info.passes == 1 and tr.ranks() == [6, 6]
    for l, (U, V), g in zip(net.lowrank_layers(), before, G):
        np.testing.assert_allclose(l.U, U - 0.1 * g @ V, atol=1e-12)  # ∂L/∂U = G V
        np.testing.assert_allclose(l.V, V - 0.1 * g.T @ U, atol=1e-12)  # ∂L/∂V = Gᵀ U


def test_s_only_keeps_the_bases(data):
    x, y = data.x_train[:32], data.y_train[:32]
    net = mlp(WIDTHS, ranks=[6, 6, None], dtype=np.float64)
    bases = [(l.U, l.V) for l in net.lowrank_layers()]
    S0 = [l.S.copy() for l in net.lowrank_layers()]
    b0 = net.layers[-1].params["b"].copy()
    _pass(net, x, y)
    gS = [l.grad_S() for l in net.lowrank_layers()]
    SOnlyTrainer(net, SGD(0.1)).step(x, y)
    for l, (U, V), S, g in zip(net.lowrank_layers(), bases, S0, gS):
        assert l.U is U and l.V is V
        np.testing.assert_allclose(l.S, S - 0.1 * g, atol=1e-13)
    assert not np.array_equal(net.layers[-1].params["b"], b0)  # dense parameters train too


def test_s_only_after_dlrt_resets_the_stale_core_state(data):
    net = mlp(WIDTHS, ranks=[6, 6, None], dtype=np.float64)
    opt = Adam(1e-2)
    DLRT(net, opt, method="ra-bug", tau=0.05).step(data.x_train[:32], data.y_train[:32])
    resets = opt.resets
    SOnlyTrainer(net, opt).step(data.x_train[:32], data.y_train[:32])
    assert opt.resets > resets and opt.state[(0, "S")]["frame"] == ()


def test_svd_truncate_then_fixed_rank_retraining(data):
    dense = mlp(WIDTHS, dtype=np.float64, seed=0)
    fit(dense_trainer(dense, Adam(1e-2)), data, 3, 32, log_every=0, log=lambda s: None)
    low = svd_truncate(dense, [4, 4, None])
    assert [l.rank for l in low.lowrank_layers()] == [4, 4]
    W = dense.layers[0].params["W"]
    P, s, Qh = np.linalg.svd(W)
    np.testing.assert_allclose(low.layers[0].to_dense(), (P[:, :4] * s[:4]) @ Qh[:4], atol=1e-12)  # Eckart–Young
    assert np.array_equal(low.layers[0].params["b"], dense.layers[0].params["b"])
    assert dense.layers[0].params["W"] is W  # the dense network is left unchanged
    acc_trunc = evaluate(low, data.x_test, data.y_test)[1]
    tr = DLRT(low, Adam(1e-2), method="bug")
    fit(tr, data, 2, 32, log_every=0, log=lambda s: None)
    assert tr.ranks() == [4, 4]
    assert evaluate(low, data.x_test, data.y_test)[1] >= acc_trunc - 0.02
    with pytest.raises(ValueError, match="3 weight layers"):
        svd_truncate(dense, [4, None])


def test_svd_truncate_lenet5_convolutions():
    net = svd_truncate(lenet5(), [5, 10, 20, None])
    assert isinstance(net.layers[0], LowRankConv2d) and isinstance(net.layers[3], LowRankConv2d)
    assert [l.rank for l in net.lowrank_layers()] == [5, 10, 20]
    assert isinstance(lenet5().layers[0], Conv2d)


def test_dense_trainer_refuses_low_rank_layers():
    with pytest.raises(ValueError, match="low-rank"):
        dense_trainer(mlp(WIDTHS, ranks=[3, None, None]), SGD(0.1))


def test_uv_learns(data):
    net = mlp(WIDTHS, ranks=[6, 6, None], dtype=np.float64)
    h = fit(UVTrainer(net, Adam(1e-2)), data, 3, 32, log_every=0, log=lambda s: None)
    assert h.epochs[-1]["train_loss"] < h.epochs[0]["train_loss"]
    assert isinstance(net.layers[0], LowRankLinear)


def _weights(net):
    return [l for l in net.flat_layers() if isinstance(l, (Conv2d, Dense))]


def test_svd_truncate_converts_the_layers_inside_residual_blocks_and_carries_batchnorm():
    dense = resnet20(lowrank="none", width=1 / 16, dtype=np.float64, seed=3)
    g = np.random.default_rng(0)
    x = g.standard_normal((3, 3, 32, 32))
    for k in range(2):  # move the running statistics away from (0, 1)
        dense.begin_step(k)
        dense.forward(x + k)
    full = [min(l.n_out, l.n_in) for l in _weights(dense)]
    assert len(full) == 22  # 19 convolutions + 2 projections + the output layer
    low = svd_truncate(dense, full[:-1] + [None])
    assert len(low.lowrank_layers()) == 21 and isinstance(low.flat_layers()[-1], Dense)
    blocks = [l for l in low.layers if isinstance(l, Residual)]
    assert all(isinstance(c, LowRankConv2d) for blk in blocks for c in blk.children() if not isinstance(
        c, BatchNorm2d) and hasattr(c, "stride"))
    bns = [(a, b) for a, b in zip(dense.flat_layers(), low.flat_layers()) if isinstance(a, BatchNorm2d)]
    assert len(bns) == 21
    for a, b in bns:  # running statistics and BN parameters copied, not shared
        for k in ("running_mean", "running_var"):
            np.testing.assert_array_equal(a.state[k], b.state[k])
            assert a.state[k] is not b.state[k]
        assert a.params["gamma"] is not b.params["gamma"]
    dense.begin_step(2)
    low.begin_step(2)  # a new step for both: each updates its running statistics once, alike
    for mode in (True, False):  # full rank: the same function, in training (batch statistics) and eval mode
        dense.train(mode)
        low.train(mode)
        np.testing.assert_allclose(low.forward(x), dense.forward(x), rtol=1e-9, atol=1e-9)
    before = [a.state["running_mean"].copy() for a, _ in bns]
    low.train()
    low.begin_step(5)
    low.forward(x * 2)  # a step of the copy
    assert all(np.array_equal(m, a.state["running_mean"]) for m, (a, _) in zip(before, bns))  # dense untouched
    assert not np.allclose(bns[0][1].state["running_mean"], before[0])


def test_svd_truncate_carries_dropout():
    dense = alexnet(lowrank="none", width=1 / 16, dtype=np.float64, seed=4)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32))
    full = [min(l.n_out, l.n_in) for l in _weights(dense)]
    low = svd_truncate(dense, full[:-1] + [None])
    drops = [l for l in low.flat_layers() if isinstance(l, Dropout)]
    assert drops and [(d.p, d.seed) for d in drops] == [(d.p, d.seed) for d in dense.flat_layers()
                                                        if isinstance(d, Dropout)]
    dense.begin_step(7)
    low.begin_step(7)  # the same masks: the same function in training mode
    np.testing.assert_allclose(low.forward(x), dense.forward(x), rtol=1e-9, atol=1e-9)
