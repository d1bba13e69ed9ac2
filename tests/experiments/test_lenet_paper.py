"""[P]'s LeNet5 experiment (Schotthöfer et al. 2022, LeNet5 table): the per-layer rule (0.45τ on exactly the
linear layers, the last layer at fixed rank 10), and the quick preset end to end (data, JSON shape, figure)."""
import math

import numpy as np
import pytest

from dlrt_ref.experiments import EXPERIMENTS
from dlrt_ref.experiments import lenet_paper as LP
from dlrt_ref.nn import lenet5, mlp
from dlrt_ref.nn.conv import LowRankConv2d
from dlrt_ref.nn.lowrank_layers import LowRankLinear
from dlrt_ref.train import accounting as acc
from tests.helpers.json_numbers import json_numbers



def test_paper_rule_puts_045_tau_on_exactly_the_linear_layers():
    tr = LP.build_trainer(0.2, seed=0)
    kinds = [type(l) for l in tr.layers]
    assert kinds == [LowRankConv2d, LowRankConv2d, LowRankLinear, LowRankLinear]
    rules = [tr._rule(l, i) for i, l in enumerate(tr.layers)]
    assert [r["tau"] for r in rules[:3]] == pytest.approx([0.2, 0.2, 0.45 * 0.2])
    assert (rules[3]["r_min"], rules[3]["r_max"]) == (10, 10)
    # the rule follows the layer type, not the position: an all-linear network gets 0.45 everywhere but the last
    mlp_rules = LP.paper_rules(mlp([12, 8, 8, 3], ranks=[4, 4, 3]))
    assert mlp_rules == [{"tau_factor": 0.45}, {"tau_factor": 0.45}, {"r_min": 10, "r_max": 10}]
    conv_rules = LP.paper_rules(lenet5(ranks=[6, 8, None, 5]))
    assert conv_rules == [{}, {}, {"r_min": 10, "r_max": 10}]


def test_paper_lenet_last_layer_stays_at_rank_10_through_ra_bug_steps():
    tr = LP.build_trainer(0.3, seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 16)
    ranks = [tr.step(x, y).ranks for _ in range(3)]
    assert all(r[3] == 10 for r in ranks) and ranks[0][:3] != [20, 50, 250]  # the others adapt


def test_counts_of_a_published_row_and_the_dense_net():
    """[P]'s counts: dense 430 500; tau = 0.11, ranks [15, 46, 13, 10] -> eval 88.86 %, train 88.25 %."""
    rows = acc.weight_table(lenet5(ranks=LP.PUBLISHED[0.11][1]))
    assert acc.dense_count(rows) == 430_500
    assert acc.count_params(rows, "eval") == 47_975 and acc.count_params(rows, "train-lenet") == 50_585
    assert 100 * acc.compression_rate(rows, "eval") == pytest.approx(LP.PUBLISHED[0.11][2], abs=0.005)
    assert 100 * acc.compression_rate(rows, "train-lenet") == pytest.approx(LP.PUBLISHED[0.11][3], abs=0.005)


def test_quick_preset_end_to_end(tmp_path):
    assert "lenet_paper" in EXPERIMENTS
    data = LP.run("quick")
    assert set(data["rows"]) == {"dense"} | {str(t) for t in data["taus"]}
    for t in data["taus"]:
        s = data["rows"][str(t)]["summary"]
        assert 0 <= s["test_acc_mean"] <= 1 and len(s["ranks_best_run"]) == 4 and s["ranks_best_run"][3] == 10
        assert s["cr_eval_mean"] > s["cr_train_lenet_mean"]  # the r^2 terms
        run = data["rows"][str(t)]["runs"][0]
        assert run["params"][run["best"]]["dense"] == 430_500
    assert all(math.isfinite(x) for x in json_numbers(data)) and "budget" in data and "code_digest" in data
    paths = LP.plot(data, tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)


def test_band_is_ddof_1():
    assert LP.band([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert LP.band([0.5]) == (0.5, None)


def test_lenet_band_quick_preset_end_to_end(tmp_path):
    """The thesis LeNet5 seed bands (issue 16 §2): per-epoch and chosen-epoch mean ± std over the seeds, ddof = 1."""
    from dlrt_ref.experiments import lenet_band as LB

    assert "lenet_band" in EXPERIMENTS
    data = LB.run("quick")
    assert set(data["arms"]) == {"dense", "0.11"}
    for arm in data["arms"].values():
        accs = arm["test_acc_best_runs"]
        assert len(accs) == len(data["seeds"]) == 2
        assert arm["test_acc_best_std_ddof1"] == pytest.approx(abs(accs[0] - accs[1]) / np.sqrt(2))
        assert len(arm["test_acc_epoch_mean"]) == data["epochs"]
    assert all(math.isfinite(x) for x in json_numbers(data)) and "budget" in data
    assert all(p.stat().st_size > 0 for p in LB.plot(data, tmp_path))
