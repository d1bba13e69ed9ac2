"""The gradient checks themselves: they pass on correct gradients, fail on wrong ones,
never use QR/SVD, and restore what they perturb."""
import numpy as np
import pytest

from dlrt_ref.nn import gradcheck as gc
from dlrt_ref.nn import Dense, LowRankLinear, SoftmaxCrossEntropy, mlp


def function_objective(theta, grad_fn, value_fn):
    box = {"t": theta}
    return gc.Objective(lambda: value_fn(box["t"]), lambda: value_fn(box["t"]),
                        [gc.Coordinate("theta", lambda: box["t"], lambda a: box.__setitem__("t", a),
                                       lambda: grad_fn(box["t"]))]), box


def test_smooth_function_passes_and_is_restored(rng):
    theta = rng.standard_normal((3, 4))
    obj, box = function_objective(theta.copy(), np.cos, lambda t: float(np.sin(t).sum()))
    assert gc.directional_check(obj, rtol=1e-9).rel_error < 1e-9
    assert max(r.rel_error for r in gc.entry_check(obj, n_entries=5, rtol=1e-9)) < 1e-9
    res = gc.taylor_test(obj)
    assert abs(res.slope - 2) < 0.1 and np.all(res.used)
    np.testing.assert_array_equal(box["t"], theta)  # every perturbation was undone


def test_wrong_gradient_is_caught_by_every_check(rng):
    theta = rng.standard_normal(6)
    wrong = lambda t: np.cos(t) * 1.01  # 1 % off  # noqa: E731
    obj, _ = function_objective(theta, wrong, lambda t: float(np.sin(t).sum()))
    with pytest.raises(gc.GradientCheckError, match="relative error"):
        gc.directional_check(obj, rtol=1e-7)
    with pytest.raises(gc.GradientCheckError, match="entry check failed"):
        gc.entry_check(obj, rtol=1e-7)
    with pytest.raises(gc.GradientCheckError, match="slope"):
        gc.taylor_test(obj)
    assert abs(gc.taylor_test(obj, min_slope=None).slope - 1) < 0.2  # O(h) remainder


def test_taylor_of_a_linear_function_is_reported_exact():
    obj, _ = function_objective(np.ones(3), lambda t: np.full(3, 2.0), lambda t: float(2 * t.sum()))
    assert gc.taylor_test(obj).slope == float("inf")


class BuggyDense(Dense):
    """Dense layer with a planted bug in dW or dx."""

    def __init__(self, *a, bug="dW", **k):
        super().__init__(*a, **k)
        self.bug = bug

    def backward(self, dy):
        dx = super().backward(dy)
        if self.bug == "dW":
            self.grads["W"] = self.grads["W"] + 1e-3 * self.grads["W"][::-1]
        if self.bug == "dx":
            dx = dx * (1 + 1e-4)
        return dx


def test_layer_bugs_are_caught(rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(gc.GradientCheckError):
        gc.check_layer(BuggyDense(4, 3, dtype=np.float64, bug="dW"), x)
    with pytest.raises(gc.GradientCheckError, match="adjoint|entry|directional"):
        gc.check_layer(BuggyDense(4, 3, dtype=np.float64, bug="dx"), x)
    with pytest.raises(gc.GradientCheckError, match="adjoint test"):
        gc.adjoint_test(BuggyDense(4, 3, dtype=np.float64, bug="dx"), x, rtol=1e-7)
    gc.check_layer(BuggyDense(4, 3, dtype=np.float64, bug=None), x)


@pytest.mark.parametrize("factor", ["K", "L", "S"])
def test_wrong_factor_gradient_is_caught(rng, factor, monkeypatch):
    layer = LowRankLinear(5, 4, 2, dtype=np.float64)
    right = getattr(LowRankLinear, f"grad_{factor}")
    monkeypatch.setattr(LowRankLinear, f"grad_{factor}", lambda self: right(self)[::-1])  # rows swapped
    with pytest.raises(gc.GradientCheckError):
        gc.check_layer(layer, rng.standard_normal((3, 5)), factors=(factor,))


def test_factor_checks_use_no_qr_or_svd_and_restore_factors(rng, monkeypatch):
    net = mlp([5, 4, 3], ranks=[2, 2], activation="tanh", dtype=np.float64)
    before = [(lay.U.copy(), lay.S.copy(), lay.V.copy()) for lay in net.lowrank_layers()]

    def forbidden(*a, **k):
        raise AssertionError("gradient checks must not call QR or SVD")

    monkeypatch.setattr(np.linalg, "qr", forbidden)
    monkeypatch.setattr(np.linalg, "svd", forbidden)
    res = gc.check_network(net, SoftmaxCrossEntropy(), rng.standard_normal((4, 5)), np.array([0, 1, 2, 0]))
    assert set(res) == {"K", "L", "S"}
    for lay, (U, S, V) in zip(net.lowrank_layers(), before):
        np.testing.assert_array_equal(lay.U, U)
        np.testing.assert_array_equal(lay.S, S)
        np.testing.assert_array_equal(lay.V, V)


def test_factor_coordinates_keep_W(rng):
    layer = LowRankLinear(6, 5, 3, dtype=np.float64)
    W = layer.to_dense()
    for f in "KLS":
        with gc.factor_coordinates(layer, f) as (coord,):
            np.testing.assert_allclose(layer.to_dense(), W, atol=1e-12)
            assert coord.name.endswith("." + f)
    with pytest.raises(ValueError, match="factor must be"):
        with gc.factor_coordinates(layer, "U"):
            pass


def test_relative_error():
    assert gc.relative_error(0.0, 0.0) == 0.0
    assert gc.relative_error(1.0, 1.1) == pytest.approx(0.1 / 1.1)
    assert gc.relative_error(1e-12, 0.0, floor=1e-6) == pytest.approx(1e-6)
