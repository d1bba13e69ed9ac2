"""Layers: forward against naive references, gradient/Taylor/adjoint checks in float64
(structure drawn by hypothesis, values from a seeded Generator), full-rank equivalence
of low-rank and dense layers, from_dense, dtypes and backends."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlrt_ref.nn import gradcheck as gc
from dlrt_ref.nn import (AvgPool2d, Conv2d, Dense, Flatten, LowRankConv2d, LowRankLinear, MaxPool2d, ReLU, Tanh, col2im,
                         im2col)

F64 = np.float64
seeds = st.integers(0, 2**31 - 1)


def naive_conv(x, W4, b, stride, padding):
    """Direct definition: y[b,o,i,j] = sum_{c,u,v} W[o,c,u,v] xpad[b,c,s i+u,s j+v] + b[o]."""
    B, C, H, Wd = x.shape
    O, _, k, _ = W4.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    Ho, Wo = (H + 2 * padding - k) // stride + 1, (Wd + 2 * padding - k) // stride + 1
    y = np.empty((B, O, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            patch = xp[:, :, stride * i : stride * i + k, stride * j : stride * j + k]  # (B, C, k, k)
            y[:, :, i, j] = np.einsum("bcuv,ocuv->bo", patch, W4) + b
    return y


conv_geometry = st.fixed_dictionaries({
    "B": st.integers(1, 3), "c_in": st.integers(1, 3), "c_out": st.integers(1, 4), "k": st.integers(1, 3),
    "stride": st.integers(1, 2), "padding": st.integers(0, 2), "H": st.integers(3, 7), "W": st.integers(3, 7),
    "seed": seeds,
})


# -- forward values ----------------------------------------------------------------
@given(conv_geometry)
def test_conv_forward_matches_naive_definition(g):
    rng = np.random.default_rng(g["seed"])
    conv = Conv2d(g["c_in"], g["c_out"], g["k"], g["stride"], g["padding"], dtype=F64, seed=rng)
    conv.params["b"] = rng.standard_normal(g["c_out"])
    x = rng.standard_normal((g["B"], g["c_in"], g["H"], g["W"]))
    W4 = conv.params["W"].reshape(g["c_out"], g["c_in"], g["k"], g["k"])
    want = naive_conv(x, W4, conv.params["b"], g["stride"], g["padding"])
    np.testing.assert_allclose(conv.forward(x), want, rtol=1e-12, atol=1e-12)


@given(conv_geometry)
def test_col2im_is_the_adjoint_of_im2col(g):
    rng = np.random.default_rng(g["seed"])
    x = rng.standard_normal((g["B"], g["c_in"], g["H"], g["W"]))
    cols = im2col(x, g["k"], g["stride"], g["padding"])
    Z = rng.standard_normal(cols.shape)
    lhs = np.sum(cols * Z)  # <im2col x, Z>
    rhs = np.sum(x * col2im(Z, x.shape, g["k"], g["stride"], g["padding"]))  # <x, col2im Z>
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def test_maxpool_forward_and_routing():
    x = np.arange(2 * 1 * 4 * 4, dtype=F64).reshape(2, 1, 4, 4)[:, :, ::-1, ::-1]  # max at top-left of each window
    pool = MaxPool2d(2)
    y = pool.forward(x)
    np.testing.assert_array_equal(y, x[:, :, ::2, ::2])
    dx = pool.backward(np.ones_like(y))
    assert dx.sum() == y.size and np.all(dx[:, :, ::2, ::2] == 1)


@given(st.integers(1, 4), st.integers(1, 3), st.integers(2, 7), st.integers(2, 7), st.integers(1, 3), st.integers(1, 3), seeds)
def test_maxpool_matches_naive(B, C, H, W, k, s, seed):
    if k > min(H, W):
        return
    x = np.random.default_rng(seed).standard_normal((B, C, H, W))
    y = MaxPool2d(k, s).forward(x)
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    want = np.array([[x[:, :, s * i : s * i + k, s * j : s * j + k].max(axis=(2, 3)) for j in range(Wo)] for i in range(Ho)])
    np.testing.assert_array_equal(y, want.transpose(2, 3, 0, 1))


@given(st.integers(1, 4), st.integers(1, 3), st.integers(2, 7), st.integers(2, 7), st.integers(1, 3), st.integers(1, 3), seeds)
def test_avgpool_matches_naive_and_its_float64_gradient_check(B, C, H, W, k, s, seed):
    """Average pooling: forward = window means (direct definition); backward checked by central
    differences, Taylor remainder and the adjoint identity in float64 (the layer is linear: no kinks)."""
    if k > min(H, W):
        return
    x = np.random.default_rng(seed).standard_normal((B, C, H, W))
    pool = AvgPool2d(k, s)
    y = pool.forward(x)
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    want = np.array([[x[:, :, s * i : s * i + k, s * j : s * j + k].mean(axis=(2, 3)) for j in range(Wo)] for i in range(Ho)])
    np.testing.assert_allclose(y, want.transpose(2, 3, 0, 1), rtol=1e-14, atol=1e-15)
    gc.check_layer(pool, x, seed=seed % 1000, rtol=1e-8)


def test_avgpool_backward_spreads_evenly_and_rejects_a_small_input():
    pool = AvgPool2d(2)
    y = pool.forward(np.ones((1, 1, 4, 4)))
    np.testing.assert_array_equal(pool.backward(np.ones_like(y)), np.full((1, 1, 4, 4), 0.25))
    with pytest.raises(ValueError, match="smaller than the window"):
        AvgPool2d(3).forward(np.ones((1, 1, 2, 2)))


# -- gradient checks, single layers (rel err <= 1e-7) -------------------------------
@given(st.integers(1, 5), st.integers(1, 7), st.integers(1, 7), seeds)
def test_dense_gradients(B, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    layer = Dense(n_in, n_out, dtype=F64, seed=rng)
    layer.params["b"] = rng.standard_normal(n_out)
    gc.check_layer(layer, rng.standard_normal((B, n_in)), seed=seed % 1000, rtol=1e-7)


@st.composite
def lowrank_shapes(draw):
    n_in, n_out = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    return draw(st.integers(1, 5)), n_in, n_out, draw(st.integers(1, min(n_in, n_out))), draw(seeds)


@given(lowrank_shapes())
def test_lowrank_linear_gradients_in_K_L_S(shape):
    B, n_in, n_out, r, seed = shape
    rng = np.random.default_rng(seed)
    layer = LowRankLinear(n_in, n_out, r, dtype=F64, seed=rng)
    layer.params["b"] = rng.standard_normal(n_out)
    res = gc.check_layer(layer, rng.standard_normal((B, n_in)), seed=seed % 1000, rtol=1e-7)
    assert set(res) == {"K", "L", "S", "adjoint"}
    assert all(res[f]["taylor"].slope >= 1.8 for f in "KLS")


@settings(max_examples=15)
@given(conv_geometry, st.data())
def test_conv_gradients_dense_and_lowrank(g, data):
    rng = np.random.default_rng(g["seed"])
    x = rng.standard_normal((g["B"], g["c_in"], g["H"], g["W"]))
    args = (g["c_in"], g["c_out"], g["k"])
    kw = dict(stride=g["stride"], padding=g["padding"], dtype=F64, seed=rng)
    if (g["H"] + 2 * g["padding"] < g["k"]) or (g["W"] + 2 * g["padding"] < g["k"]):
        return
    gc.check_layer(Conv2d(*args, **kw), x, seed=1, rtol=1e-7)
    r = data.draw(st.integers(1, min(g["c_out"], g["c_in"] * g["k"] ** 2)), label="rank")
    gc.check_layer(LowRankConv2d(*args, r, **kw), x, seed=2, rtol=1e-7)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(2, 6), st.integers(2, 6), st.integers(1, 3), st.integers(1, 2), seeds)
def test_parameter_free_layers_gradients(B, C, H, W, k, s, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, C, H, W))
    for layer in (ReLU(), Tanh(), Flatten()) + ((MaxPool2d(k, s),) if k <= min(H, W) else ()):
        # piecewise-linear layers: a random direction moves every entry, so it takes small steps to
        # cross no kink; a single entry crosses one only if it lies within 2h of it (probability ~h)
        gc.check_layer(layer, x, seed=seed % 1000, rtol=1e-7, h=1e-6, h_entry=1e-3, taylor_h0=1e-4)


# -- low-rank == dense at full rank ------------------------------------------------
@given(st.integers(1, 5), st.integers(1, 7), st.integers(1, 7), seeds)
def test_full_rank_lowrank_linear_equals_dense(B, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    lr = LowRankLinear(n_in, n_out, min(n_in, n_out), dtype=F64, seed=rng)
    lr.params["b"] = rng.standard_normal(n_out)
    dense = Dense(n_in, n_out, dtype=F64)
    dense.params["W"], dense.params["b"] = lr.to_dense(), lr.params["b"].copy()
    x, dy = rng.standard_normal((B, n_in)), rng.standard_normal((B, n_out))
    np.testing.assert_allclose(lr.forward(x), dense.forward(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lr.backward(dy), dense.backward(dy), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lr.grad_op.to_dense(), dense.grads["W"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lr.grads["b"], dense.grads["b"], rtol=1e-12, atol=1e-12)
    G = dense.grads["W"]  # the closed forms of the factor gradients
    np.testing.assert_allclose(lr.grad_K(), G @ lr.V, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lr.grad_L(), G.T @ lr.U, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lr.grad_S(), lr.U.T @ G @ lr.V, rtol=1e-10, atol=1e-12)


@settings(max_examples=10)
@given(conv_geometry)
def test_full_rank_lowrank_conv_equals_dense(g):
    if (g["H"] + 2 * g["padding"] < g["k"]) or (g["W"] + 2 * g["padding"] < g["k"]):
        return
    rng = np.random.default_rng(g["seed"])
    conv = Conv2d(g["c_in"], g["c_out"], g["k"], g["stride"], g["padding"], dtype=F64, seed=rng)
    lr = LowRankConv2d.from_dense(conv, min(conv.shape))
    x = rng.standard_normal((g["B"], g["c_in"], g["H"], g["W"]))
    y = conv.forward(x)
    np.testing.assert_allclose(lr.forward(x), y, rtol=1e-10, atol=1e-10)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(lr.backward(dy), conv.backward(dy), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(lr.grad_op.to_dense(), conv.grads["W"], rtol=1e-10, atol=1e-10)
    assert lr.grad_op.shape == (g["c_out"], g["c_in"] * g["k"] ** 2)


# -- from_dense, set_factors --------------------------------------------------------
def test_from_dense_is_the_truncated_svd(rng):
    dense = Dense(9, 7, dtype=F64, seed=3)
    dense.params["b"] = rng.standard_normal(7)
    W = dense.params["W"]
    s = np.linalg.svd(W, compute_uv=False)
    for r in (1, 3, 7):
        lr = LowRankLinear.from_dense(dense, r)
        assert lr.rank == r and lr.shape == (7, 9) and lr.dtype == F64
        assert np.isclose(np.linalg.norm(W - lr.to_dense()), np.sqrt(np.sum(s[r:] ** 2)))  # Eckart-Young
        np.testing.assert_allclose(lr.U.T @ lr.U, np.eye(r), atol=1e-12)
        np.testing.assert_allclose(lr.V.T @ lr.V, np.eye(r), atol=1e-12)
        np.testing.assert_array_equal(lr.params["b"], dense.params["b"])
    np.testing.assert_allclose(LowRankLinear.from_dense(W, 7).to_dense(), W, atol=1e-12)


def test_set_factors_changes_rank_and_invalidates_factor_grads(rng):
    lr = LowRankLinear(6, 5, 2, dtype=F64)
    lr.forward(rng.standard_normal((3, 6)))
    lr.backward(rng.standard_normal((3, 5)))
    op = lr.grad_op
    U, S, V = np.linalg.qr(rng.standard_normal((5, 4)))[0], np.diag([4.0, 3, 2, 1]), np.linalg.qr(rng.standard_normal((6, 4)))[0]
    lr.set_factors(U, S, V)
    assert lr.rank == 4 and lr.grad_op is op  # G of the last backward is kept ...
    with pytest.raises(RuntimeError, match="forward and backward"):
        lr.grad_K()  # ... but factor gradients belong to the factors they were computed with
    np.testing.assert_allclose(lr.to_dense(), U @ S @ V.T)


# -- dtypes and backends -----------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_keep_dtype_on_every_backend(backend, dtype):
    rng = np.random.default_rng(0)
    layers = [Dense(6, 5, backend=backend, dtype=dtype), LowRankLinear(6, 5, 2, backend=backend, dtype=dtype)]
    for layer in layers:
        x = backend.asarray(rng.standard_normal((3, 6)), dtype)
        y = layer.forward(x)
        dx = layer.backward(backend.xp.ones_like(y))
        assert y.dtype == dtype and dx.dtype == dtype and type(dx) is type(x)
    conv = LowRankConv2d(2, 3, 3, 2, padding=1, backend=backend, dtype=dtype)
    x = backend.asarray(rng.standard_normal((2, 2, 5, 5)), dtype)
    y = MaxPool2d(2).forward(conv.forward(x))
    assert y.shape == (2, 3, 2, 2) and y.dtype == dtype
    assert conv.grad_op is None
    conv.backward(backend.xp.ones((2, 3, 5, 5), dtype=dtype))
    assert conv.grad_K().dtype == dtype and conv.grad_op.shape == (3, 18)


# -- softmax cross-entropy at extreme logits ---------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_with_logits_of_plus_minus_1e4(dtype):
    """Logits ±1e4 (e^{1e4} overflows every float): the max-shifted log-sum-exp gives the finite loss
    and the gradient (p − onehot(y))/B, here known in closed form."""
    from dlrt_ref.nn import SoftmaxCrossEntropy

    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4 - 1.0, 1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    y = np.array([1, 2, 0])
    loss = SoftmaxCrossEntropy()
    value = loss.forward(z, y)
    # row 0: log p_1 = −2e4 (to 1e-4343); row 1: softmax of (−2e4−1, −1, 0); row 2: log p_0 = −log 2
    lse1 = np.log1p(np.exp(-1.0))  # log(e^{−1} + e^0), the −2e4−1 term is below round-off
    want = (2e4 + lse1 + np.log(2.0)) / 3
    assert np.isfinite(value)
    np.testing.assert_allclose(value, want, rtol=10 * np.finfo(dtype).eps)
    d = loss.backward()
    p1 = np.exp(np.array([-np.inf, -1.0, 0.0]) - lse1)
    want_d = np.array([[1.0, -1.0, 0.0], p1 - [0, 0, 1], [-0.5, 0.5, 0.0]]) / 3
    assert np.all(np.isfinite(d)) and d.dtype == dtype
    np.testing.assert_allclose(d, want_d, rtol=10 * np.finfo(dtype).eps, atol=10 * np.finfo(dtype).eps)
