"""Parity: the same code on NumPy and on a device backend gives the same numbers (issue 14, section 1).

Relative tolerance 1e-5 in float32 and 1e-10 in float64 (relative to the size of the
compared quantity), for

* every layer's forward and backward (Dense, LowRankLinear, Conv2d, LowRankConv2d,
  MaxPool2d, AvgPool2d, ReLU, Tanh, Flatten, softmax cross-entropy);
* every integrator step on matrix ODEs (a nonlinear field, a Sylvester field, the
  toy trajectory of [LO14] by increments), Euler and RK4 sub-steps, both
  orthonormalisations;
* one DLRT step of each method (ra-bug, bug, ksl, parallel);
* one training epoch on an MNIST subset (ra-bug, τ = 0.1, SGD, float64).

Each test runs on two devices: ``"cupy"`` — the real CuPy on a GPU, marked ``gpu``
(skipped cleanly without one; run by ``benchmarks/gpu_check.sh``) — and ``"stand-in"``
— the strict CPU stand-in ``fake_cupy`` (NumPy underneath, so parity is exact there,
but every backend rule is enforced: the tests themselves and the code paths they
drive are exercised in CI, and any NumPy call on a device array fails them).

Compared are basis-independent quantities (outputs, gradients, the dense
W = U S Vᵀ), since singular vectors of different LAPACK implementations may differ
by signs or rotations within degenerate subspaces.
"""
import numpy as np
import pytest

from tests.gpu import fake_cupy
from dlrt_ref.backend import get_backend, to_numpy
from dlrt_ref.integrators import INTEGRATORS
from dlrt_ref.ode.fields import Increments
from dlrt_ref.lowrank import LowRankMatrix
from dlrt_ref.nn import Conv2d, Dense, Flatten, LowRankConv2d, LowRankLinear, MaxPool2d, ReLU, Tanh, mlp
from dlrt_ref.nn.loss import SoftmaxCrossEntropy
from dlrt_ref.train.dlrt import DLRT, TRAIN_METHODS
from dlrt_ref.train.optim import SGD, Adam

RTOL = {np.float32: 1e-5, np.float64: 1e-10}


@pytest.fixture(params=["stand-in", pytest.param("cupy", marks=pytest.mark.gpu)])
def device(request):
    """A device Backend: the strict stand-in (CI) or the real CuPy (GPU machines)."""
    if request.param == "stand-in":
        with fake_cupy.install(strict=True) as stats:
            yield get_backend("cupy")
        assert stats.violations == [], stats.violations
    else:
        be = get_backend("cupy")
        assert be.xp.__name__ == "cupy"
        yield be


def close(dev, ref, dtype, what=""):
    """Device result equals the NumPy result to RTOL relative to the largest entry."""
    d = to_numpy(dev)
    scale = max(float(np.abs(ref).max()), 1e-30)
    err = float(np.abs(d - ref).max()) / scale
    assert err <= RTOL[dtype], f"{what}: max |device − numpy| / max |numpy| = {err:.2e} > {RTOL[dtype]:.0e}"


# --------------------------------------------------------------------------- #
# Layers
# --------------------------------------------------------------------------- #
def _layers(backend, dtype):
    kw = dict(backend=backend, dtype=dtype, seed=3)
    return {
        "dense": (Dense(7, 5, **kw), (6, 7)),
        "lowrank": (LowRankLinear(7, 5, 3, **kw), (6, 7)),
        "conv": (Conv2d(2, 3, 3, padding=1, **kw), (2, 2, 6, 6)),
        "lowrank-conv": (LowRankConv2d(2, 4, 3, 2, padding=1, **kw), (2, 2, 6, 6)),
        "maxpool": (MaxPool2d(2), (2, 3, 6, 6)),
        "relu": (ReLU(), (4, 5)),
        "tanh": (Tanh(), (4, 5)),
        "flatten": (Flatten(), (2, 3, 4)),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["dense", "lowrank", "conv", "lowrank-conv", "maxpool", "relu", "tanh", "flatten"])
