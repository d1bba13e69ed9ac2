"""``python -m dlrt_ref train``: JSON output, methods, resume, bad values (exit 2)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dlrt_ref.cli import main
from dlrt_ref.train import cli as train_cli

TINY = ["--widths", "784,32,32,10", "--subset", "300", "--test-subset", "100", "--batch-size", "50",
        "--epochs", "1", "--log-every", "0"]


def run_json(capsys, *args):
    assert main(["train", *TINY, "--json", *args]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


@pytest.mark.parametrize("method,passes", [("ra-bug", 1), ("bug", 2), ("ksl", 3), ("parallel", 1), ("dense", 1),
                                           ("uv", 1)])
def test_json_has_the_promised_keys(capsys, method, passes):
    res = run_json(capsys, "--method", method)
    for key in ("test_acc", "ranks", "cr_eval", "cr_train", "cr_train_definition", "ms_per_step", "passes_per_step",
                "config", "history"):
        assert key in res, key
    assert res["cr_train_definition"] == "train-paper" and res["cr_eval_definition"] == "eval"
    assert res["passes_per_step"] == passes and len(res["history"]) == 1
    assert res["config"]["run"]["method"] == method
    if method == "dense":
        assert res["ranks"] == [] and res["cr_eval"] == 0.0
    elif method in ("bug", "ksl", "uv"):
        assert res["ranks"] == [20, 20]  # fixed-rank default
    else:
        assert res["config"]["initial_ranks"] == [16, 16, None]  # r_max = ⌊min(m, n)/2⌋


def test_rank_options_and_lowrank_last(capsys):
    res = run_json(capsys, "--method", "bug", "--rank", "5", "--lowrank-last", "--optimizer", "sgd", "--lr", "0.1")
    assert res["ranks"] == [5, 5, 5]
    res = run_json(capsys, "--method", "ra-bug", "--rank", "40", "--r-max", "8", "--tau", "0.0", "--dtype", "float64")
    assert res["config"]["initial_ranks"] == [8, 8, None] and max(res["ranks"]) <= 8


def test_lenet5_runs(capsys):
    assert main(["train", "--model", "lenet5", "--subset", "64", "--test-subset", "32", "--batch-size", "32",
                 "--epochs", "1", "--log-every", "0", "--method", "bug", "--rank", "4", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["ranks"] == [4, 4, 4] and res["config"]["initial_ranks"] == [4, 4, 4, None]


def test_compat_flag_changes_the_run(capsys):
    a = run_json(capsys, "--tau", "0.2", "--dtype", "float64")
    b = run_json(capsys, "--tau", "0.2", "--dtype", "float64", "--compat-2022-truncation")
    assert a["test_loss"] != b["test_loss"]


def test_init_spectrum_option(capsys):
    a = run_json(capsys, "--tau", "0.2", "--dtype", "float64")
    b = run_json(capsys, "--tau", "0.2", "--dtype", "float64", "--init-spectrum", "gaussian-product")
    assert a["config"]["run"]["init_spectrum"] == "halfnormal"
    assert b["config"]["run"]["init_spectrum"] == "gaussian-product" and a["test_loss"] != b["test_loss"]


def test_out_and_resume(capsys, tmp_path):
    out = str(tmp_path / "run")
    full = run_json(capsys, "--epochs", "2", "--dtype", "float64")
    run_json(capsys, "--epochs", "1", "--dtype", "float64", "--out", out)
    assert {"config.json", "results.json", "checkpoint.npz"} <= set(os.listdir(out))
    assert main(["train", "--resume", os.path.join(out, "checkpoint.npz"), "--epochs", "2", "--json",
                 "--log-every", "0"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["test_loss"] == full["test_loss"] and resumed["ranks"] == full["ranks"]
    assert [e["test_loss"] for e in resumed["history"]] == [e["test_loss"] for e in full["history"]]
    assert main(["train", "--resume", os.path.join(out, "checkpoint.npz"), "--lr", "0.5"]) == 2
    assert "differs from the checkpoint" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nonfinite_loss_exits_1(capsys, tmp_path):
    code = main(["train", *TINY, "--optimizer", "sgd", "--lr", "1e8", "--method", "bug", "--out", str(tmp_path),
                 "--divergence-factor", "0", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "non-finite loss" in err and len(err.splitlines()) == 1
    code = main(["train", *TINY, "--optimizer", "sgd", "--lr", "1e8", "--method", "bug", "--out", str(tmp_path / "b")])
    assert code == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("train: mlp") and "diverged" in err[-1] and "more than 100 times" in err[-1]


@pytest.mark.parametrize("args,msg", [
    (["--tau", "-1"], "--tau must be"),
    (["--method", "bug", "--tau", "0.1"], "--tau applies to"),
    (["--lr", "0"], "--lr must be"),
    (["--lr", "nan"], "--lr must be"),
    (["--widths", "784,a,10"], "--widths must be"),
    (["--widths", "100,10"], "must start with 784"),
    (["--rank", "0"], "--rank must be >= 1"),
    (["--r-min", "5", "--r-max", "3"], "--r-max (3) must be >= --r-min (5)"),
    (["--method", "dense", "--rank", "4"], "do not apply to --method dense"),
    (["--method", "bug", "--compat-2022-truncation"], "applies to ra-bug/parallel only"),
    (["--validation", "lots"], "--validation must be"),
    (["--model", "lenet5", "--widths", "784,10"], "--widths is for --model mlp"),
    (["--resume", "/nonexistent/ckpt.npz"], "does not exist"),
])
def test_bad_values_exit_2_with_one_line(capsys, args, msg):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_exit_code_2_in_a_subprocess():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "dlrt_ref", "train", "--epochs", "-3"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 2 and "--epochs must be >= 0" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run([sys.executable, "-m", "dlrt_ref", "train", "--method", "svd"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 2 and "invalid choice" in p.stderr


def test_defaults_live_in_one_dict():
    assert train_cli.DEFAULTS["optimizer"] == "adam" and train_cli.DEFAULTS["lr"] == 1e-3
    assert train_cli.DEFAULTS["initial_rank_fixed"] == 20
    run = train_cli.resolve(train_cli_args([]))
    assert run["widths"] == train_cli.DEFAULTS["widths"]["mlp"] and run["tau"] == train_cli.DEFAULTS["tau"]
    assert train_cli.initial_ranks(run) == [250, 250, 250, 250, None]


def train_cli_args(argv):
    import argparse

    p = argparse.ArgumentParser()
    train_cli.add_arguments(p)
    return p.parse_args(argv)


def test_evaluate_reports_without_training(capsys, tmp_path):
    out = tmp_path / "run"
    res = run_json(capsys, "--out", str(out), "--validation", "500")
    before = (out / "checkpoint.npz").read_bytes()
    assert main(["evaluate", str(out / "checkpoint.npz"), "--as-trained", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["test_acc"] == res["test_acc"] and ev["test_loss"] == res["test_loss"] and ev["ranks"] == res["ranks"]
    assert ev["val_acc"] == res["val_acc"] and ev["test_images"] == 100
    assert set(ev["cr"]) == set(res["cr"]) and ev["cr"]["cr_eval"] == res["cr_eval"]  # every definition, by name
    assert (out / "checkpoint.npz").read_bytes() == before and ev["position"]["step"] == res["history"][0]["steps"]
    assert main(["evaluate", str(out)]) == 0  # the folder works too; all 10000 test images by default
    line = capsys.readouterr().out.strip()
    assert "on 10000 images" in line and "%" in line and "cr_thesis_test" in line


def test_start_and_final_lines(capsys, tmp_path):
    assert main(["train", *TINY, "--log-every", "3", "--out", str(tmp_path / "r")]) == 0
    cap = capsys.readouterr()
    err = cap.err.splitlines()
    assert err[0].startswith("train: mlp 784,32,32,10, ra-bug tau 0.1") and "300 train / 0 val / 100 test" in err[0]
    assert "threads" in err[0] and str(tmp_path / "r") in err[0]
    assert "(#1)" in err[1]  # progress from the first step
    final = cap.out.strip()
    res = json.loads((tmp_path / "r" / "results.json").read_text())["summary"]
    assert f"test accuracy {100 * res['test_acc']:.2f} %" in final and f"{100 * res['cr_eval']:.1f} % (eval)" in final
    assert main(["train", *TINY, "--out", str(tmp_path / "r"), "--overwrite", "--quiet"]) == 0  # explicit overwrite
    assert capsys.readouterr().err == ""


def test_version_and_help_are_plain(capsys):
    from dlrt_ref import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"dlrt-ref {__version__}"
    for cmd in ([], ["train"], ["evaluate"], ["figures"], ["ode"]):
        assert main([*cmd, "--help"]) == 0
        text = capsys.readouterr().out
        assert "usage:" in text
        for markup in ("``", ":mod:", ":func:", ":class:", ":math:"):
            assert markup not in text, (cmd, markup)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    script = os.path.join(os.path.dirname(sys.executable), "dlrt-ref")
    if os.path.exists(script):  # the console script of an installed (or editable) package
        p = subprocess.run([script, "--help"], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0 and p.stdout.startswith("usage: dlrt-ref")


BLAS_PROBE = """
import ctypes, sys
from dlrt_ref.cli import apply_threads
print(apply_threads(sys.argv[1:])["threads"])
import numpy
for line in open("/proc/self/maps"):
    path = line.split()[-1]
    if "openblas" in path.lower() and ".so" in path:
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"):
            if hasattr(lib, name):
                print(getattr(lib, name)())
                raise SystemExit(0)
