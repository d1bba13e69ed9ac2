"""The four CIFAR networks at tiny width: they build with the shapes described, make one DLRT ra-bug step
on a synthetic CIFAR-shaped batch, and pass a whole-network float64 gradient check in the factor coordinates."""
import numpy as np
import pytest

from dlrt_ref.nn import BatchNorm2d, Conv2d, Dense, Dropout, LowRankConv2d, LowRankLinear, SoftmaxCrossEntropy
from dlrt_ref.nn import gradcheck as gc
from dlrt_ref.nn.cifar_models import CIFAR_MODELS, WEIGHT_LAYERS, alexnet, lenet5_cifar, resnet20, vgg16
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import make_optimizer

TINY = 1 / 16  # channel counts ×1/16 (at least 2): VGG 4..32 channels, AlexNet fc 256


def _batch(B, classes=10, seed=0):
    g = np.random.default_rng(seed)
    return g.standard_normal((B, 3, 32, 32)), g.integers(0, classes, B)


@pytest.mark.parametrize("name", sorted(CIFAR_MODELS))
def test_model_makes_one_ra_bug_step_on_a_synthetic_cifar_batch(name):
    net = CIFAR_MODELS[name](classes=10, lowrank="all", width=TINY, seed=1)
    x, y = _batch(4)
    assert net.forward(x.astype(np.float32)).shape == (4, 10)
    lowrank = net.lowrank_layers()
    assert lowrank, name
    before = [l.to_dense() for l in lowrank]
    bns = [l for l in net.flat_layers() if isinstance(l, BatchNorm2d)]
    tr = DLRT(net, make_optimizer("sgd", 0.05), method="ra-bug", tau=0.1)
    info = tr.step(x.astype(np.float32), y)
    assert np.isfinite(info.loss) and info.passes == 1 and len(info.ranks) == len(lowrank)
    assert all(not np.allclose(a, l.to_dense()) for a, l in zip(before, lowrank))  # every low-rank layer moved
    assert all(np.any(bn.state["running_var"] != 1) for bn in bns)  # and the running statistics


@pytest.mark.parametrize("name", sorted(CIFAR_MODELS))
def test_model_whole_network_float64_gradient_check(name):
    net = CIFAR_MODELS[name](classes=10, lowrank="all", width=TINY, activation="tanh", dtype=np.float64, seed=2)
    x, y = _batch(2, seed=3)
    g = np.random.default_rng(5)
    for layer in net.lowrank_layers():  # a full (non-diagonal) S, so that S and Sᵀ differ in every product
        layer.set_factors(layer.U, layer.S + 0.3 * np.abs(layer.S).max() * g.standard_normal(layer.S.shape), layer.V)
    # directional (all coordinates at once) and Taylor checks in the K, L and S coordinates of every low-rank
    # layer, no QR/SVD; per-entry checks off: the bias of a conv feeding a training-mode BatchNorm has gradient
    # exactly 0, which a relative per-entry comparison cannot judge (tests/nn/test_nn_blocks.py checks entries)
    gc.check_network(net, SoftmaxCrossEntropy(), x, y, seed=4, rtol=1e-6, n_entries=0)


def test_lowrank_selection_per_layer():
    kinds = lambda net, cls: sum(isinstance(l, cls) for l in net.flat_layers())  # noqa: E731
    fc, allr, dense = (vgg16(lowrank=m, width=TINY) for m in ("fc", "all", "none"))
    assert (kinds(fc, LowRankLinear), kinds(fc, LowRankConv2d), kinds(fc, Conv2d)) == (2, 0, 13)
    assert (kinds(allr, LowRankLinear), kinds(allr, LowRankConv2d), kinds(allr, Conv2d)) == (2, 13, 0)
    assert not dense.lowrank_layers() and kinds(dense, Dense) == 3
    for net in (fc, allr, dense):
        assert isinstance(net.flat_layers()[-1], Dense)  # the output layer is always dense
    r20 = resnet20(width=TINY)
    assert kinds(r20, LowRankConv2d) == 21 and kinds(r20, BatchNorm2d) == 21  # 19 convs + 2 projections
    assert not resnet20(lowrank="fc", width=TINY).lowrank_layers()  # no hidden fc layer
    assert [type(l).__name__ for l in lenet5_cifar().lowrank_layers()] == ["LowRankConv2d", "LowRankConv2d",
                                                                            "LowRankLinear"]
    assert sum(isinstance(l, Dropout) for l in alexnet(width=TINY).flat_layers()) == 2