def test_layer_forward_backward_parity(device, dtype, name):
    rng = np.random.default_rng(0)
    ref_layer, shape = _layers("numpy", dtype)[name]
    dev_layer, _ = _layers(device, dtype)[name]
    x = rng.standard_normal(shape).astype(dtype)
    y = ref_layer.forward(x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = ref_layer.backward(dy)
    y_d = dev_layer.forward(device.asarray(x))
    dx_d = dev_layer.backward(device.asarray(dy))
    close(y_d, y, dtype, f"{name} forward")
    close(dx_d, dx, dtype, f"{name} backward dx")
    for k, g in ref_layer.grads.items():
        close(dev_layer.grads[k], g, dtype, f"{name} grad {k}")
    if getattr(ref_layer, "lowrank", False):
        for what in ("grad_K", "grad_L", "grad_S"):
            close(getattr(dev_layer, what)(), getattr(ref_layer, what)(), dtype, f"{name} {what}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_parity(device, dtype):
    rng = np.random.default_rng(1)
    z = (3 * rng.standard_normal((9, 5))).astype(dtype)
    y = rng.integers(0, 5, 9)
    ref, dev = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    loss = ref.forward(z, y)
    loss_d = dev.forward(device.asarray(z), device.asarray(y))
    assert isinstance(loss_d, float) and loss_d == pytest.approx(loss, rel=RTOL[dtype])
    close(dev.backward(), ref.backward(), dtype, "loss backward")


# --------------------------------------------------------------------------- #
# Integrators on matrix ODEs
# --------------------------------------------------------------------------- #
M, N, R = 14, 11, 3


def _problem(name, be, dtype, rng_seed=2):
    """(field, Y0) on backend ``be``; the data are drawn on the host (same numbers on both backends)."""
    rng = np.random.default_rng(rng_seed)
    A = be.asarray(rng.standard_normal((M, M)) / np.sqrt(M), dtype)
    B = be.asarray(rng.standard_normal((N, N)) / np.sqrt(N), dtype)
    C = be.asarray(rng.standard_normal((M, N)), dtype)
    U0 = np.linalg.qr(rng.standard_normal((M, R)))[0]
    V0 = np.linalg.qr(rng.standard_normal((N, R)))[0]
    Y0 = LowRankMatrix(be.asarray(U0, dtype), be.asarray(np.diag([1.0, 0.3, 0.05]), dtype), be.asarray(V0, dtype))
    if name == "nonlinear":  # F(t, Y) = A Y + Y B + (1 + t) C + 0.3 Y⊙Y
        return (lambda t, Y: A @ Y.to_dense() + Y.to_dense() @ B + (1.0 + t) * C + 0.3 * (Y.to_dense() ** 2)), Y0
    if name == "sylvester":  # F(Y) = A Y + Y B + C
        return (lambda t, Y: A @ Y.to_dense() + Y.to_dense() @ B + C), Y0
    if name == "toy":  # A(t) = e^{tW1} D e^{tW2} by increments; its values are computed on the host, then moved
        from dlrt_ref.ode.problems import toy

        prob = toy(N=M, r=R, seed=rng_seed)
        Yr = prob.Y0
        Y0 = LowRankMatrix(*(be.asarray(to_numpy(F), dtype) for F in (Yr.U, Yr.S, Yr.V)))
        return Increments(lambda t: be.asarray(prob.reference(t), dtype)), Y0
    raise ValueError(name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("problem", ["nonlinear", "sylvester", "toy"])
@pytest.mark.parametrize("method", sorted(INTEGRATORS))
def test_integrator_step_parity(device, dtype, problem, method):
    numpy_be = get_backend("numpy")
    adaptive = method in ("ra-bug", "parallel", "midpoint-bug")
    for substep in ("euler", "rk4"):
        if method == "naive" and substep == "rk4":
            continue
        for ortho in ("householder", "cholqr2"):
            kw = dict(t0=0.0, h=0.02, substep=substep, ortho=ortho, **(dict(tau=1e-3) if adaptive else {}))
            f, Y0 = _problem(problem, numpy_be, dtype)
            ref = INTEGRATORS[method](f, Y0=Y0, **kw)
            f_d, Y0_d = _problem(problem, device, dtype)
            res = INTEGRATORS[method](f_d, Y0=Y0_d, **kw)
            assert res.Y.rank == ref.Y.rank and res.evaluations == ref.evaluations
            close(res.Y.to_dense(), ref.Y.to_dense(), dtype, f"{method} {problem} {substep} {ortho}")


# --------------------------------------------------------------------------- #
# DLRT steps and a training epoch
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", TRAIN_METHODS)
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_dlrt_step_parity(device, dtype, method, opt):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((32, 30)).astype(dtype)
    y = rng.integers(0, 5, 32)

    def one_step(be):
        net = mlp([30, 20, 16, 5], ranks=[6, 5, None], backend=be, dtype=dtype, seed=1)
        tr = DLRT(net, SGD(0.1) if opt == "sgd" else Adam(1e-2), method=method, tau=0.05, ortho="cholqr2")
        info = tr.step(be.asarray(x), be.asarray(y))
        return tr, info

    ref, info = one_step(get_backend("numpy"))
    tr, info_d = one_step(device)
    assert info_d.loss == pytest.approx(info.loss, rel=RTOL[dtype]) and info_d.ranks == info.ranks
    assert info_d.passes == info.passes
    for a, b in zip(tr.net.layers, ref.net.layers):
        if getattr(b, "lowrank", False):
            close(a.to_dense(), b.to_dense(), dtype, f"{method} W")
        for k, p in b.params.items():
            close(a.params[k], p, dtype, f"{method} {k}")


def test_training_epoch_parity(device):
    """One epoch (ra-bug, τ = 0.1, SGD, float64) on 512 MNIST images, batch 64: losses, ranks, accuracy, weights."""
    from dlrt_ref.data import load_mnist
    from dlrt_ref.train.loop import fit

    data = load_mnist(subset=512, test_subset=256, seed=0, dtype=np.float64)

    def epoch(be):
        net = mlp([784, 64, 32, 10], ranks=[16, 8, None], backend=be, dtype=np.float64, seed=0)
        tr = DLRT(net, SGD(0.1), method="ra-bug", tau=0.1, ortho="cholqr2")
        hist = fit(tr, data, epochs=1, batch_size=64, log_every=0, log=lambda line: None)
        return tr, hist

    ref, h_ref = epoch(get_backend("numpy"))
    tr, h_dev = epoch(device)
    assert [s["ranks"] for s in h_dev.steps] == [s["ranks"] for s in h_ref.steps]
    assert [s["loss"] for s in h_dev.steps] == pytest.approx([s["loss"] for s in h_ref.steps], rel=1e-10)
    assert h_dev.epochs[-1]["test_acc"] == h_ref.epochs[-1]["test_acc"]
    for a, b in zip(tr.layers, ref.layers):
        close(a.to_dense(), b.to_dense(), np.float64, "epoch W")