print("unknown")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_threads_reach_blas_before_numpy_loads():
    p = subprocess.run([sys.executable, "-c", "import sys, dlrt_ref.cli; print('numpy' in sys.modules)"],
                       capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "False"  # the entry point can still set the thread variables
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    for n in sorted({"1", str(min(2, os.cpu_count() or 1))}):  # OpenBLAS caps its threads at the core count
        p = subprocess.run([sys.executable, "-c", BLAS_PROBE, "train", "--threads", n], capture_output=True, text=True,
                           env=env, timeout=60)
        requested, blas = p.stdout.split()
        if blas == "unknown":
            pytest.skip("NumPy is not linked to OpenBLAS here")
        assert requested == n and blas == n


def test_train_validation_option_uses_it():
    """``--validation`` text: digits become an int, 'last'/'last:K' stay, anything else is a one-line UsageError."""
    assert train_cli._parse_validation("120") == 120 and train_cli._parse_validation("last") == "last"
    assert train_cli._parse_validation("last:40") == "last:40"
    with pytest.raises(ValueError, match="last:K needs an integer K"):
        train_cli._parse_validation("last:")
    with pytest.raises(ValueError, match="must be K, 'last' or 'last:K'"):
        train_cli._parse_validation("lastx")


def test_default_thread_count_is_one_whatever_the_load(monkeypatch):
    """The default does not follow the machine (cores, load): the digits of a run must not change with them."""
    from dlrt_ref import threads
    for cores, load in ((2, 0.0), (16, 0.0), (16, 9.0), (1, 3.0)):
        monkeypatch.setattr(threads.os, "cpu_count", lambda c=cores: c)
        monkeypatch.setattr(threads.os, "getloadavg", lambda l=load: (l, l, l))
        assert threads.default_threads()[0] == 1
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    p = subprocess.run([sys.executable, "-c", "from dlrt_ref.threads import apply_threads; print(apply_threads([]))"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert "'threads': 1" in p.stdout and "'source': 'default'" in p.stdout
