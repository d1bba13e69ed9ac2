"""The DLRT step pinned down: passes counted by the network, the pass that supplies the dense gradient,
the parameter state each pass sees, all-or-nothing steps, and DLRT's rank bounds."""
import numpy as np
import pytest

from dlrt_ref.data import teacher_student
from dlrt_ref.nn import SoftmaxCrossEntropy, mlp
from dlrt_ref.train.dlrt import DLRT, NonFiniteLossError
from dlrt_ref.train.optim import SGD, Adam

WIDTHS = [20, 24, 24, 4]
EXPECTED = {"ra-bug": 1, "parallel": 1, "bug": 2, "ksl": 3}
S_PASS = {"ra-bug": 0, "parallel": 0, "bug": 1, "ksl": 1}  # index of the pass that serves the S-step


@pytest.fixture(scope="module")
def batch():
    ds = teacher_student(64, 10, WIDTHS, ranks=3, seed=2, dtype=np.float64)
    return ds.x_train, ds.y_train


def _net(ranks=(8, 8, None)):
    return mlp(WIDTHS, ranks=list(ranks), dtype=np.float64, seed=0, spectrum="linear")


def _spy(net):
    """Wrap every layer's forward/backward: count calls, record the bias each forward sees and the
    dense gradients each backward leaves."""
    log = {"fwd": [0] * len(net.layers), "bwd": [0] * len(net.layers), "biases": [], "grads": []}
    for k, layer in enumerate(net.layers):
        fwd, bwd = layer.forward, layer.backward

        def forward(x, k=k, fwd=fwd, layer=layer):
            log["fwd"][k] += 1
            if k == 0:
                log["biases"].append([l.params["b"].copy() for l in net.layers if "b" in l.params])
            return fwd(x)

        def backward(dy, k=k, bwd=bwd, layer=layer, **kw):  # kw: input_grad=False for the first layer
            log["bwd"][k] += 1
            dx = bwd(dy, **kw)
            if k == 0:  # the last backward of a pass
                log["grads"].append({(j, n): l.grads[n].copy() for j, l in enumerate(net.layers) for n in l.params})
            return dx

        layer.forward, layer.backward = forward, backward
    return log


# --------------------------------------------------------------------------- passes
@pytest.mark.parametrize("method", list(EXPECTED))
def test_passes_are_counted_by_the_network(batch, method):
    """Every layer's forward and backward run exactly ra-bug 1, parallel 1, bug 2, ksl 3 times per
    step, and StepInfo.passes reports that count (read from the network, not declared)."""
    x, y = batch
    net = _net()
    log = _spy(net)
    tr = DLRT(net, Adam(1e-2), method=method, tau=0.05)
    for k in range(1, 4):
        info = tr.step(x, y)
        assert info.passes == EXPECTED[method]
        assert log["fwd"] == [k * EXPECTED[method]] * len(net.layers)
        assert log["bwd"] == [k * EXPECTED[method]] * len(net.layers)
    assert net.forward_calls == net.backward_calls == 3 * EXPECTED[method]


def test_a_hidden_extra_pass_is_reported(batch):
    """A step that runs one pass more than its method needs reports it: the count is the network's."""
    x, y = batch

    class Wasteful(DLRT):
        def _step(self, x, y):
            self._pass(x, y)  # a hidden extra forward/backward
            return super()._step(x, y)

    assert Wasteful(_net(), SGD(0.1), method="ra-bug").step(x, y).passes == 2
    assert DLRT(_net(), SGD(0.1), method="ra-bug").step(x, y).passes == 1


# --------------------------------------------------------------------------- dense parameters
@pytest.mark.parametrize("method", list(EXPECTED))
def test_dense_parameters_see_start_values_and_step_with_the_s_pass_gradient(batch, method):
    """Every pass sees the dense parameters (biases, dense classifier) of the step's start; they take
    one SGD step with the gradient of the S-step pass: ra-bug/parallel the only pass, bug and ksl
    the 2nd."""
    x, y = batch
    h = 0.1
    net = _net()
    start = {(j, n): l.params[n].copy() for j, l in enumerate(net.layers) for n in l.params}
    log = _spy(net)
    DLRT(net, SGD(h), method=method, tau=0.05).step(x, y)
    assert len(log["grads"]) == EXPECTED[method]
    for seen in log["biases"]:  # every pass: the start biases
        assert all(np.array_equal(a, b) for a, b in zip(seen, [v for (j, n), v in start.items() if n == "b"]))
    g = log["grads"][S_PASS[method]]
    for (j, n), p0 in start.items():
        np.testing.assert_array_equal(net.layers[j].params[n], p0 - h * g[(j, n)])
    for k, other in enumerate(log["grads"]):  # the other passes' gradients differ: the choice is visible
        if k != S_PASS[method]:
            assert not np.allclose(other[(len(net.layers) - 1, "W")], g[(len(net.layers) - 1, "W")])