def test_full_width_shapes_and_parameter_counts():
    # ResNet20 with projection shortcuts: 0.27 M parameters (He et al. 2016 give 0.27 M for option A)
    assert resnet20(lowrank="none").num_params() == 273258
    v = vgg16(lowrank="none", classes=100)
    assert [l.shape for l in v.flat_layers() if isinstance(l, Dense)] == [(512, 512), (512, 512), (100, 512)]
    assert [l.shape for l in lenet5_cifar().lowrank_layers()] == [(20, 75), (50, 500), (500, 1250)]
    ranks = [l.rank for l in alexnet(rank=10).lowrank_layers()]
    assert ranks == [10, 10]
    assert [l.rank for l in lenet5_cifar().lowrank_layers()] == [10, 25, 250]  # ⌊min(m, n)/2⌋


@pytest.mark.parametrize("name", sorted(CIFAR_MODELS))
def test_lowrank_chosen_layer_by_layer(name):
    build = CIFAR_MODELS[name]
    n = WEIGHT_LAYERS[name]
    assert len(build(lowrank="all", width=TINY).lowrank_layers()) == n
    flags = [i % 2 == 1 for i in range(n)]
    net, ref = build(lowrank=flags, width=TINY), build(lowrank="all", width=TINY)
    weights = [l for l in net.flat_layers() if l.lowrank or "W" in l.params][:-1]  # without the output layer
    assert [l.lowrank for l in weights] == flags
    assert [l.shape for l in weights] == [l.shape for l in ref.lowrank_layers()]  # the same layers, in that order
    with pytest.raises(ValueError, match=f"{n} bools"):
        build(lowrank=flags[:-1])


@pytest.mark.parametrize("kw, match", [(dict(lowrank="some"), "lowrank"), (dict(width=0), "width"),
                                       (dict(rank=0), "rank"), (dict(classes=1), "classes")])
def test_bad_arguments_are_one_line_errors(kw, match):
    for build in CIFAR_MODELS.values():
        with pytest.raises(ValueError, match=match):
            build(**kw)


def test_fit_with_checkpoints_and_resume_on_a_synthetic_cifar_set(tmp_path):
    """fit evaluates in eval mode and trains in training mode; a resumed run equals the uninterrupted one."""
    from dlrt_ref.data.splits import Dataset
    from dlrt_ref.train.loop import fit

    g = np.random.default_rng(0)
    x, y = g.random((24, 3, 32, 32)).astype(np.float32), g.integers(0, 10, 24)
    data = Dataset(x[:16], y[:16], x[16:20], y[16:20], x[20:], y[20:], name="synthetic-cifar")

    def run(epochs, out, resume=None):
        net = resnet20(width=TINY, seed=3)
        tr = DLRT(net, make_optimizer("sgd", 0.05), method="ra-bug", tau=0.1)
        hist = fit(tr, data, epochs=epochs, batch_size=8, seed=1, log_every=0, out_dir=out, checkpoint_every=1,
                   resume=resume)
        return net, hist

    full, h_full = run(2, tmp_path / "full")
    assert full.training and all(l.training for l in full.flat_layers())
    run(1, tmp_path / "half")
    resumed, _ = run(2, tmp_path / "resumed", resume=tmp_path / "half" / "checkpoint.npz")
    for a, b in zip(full.flat_layers(), resumed.flat_layers()):
        for name in getattr(a, "state", {}):
            np.testing.assert_array_equal(a.state[name], b.state[name])
        if a.lowrank:
            np.testing.assert_array_equal(a.to_dense(), b.to_dense())
