"""Whole networks: gradient checks of MLP and LeNet5 (tanh, float64), builders, init scale, decay."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlrt_ref.nn import gradcheck as gc
from dlrt_ref.nn.network import LENET5_SHAPES
from dlrt_ref.nn import Sequential, Dense, LowRankConv2d, LowRankLinear, SoftmaxCrossEntropy, lenet5, mlp
from dlrt_ref.nn.init import lowrank_factors

F64 = np.float64
seeds = st.integers(0, 2**31 - 1)


@st.composite
def mlp_structure(draw):
    widths = draw(st.lists(st.integers(2, 7), min_size=2, max_size=5))
    ranks = [draw(st.one_of(st.none(), st.integers(1, min(a, b)))) for a, b in zip(widths[:-1], widths[1:])]
    return widths, ranks, draw(st.integers(1, 5)), draw(seeds)


@given(mlp_structure())
def test_mlp_gradients_tanh(structure):
    widths, ranks, B, seed = structure
    rng = np.random.default_rng(seed)
    net = mlp(widths, ranks, activation="tanh", dtype=F64, seed=seed)
    for layer, name in net.dense_params():  # nonzero biases so that their gradients are exercised
        if name == "b":
            layer.params["b"] = 0.1 * rng.standard_normal(layer.params["b"].shape)
    x, labels = rng.standard_normal((B, widths[0])), rng.integers(0, widths[-1], B)
    res = gc.check_network(net, SoftmaxCrossEntropy(), x, labels, seed=seed % 1000, rtol=1e-6)
    assert all(r["taylor"].slope >= 1.8 for r in res.values())


@settings(max_examples=4)
@given(st.lists(st.one_of(st.none(), st.integers(1, 10)), min_size=4, max_size=4), st.integers(1, 2), seeds)
def test_lenet5_gradients_tanh(ranks, B, seed):
    rng = np.random.default_rng(seed)
    net = lenet5(ranks, activation="tanh", dtype=F64, seed=seed)
    x, labels = rng.random((B, 1, 28, 28)), rng.integers(0, 10, B)
    # max pooling is only piecewise smooth: check_network freezes the arg-max pattern of this point,
    # so the default finite-difference steps compare against the derivative of the active piece
    gc.check_network(net, SoftmaxCrossEntropy(), x, labels, seed=seed % 1000, rtol=1e-6)


def test_frozen_pooling_is_the_active_piece():
    """Frozen at x's pattern, the pooling gives the same output at x, and is linear in its input."""
    from dlrt_ref.nn.conv import MaxPool2d

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6))
    net = Sequential([MaxPool2d(2)])
    y = net.forward(x)
    with gc.frozen_pooling(net, x):
        np.testing.assert_array_equal(net.forward(x), y)
        d = rng.standard_normal(x.shape)
        np.testing.assert_allclose(net.forward(x + d), y + net.forward(d), rtol=1e-12, atol=1e-12)
    assert net.layers[0].frozen is None  # restored
    assert not np.allclose(net.forward(x + 10 * d), y + 10 * net.forward(d))  # unfrozen: not linear


def test_builders_structure():
    net = lenet5([10, 20, 30, None])
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["LowRankConv2d", "MaxPool2d", "ReLU", "LowRankConv2d", "MaxPool2d", "ReLU", "Flatten",
                     "LowRankLinear", "ReLU", "Dense"]
    assert [layer.rank for layer in net.lowrank_layers()] == [10, 20, 30]
    assert net.forward(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 10)
    assert len(list(net.dense_params())) == 3 + 2  # biases of 3 low-rank layers, W and b of the dense one
    n = mlp([784, 500, 500, 10], ranks=[20, 20, None])
    assert n.num_params() == 20 * (784 + 500) + 400 + 500 + 20 * 1000 + 400 + 500 + 5010
    assert all(isinstance(layer, Dense) for layer in mlp([4, 3, 2]).layers[::2])
    with pytest.raises(ValueError, match="one entry per weight layer"):
        mlp([4, 3, 2], ranks=[1])
    with pytest.raises(ValueError, match="one entry per weight layer"):
        lenet5([1, 2, 3])
    with pytest.raises(ValueError, match="activation"):
        mlp([4, 3, 2], activation="sigmoid")


def test_seeded_init_is_reproducible():
    a, b = mlp([6, 5, 4], [2, None], seed=7), mlp([6, 5, 4], [2, None], seed=7)
    np.testing.assert_array_equal(a.layers[0].U, b.layers[0].U)
    np.testing.assert_array_equal(a.layers[2].params["W"], b.layers[2].params["W"])
    assert not np.array_equal(a.layers[0].U, mlp([6, 5, 4], [2, None], seed=8).layers[0].U)


