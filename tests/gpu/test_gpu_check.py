"""benchmarks/gpu_check.sh and step_time.py --backend cupy, as far as a CPU can check them.

* Without CuPy/GPU the script prints one clear line and exits 0, running nothing.
* ``--dry-run`` runs every stage's plumbing on the NumPy backend at tiny sizes and writes the
  one JSON with every section and the targets (a GPU run fills the same fields).
* ``step_time.py --backend cupy`` runs on the strict CuPy stand-in: device synchronisation
  around timings, no NumPy call on a device array, the truncation micro-benchmark.
"""
import json
import os
import subprocess
import sys

import pytest

from tests.gpu import fake_cupy
from dlrt_ref.backend import available_backends

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.sh")


def _env():
    return dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


@pytest.mark.skipif("cupy" in available_backends(), reason="a GPU is available: the script would run for real")
def test_gpu_check_without_gpu_says_so_and_exits_cleanly():
    proc = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=_env(), timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("gpu_check: no GPU backend on this machine (CuPy is not installed or no GPU is "
                                   "visible); nothing was run")
    assert "Traceback" not in proc.stderr


def test_gpu_check_dry_run_writes_the_one_json(tmp_path):
    out = tmp_path / "gpu_dry.json"
    env = dict(_env(), GPU_CHECK_OUT=str(out), TMPDIR=str(tmp_path))
    proc = subprocess.run(["bash", SCRIPT, "--dry-run"], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["dry_run"] and doc["device"] == "cpu-dry-run"
    assert set(doc["stages"]) == {"parity", "gpu_tests", "bench_paper", "bench_thesis", "tutorial07", "mnist5"}
    assert all(s["rc"] == 0 and s["seconds"] <= s["timeout_s"] for s in doc["stages"].values())
    assert doc["parity"]["passed"] >= 1 and doc["parity"]["failures"] == 0
    assert doc["bench_paper"]["networks"]["paper"]["dense_ms"] > 0
    assert {r["solver"] for r in doc["bench_thesis"]["networks"]["thesis"]["results"] if r["method"] == "ra-bug"} == \
        {"gram", "svd"}
    assert doc["mnist_run"]["summary"]["status"] == "finished"
    assert [t["met"] for t in doc["targets"]][:2] == [None, None]  # rank 80 is not in the quick sizes
    lines = proc.stdout.strip().splitlines()
    assert len(lines) <= 24 and lines[-1] == f"wrote {out}"  # one screen
    assert any(line.startswith("[") and "parity tests" in line for line in lines)


def test_step_time_cupy_backend_on_the_stand_in(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import step_time
    finally:
        sys.path.pop(0)
    out = tmp_path / "bench.json"
    with fake_cupy.install(strict=True) as stats:
        assert step_time.main(["--quick", "--backend", "cupy", "--network", "thesis", "--layer-ranks", "4,3,2",
                               "--methods", "dense,ra-bug,bug", "--ortho", "cholqr2", "--solver", "gram,svd",
                               "--trunc-ks", "8,16", "--out", str(out)]) == 0
    assert stats.violations == [], stats.violations
    assert sum(k == "stream.synchronize" for k, _ in stats.syncs) > 0  # timings are bracketed by device syncs
    doc = json.loads(out.read_text())
    assert doc["backend"] == "cupy" and doc["machine"]["device"] == "fake_cupy (CPU stand-in)"
    rows = doc["networks"]["thesis"]["results"]
    assert [(r["method"], r["solver"]) for r in rows] == [("dense", None), ("ra-bug", "gram"), ("ra-bug", "svd"),
                                                          ("bug", None)]
    assert all(r["layer_ranks"] == [4, 3, 2, None] for r in rows if r["method"] != "dense")
    gram = next(r for r in rows if r.get("solver") == "gram")
    assert gram["calls_last_step"]["trunc_gram"] == 3  # every layer's truncation took the Gram path
    assert {(t["k"], t["solver"]) for t in doc["truncation_micro"]} == {(k, s) for k in (8, 16)
                                                                         for s in ("svd", "gram", "host-svd")}
