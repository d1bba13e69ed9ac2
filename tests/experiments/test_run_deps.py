"""Runs that depend on runs (issue 18): fine-tuning's phase 2 starts from phase 1's network, wherever it runs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dlrt_ref.cli import main
from dlrt_ref.experiments import budget as B
from dlrt_ref.experiments import cifar_finetune, finetune
from dlrt_ref.experiments import runs as R
from dlrt_ref.nn import lenet5
from dlrt_ref.nn.cifar_models import CIFAR_MODELS
from tests.experiments.test_runs import strip

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_finetune_declares_its_phases():
    cfg = B.resolve(finetune, B.Budget("quick"))
    assert len(finetune.specs(cfg, "numpy")) == finetune.count_runs(cfg) == 3
    specs = finetune.setting_specs("fashion_mnist", 2, 2, 6000)
    assert [(s.key, s.deps) for s in specs] == [
        ("fashion_mnist dlrt", ()), ("fashion_mnist s-only", ("fashion_mnist dlrt",)),
        ("fashion_mnist dlrt-control", ("fashion_mnist dlrt",))]
    cfg = B.resolve(cifar_finetune, B.Budget("quick"))
    specs = cifar_finetune.specs(cfg, "numpy")
    assert len(specs) == cifar_finetune.count_runs(cfg) == 6
    assert specs[2].key == "lenet5_cifar seed=0 dlrt-control" and specs[2].deps == ("lenet5_cifar seed=0 dlrt",)


@pytest.mark.parametrize("build, shape", [
    (lambda: lenet5(ranks=[10, 25, 250, None], seed=1), (2, 1, 28, 28)),
    (lambda: CIFAR_MODELS["resnet20"](classes=10, lowrank="all", width=0.125, seed=1), (2, 3, 32, 32))])
def test_net_state_round_trip_is_exact(build, shape):
    """What phase 2 gets through JSON (another process, another machine) is phase 1's network bit for bit:
    parameters, BatchNorm statistics, factors at a new rank, memory order, training flag."""
    net = build()
    rng = np.random.default_rng(0)
    for layer in net.flat_layers():
        for k, v in layer.params.items():
            layer.params[k] = rng.standard_normal(v.shape).astype(v.dtype)
        for k, v in (getattr(layer, "state", None) or {}).items():
            layer.state[k] = rng.uniform(0.5, 2.0, v.shape).astype(v.dtype)  # variances stay positive
    lr = net.lowrank_layers()[0]
    r = max(1, lr.rank - 1)
    lr.set_factors(np.asfortranarray(lr.U[:, :r]), lr.S[:r, :r].copy(), lr.V[:, :r].copy())  # a rank change, F order
    net.eval()
    state = json.loads(json.dumps(finetune.net_state(net)))
    new = finetune.restore_net(build(), state)
    assert not new.training and all(not layer.training for layer in new.flat_layers())
    for a, b in zip(net.flat_layers(), new.flat_layers()):
        pairs = [(a.params[k], b.params[k]) for k in a.params]
        pairs += [(a.state[k], b.state[k]) for k in (getattr(a, "state", None) or {})]
        if getattr(a, "lowrank", False):
            pairs += [(a.U, b.U), (a.S, b.S), (a.V, b.V)]
        for x, y in pairs:
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes("A") == y.tobytes("A")
            assert x.flags.f_contiguous == y.flags.f_contiguous
    x = rng.standard_normal(shape).astype(np.float32)
    assert np.array_equal(net.forward(x), new.forward(x))
    with pytest.raises(ValueError, match="another architecture"):
        finetune.restore_net(lenet5(ranks=[10, 25, 250, 5], seed=1), finetune.net_state(lenet5(seed=1)))


FINETUNE = ["figures", "--only", "finetune", "--subset", "256", "--quiet"]  # quick preset, 2 steps per epoch


def _figures(out, *extra):
    assert main([*FINETUNE, "--out", str(out), *extra]) == 0
    return json.loads((out / "data" / "finetune.json").read_text())


def test_finetune_serial_jobs_and_dask_give_the_same_json(tmp_path, capsys, request):
    """Serial (one BLAS thread, like the workers), --jobs 2 and a LocalCluster of 2: the same data bit for bit
    (wall times aside); the phase-2 runs get phase 1's network however they are executed."""
    out = tmp_path / "serial"
    subprocess.run([sys.executable, "-m", "dlrt_ref", *FINETUNE, "--out", str(out), "--no-cache"],
                   env=dict(os.environ, **ONE_THREAD), check=True, timeout=600, capture_output=True)
    ref = json.loads((out / "data" / "finetune.json").read_text())
    assert ref["sweep"] == {"runs": 3, "failed": [], "executor": "serial"}
    jobs = _figures(tmp_path / "jobs", "--jobs", "2")
    assert jobs["sweep"]["executor"] == "2 local processes"
    assert json.dumps(strip(jobs["data"])) == json.dumps(strip(ref["data"]))
    assert "b64" not in json.dumps(jobs["data"])  # phase 1's network stays in the run cache, out of the figure data
    capsys.readouterr()
    _figures(tmp_path / "jobs", "--jobs", "2")  # rerun: the three runs, phase 2 included, come from the cache
    assert capsys.readouterr().err.count("from the cache") == 3
    cluster = request.getfixturevalue("dask_cluster")  # skips without dask
    dask = _figures(tmp_path / "dask", "--dask", cluster.scheduler_address)
    assert json.dumps(strip(dask["data"])) == json.dumps(strip(ref["data"]))


def test_a_failed_phase_1_fails_its_phase_2_and_the_rest_goes_on(tmp_path, monkeypatch, capsys):
    """cifar_finetune quick (synthetic data): LeNet5's phase 1 fails; its S-only and control are skipped, ResNet20's
    three runs complete; no figure, the partial JSON lists the three failures."""
    monkeypatch.setenv("DLRT_REF_CACHE", str(tmp_path / "cache"))
    real = cifar_finetune.run_one

    def failing(c, tag, deps=None):
        if c["model"] == "lenet5_cifar" and c["phase"] == "dlrt":
            raise FloatingPointError("boom")
        return real(c, tag, deps)

    monkeypatch.setattr(cifar_finetune, "run_one", failing)
    assert main(["figures", "--only", "cifar_finetune", "--out", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "3 of 6 run(s) failed (first: lenet5_cifar seed=0 dlrt: FloatingPointError: boom)" in err
    part = json.loads((tmp_path / "data" / "cifar_finetune.partial.json").read_text())
    assert [(f["key"], f["error"]) for f in part["sweep"]["failed"]] == [
        ("lenet5_cifar seed=0 dlrt", "FloatingPointError: boom"),
        ("lenet5_cifar seed=0 s-only", "skipped: dependency failed: lenet5_cifar seed=0 dlrt"),
        ("lenet5_cifar seed=0 dlrt-control", "skipped: dependency failed: lenet5_cifar seed=0 dlrt")]
    assert sorted(part["completed"]) == ["resnet20 seed=0 dlrt", "resnet20 seed=0 dlrt-control",
                                         "resnet20 seed=0 s-only"]
    assert part["completed"]["resnet20 seed=0 s-only"]["basis_change"] == 0.0
    assert not (tmp_path / "cifar_finetune.png").exists()
