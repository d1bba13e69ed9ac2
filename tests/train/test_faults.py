"""Faults: SIGKILL during a checkpoint write, Ctrl-C, divergence, a corrupted data file.

* SIGKILL while ``checkpoint.npz`` is being written (the write is made to
  stall half-way, then the process is killed): the previous checkpoint still
  loads, resuming from it reproduces the uninterrupted run bit for bit, and the
  next start removes the orphaned temporary file.
* SIGINT: exit 130 and one line on stderr naming the last checkpoint.
* Divergence: a run whose loss explodes stops with exit 1; its last good
  checkpoint stays on disk and loads.
* A corrupted MNIST file: one line naming the file and the expected checksum.
"""
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from dlrt_ref.cli import main

ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
REPO = Path(__file__).resolve().parents[2]

# One child script for the three runs of the SIGKILL test (same process setup, so the same BLAS threads):
#   full OUT       -- uninterrupted, 3 epochs, final weights to OUT/final.npz
#   kill OUT K     -- checkpoint every step; the K-th checkpoint write stalls half-way (then the parent kills it)
#   resume OUT     -- continue from OUT/checkpoint.npz to 3 epochs, final weights to OUT/final.npz
CHILD = textwrap.dedent('''
    import sys, time
    import numpy as np
    from dlrt_ref.data import teacher_student
    from dlrt_ref.nn import mlp
    from dlrt_ref.train import checkpoint as ck
    from dlrt_ref.train.dlrt import DLRT
    from dlrt_ref.train.loop import fit
    from dlrt_ref.train.optim import make_optimizer

    mode, out = sys.argv[1], sys.argv[2]
    data = teacher_student(96, 40, [12, 16, 16, 4], ranks=3, seed=3, dtype=np.float64)
    tr = DLRT(mlp([12, 16, 16, 4], ranks=[6, 6, None], dtype=np.float64, seed=1), make_optimizer("adam", 1e-2),
              method="ra-bug", tau=0.05)
    if mode == "kill":
        k, calls, savez = int(sys.argv[3]), [0], np.savez

        def stalling_savez(f, **arrays):
            calls[0] += 1
            if calls[0] == k:  # write half of a real archive, tell the parent, wait to be killed
                import io
                buf = io.BytesIO()
                savez(buf, **arrays)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                open(out + "/STALLED", "w").close()
                time.sleep(600)
            return savez(f, **arrays)

        ck.np.savez = stalling_savez
        fit(tr, data, 3, 16, seed=5, log_every=0, out_dir=out, checkpoint_every=1, log=lambda _: None)
    else:
        fit(tr, data, 3, 16, seed=5, log_every=0, out_dir=out, log=lambda _: None,
            resume=out + "/checkpoint.npz" if mode == "resume" else None)
        arrays = {}
        for i, layer in enumerate(tr.net.layers):
            arrays.update({f"{i}/{n}": a for n, a in layer.params.items()})
            if getattr(layer, "lowrank", False):
                arrays.update({f"{i}/U": layer.U, f"{i}/S": layer.S, f"{i}/V": layer.V})
        np.savez(out + "/final.npz", **arrays)
''')


def _child(tmp_path, *args, wait=True):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    cmd = [sys.executable, str(script), *map(str, args)]
    if wait:
        p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert p.returncode == 0, p.stderr
        return p
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)


def _load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_sigkill_during_checkpoint_write(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    full.mkdir()
    killed.mkdir()
    _child(tmp_path, "full", full)
    k = 9  # the 9th checkpoint write (step 9; 6 steps per epoch, so in epoch 2) stalls half-way
    proc = _child(tmp_path, "kill", killed, k, wait=False)
    deadline = time.time() + 120
    while not (killed / "STALLED").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    from dlrt_ref.train.checkpoint import read_manifest

    assert read_manifest(killed / "checkpoint.npz")["position"]["step"] == k - 1  # the previous checkpoint, intact
    assert len(list(killed.glob(".checkpoint.npz.*.tmp"))) == 1  # the half-written archive
    _child(tmp_path, "resume", killed)
    assert not list(killed.glob(".*.tmp"))  # the orphan was removed on the next start
    a, b = _load(full / "final.npz"), _load(killed / "final.npz")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key  # bit for bit
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (full, killed))
    assert [e["test_loss"] for e in ra["epochs"]] == [e["test_loss"] for e in rb["epochs"]]