def test_lowrank_init_factors():
    U, S, V = lowrank_factors(50, 40, 8, seed=0, activation="relu")
    np.testing.assert_allclose(U.T @ U, np.eye(8), atol=1e-13)
    np.testing.assert_allclose(V.T @ V, np.eye(8), atol=1e-13)
    s = np.diag(S)
    assert np.all(s > 0) and np.all(np.diff(s) < 0) and np.count_nonzero(S - np.diag(s)) == 0
    assert np.isclose(np.sum(s**2), 50 * 40 * 2 / 40)  # ||USV^T||_F^2 = E||W_He||_F^2 = 2 n_out
    st_ = np.diag(lowrank_factors(50, 40, 8, activation="tanh")[1])
    assert np.isclose(np.sum(st_**2), 50 * 40 * 2 / 90)  # Glorot


def test_decay_option():
    s = np.diag(lowrank_factors(30, 20, 6, seed=1)[1])
    sd = np.diag(lowrank_factors(30, 20, 6, seed=1, decay=3.0)[1])
    np.testing.assert_allclose(sd, s * 3.0 ** -np.arange(6))  # s_k * d^{-k}, k = 0..r-1
    layer = LowRankLinear(20, 30, 6, decay=3.0, dtype=F64, seed=1)
    np.testing.assert_allclose(np.diag(layer.S), sd)
    conv = LowRankConv2d(2, 4, 3, 4, decay=2.0, spectrum="linear", dtype=F64)
    np.testing.assert_allclose(np.diag(conv.S)[1:] / np.diag(conv.S)[:-1],
                               0.5 * (1 - np.arange(1, 4) / 8) / (1 - np.arange(3) / 8))
    with pytest.raises(ValueError, match="decay"):
        lowrank_factors(4, 4, 2, decay=0.0)


@pytest.mark.parametrize("spectrum", ["halfnormal", "linear", "gaussian-product"])
def test_initial_spectrum_shape_and_scale(spectrum):
    """Positive, non-increasing singular values; ||U S V^T||_F^2 = n_in n_out sigma^2 (He) for either shape."""
    from dlrt_ref.nn.init import weight_variance

    U, S, V = lowrank_factors(40, 30, 12, seed=3, spectrum=spectrum)
    s = np.diag(S)
    assert np.all(s > 0) and np.all(np.diff(s) <= 0)
    np.testing.assert_allclose(np.sum(s**2), 30 * 40 * weight_variance(30, 40, "relu"), rtol=1e-12)
    ratio = s[0] / s[-1]
    assert (ratio < 2) if spectrum == "linear" else (ratio > 2)  # the half-normal shape is spread out
    if spectrum == "gaussian-product":
        # the singular values of A B C (Gaussian, r×r middle factor), computed directly from the same draws
        rng = np.random.default_rng(3)
        _ = rng.standard_normal((40, 12)), rng.standard_normal((30, 12))  # U, V draws come first
        A, B, C = rng.standard_normal((40, 12)), rng.standard_normal((12, 12)), rng.standard_normal((30, 12))
        ref = np.linalg.svd(A @ B @ C.T, compute_uv=False)[:12]
        np.testing.assert_allclose(s / s[0], ref / ref[0], rtol=1e-10)
    with pytest.raises(ValueError, match="spectrum"):
        lowrank_factors(4, 4, 2, spectrum="flat")


@pytest.mark.parametrize("ranks", [[20, 20, 20, 20, 10], [20, 20, 20, 20, None], [None] * 5])
def test_init_scale_of_deep_relu_net(ranks):
    """784-500-500-500-500-10 ReLU: activations neither vanish nor explode at init (He-like scaling)."""
    net = mlp([784, 500, 500, 500, 500, 10], ranks, seed=0)
    x = np.random.default_rng(0).random((64, 784)).astype(np.float32)  # MNIST-like: values in [0, 1]
    rms_in = float(np.sqrt(np.mean(x**2)))
    for layer in net.layers:
        x = layer.forward(x)
        rms = float(np.sqrt(np.mean(x**2)))
        assert 0.2 * rms_in < rms < 5 * rms_in, (layer, rms)
    # the thesis's unit-scale init (S = I) would shrink the signal by ~sqrt(r / (2 n_in)) per layer:
    unit = mlp([784, 500, 500, 500, 500, 10], [20, 20, 20, 20, 10], seed=0)
    x = np.random.default_rng(0).random((64, 784)).astype(np.float32)
    for layer in unit.lowrank_layers():
        layer.set_factors(layer.U, np.eye(layer.rank, dtype=np.float32), layer.V)
    assert float(np.sqrt(np.mean(unit.forward(x) ** 2))) < 1e-2 * rms_in