# --------------------------------------------------------------------------- all or nothing
class FailingLoss(SoftmaxCrossEntropy):
    """Softmax cross-entropy whose ``fail_at``-th forward (counted from 1 after arming) returns NaN."""

    def __init__(self):
        super().__init__()
        self.fail_at, self.calls = None, 0

    def forward(self, logits, labels):
        value = super().forward(logits, labels)
        self.calls += 1
        return float("nan") if self.calls == self.fail_at else value


def _everything(tr):
    net = [({n: v.copy() for n, v in l.params.items()},
            (l.U.copy(), l.S.copy(), l.V.copy()) if getattr(l, "lowrank", False) else None) for l in tr.net.layers]
    opt = {key: {k: (v if k == "frame" else (v if k == "t" else v.copy())) for k, v in st.items()}
           for key, st in tr.opt.state.items()}
    return net, opt, tr.steps, tr.opt.transports, tr.opt.resets


def _assert_same(a, b):
    (net_a, opt_a, *rest_a), (net_b, opt_b, *rest_b) = a, b
    assert rest_a == rest_b
    for (pa, fa), (pb, fb) in zip(net_a, net_b):
        assert pa.keys() == pb.keys() and all(np.array_equal(pa[n], pb[n]) for n in pa)
        assert (fa is None) == (fb is None)
        if fa is not None:
            assert all(np.array_equal(u, v) for u, v in zip(fa, fb))
    assert opt_a.keys() == opt_b.keys()
    for key in opt_a:
        for k, v in opt_a[key].items():
            if k == "frame":
                assert all(u is w for u, w in zip(v, opt_b[key][k])), key  # the same bases, by identity
            elif k == "t":
                assert v == opt_b[key][k]
            else:
                assert np.array_equal(v, opt_b[key][k]), (key, k)


@pytest.mark.parametrize("method,fail_at", [("ra-bug", 1), ("parallel", 1), ("bug", 2), ("ksl", 2), ("ksl", 3)])
def test_a_failed_step_leaves_network_and_optimiser_exactly_as_before(batch, method, fail_at):
    """A non-finite loss in pass ``fail_at`` of a step: NonFiniteLossError, and the network and the
    optimiser state are bit for bit as before the step; the next step equals that of a twin run
    that never failed."""
    x, y = batch
    loss = FailingLoss()
    tr = DLRT(_net(), Adam(1e-2), method=method, tau=0.05, loss=loss)
    twin = DLRT(_net(), Adam(1e-2), method=method, tau=0.05)
    for _ in range(3):  # some optimiser state, bases changed
        tr.step(x, y)
        twin.step(x, y)
    before = _everything(tr)
    loss.calls, loss.fail_at = 0, fail_at
    with pytest.raises(NonFiniteLossError):
        tr.step(x, y)
    assert loss.calls == fail_at  # it did fail in that pass
    _assert_same(_everything(tr), before)
    loss.fail_at = None
    tr.step(x, y)
    twin.step(x, y)
    for a, b in zip(tr.net.layers, twin.net.layers):
        for n in a.params:
            assert np.array_equal(a.params[n], b.params[n])
        if getattr(a, "lowrank", False):
            assert np.array_equal(a.to_dense(), b.to_dense())


# --------------------------------------------------------------------------- rank bounds
@pytest.mark.parametrize("kw,exc,match", [
    (dict(r_max=0), ValueError, "r_max"), (dict(r_max=-3), ValueError, "r_max"),
    (dict(r_min=4, r_max=3), ValueError, "r_max"), (dict(r_min=0), ValueError, "r_min"),
    (dict(r_max=2.5), TypeError, "r_max"), (dict(r_min=2.0), TypeError, "r_min"), (dict(r_max=True), TypeError, "r_max"),
    (dict(r_max="8"), TypeError, "r_max"),
])
def test_bad_rank_bounds_are_errors(kw, exc, match):
    with pytest.raises(exc, match=match):
        DLRT(_net(), SGD(0.1), **kw)


def test_default_r_max_is_half_the_smaller_dimension(batch):
    """r_max defaults to ⌊min(m, n)/2⌋ per layer: with τ = 0 (nothing discarded) one ra-bug step from
    rank 8 augments to 16 and is capped at 10 for the 24×20 layer and 12 for the 24×24 one."""
    x, y = batch
    tr = DLRT(_net(), SGD(0.1), method="ra-bug", tau=0.0)
    assert tr.step(x, y).ranks == [10, 12]
    assert [DLRT.default_r_max(l.shape) for l in tr.layers] == [10, 12]
    assert tr.config()["r_max"] is None  # stored as "default", resolved per layer
    assert DLRT(_net(), SGD(0.1), method="ra-bug", tau=0.0, r_max=9).step(x, y).ranks == [9, 9]
