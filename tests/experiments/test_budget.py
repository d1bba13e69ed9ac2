"""Budgets on demand (issue 16 §1): overrides reach every experiment, the plan, --help, atomic output.

The overrides are checked where they act: ``dlrt_ref.train.loop.fit`` is wrapped
and records the epochs and training-set size of every training run, and the
progress lines (one per finished run) are counted against ``count_runs``.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlrt_ref.cli import build_parser, main
from dlrt_ref.experiments import EXPERIMENTS, load
from dlrt_ref.experiments import budget as B
from dlrt_ref.experiments import cli as fcli

TRAINING = ["fc_tau_sweep", "rank_evolution", "lenet_tau", "acc_vs_cr", "dlrt_vs_uv", "finetune",
            "truncation_2022", "tf2022_emulation"]
ROOT = Path(__file__).resolve().parents[2]


def test_budget_validation_names_the_argument():
    for kw, word in ((dict(epochs=0), "epochs"), (dict(seeds=-1), "seeds"), (dict(subset=0), "subset"),
                     (dict(subset="some"), "subset"), (dict(taus=()), "taus"), (dict(taus=(1.5,)), "taus"),
                     (dict(preset="slow"), "preset")):
        with pytest.raises(ValueError, match=word):
            B.Budget(**{"preset": "quick", **kw})
    with pytest.raises(TypeError, match="preset"):
        B.as_budget(3)
    assert B.as_budget("full", "numpy") == B.Budget("full")


def test_every_knob_path_exists_in_every_preset():
    """A KNOBS path that names no key of a preset would silently do nothing."""
    for name in EXPERIMENTS:
        mod = load(name)
        for knob, paths in getattr(mod, "KNOBS", {}).items():
            assert knob in B.OVERRIDES, (name, knob)
            for preset, cfg in mod.PRESETS.items():
                for path in paths:
                    *parents, leaf = path.split(".")
                    d = cfg
                    for p in parents:
                        d = d[p] if isinstance(d, dict) else None
                    assert d is None or leaf in d, (name, preset, path)


def test_resolve_applies_overrides_and_notes_the_rest():
    b = B.Budget("quick", epochs=2, seeds=3, subset="all", taus=(0.2, 0.3))
    for name in EXPERIMENTS:
        mod = load(name)
        cfg = B.resolve(mod, b)
        knobs = getattr(mod, "KNOBS", {})
        for knob, paths in knobs.items():
            want = {"epochs": 2, "seeds": [0, 1, 2], "subset": None, "taus": [0.2, 0.3]}[knob]
            for path in paths:
                d = cfg
                for p in path.split("."):
                    d = d[p] if isinstance(d, dict) else None
                assert d is None or d == want, (name, path, d)
        notes = B.notes(name, mod, b)
        left = [k for k in B.OVERRIDES if k not in knobs]
        assert len(notes) == (1 if left else 0), (name, notes)
        assert all(f"--{k}" in notes[0] for k in left) if left else True
    # the preset itself is untouched (resolve deep-copies)
    assert load("lenet_tau").PRESETS["quick"]["seeds"] == [0]


def test_paper_preset_is_the_published_protocol():
    fc = B.resolve(load("fc_tau_sweep"), B.Budget("paper"))
    assert fc["widths"] == [500, 784] and len(fc["taus"]) == 8 and fc["epochs"] == 250 and fc["subset"] is None
    lt = B.resolve(load("lenet_tau"), B.Budget("paper"))
    assert lt["seeds"] == [0, 1, 2, 3, 4] and lt["epochs"] == 20 and lt["subset"] is None
    uv = B.resolve(load("dlrt_vs_uv"), B.Budget("paper"))
    assert len(uv["seeds"]) == 10 and uv["epochs"] == 20
    assert B.resolve(load("acc_vs_cr"), B.Budget("paper"))["epochs"] == 10
    # without a published protocol, paper runs full and says so
    mod = load("truncation_2022")
    assert B.resolve(mod, B.Budget("paper")) == mod.PRESETS["full"]
    assert any("no published protocol" in n for n in B.notes("truncation_2022", mod, B.Budget("paper")))


@pytest.fixture(scope="module")
def override_runs(tmp_path_factory):
    """Every training experiment at the quick preset with tiny overrides; fit() calls and progress recorded."""
    import importlib

    loop = importlib.import_module("dlrt_ref.train.loop")  # the sys.modules entry, which run-time imports see
    out = tmp_path_factory.mktemp("budget")
    calls = []
    real_fit = loop.fit

    def fit(trainer, data, epochs, batch, **kw):
        calls.append((epochs, len(data.y_train)))
        return real_fit(trainer, data, epochs, batch, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(loop, "fit", fit)
    for name in TRAINING + ["train_common"]:  # modules that imported fit by name
        mod = importlib.import_module(f"dlrt_ref.experiments.{name}")
        if getattr(mod, "fit", None) is real_fit:
            mp.setattr(mod, "fit", fit)
    lines = []
    real_start = B.start_progress
    mp.setattr(B, "start_progress", lambda name, total, stream=None: (lines.append(("start", name, total)),
                                                                      real_start(name, total, _Sink(lines)))[-1])
    try:
        args = ["figures", "--preset", "quick", "--only", *TRAINING, "--out", str(out), "--quiet",
                "--epochs", "1", "--seeds", "2", "--subset", "160", "--taus", "0.3"]
        assert main(args) == 0
    finally:
        mp.undo()
    return out, calls, lines


class _Sink:
    def __init__(self, lines):
        self.lines = lines

    def write(self, s):
        self.lines.append(("line", s))

    def flush(self):
        pass


def test_overrides_reach_every_training_run(override_runs):
    out, calls, lines = override_runs
    fixed = load("tf2022_emulation").PRESETS["quick"]["fixed"][2]  # its fixed-rank phase keeps its epochs
    assert calls and all(e == 1 or e == fixed for e, _ in calls), [c for c in calls if c[0] != 1]
    assert sum(e == fixed for e, _ in calls) <= 1
    assert all(n <= 160 for _, n in calls), [c for c in calls if c[1] > 160]


@pytest.mark.parametrize("name", TRAINING)
def test_progress_lines_match_count_runs_and_json_records_budget(override_runs, name):
    out, calls, lines = override_runs
    k = [i for i, x in enumerate(lines) if x[:2] == ("start", name)][0]
    total = lines[k][2]
    mine = []
    for x in lines[k + 1:]:
        if x[0] == "start":
            break
        mine.append(x[1])
    assert total is not None and len(mine) == total, (name, total, mine)
    assert mine[-1].startswith(f"[{name}] run {total}/{total} ") and "ETA 0 s" in mine[-1]
    rec = json.loads((out / "data" / f"{name}.json").read_text())
    bud = rec["budget"]
    assert bud["preset"] == "quick" and bud["overrides"]["epochs"] == 1 and bud["runs"] == total
    if "seeds" in getattr(load(name), "KNOBS", {}):
        assert rec["seeds"] == [0, 1]
    assert rec["seeds"] is not None
    assert "--epochs 1" in rec["command"]
    assert (out / f"{name}.png").is_file() and (out / f"{name}.pdf").is_file()
    assert not (out / ".partial").exists() or not any((out / ".partial").iterdir())


def test_help_shows_overrides_and_paper():
    text = build_parser()._subparsers._group_actions[0].choices["figures"].format_help()
    for word in ("--epochs", "--seeds", "--subset", "--taus", "--backend", "paper", "--plan"):
        assert word in text, word


def test_plan_lists_runs_estimate_and_notes(capsys, tmp_path):
    assert main(["figures", "--plan", "--only", "fc_tau_sweep", "ode_rob", "--epochs", "3",
                 "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith("plan: preset quick, overrides --epochs 3")
    fc = [l for l in lines if l.strip().startswith("fc_tau_sweep")][0]
    assert "runs    8" in fc and "est. " in fc and " s" in fc
    assert any("ode_robustness: --epochs does not apply" in l for l in lines)
    assert lines[-1].startswith("plan: 2 experiment(s), 8 training run(s), estimated wall time ~")
    assert not (tmp_path / "data").exists()  # --plan runs nothing


# ---- atomic output -----------------------------------------------------------------------------------------------

FAKE = '''
import os, sys, time
from dlrt_ref.experiments.plotting import pyplot, save
PRESETS = {"quick": dict(epochs=1), "full": dict(epochs=1)}
KNOBS = {"epochs": ["epochs"]}
def run(preset="quick", backend="numpy"):
    if os.environ.get("FAKE_HANG") == "run":
        print("RUNNING", flush=True); time.sleep(60)
    return {"value": float(os.environ.get("FAKE_VALUE", "1"))}
def plot(data, out_dir):
    plt = pyplot(); fig, ax = plt.subplots(); ax.plot([0, 1], [0, data["value"]])
    paths = save(fig, out_dir, "fake")
    if os.environ.get("FAKE_HANG") == "plot":
        print("PLOTTED", flush=True); time.sleep(60)
    if os.environ.get("FAKE_FAIL") == "plot":
        raise KeyboardInterrupt
    return paths
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
    (tmp_path / "fake_exp.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(EXPERIMENTS, "fake", ("fake_exp", "a fake experiment"))
    out = tmp_path / "out"
    monkeypatch.setenv("FAKE_VALUE", "1")
    assert main(["figures", "--only", "fake", "--out", str(out), "--quiet"]) == 0
    return tmp_path, out


def _state(out):
    return {p: p.read_bytes() for p in (out / "fake.png", out / "fake.pdf", out / "data" / "fake.json")}


def test_interrupt_while_plotting_keeps_the_old_pair(fake, monkeypatch):
    _, out = fake
    before = _state(out)
    monkeypatch.setenv("FAKE_VALUE", "2")
    monkeypatch.setenv("FAKE_FAIL", "plot")
    assert main(["figures", "--only", "fake", "--out", str(out), "--quiet"]) != 0  # main reports the interrupt
    assert _state(out) == before
    assert not (out / ".partial" / "fake").exists()


def test_crash_between_the_moves_is_finished_by_the_next_run(fake, monkeypatch):
    _, out = fake
    before = _state(out)
    monkeypatch.setenv("FAKE_VALUE", "3")
    real = os.replace

    def replace(src, dst):
        if Path(dst).parent == out and Path(dst).suffix == ".pdf":  # die after the PNG moved
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(fcli.os, "replace", replace)
    assert main(["figures", "--only", "fake", "--out", str(out), "--quiet"]) != 0
    monkeypatch.setattr(fcli.os, "replace", real)
    # the JSON beside the new PNG is still the old one, but the complete new output waits in .partial
    assert (out / ".partial" / "fake" / "COMPLETE").exists()
    assert (out / "data" / "fake.json").read_bytes() == before[out / "data" / "fake.json"]
    assert fcli.recover(out) and not (out / ".partial" / "fake").exists()
    rec = json.loads((out / "data" / "fake.json").read_text())
    assert rec["data"]["value"] == 3.0 and (out / "fake.pdf").read_bytes() != before[out / "fake.pdf"]


@pytest.mark.parametrize("stage,marker", [("run", "RUNNING"), ("plot", "PLOTTED")])
def test_sigkill_leaves_the_old_pair(fake, stage, marker):
    tmp_path, out = fake
    before = _state(out)
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from dlrt_ref.experiments import EXPERIMENTS\n"
            "EXPERIMENTS['fake'] = ('fake_exp', 'fake')\n"
            "from dlrt_ref.cli import main\n"
            "sys.exit(main(['figures', '--only', 'fake', '--out', %r, '--quiet']))\n") % (str(tmp_path), str(out))
    env = {**os.environ, "FAKE_HANG": stage, "FAKE_VALUE": "5", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=str(ROOT), text=True)
    t0 = time.time()
    line = ""
    while marker not in line and time.time() - t0 < 60:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
    assert marker in line, proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _state(out) == before
    # the next run cleans up what the killed one left
    assert all("removed the incomplete output" in l for l in fcli.recover(out))
    assert not (out / ".partial").exists() or not any((out / ".partial").iterdir())


def test_every_experiment_records_its_seeds():
    """Each experiment's JSON gets a seed list: from its configuration, or SEEDS where the seed is fixed in code."""
    for name in EXPERIMENTS:
        mod = load(name)
        rec = B.record(mod, B.Budget("quick"), B.resolve(mod, B.Budget("quick")))
        assert rec["seeds"], name


