"""benchmarks/step_time.py: the --quick smoke run writes valid JSON with finite numbers (not a timed test).

No assertion is made on speed: the timings of a shared 2-core machine are not
reproducible. The train CLI's --ortho option is checked here too (it exists
for the benchmark's finding that CholeskyQR2 is much faster at large widths).
"""
import json
import math
import os
import subprocess
import sys

import pytest

from tests.helpers.json_numbers import json_numbers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "step_time.py")


def test_quick_mode_writes_valid_json(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--threads", "1", "--ortho", "householder,cholqr2",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "ms/step" in proc.stdout and "wrote" in proc.stdout
    doc = json.loads(out.read_text())  # strict JSON: NaN/inf would have been refused at write time
    assert all(math.isfinite(x) for x in json_numbers(doc))
    assert doc["machine"]["thread_env"]["OPENBLAS_NUM_THREADS"] == "1"  # --threads took effect by re-exec
    assert doc["machine"]["cpu_count"] >= 1 and len(doc["load_before"]) == 3 and "blas" in doc["machine"]
    assert set(doc["networks"]) == {"paper", "thesis"}
    for net in doc["networks"].values():
        rows = net["results"]
        methods = {r["method"] for r in rows}
        assert methods == {"dense", "ra-bug", "bug", "ksl", "parallel", "uv"}
        assert {r["ortho"] for r in rows if r["method"] == "bug"} == {"householder", "cholqr2"}
        for r in rows:
            assert r["ms_median"] > 0 and r["ratio_to_dense"] > 0 and r["peak_traced_bytes"] >= 0
            assert r["ortho_ms"] >= 0 and r["trunc_ms"] >= 0
            assert r["gemm_rest_ms"] >= 0  # ortho and trunc are timed inside the step
            if r["method"] in ("ra-bug", "parallel", "bug"):
                # constant rank: the ranks after the steps are the layer ranks asked for
                assert r["ranks_after"] == [x for x in r["layer_ranks"] if x is not None]
        passes = {r["method"]: r["passes"] for r in rows}
        assert passes == {"dense": 1, "ra-bug": 1, "bug": 2, "ksl": 3, "parallel": 1, "uv": 1}
    micro = doc["ortho_micro"]
    assert {m["method"] for m in micro} == {"householder", "cholqr2"}
    assert all(m["orth_err_fro"] < 1e-4 for m in micro)


def test_threads_must_precede_numpy_import():
    """Imported after NumPy, a mismatching --threads is refused (it could not take effect)."""
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        import step_time
    finally:
        sys.path.pop(0)
    want = "7" if os.environ.get("OPENBLAS_NUM_THREADS") != "7" else "5"
    with pytest.raises(SystemExit, match="before NumPy is imported"):
        step_time.main(["--quick", "--threads", want])


def test_train_cli_ortho_option(capsys, tmp_path):
    from dlrt_ref.cli import main

    tiny = ["train", "--widths", "784,32,32,10", "--subset", "200", "--test-subset", "100", "--batch-size", "50",
            "--epochs", "1", "--log-every", "0", "--method", "ra-bug", "--json"]
    assert main(tiny + ["--ortho", "cholqr2"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["config"]["run"]["ortho"] == "cholqr2" and math.isfinite(res["test_acc"])
    assert main(tiny + ["--ortho", "gram-schmidt"]) == 2  # main returns argparse's exit code


def test_blas_threads_writes_one_record_per_thread_count(tmp_path):
    """benchmarks/blas_threads.py: one record per thread count and round, finite positive medians of every
    measurement; a bad --threads is a usage error (exit 2, one line)."""
    out = tmp_path / "threads.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "blas_threads.py"), "--threads", "1",
                           "--rounds", "1", "--repeats", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["threads"] == [1] and len(doc["runs"]["1"]) == 1
    med = doc["median_of_round_medians_ms"]["1"]
    assert set(med["step_ms"]) == {"ra-bug", "dense"} and len(med["ops_ms"]) == 5
    assert all(math.isfinite(x) and x > 0 for x in json_numbers(med))
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "blas_threads.py"), "--threads", "0"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "must be >= 1" in bad.stderr.strip().splitlines()[-1]
