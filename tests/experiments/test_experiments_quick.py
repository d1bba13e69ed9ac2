"""``python -m dlrt_ref figures --preset quick`` for the training and timing experiments.

Every figure (PNG + PDF) and JSON appears, every number in the JSON is finite,
and the results have the shapes the figures rely on (one accuracy per τ, one
rank list per epoch, one time per rank, ...). The quick presets run on small
stratified MNIST subsets (~1–2 min together on 2 cores).
"""
import json
import math

import pytest

from dlrt_ref.cli import main
from dlrt_ref.experiments import EXPERIMENTS
from tests.helpers.json_numbers import json_numbers

NAMES = ["fc_tau_sweep", "rank_evolution", "lenet_tau", "acc_vs_cr", "dlrt_vs_uv", "finetune",
         "timings_paper", "timings_thesis", "tf2022_emulation"]


def _finite_acc(a):
    return isinstance(a, float) and math.isfinite(a) and 0.0 <= a <= 1.0


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    assert main(["figures", "--preset", "quick", "--only", *NAMES, "--out", str(out)]) == 0
    return out


def _data(out, name):
    rec = json.loads((out / "data" / f"{name}.json").read_text())
    assert rec["name"] == name and rec["preset"] == "quick"
    return rec["data"]


@pytest.mark.parametrize("name", NAMES)
def test_files_and_finite_numbers(quick_out, name):
    assert name in EXPERIMENTS
    for path in (quick_out / f"{name}.png", quick_out / f"{name}.pdf", quick_out / "data" / f"{name}.json"):
        assert path.is_file() and path.stat().st_size > 0, path
    data = _data(quick_out, name)
    nums = list(json_numbers(data))
    assert nums and all(math.isfinite(x) for x in nums)
    assert "budget" in data


def test_shapes(quick_out):
    d = _data(quick_out, "fc_tau_sweep")
    for w in d["config"]["widths"]:
        runs = d["runs"][str(w)]
        assert set(runs) == {"dense"} | {str(t) for t in d["config"]["taus"]}
        for t, r in runs.items():
            assert _finite_acc(r["test_acc_best"]) and len(r["test_acc"]) == d["config"]["epochs"]
            assert len(r["ranks_best"]) == (0 if t == "dense" else 4)
    d = _data(quick_out, "rank_evolution")
    for r in d["runs"].values():
        assert len(r["epoch_ranks"]) == d["epochs"] and all(len(x) == 4 for x in r["epoch_ranks"])
    d = _data(quick_out, "lenet_tau")
    assert set(d["grid"]) == {"dense"} | {str(t) for t in d["taus"]}
    for t in d["taus"]:
        s = d["grid"][str(t)]["summary"]
        assert _finite_acc(s["test_acc_mean"]) and len(s["ranks_best_run"]) == 3
        assert -1 < s["cr_eval_mean"] < 1 and s["cr_thesis_test_mean"] >= s["cr_eval_mean"]
    d = _data(quick_out, "acc_vs_cr")
    assert set(d["results"]) == {"dense"} | {str(c) for c in d["crs"]}
    assert all(_finite_acc(r["test_acc_mean"]) for r in d["results"].values())
    d = _data(quick_out, "dlrt_vs_uv")
    for dd in d["decays"]:
        for m in ("DLRT", "UV"):
            assert len(d["results"][str(dd)][m]["test_acc_mean"]) == d["epochs"]
    for arm in (d["unit_scale_arm"], d["thesis_spectrum_arm"]):  # the two other spectra at d = 1
        assert set(d["results"][arm]) == {"DLRT", "UV"}
    d = _data(quick_out, "finetune")
    for r in d["results"].values():
        assert _finite_acc(r["test_acc_after_dlrt"]) and _finite_acc(r["test_acc_after_sonly"])
        assert r["s_only"]["ranks"][-1] == r["ranks"]  # S-only keeps the ranks
    d = _data(quick_out, "timings_paper")
    assert set(d["rows"]) == {"dense"} | {str(r) for r in d["rows"] if r != "dense"}
    assert all(r["train_s_per_batch"] > 0 and r["predict_s_10k"] > 0 for r in d["rows"].values())
    assert len(d["load_avg_before"]) == 3
    d = _data(quick_out, "tf2022_emulation")
    for runs in d["runs"].values():
        assert len(runs) == 7
        for r in runs.values():
            assert len(r["test_acc"]) == len(r["ranks"]) == d["config"]["epochs"] and all(map(_finite_acc, r["test_acc"]))
            assert all(len(x) == 4 and min(x) >= 2 for x in r["ranks"])
    assert len(d["fixed_rank"]["test_acc"]) == d["fixed_rank"]["epochs"]
    d = _data(quick_out, "timings_thesis")
    assert len(d["rows"]) == 3 and all(r["step_s"] > 0 for r in d["rows"].values())


def test_cifar_lenet_shapes():
    import numpy as np

    from dlrt_ref.experiments.finetune import lenet5_rgb

    net = lenet5_rgb(seed=0)
    assert net.forward(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)
