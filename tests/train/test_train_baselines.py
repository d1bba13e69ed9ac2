"""Baselines: dense, vanilla UVᵀ, SVD truncation + fixed-rank retraining, S-only fine-tuning."""
import numpy as np
import pytest

from dlrt_ref.data import teacher_student
from dlrt_ref.nn import Conv2d, LowRankConv2d, LowRankLinear, SoftmaxCrossEntropy, lenet5, mlp
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
