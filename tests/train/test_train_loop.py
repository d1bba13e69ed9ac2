"""fit(): seeded shuffle, history, JSON, atomic checkpoints, bit-for-bit resume, non-finite stop."""
import json
import os

import numpy as np
import pytest

from dlrt_ref.data import teacher_student
from dlrt_ref.nn import mlp
from dlrt_ref.train.baselines import SOnlyTrainer, UVTrainer
from dlrt_ref.train.checkpoint import CheckpointError, load_checkpoint, read_manifest
from dlrt_ref.train.files import atomic_write
from dlrt_ref.train.dlrt import DLRT, NonFiniteLossError
from dlrt_ref.train.loop import History, epoch_order, evaluate, fit
from dlrt_ref.train.optim import make_optimizer

WIDTHS = [20, 24, 24, 4]


@pytest.fixture(scope="module")
def data():
    return teacher_student(120, 60, WIDTHS, ranks=3, seed=1, n_val=30, dtype=np.float64)


def _trainer(kind, optimizer="adam", lr=1e-2, seed=0):
    if kind == "dense":
        net = mlp(WIDTHS, dtype=np.float64, seed=seed)
        return DLRT(net, make_optimizer(optimizer, lr), method="bug")
    net = mlp(WIDTHS, ranks=[8, 8, None], dtype=np.float64, seed=seed)
    opt = make_optimizer(optimizer, lr)
    if kind == "uv":
        return UVTrainer(net, opt)
    if kind == "s-only":
        return SOnlyTrainer(net, opt)
    return DLRT(net, opt, method=kind, tau=0.05)


def _weights(net):
    out = []
    for layer in net.layers:
        for name in sorted(layer.params):
            out.append(layer.params[name])
        if getattr(layer, "lowrank", False):
            out += [layer.U, layer.S, layer.V]
    return out


def _quiet(_line):
    pass


def test_epoch_order_is_a_seeded_permutation():
    a, b = epoch_order(50, 3, 0), epoch_order(50, 3, 1)
    assert sorted(a) == list(range(50)) and not np.array_equal(a, b)
    assert np.array_equal(a, epoch_order(50, 3, 0))


