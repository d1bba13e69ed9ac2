"""Runs as values (issue 18): serial, --jobs and Dask give the same JSON; the run cache survives kills and corruption."""
import json
import os
import subprocess
import sys

import pytest

from dlrt_ref.cli import main
from dlrt_ref.errors import UsageError
from dlrt_ref.experiments import budget as B
from dlrt_ref.experiments import executors as E
from dlrt_ref.data import DataError
from dlrt_ref.experiments import EXPERIMENTS, fc_tau_sweep, load
from dlrt_ref.experiments import runs as R
from tests.experiments import kill_once

TINY = ["--only", "fc_tau_sweep", "--epochs", "1", "--subset", "160"]
TIMING = {"seconds", "ms_per_step"}  # wall times: the only fields that differ between two runs of one spec
# and the code's provenance (fc_tau_sweep records it), which differs when the working tree changes between runs
TIMING |= {"commit", "code_digest", "uncommitted"}


def strip(o):
    if isinstance(o, dict):
        return {k: strip(v) for k, v in o.items() if k not in TIMING}
    if isinstance(o, list):
        return [strip(v) for v in o]
    return o


def tiny_specs(name="fc_tau_sweep", **over):
    mod = load(name)
    cfg = B.resolve(mod, B.Budget("quick", **{"epochs": 1, "subset": 160, **over}))
    return mod, cfg, mod.specs(cfg, "numpy")


def figures(out, *extra):
    assert main(["figures", *TINY, "--out", str(out), "--quiet", *extra]) == 0
    return json.loads((out / "data" / "fc_tau_sweep.json").read_text())


@pytest.fixture(scope="module")
def serial_json(tmp_path_factory):
    """The serial reference, run in its own process at one BLAS thread like every worker: bit-equality across
    executors holds for equal thread counts (a 2-thread BLAS sums in another order; CI runs pytest with 2)."""
    out = tmp_path_factory.mktemp("serial")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "dlrt_ref", "figures", *TINY, "--out", str(out), "--quiet", "--no-cache"],
                   env=env, check=True, timeout=600)
    return json.loads((out / "data" / "fc_tau_sweep.json").read_text())


def test_jobs_and_dask_give_the_serial_json(serial_json, tmp_path):
    """Same data (bit for bit, the wall times aside) serially, in 2 processes and on a LocalCluster of 2 workers."""
    ref = strip(serial_json["data"])
    assert serial_json["sweep"] == {"runs": 8, "failed": [], "executor": "serial"}
    jobs = figures(tmp_path / "jobs", "--jobs", "2")
    assert jobs["sweep"]["executor"] == "2 local processes"
    assert json.dumps(strip(jobs["data"])) == json.dumps(ref)  # same values, same key order
    pytest.importorskip("dask.distributed")
    dask = figures(tmp_path / "dask", "--dask", "local:2")
    assert dask["sweep"]["executor"] == "dask LocalCluster of 2 worker processes"
    assert json.dumps(strip(dask["data"])) == json.dumps(ref)


def test_dask_scheduler_address(serial_json, tmp_path, dask_cluster):
    """``--dask ADDRESS``: a running scheduler (here a LocalCluster started by the tests, reached by its address)."""
    rec = figures(tmp_path, "--dask", dask_cluster.scheduler_address)
    assert rec["sweep"]["executor"] == f"dask scheduler {dask_cluster.scheduler_address}"
    assert json.dumps(strip(rec["data"])) == json.dumps(strip(serial_json["data"]))


def test_results_come_back_in_spec_order():
    """Whatever order the runs finish in (here: reversed), the results are in spec order."""
    _, _, specs = tiny_specs()

    class Reversed(R.SerialExecutor):
        def map(self, c):
            return reversed(list(super().map(c)))

    results, failures = R.sweep(specs, Reversed(), progress=False)
    assert not failures and list(results) == [s.key for s in specs]