def test_sigint_one_line_exit_130(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dlrt_ref", "train", "--widths", "784,16,10", "--subset", "1000", "--test-subset",
           "100", "--batch-size", "50", "--epochs", "1000", "--out", str(out), "--quiet"]
    # the child gets the default Ctrl-C disposition whatever the test runner's is (an ignored SIGINT is inherited)
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out / "checkpoint.npz").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # report what the child did instead of only the timeout
        proc.kill()
        _, err = proc.communicate()
        status = (out / "results.json").read_text()[:300] if (out / "results.json").exists() else "no results.json"
        pytest.fail(f"no exit within 120 s of SIGINT; stderr: {err[-600:]!r}; results: {status}")
    assert proc.returncode == 130, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "interrupted at epoch" in lines[0] and f"last good checkpoint: {out / 'checkpoint.npz'}" in lines[0]
    assert f"--resume {out / 'checkpoint.npz'}" in lines[0]
    from dlrt_ref.train.checkpoint import read_manifest

    read_manifest(out / "checkpoint.npz")  # still readable
    assert json.loads((out / "results.json").read_text())["summary"]["status"] == "interrupted"


def test_divergence_stops_nonzero_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """The issue's repro (Adam, lr 1e6): loss ~1e19 and exit 0 before; now exit 1 and a loadable checkpoint."""
    out = tmp_path / "run"
    argv = ["train", "--widths", "784,64,64,10", "--subset", "2048", "--test-subset", "500", "--batch-size", "128",
            "--lr", "1e6", "--epochs", "2", "--out", str(out), "--checkpoint-every", "1", "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "diverged" in err[0] and "last good checkpoint" in err[0]
    res = json.loads((out / "results.json").read_text())
    assert res["summary"]["status"] == "diverged"
    from dlrt_ref.train import cli as train_cli
    from dlrt_ref.train.checkpoint import load_checkpoint

    run = json.loads((out / "config.json").read_text())["run"]
    man = load_checkpoint(out / "checkpoint.npz", train_cli.build_trainer(run))  # loads: every weight finite
    assert man["position"]["step"] == len(res["steps"])  # written after the last accepted step


def test_without_the_check_the_blow_up_passes_as_finished(tmp_path):
    """The negative control: divergence_factor=None lets the finite blow-up through (what the check catches)."""
    from dlrt_ref.data import teacher_student
    from dlrt_ref.nn import mlp
    from dlrt_ref.train.dlrt import DLRT
    from dlrt_ref.train.loop import DivergenceError, fit
    from dlrt_ref.train.optim import make_optimizer

    data = teacher_student(96, 40, [12, 16, 4], ranks=3, seed=3, dtype=np.float64)

    def trainer():
        return DLRT(mlp([12, 16, 4], ranks=[6, None], dtype=np.float64, seed=1), make_optimizer("adam", 1e4),
                    method="ra-bug", tau=0.05)

    with np.errstate(all="ignore"):
        hist = fit(trainer(), data, 2, 16, log_every=0, log=lambda _: None, divergence_factor=None)
        assert hist.status == "finished" and max(s["loss"] for s in hist.steps) > 100 * hist.steps[0]["loss"]
        with pytest.raises(DivergenceError, match="more than 100 times the first loss"):
            fit(trainer(), data, 2, 16, log_every=0, log=lambda _: None)


def test_corrupted_data_file_one_line_with_checksum(tmp_path):
    """A re-gzipped MNIST file whose content differs in one pixel: one line naming the file and the expected hash."""
    from dlrt_ref.data import MNIST_IDX_SHA256, SHIPPED_DIR

    folder = tmp_path / "mnist"
    folder.mkdir()
    for p in SHIPPED_DIR.glob("*.gz"):
        shutil.copy(p, folder / p.name)
    name = "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress((folder / name).read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed; still a valid gzip and IDX file
    (folder / name).write_bytes(gzip.compress(bytes(raw)))
    p = subprocess.run([sys.executable, "-m", "dlrt_ref", "train", "--data-dir", str(folder), "--widths", "784,8,10",
                        "--subset", "100", "--epochs", "1", "--quiet"], env=ENV, capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert str(folder / name) in lines[0] and MNIST_IDX_SHA256["t10k-labels-idx1-ubyte"] in lines[0]
