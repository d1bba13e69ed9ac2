"""Seed bands (``fc_seed_bands``), Adam's state policies (``adam_state_policy``) and the presets of
``fc_tau_sweep`` (issue 16 §2–§4): quick runs through ``figures``, and the band statistics by hand."""
import json
import math

import numpy as np
import pytest

from dlrt_ref.cli import main
from dlrt_ref.experiments import adam_state_policy, fc_seed_bands, fc_tau_sweep
from tests.helpers.json_numbers import json_numbers


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick_bands")
    assert main(["figures", "--preset", "quick", "--only", "fc_seed_bands", "adam_state_policy",
                 "--out", str(out)]) == 0
    return out


def _rec(out, name):
    for path in (out / f"{name}.png", out / f"{name}.pdf", out / "data" / f"{name}.json"):
        assert path.is_file() and path.stat().st_size > 0, path
    rec = json.loads((out / "data" / f"{name}.json").read_text())
    assert all(math.isfinite(x) for x in json_numbers(rec["data"]))
    return rec


def _check_arm(arm, seeds, epochs):
    """Bands and row are the mean and the ddof = 1 std of the per-seed runs in the same JSON."""
    assert arm["seeds"] == seeds and sorted(arm["runs"]) == [str(s) for s in seeds]
    runs = [arm["runs"][str(s)] for s in seeds]
    for e in range(epochs):
        vals = [r["test_acc"][e] for r in runs]
        band = arm["bands"]["test_acc"][e]
        assert band["mean"] == pytest.approx(np.mean(vals), abs=1e-12)
        assert band["std"] == pytest.approx(np.std(vals, ddof=1), abs=1e-12)
    best = [r["test_acc"][int(np.argmin(r["val_loss"]))] for r in runs]
    assert arm["row"]["test_acc"]["values"] == pytest.approx(best)
    assert arm["row"]["test_acc"]["std"] == pytest.approx(np.std(best, ddof=1), abs=1e-12)
    crs = [r["cr_eval_best"] for r in runs]
    assert arm["row"]["cr_eval"]["mean"] == pytest.approx(np.mean(crs), abs=1e-12)


def test_seed_bands_quick(quick_out):
    rec = _rec(quick_out, "fc_seed_bands")
    d = rec["data"]
    cfg = d["config"]
    assert rec["seeds"] == cfg["seeds"] == [0, 1] and "2 epochs" in d["budget"] and "transport" in d["budget"]
    assert d["code"]["code_digest"] and "commit" in d["code"]
    assert set(d["arms"]) == {"dense"} | {str(t) for t in cfg["taus"]}
    for name, arm in d["arms"].items():
        _check_arm(arm, cfg["seeds"], cfg["epochs"])
        for r in arm["runs"].values():
            assert r["state_policy"] == "transport" and len(r["test_acc"]) == cfg["epochs"]
        assert ("ranks" in arm["row"]) == (name != "dense")
    # seeds differ: the runs are not copies of one another
    r0, r1 = (d["arms"]["0.11"]["runs"][s]["test_loss"] for s in ("0", "1"))
    assert r0 != r1


def test_adam_state_policy_quick(quick_out):
    rec = _rec(quick_out, "adam_state_policy")
    d = rec["data"]
    cfg = d["config"]
    arms = d["taus"][str(cfg["taus"][0])]
    assert set(arms) == {"transport", "reset", "stale"} == set(d["policies"])
    for policy, arm in arms.items():
        _check_arm(arm, cfg["seeds"], cfg["epochs"])
        assert all(r["state_policy"] == policy for r in arm["runs"].values())
    loss = {p: arms[p]["runs"]["0"]["train_loss"] for p in arms}
    assert loss["transport"] != loss["stale"] and loss["transport"] != loss["reset"]


def test_summarise_by_hand():
    """Three fake seeds: mean and ddof = 1 std, best epoch by validation loss, ranks per layer."""
    def fake(acc, val_loss, ranks, cr):
        k = int(np.argmin(val_loss))
        return {"test_acc": acc, "val_acc": acc, "val_loss": val_loss, "ranks": ranks, "best": k,
                "test_acc_best": acc[k], "ranks_best": ranks[k], "cr_eval_best": cr, "cr_train_paper_best": cr / 2,
                "params_eval_best": 100, "seconds": 1.0}
    runs = {0: fake([0.5, 0.7], [1.0, 0.5], [[4, 4], [3, 3]], 0.8),
            1: fake([0.6, 0.8], [0.4, 0.6], [[5, 5], [4, 2]], 0.7),
            2: fake([0.7, 0.9], [1.0, 0.9], [[6, 6], [5, 1]], 0.6)}
    s = fc_seed_bands.summarise(runs)
    assert s["bands"]["test_acc"][1]["mean"] == pytest.approx(0.8)
    assert s["bands"]["test_acc"][1]["std"] == pytest.approx(0.1)  # ddof = 1 (ddof = 0 gives 0.0816)
    assert s["row"]["best_epoch"] == [2, 1, 2]
    assert s["row"]["test_acc"]["values"] == [0.7, 0.6, 0.9]
    assert s["row"]["ranks"]["per_seed"] == [[3, 3], [5, 5], [5, 1]]
    assert s["row"]["ranks"]["mean"] == pytest.approx([13 / 3, 3.0])
    assert s["row"]["cr_eval"]["std"] == pytest.approx(0.1)
    assert s["bands"]["mean_rank"][0]["mean"] == pytest.approx(5.0)


def test_presets_are_the_issue_budgets():
    full = fc_seed_bands.PRESETS["full"]
    assert full["d"] == 500 and full["taus"] == [0.07, 0.11, 0.15] and len(full["seeds"]) >= 3
    assert full["epochs"] >= 10 and full["subset"] is None and full["validation"] == "last"
    pol = adam_state_policy.PRESETS["full"]
    assert pol["d"] == 500 and pol["taus"] == [0.11] and len(pol["seeds"]) >= 3
    assert set(pol["policies"]) == {"transport", "reset", "stale"}
    sweep = fc_tau_sweep.PRESETS["full"]
    assert sweep["widths"] == [500, 784] and sweep["taus"] == fc_tau_sweep.TAUS and len(fc_tau_sweep.TAUS) == 8
    assert fc_tau_sweep.count_runs(sweep) == 18
    specs = fc_tau_sweep.specs(sweep, "numpy")
    assert sorted({s.config["tau"] for s in specs if s.config["d"] == 784}, key=str) == \
        sorted([None] + fc_tau_sweep.TAUS, key=str)