def test_workers_use_one_blas_thread(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    ex = E.ProcessExecutor(1)
    try:
        got = [ex.pool.submit(os.getenv, v).result(timeout=60) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")]
    finally:
        ex.close()
    assert got == ["1", "1"]


@pytest.mark.parametrize("where", ["jobs", "dask"])
def test_a_worker_killed_mid_sweep_the_sweep_finishes_and_a_rerun_uses_the_cache(serial_json, tmp_path, where,
                                                                                 request):
    """The fifth of 8 runs SIGKILLs its worker once (2 workers: at least 3 runs have finished by then). The
    sweep finishes (--jobs: the broken pool's runs go to a fresh pool; Dask: the scheduler reschedules the
    task), the data equal the serial ones, and a rerun takes every run from the cache."""
    cluster = request.getfixturevalue("dask_cluster") if where == "dask" else None  # skips without dask
    _, cfg, base = tiny_specs()
    marker = tmp_path / "killed"
    specs = kill_once.specs(base, marker, victim=4)
    cache = R.RunCache(tmp_path / ".runs")
    ex = E.ProcessExecutor(2) if where == "jobs" else E.DaskExecutor(cluster.scheduler_address)
    first_pool = getattr(ex, "pool", None)
    try:
        results, failures = R.sweep(specs, ex, cache, progress=False)
        if where == "jobs":
            assert ex.pool is not first_pool  # the pool broke and was replaced
    finally:
        ex.close()
    assert marker.exists() and not failures, failures  # the victim killed its worker, and yet every run finished
    data = R.normalise(fc_tau_sweep.assemble(cfg, results))
    assert json.dumps(strip(data)) == json.dumps(strip(serial_json["data"]))
    calls = []

    class Counting(R.SerialExecutor):
        def map(self, c):
            calls.extend(c)
            return super().map(c)

    again, failures = R.sweep(specs, Counting(), cache, progress=False)
    assert not failures and calls == [] and again == results  # everything from the cache, same values


def test_corrupted_cache_entry_is_detected_and_recomputed(tmp_path):
    mod, cfg, specs = tiny_specs()
    specs = specs[:3]
    log = []
    cache = R.RunCache(tmp_path, log.append)
    first, _ = R.sweep(specs, None, cache, progress=False)
    entries = {json.loads(p.read_text())["spec"]["key"]: p for p in tmp_path.glob("*.json")}
    assert set(entries) == {s.key for s in specs}
    # a plausible but wrong number in one entry (valid JSON), and a truncated file in another
    e = json.loads(entries[specs[1].key].read_text())
    e["result"]["test_acc_best"] = 0.999
    entries[specs[1].key].write_text(json.dumps(e))
    entries[specs[2].key].write_text(entries[specs[2].key].read_text()[:50])
    calls = []

    class Counting(R.SerialExecutor):
        def map(self, c):
            calls.extend(s.key for s, _, _ in c)
            return super().map(c)

    again, failures = R.sweep(specs, Counting(), cache, progress=False)
    assert not failures and calls == [specs[1].key, specs[2].key]
    assert again[specs[1].key]["test_acc_best"] != 0.999
    assert strip(again) == strip(first)
    assert len(log) == 2 and all("corrupted" in line for line in log)


def test_cache_key_covers_the_whole_spec():
    """Specs that differ only in their seed (or any other config entry) never share a cache entry."""
    for name, over in (("acc_vs_cr", {"seeds": 2}), ("lenet_tau", {"seeds": 2})):
        _, _, specs = tiny_specs(name, **over)
        cache = R.RunCache("unused")
        digests = {cache.digest(s) for s in specs}
        configs = {R.canonical(s.config) for s in specs}  # lenet_tau's long runs can equal grid runs: one entry
        assert len(configs) > len({R.canonical({k: v for k, v in s.config.items() if k != "seed"}) for s in specs})
        assert len(digests) == len(configs), name
    s = specs[0]
    assert cache.digest(s) != cache.digest(s, data_folder="/elsewhere")


def test_a_failing_run_is_reported_the_others_go_on(tmp_path, monkeypatch, capsys):
    real = fc_tau_sweep.run_one

    def flaky(c, tag, **kw):
        if c["d"] == 64 and c["tau"] == 0.11:
            raise FloatingPointError("boom")
        return real(c, tag, **kw)

    monkeypatch.setattr(fc_tau_sweep, "run_one", flaky)
    assert main(["figures", *TINY, "--out", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "1 of 8 run(s) failed (first: d=64 tau=0.11: FloatingPointError: boom)" in err
    part = json.loads((tmp_path / "data" / "fc_tau_sweep.partial.json").read_text())
    assert part["partial"] is True and [f["key"] for f in part["sweep"]["failed"]] == ["d=64 tau=0.11"]
    assert part["sweep"]["failed"][0]["spec"]["config"]["tau"] == 0.11 and len(part["completed"]) == 7
    assert not (tmp_path / "fc_tau_sweep.png").exists() and not (tmp_path / "data" / "fc_tau_sweep.json").exists()
    monkeypatch.setattr(fc_tau_sweep, "run_one", real)  # the rerun computes the failed run only, then draws
    assert main(["figures", *TINY, "--out", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().err.count("from the cache") == 7
    assert (tmp_path / "fc_tau_sweep.png").exists() and not (tmp_path / "data" / "fc_tau_sweep.partial.json").exists()


def test_dependencies_run_after_what_they_need_and_fail_with_it():
    order = []

    class Recording(R.SerialExecutor):
        def map(self, c):
            i = 0
            while i < len(c):
                s, _, deps = c[i]
                order.append((s.key, deps))
                yield i, {"v": s.key}, (None if s.key != "a" else "ValueError: x"), 0.0
                i += 1

    a, b, c = R.RunSpec("x", "a", {}), R.RunSpec("x", "b", {}), R.RunSpec("x", "c", {}, deps=("b",))
    results, failures = R.sweep([c, b, a], Recording(), progress=False)
    assert order == [("b", None), ("a", None), ("c", {"b": {"v": "b"}})] and list(results) == ["c", "b"]
    d = R.RunSpec("x", "d", {}, deps=("a",))
    e = R.RunSpec("x", "e", {}, deps=("d",))
    _, failures = R.sweep([a, d, e, b], Recording(), progress=False)
    assert [(f["key"], f["error"]) for f in failures] == [
        ("a", "ValueError: x"), ("d", "skipped: dependency failed: a"), ("e", "skipped: dependency failed: d")]
    with pytest.raises(ValueError, match="depends on 'zz'"):
        R.sweep([R.RunSpec("x", "e", {}, deps=("zz",))], progress=False)
    with pytest.raises(ValueError, match=r"dependency cycle among \['p', 'q'\]"):
        R.sweep([b, R.RunSpec("x", "p", {}, deps=("q",)), R.RunSpec("x", "q", {}, deps=("p",))], progress=False)


def test_a_phase_2_is_handed_over_when_its_own_phase_1_ends():
    """Not in waves: b1 (needs a1) is submitted as soon as a1 has ended, while a2 is still running."""
    seen = []

    class Watching(R.SerialExecutor):
        def map(self, c):
            i = 0
            while i < len(c):
                yield i, {}, None, 0.0
                seen.append([s.key for s, _, _ in c])  # what the sweep has handed over after this result
                i += 1

    a1, a2 = R.RunSpec("x", "a1", {}), R.RunSpec("x", "a2", {})
    b1, b2 = R.RunSpec("x", "b1", {}, deps=("a1",)), R.RunSpec("x", "b2", {}, deps=("a2",))
    results, failures = R.sweep([a1, a2, b1, b2], Watching(), progress=False)
    assert not failures and list(results) == ["a1", "a2", "b1", "b2"]
    assert seen[0] == ["a1", "a2", "b1"]


def test_the_cache_key_of_a_phase_2_covers_its_phase_1(tmp_path):
    """Same phase-2 config, other phase 1 (another epoch count): a new cache entry, never the old result."""
    calls = []

    class Fake(R.SerialExecutor):
        def map(self, c):
            i = 0
            while i < len(c):
                s, _, deps = c[i]
                calls.append(s.key)
                yield i, {"from": s.config, "deps": deps}, None, 0.0
                i += 1

    cache = R.RunCache(tmp_path)

    def specs(epochs):
        return [R.RunSpec("x", "p1", {"epochs": epochs}), R.RunSpec("x", "p2", {"epochs": 1}, deps=("p1",))]

    R.sweep(specs(1), Fake(), cache, progress=False)
    R.sweep(specs(1), Fake(), cache, progress=False)
    assert calls == ["p1", "p2"]  # the second sweep: both from the cache
    results, _ = R.sweep(specs(2), Fake(), cache, progress=False)
    assert calls == ["p1", "p2", "p1", "p2"] and results["p2"]["deps"]["p1"]["from"] == {"epochs": 2}


def test_dask_missing_is_one_line_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "dask.distributed", None)
    with pytest.raises(UsageError, match=r"pip install \.\[cluster\]"):
        E.make_executor(dask="local:2")
    assert main(["figures", *TINY, "--dask", "local:2", "--plan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install .[cluster]" in err[0]


def test_gpu_for_worker():
    assert [E.gpu_for_worker(i, 2) for i in range(5)] == [0, 1, 0, 1, 0]  # LocalCluster names 0, 1, ...
    assert E.gpu_for_worker("gpu-3", 4) == 3 and E.gpu_for_worker("tcp://w-7", 4) == 3
    assert E.gpu_for_worker("anything-5", 8, visible="5") == 0  # the worker sees its own device only
    assert E.gpu_for_worker(3, 4, visible="0,1,2,3") == 3  # plain workers that all see every device (e.g. SLURM)
    # dask-cuda: worker k sees the devices rotated by k, its own first (dask_cuda's cuda_visible_devices); by name
    # (k mod 4) workers 1 and 3 would both take physical device 2 of the rotated lists "1,2,3,0" and "3,0,1,2"
    for k in range(4):
        visible = ",".join(str((k + j) % 4) for j in range(4))
        assert visible.split(",")[E.gpu_for_worker(k, 4, visible=visible, dask_cuda=True)] == str(k)
    with pytest.raises(ValueError, match="n_devices"):
        E.gpu_for_worker(0, 0)
    with pytest.raises(ValueError, match="no number"):
        E.gpu_for_worker("worker", 2)


def test_jobs_note_for_experiments_not_split_into_runs(tmp_path, capsys):
    """An experiment run whole says in one line why it runs serially; the timing experiments always do."""
    assert main(["figures", "--only", "ode_rank_adaptive", "--jobs", "2", "--out", str(tmp_path), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert ("figures: ode_rank_adaptive runs serially (one whole computation of ~6 s: nothing worth spreading); "
            "2 local processes not used") in err
    for name in ("timings_paper", "timings_thesis"):
        mod = load(name)
        assert not hasattr(mod, "specs") and "wall times" in mod.SERIAL


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if hasattr(load(n), "specs")])
def test_every_split_experiment_counts_its_specs(name, tmp_path):
    """count_runs (the progress total and ETA) is the number of specs; keys are unique; a cache entry of every
    spec reads back (its config is its JSON form: a tuple in it would never match the stored list)."""
    mod = load(name)
    cache = R.RunCache(tmp_path, lambda line: pytest.fail(line))
    for preset in ("quick", "full"):
        cfg = B.resolve(mod, B.Budget(preset))
        try:
            specs = mod.specs(cfg, "numpy")
        except DataError:  # the CIFAR experiments' full preset without the archives
            continue
        assert len(specs) == B.count_runs(mod, cfg), (name, preset)
        assert len({s.key for s in specs}) == len(specs)
        for s in specs[:3] + specs[-3:]:
            cache.put(s, cache.digest(s), {"x": 1})
            assert cache.get(s, cache.digest(s)) == {"x": 1}, (name, s.key)
