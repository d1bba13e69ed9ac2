"""``python -m dlrt_ref ode``: Done-when numbers, JSON contents, bad arguments."""
import json
import math
import os
import subprocess
import sys

import pytest

from dlrt_ref.cli import main


def run_json(capsys, *argv):
    assert main(["ode", *argv, "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


@pytest.mark.parametrize("method", ["ksl", "strang", "bug"])
def test_toy_rank10_within_1p5_of_best(capsys, method):
    rec = run_json(capsys, "--problem", "toy", "--integrator", method, "--rank", "10", "--steps", "100")
    assert rec["error"] <= 1.5 * rec["best_error"]
    assert rec["rank"] == 10 and rec["h"] == pytest.approx(0.01)
    for key in ("error", "best_error", "rank", "norm_drift", "seconds", "problem", "integrator", "steps", "T"):
        assert key in rec


def test_naive_rank20_h01_is_100x_worse(capsys):
    rec = run_json(capsys, "--problem", "toy", "--integrator", "naive", "--rank", "20", "--steps", "10")
    assert rec["h"] == pytest.approx(0.1)
    assert rec["diverged"] or rec["error"] >= 100 * rec["best_error"]


def test_other_problems_and_adaptive(capsys):
    rec = run_json(capsys, "--problem", "schrodinger", "--integrator", "ra-bug", "--rank", "4", "--tol", "1e-3",
                   "--steps", "20", "--T", "1")
    assert rec["substep"] == "rk4" and "energy_drift" in rec and rec["rank"] >= 1
    rec = run_json(capsys, "--problem", "lsq", "--integrator", "bug", "--rank", "3", "--substep", "exact", "--steps", "5")
    assert rec["loss"] >= rec["loss_reference"] - 1e-12 and rec["lipschitz"] > 0
    rec = run_json(capsys, "--problem", "sylvester", "--integrator", "ksl", "--rank", "5", "--sigma-min", "1e-8",
                   "--steps", "10")
    assert rec["sigma_min"] == 1e-8 and math.isfinite(rec["error"])


def test_human_summary(capsys):
    assert main(["ode", "--problem", "toy", "--integrator", "lsk", "--rank", "3", "--steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "error" in out and "best rank-3 error" in out


@pytest.mark.parametrize("extra", [
    ["--integrator", "bug", "--rank", "0"],
    ["--integrator", "bug", "--rank", "101"],
    ["--integrator", "bug", "--rank", "3", "--steps", "0"],
    ["--integrator", "ra-bug", "--rank", "3", "--tol", "-1"],
    ["--integrator", "ra-bug", "--rank", "3", "--tol", "nan"],
    ["--integrator", "bug", "--rank", "3", "--tol", "1e-3"],
    ["--integrator", "bug", "--rank", "3", "--T", "inf"],
    ["--integrator", "bug", "--rank", "3", "--T", "-1"],
    ["--integrator", "bug", "--rank", "3", "--sigma-min", "1e-3"],
    ["--integrator", "bug", "--rank", "3", "--substep", "exact"],
    ["--integrator", "bug", "--rank", "x"],
    ["--integrator", "nope", "--rank", "3"],
])
def test_bad_arguments_exit_2_one_line(capsys, extra):
    with pytest.raises(SystemExit) as exc:
        code = main(["ode", "--problem", "toy", *extra])
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]


def test_subprocess_json():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-m", "dlrt_ref", "ode", "--problem", "toy", "--integrator", "bug", "--rank", "5",
         "--steps", "10", "--json"], capture_output=True, text=True, env=env, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    assert rec["rank"] == 5 and rec["error"] > 0
    bad = subprocess.run([sys.executable, "-m", "dlrt_ref", "ode", "--problem", "lsq", "--integrator", "bug",
                          "--rank", "41"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("method", ["ra-bug", "parallel", "midpoint-bug"])
def test_r_max_is_honoured(capsys, method):
    """--r-max caps every step's rank (a tolerance this small would otherwise let the rank grow)."""
    rec = run_json(capsys, "--problem", "toy", "--integrator", method, "--rank", "5", "--tol", "1e-8", "--r-max", "7",
                   "--steps", "10")
    assert rec["max_rank"] == 7 and rec["r_max"] == 7
    free = run_json(capsys, "--problem", "toy", "--integrator", method, "--rank", "5", "--tol", "1e-8", "--steps", "10")
    assert free["max_rank"] > 7
    assert main(["ode", "--problem", "toy", "--integrator", method, "--rank", "5", "--r-max", "7"]) == 2
    assert "without --tol" in capsys.readouterr().err
