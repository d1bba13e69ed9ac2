"""Masked (pruned) layers: float64 gradient checks, the mask survives training, copies and checkpoints."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlrt_ref.nn import Conv2d, Dense, MaskedConv2d, MaskedDense, Sequential, masked_copy
from dlrt_ref.nn import gradcheck as gc
from dlrt_ref.nn.errors import ShapeError
from dlrt_ref.nn.layers import ReLU
from dlrt_ref.train.baselines import dense_trainer
from dlrt_ref.train.checkpoint import load_checkpoint, save_checkpoint
from dlrt_ref.train.optim import SGD, Adam, Momentum


def _mask(rng, shape, p=0.5):
    return rng.random(shape) < p


@settings(max_examples=8, deadline=None)
@given(B=st.integers(1, 5), n_in=st.integers(1, 7), n_out=st.integers(1, 6), seed=st.integers(0, 2**31))
def test_masked_dense_float64_gradient_check(B, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    layer = MaskedDense(n_in, n_out, mask=_mask(rng, (n_out, n_in)), dtype=np.float64, seed=seed)
    layer.params["b"] = rng.standard_normal(n_out)
    gc.check_layer(layer, rng.standard_normal((B, n_in)), seed=seed % 1000, rtol=1e-7)


def test_masked_conv_float64_gradient_check():
    rng = np.random.default_rng(3)
    layer = MaskedConv2d(2, 3, 3, stride=1, padding=1, mask=_mask(rng, (3, 18)), dtype=np.float64, seed=1)
    gc.check_layer(layer, rng.standard_normal((2, 2, 5, 5)), seed=1, rtol=1e-7)


def test_masked_layers_equal_dense_layers_with_zeroed_weights():
    """Forward, input gradient and (masked) weight gradient equal a Dense/Conv2d holding W ⊙ M."""
    rng = np.random.default_rng(0)
    for dense, x in ((Dense(6, 4, dtype=np.float64, seed=1), rng.standard_normal((3, 6))),
                     (Conv2d(2, 3, 3, dtype=np.float64, seed=1), rng.standard_normal((2, 2, 5, 5)))):
        M = _mask(rng, dense.params["W"].shape)
        masked = masked_copy(dense, M)
        assert np.all(dense.params["W"][~M] != 0)  # the source is left unchanged
        dense.params["W"] = dense.params["W"] * M
        y = dense.forward(x)
        np.testing.assert_allclose(masked.forward(x), y, rtol=1e-13)
        dy = rng.standard_normal(y.shape)
        np.testing.assert_allclose(masked.backward(dy), dense.backward(dy), rtol=1e-12)
        np.testing.assert_allclose(masked.grads["W"], dense.grads["W"] * M, rtol=1e-12)
        assert np.all(masked.grads["W"][~M] == 0)


@pytest.mark.parametrize("make_opt", [lambda: SGD(0.1), lambda: Momentum(0.05), lambda: Adam(0.01)],
                         ids=["sgd", "momentum", "adam"])
def test_pruned_weights_stay_exactly_zero_through_training(make_opt):
    rng = np.random.default_rng(1)
    M1, M2 = _mask(rng, (16, 8), 0.3), _mask(rng, (3, 16), 0.6)
    net = Sequential([MaskedDense(8, 16, mask=M1, seed=1), ReLU(), MaskedDense(16, 3, mask=M2, seed=2)])
    trainer = dense_trainer(net, make_opt())
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = np.argmax(x @ rng.standard_normal((8, 3)), axis=1)  # a learnable labelling
    W0 = [net.layers[k].params["W"].copy() for k in (0, 2)]
    losses = [trainer.step(x, y).loss for _ in range(60)]
    assert losses[-1] < 0.8 * losses[0]  # it trains
    for k, M, w0 in ((0, M1, W0[0]), (2, M2, W0[1])):
        W = net.layers[k].params["W"]
        assert np.all(W[~M] == 0.0) and np.all(net.layers[k].mask[~M] == 0)
        assert np.any(W[M] != w0[M])  # the kept weights moved
        assert net.layers[k].nnz() == int(M.sum())


def test_mask_travels_with_copies_and_checkpoints(tmp_path):
    rng = np.random.default_rng(2)
    M = _mask(rng, (5, 4))
    net = Sequential([MaskedDense(4, 5, mask=M, seed=0), ReLU(), Dense(5, 2, seed=1)])
    trainer = dense_trainer(net, Adam(1e-2))
    x, y = rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 2, 8)
    trainer.step(x, y)
    twin = net.copy()
    assert twin.layers[0].mask is not net.layers[0].mask
    np.testing.assert_array_equal(twin.layers[0].mask, M.astype(np.float32))
    save_checkpoint(tmp_path / "c.npz", trainer, {"epoch": 0, "step_in_epoch": 1}, {}, {})
    fresh = Sequential([MaskedDense(4, 5, seed=0), ReLU(), Dense(5, 2, seed=1)])  # all-ones mask
    load_checkpoint(tmp_path / "c.npz", dense_trainer(fresh, Adam(1e-2)))
    np.testing.assert_array_equal(fresh.layers[0].mask, M.astype(np.float32))


def test_bad_masks_are_refused():
    with pytest.raises(ShapeError, match="mask must have the shape"):
        MaskedDense(4, 3, mask=np.ones((4, 3)))
    with pytest.raises(ValueError, match="0 or 1"):
        MaskedDense(4, 3, mask=np.full((3, 4), 0.5))
    with pytest.raises(TypeError, match="Dense or Conv2d"):
        masked_copy(ReLU(), np.ones((1, 1)))