def test_committed_figure_jsons_record_budget_and_seeds():
    for name in EXPERIMENTS:
        path = ROOT / "figures" / "data" / f"{name}.json"
        if not path.is_file():
            continue
        rec = json.loads(path.read_text())
        assert isinstance(rec.get("budget"), dict) and rec["budget"]["preset"], name
        assert rec.get("seeds") and all(isinstance(s, int) for s in rec["seeds"]), name


def test_host_only_experiments_note_and_use_numpy_for_cupy():
    b = B.Budget("quick", backend="cupy")
    for name in EXPERIMENTS:
        mod = load(name)
        host_only = getattr(mod, "BACKENDS", ("numpy", "cupy")) == ("numpy",)
        assert B.backend_for(mod, b) == ("numpy" if host_only else "cupy"), name
        assert any("--backend cupy does not apply" in n for n in B.notes(name, mod, b)) == host_only, name
    for name in ("tf2022_emulation", "ode_robustness"):  # these must not be handed cupy
        assert getattr(load(name), "BACKENDS", None) == ("numpy",)


def test_cli_hands_host_only_experiments_numpy(fake, monkeypatch):
    """With --backend cupy (CuPy faked as available), a numpy-only experiment is run and recorded on numpy."""
    tmp_path, out = fake
    monkeypatch.setattr(fcli, "available_backends", lambda: ("numpy", "cupy"))
    seen = []
    mod = load("fake")
    monkeypatch.setattr(mod, "BACKENDS", ("numpy",), raising=False)
    real_run = mod.run
    monkeypatch.setattr(mod, "run", lambda b, backend="numpy": (seen.append(B.as_budget(b).backend), real_run())[1])
    assert main(["figures", "--only", "fake", "--out", str(out), "--quiet", "--backend", "cupy"]) == 0
    assert seen == ["numpy"]
    assert json.loads((out / "data" / "fake.json").read_text())["backend"] == "numpy"
