"""DLRT's per-layer truncation rules (``layer_rules``): a tolerance factor per layer, a fixed rank inside
an adaptive network, bad input, checkpoints. [P]'s LeNet5 rule built from them: tests/experiments/test_lenet_paper.py."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlrt_ref.data import teacher_student
from dlrt_ref.nn import mlp
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import SGD

WIDTHS = [20, 24, 24, 4]


@pytest.fixture(scope="module")
def batch():
    ds = teacher_student(64, 10, WIDTHS, ranks=3, seed=2, dtype=np.float64)
    return ds.x_train, ds.y_train


def _net(ranks=(8, 8, None), seed=0):
    return mlp(WIDTHS, ranks=list(ranks), dtype=np.float64, seed=seed, spectrum="linear")


@settings(max_examples=8, deadline=None)
@given(f=st.floats(0.2, 3.0), tau=st.floats(0.02, 0.25))
def test_a_common_factor_is_the_same_as_scaling_tau(batch, f, tau):
    """Every layer at tau_factor f under τ runs bit for bit like the global rule at f·τ."""
    x, y = batch
    a = DLRT(_net(), SGD(0.3), tau=tau, layer_rules=[{"tau_factor": f}] * 2)
    b = DLRT(_net(), SGD(0.3), tau=f * tau)
    for _ in range(3):
        ia, ib = a.step(x, y), b.step(x, y)
        assert ia.ranks == ib.ranks and ia.thetas == pytest.approx(ib.thetas, rel=1e-12)
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(la.S, lb.S)


def test_the_factor_acts_on_its_own_layer_only(batch):
    """From the same start the first step sees the same core Ŝ: ϑ of layer 0 scales by its factor, layer 1's not."""
    x, y = batch
    plain = DLRT(_net(), SGD(0.3), tau=0.1).step(x, y)
    ruled = DLRT(_net(), SGD(0.3), tau=0.1, layer_rules=[{"tau_factor": 0.45}, None]).step(x, y)
    assert ruled.thetas[0] == pytest.approx(0.45 * plain.thetas[0], rel=1e-12)
    assert ruled.thetas[1] == pytest.approx(plain.thetas[1], rel=1e-12)


def test_a_layer_at_fixed_rank_keeps_it_while_the_others_adapt(batch):
    x, y = batch
    tr = DLRT(_net(ranks=(8, 6, None)), SGD(0.3), tau=0.4, layer_rules=[None, {"r_min": 6, "r_max": 6}])
    ranks = [tr.step(x, y).ranks for _ in range(6)]
    assert all(r[1] == 6 for r in ranks)
    assert ranks[-1][0] < 8  # the adaptive layer does adapt at this tau (so the fixed one is held, not idle)
    free = DLRT(_net(ranks=(8, 6, None)), SGD(0.3), tau=0.4)  # without the rule the same layer drops
    assert min(free.step(x, y).ranks[1] for _ in range(6)) < 6


def test_layer_rules_in_the_checkpoint_config(batch):
    rules = [{"tau_factor": 0.5}, {"r_min": 3, "r_max": 5}]
    cfg = DLRT(_net(), SGD(0.1), tau=0.1, layer_rules=rules).config()
    assert cfg["layer_rules"] == [{"tau_factor": 0.5}, {"r_min": 3, "r_max": 5}]
    assert "layer_rules" not in DLRT(_net(), SGD(0.1), tau=0.1).config()  # old checkpoints keep their keys


@pytest.mark.parametrize("kw,word", [
    (dict(layer_rules=[{}]), "one entry per low-rank layer"),
    (dict(layer_rules=[{"tau": 0.3}, {}]), "unknown keys"),
    (dict(layer_rules=[{"tau_factor": 0.0}, {}]), "tau_factor"),
    (dict(layer_rules=[{"tau_factor": float("nan")}, {}]), "tau_factor"),
    (dict(layer_rules=[{"tau_factor": 20.0}, {}]), "tau_factor\\*tau"),
    (dict(layer_rules=[{"r_min": 0}, {}]), "r_min"),
    (dict(layer_rules=[{"r_max": 2.5}, {}]), "r_max must be an integer"),
    (dict(layer_rules=[{"r_min": 4, "r_max": 3}, {}]), "r_max"),
    (dict(layer_rules=[{}, {}], method="bug"), "rank-adaptive"),
])
def test_bad_layer_rules_are_one_line_errors(kw, word):
    with pytest.raises((ValueError, TypeError), match=word):  # TypeError: a non-integer rank, as for DLRT's r_max
        DLRT(_net(), SGD(0.1), **{"tau": 0.1, **kw})