def test_sequential_copy_is_independent():
    """A copy computes the same function; training the original does not touch the copy."""
    rng = np.random.default_rng(0)
    net = lenet5([10, 20, 30, None], dtype=F64, seed=0)
    x = rng.random((2, 1, 28, 28))
    twin = net.copy()
    np.testing.assert_array_equal(twin.forward(x), net.forward(x))
    for layer in net.lowrank_layers():
        layer.set_factors(layer.U, 2 * layer.S, layer.V)
    for layer, name in net.dense_params():
        layer.params[name] += 1.0
    assert not np.allclose(twin.forward(x), net.forward(x))
    assert all(a.U is not b.U for a, b in zip(twin.lowrank_layers(), net.lowrank_layers()))


def test_lenet5_shapes_constant_matches_the_network():
    """nn.network.LENET5_SHAPES (used by train/cli.py before any network is built) is what lenet5() builds."""
    net = lenet5(ranks=[2, 2, 2, None])
    shapes = [(layer.n_out, layer.n_in) for layer in net.layers if hasattr(layer, "n_out")]
    assert shapes == list(LENET5_SHAPES)


@pytest.mark.parametrize("first", ["dense", "lowrank", "conv", "lowrank_conv", "masked_dense", "masked_conv"])
def test_backward_without_input_grad_gives_the_same_parameter_gradients(first):
    """``net.backward(dy, input_grad=False)`` (a trainer's pass) skips only the first layer's ∂L/∂x: every
    parameter gradient equals the one of the full backward bit for bit, and None comes back."""
    from dlrt_ref.nn import Conv2d, Flatten, ReLU
    from dlrt_ref.nn.masked import MaskedConv2d, MaskedDense
    rng = np.random.default_rng(3)
    if first in ("conv", "lowrank_conv", "masked_conv"):
        head = {"conv": lambda: Conv2d(2, 3, 3, seed=1), "lowrank_conv": lambda: LowRankConv2d(2, 3, 3, 2, seed=1),
                "masked_conv": lambda: MaskedConv2d(2, 3, 3, seed=1)}[first]()
        layers, x = [head, ReLU(), Flatten(), Dense(3 * 4 * 4, 5, seed=2)], rng.standard_normal((4, 2, 6, 6))
    else:
        head = {"dense": lambda: Dense(7, 6, seed=1), "lowrank": lambda: LowRankLinear(7, 6, 3, seed=1),
                "masked_dense": lambda: MaskedDense(7, 6, seed=1)}[first]()
        layers, x = [head, ReLU(), Dense(6, 5, seed=2)], rng.standard_normal((4, 7))
    net = Sequential(layers)
    y, loss = rng.integers(0, 5, 4), SoftmaxCrossEntropy()
    grads = []
    for input_grad in (True, False):
        loss.forward(net.forward(x.astype(np.float32)), y)
        dx = net.backward(loss.backward(), input_grad=input_grad)
        assert (dx is None) == (not input_grad)
        grads.append({(i, k): g.copy() for i, layer in enumerate(net.flat_layers()) for k, g in layer.grads.items()})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for key in grads[0]:
        np.testing.assert_array_equal(grads[0][key], grads[1][key])
    if head.lowrank:
        assert head.grad_op is not None and head.grad_K() is not None


def test_trainer_pass_does_not_ask_for_the_input_gradient():
    """DLRT's pass calls backward with input_grad=False: the first layer returns None (no B·n_in·r GEMM)."""
    from dlrt_ref.train.dlrt import DLRT
    from dlrt_ref.train.optim import SGD
    net = mlp([6, 5, 3], ranks=[2, None], dtype=np.float64, seed=0)
    seen = []
    first = net.layers[0]
    orig = first.backward
    first.backward = lambda dy, input_grad=True: seen.append(input_grad) or orig(dy, input_grad)
    tr = DLRT(net, SGD(0.1), method="ra-bug", tau=0.1)
    rng = np.random.default_rng(0)
    tr.step(rng.standard_normal((4, 6)), rng.integers(0, 3, 4))
    assert seen and not any(seen)