def test_history_and_files(data, tmp_path):
    tr = _trainer("ra-bug")
    lines = []
    hist = fit(tr, data, epochs=2, batch_size=16, seed=0, log_every=4, out_dir=tmp_path, log=lines.append,
               config={"note": "test"})
    n_steps = 2 * -(-120 // 16)
    assert hist.status == "finished" and len(hist.steps) == n_steps and len(hist.epochs) == 2
    assert [s["step"] for s in hist.steps] == list(range(1, n_steps + 1))
    e = hist.epochs[-1]
    for key in ("train_loss", "val_loss", "val_acc", "test_loss", "test_acc", "ranks", "params", "cr", "ms_per_step"):
        assert e[key] is not None, key
    assert set(e["cr"]) >= {"cr_eval", "cr_train_paper", "cr_train_lenet", "cr_thesis_test", "cr_thesis_train"}
    step_lines = [l for l in lines if "(#" in l]
    assert len(step_lines) == 1 + n_steps // 4  # the first step, then every 4th
    assert "(#1)" in step_lines[0] and all("loss" in l and "ranks" in l and " ms" in l for l in step_lines)
    assert sum("done" in l for l in lines) == 2
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["summary"]["cr_train_definition"] == "train-paper" and res["summary"]["test_acc"] == e["test_acc"]
    assert json.loads((tmp_path / "config.json").read_text())["note"] == "test"
    assert read_manifest(tmp_path / "checkpoint.npz")["position"] == {"epoch": 2, "batch": 0, "step": n_steps}
    loss, acc = evaluate(tr.net, data.x_test, data.y_test, 7)
    assert loss == pytest.approx(e["test_loss"]) and acc == e["test_acc"]


@pytest.mark.parametrize("kind,optimizer", [("ra-bug", "adam"), ("ra-bug", "momentum"), ("bug", "adam"),
                                            ("parallel", "adam"), ("ksl", "momentum"), ("uv", "adam"),
                                            ("s-only", "adam"), ("dense", "adam")])
def test_resume_is_bit_for_bit(data, tmp_path, kind, optimizer):
    """Interrupt at a step boundary mid-epoch, resume in a fresh trainer: identical weights, state and history."""
    full = _trainer(kind, optimizer)
    h_full = fit(full, data, epochs=2, batch_size=16, seed=5, log_every=0, log=_quiet)

    mid = tmp_path / "mid"
    second = _trainer(kind, optimizer)
    stop_at = 11  # epoch 1 has 8 batches of 16: the run stops before batch 4 of epoch 2

    class Stop(Exception):
        pass

    orig_step = second.step

    def step(x, y):
        if second.steps == stop_at:
            raise Stop
        return orig_step(x, y)

    second.step = step
    with pytest.raises(Stop):
        fit(second, data, epochs=2, batch_size=16, seed=5, log_every=0, out_dir=mid, checkpoint_every=1, log=_quiet)
    assert read_manifest(mid / "checkpoint.npz")["position"] == {"epoch": 1, "batch": 3, "step": stop_at}

    resumed = _trainer(kind, optimizer, seed=99)  # different init: everything must come from the checkpoint
    h_res = fit(resumed, data, epochs=2, batch_size=16, seed=5, log_every=0, resume=mid / "checkpoint.npz", log=_quiet)
    for a, b in zip(_weights(full.net), _weights(resumed.net)):
        assert a.shape == b.shape and np.array_equal(a, b)
    assert resumed.steps == full.steps == 16
    strip = lambda h: [{k: v for k, v in s.items() if k != "ms"} for s in h.steps]
    assert strip(h_res) == strip(h_full)
    for ea, eb in zip(h_full.epochs, h_res.epochs):
        assert ea["test_loss"] == eb["test_loss"] and ea["ranks"] == eb["ranks"] and ea["train_loss"] == eb["train_loss"]
    sa, sb = full.opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for key in sa:
        for name, v in sa[key].items():
            if name == "frame":
                assert all(np.array_equal(x, y) for x, y in zip(v, sb[key][name]))
            elif name != "t":
                assert np.array_equal(v, sb[key][name]), (key, name)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nonfinite_loss_stops_and_keeps_last_checkpoint(data, tmp_path):
    tr = _trainer("ra-bug", "sgd", lr=1e6)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch .* last good checkpoint"):
        fit(tr, data, epochs=3, batch_size=16, seed=0, log_every=0, out_dir=tmp_path, checkpoint_every=1, log=_quiet,
            divergence_factor=None)  # only the non-finite check
    ckpt = tmp_path / "checkpoint.npz"
    man = read_manifest(ckpt)
    assert man["position"]["step"] == tr.steps  # the last completed step, written before the failure
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["summary"]["status"] == "diverged" and "non-finite" in res["summary"]["message"]
    fresh = _trainer("ra-bug", "sgd", lr=1e6)
    load_checkpoint(ckpt, fresh)  # still a valid checkpoint
    assert all(np.all(np.isfinite(w)) for w in _weights(fresh.net))


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write(p, lambda f: f.write(b"old"))

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(p, broken)
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_checkpoint_mismatch_is_refused(data, tmp_path):
    tr = _trainer("ra-bug")
    fit(tr, data, epochs=1, batch_size=32, seed=0, log_every=0, out_dir=tmp_path, log=_quiet)
    with pytest.raises(CheckpointError, match="DLRT"):
        load_checkpoint(tmp_path / "checkpoint.npz", _trainer("uv"))
    with pytest.raises(CheckpointError, match="bug"):
        load_checkpoint(tmp_path / "checkpoint.npz", _trainer("bug"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.npz", tr)


def test_history_roundtrip():
    h = History(steps=[{"step": 1, "loss": 0.5}], epochs=[], status="finished")
    assert History.from_dict(json.loads(json.dumps(h.to_dict()))) == h


def test_nonfinite_parameter_stops_the_run(data, tmp_path):
    """A step that leaves a NaN in a weight (loss still finite) stops the run; no checkpoint holds the NaN."""
    from dlrt_ref.train.loop import DivergenceError

    tr = _trainer("ra-bug")
    step = tr.step

    def poisoned(x, y):
        info = step(x, y)
        if tr.steps == 3:
            tr.net.layers[0].params["b"] = tr.net.layers[0].params["b"].copy()
            tr.net.layers[0].params["b"][1] = np.nan
        return info

    tr.step = poisoned
    with pytest.raises(DivergenceError, match="non-finite values in layer 0 b after the step"):
        fit(tr, data, epochs=1, batch_size=16, seed=0, log_every=0, out_dir=tmp_path, checkpoint_every=1, log=_quiet)
    assert read_manifest(tmp_path / "checkpoint.npz")["position"]["step"] == 2
    load_checkpoint(tmp_path / "checkpoint.npz", _trainer("ra-bug"))  # all finite (it checks)
