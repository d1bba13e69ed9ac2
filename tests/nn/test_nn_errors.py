"""Clear errors: wrong shapes, bad ranks, non-finite inputs to checks, mixed backends.
Each message names the layer and the expected vs given values."""
import numpy as np
import pytest

from dlrt_ref.nn import gradcheck as gc
from dlrt_ref.backend import available_backends, get_backend
from dlrt_ref.nn import (BackendError, Conv2d, Dense, Flatten, LowRankConv2d, LowRankLinear, MaxPool2d, NonFiniteError,
                         RankError, ReLU, ShapeError, SoftmaxCrossEntropy)


class FakeCupyArray:
    """Looks like a CuPy array to the backend checks (its type lives in module ``cupy``)."""

    __module__ = "cupy._core.core"

    def __init__(self, shape):
        self.shape, self.ndim, self.dtype = shape, len(shape), np.dtype(np.float32)


def test_all_errors_are_value_errors():
    for E in (ShapeError, RankError, NonFiniteError, BackendError):
        assert issubclass(E, ValueError)


@pytest.mark.parametrize("layer, bad, match", [
    (Dense(4, 3), np.zeros((2, 5)), r"Dense\(4->3\).*forward input must have shape \(B, 4\), got \(2, 5\)"),
    (Dense(4, 3), np.zeros(4), r"Dense\(4->3\).*\(B, 4\), got \(4,\)"),
    (LowRankLinear(4, 3, 2), np.zeros((2, 3)), r"LowRankLinear\(4->3, rank=2\).*\(B, 4\), got \(2, 3\)"),
    (Conv2d(2, 3, 3), np.zeros((1, 1, 5, 5)), r"Conv2d\(2->3.*\(B, 2, B, B\), got \(1, 1, 5, 5\)"),
    (LowRankConv2d(2, 3, 3, 2), np.zeros((1, 2, 2, 5)), r"LowRankConv2d.*spatial size 2x5 is smaller than the kernel 3x3"),
    (MaxPool2d(2), np.zeros((3, 4)), r"MaxPool2d\(k=2, stride=2\).*\(B, B, B, B\), got \(3, 4\)"),
    (MaxPool2d(3), np.zeros((1, 1, 2, 5)), r"MaxPool2d.*2x5 is smaller than the window 3x3"),
    (Flatten(), np.zeros(3), r"Flatten\(\).*\(B, \.\.\.\), got \(3,\)"),
])
def test_wrong_input_shapes(layer, bad, match):
    with pytest.raises(ShapeError, match=match):
        layer.forward(bad)


def test_wrong_upstream_shapes_and_order():
    for layer, x, bad in [(Dense(4, 3), np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32)),
                          (LowRankLinear(4, 3, 2), np.zeros((2, 4), np.float32), np.zeros((3, 3), np.float32)),
                          (Conv2d(1, 2, 3), np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 2, 3, 3), np.float32)),
                          (ReLU(), np.zeros((2, 4)), np.zeros((2, 5)))]:
        with pytest.raises(RuntimeError, match="backward called before forward"):
            layer.backward(bad)
        layer.forward(x)
        with pytest.raises(ShapeError, match=r"backward input dy must have shape"):
            layer.backward(bad)


@pytest.mark.parametrize("rank", [0, -1, 4, 100, 2.5, True])
def test_bad_ranks(rank):
    with pytest.raises(RankError, match=r"LowRankLinear\(5->3.*rank"):
        LowRankLinear(5, 3, rank)
    with pytest.raises(RankError, match=r"LowRankConv2d\(1->3, k=2.*rank"):
        LowRankConv2d(1, 3, 2, rank)
    with pytest.raises(RankError, match=r"from_dense.*rank"):
        LowRankLinear.from_dense(Dense(5, 3), rank)


def test_rank_error_message_gives_the_bound():
    with pytest.raises(RankError, match=r"min\(n_out, n_in\) = min\(3, 5\) = 3, got rank=4"):
        LowRankLinear(5, 3, 4)


def test_set_factors_checks_shapes_and_rank():
    lr = LowRankLinear(5, 4, 2)
    with pytest.raises(ShapeError, match=r"set_factors U must have shape \(4, 3\), got \(4, 2\)"):
        lr.set_factors(np.zeros((4, 2), np.float32), np.eye(3, dtype=np.float32), np.zeros((5, 3), np.float32))
    with pytest.raises(ShapeError, match=r"set_factors V must have shape \(5, 2\), got \(2, 5\)"):
        lr.set_factors(np.zeros((4, 2)), np.eye(2), np.zeros((2, 5)))
    with pytest.raises(RankError, match=r"set_factors: rank must satisfy"):
        lr.set_factors(np.zeros((4, 5)), np.eye(5), np.zeros((5, 5)))


def test_loss_errors():
    loss = SoftmaxCrossEntropy()
    with pytest.raises(ShapeError, match=r"labels must have shape \(3,\), got \(2,\)"):
        loss.forward(np.zeros((3, 4)), np.zeros(2, int))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), got range \[0, 4\]"):
        loss.forward(np.zeros((3, 4)), np.array([0, 1, 4]))
    with pytest.raises(ShapeError, match="integer class indices"):
        loss.forward(np.zeros((3, 4)), np.zeros(3))


def test_mixed_backends_are_refused():
    fake = FakeCupyArray((2, 4))
    for layer in (Dense(4, 3), LowRankLinear(4, 3, 2)):
        with pytest.raises(BackendError, match=r"\(4->3.*forward input is a cupy array, but the layer lives on backend 'numpy'"):
            layer.forward(fake)
    lr = LowRankLinear(4, 3, 2)
    with pytest.raises(BackendError, match="set_factors U is a cupy array"):
        lr.set_factors(FakeCupyArray((3, 2)), lr.S, lr.V)


@pytest.mark.skipif("cupy" not in available_backends(), reason="needs CuPy and a GPU")
def test_mixed_real_backends_are_refused():
    cp = get_backend("cupy")
    layer = LowRankLinear(4, 3, 2, backend="cupy")
    with pytest.raises(BackendError, match="is a numpy array, but the layer lives on backend 'cupy'"):
        layer.forward(np.zeros((2, 4), np.float32))
    with pytest.raises(BackendError, match="is a cupy array, but the layer lives on backend 'numpy'"):
        Dense(4, 3).forward(cp.asarray(np.zeros((2, 4)), np.float32))


def test_nonfinite_inputs_in_checks():
    layer = LowRankLinear(4, 3, 2, dtype=np.float64)
    x = np.ones((2, 4))
    x[1, 2] = np.nan
    with pytest.raises(NonFiniteError, match="input x contains NaN or inf"):
        gc.check_layer(layer, x)
    with pytest.raises(NonFiniteError, match=r"adjoint test of LowRankLinear\(4->3, rank=2\): the input x contains NaN"):
        gc.adjoint_test(layer, x)
    layer.params["b"][0] = np.inf
    with pytest.raises(NonFiniteError, match=r"coordinate LowRankLinear\(4->3, rank=2\)\.b contains NaN or inf"):
        gc.check_layer(layer, np.ones((2, 4)))


def test_checks_refuse_float32():
    with pytest.raises(ValueError, match=r"Dense\(4->3\)\.W has dtype float32; checks need float64"):
        gc.check_layer(Dense(4, 3), np.ones((2, 4), np.float32))
