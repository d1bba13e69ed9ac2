"""``python -m dlrt_ref figures``: run experiments and write their figures and data.

For each selected experiment NAME (registry: :data:`dlrt_ref.experiments.EXPERIMENTS`)
this writes ``OUT/NAME.png``, ``OUT/NAME.pdf`` and ``OUT/data/NAME.json``
(the data the figure was drawn from, plus preset, backend and seconds).
With no arguments it runs the quick preset of every experiment, into
``figures/quick/`` (git-ignored), so a user's run never overwrites the
committed results; ``--preset full`` writes to ``figures/`` (committed). ``--only ode`` selects every experiment whose name starts
with "ode". The ODE experiments run on the host whatever ``--backend`` says
(their problems are small); the backend is recorded in the JSON.

``--data-dir DIR`` (or ``$DLRT_REF_DATA_DIR``) points the training experiments
at a folder with MNIST (its four IDX files, or a ``mnist/`` subfolder) and/or
Fashion-MNIST (a ``fashion-mnist/`` subfolder); every file is verified by
checksum. Without it MNIST comes from the copy shipped with the package.

Budgets (:mod:`dlrt_ref.experiments.budget`): ``--preset paper`` follows the
published protocol of each experiment that has one (the others run ``full``,
with a note), into ``figures/paper/``; ``--epochs N``, ``--seeds N`` (seeds
0 … N−1), ``--subset N|all`` and ``--taus T …`` override the preset of every
experiment they apply to, and a one-line note names each experiment they do
not apply to. Before anything runs, the run plan is printed: each experiment,
its runs and an estimated wall time (its committed full-preset time, scaled by
the budget's work and by a ~0.1 s timing probe of this machine; rough).
Each finished training run prints one progress line with an ETA.

Atomic output: an experiment's figure (PNG, PDF) and JSON are written into
``OUT/.partial/NAME/`` first; only when all three are complete is a
``COMPLETE`` marker put there and the files moved into place (JSON last).
An interrupted run (Ctrl-C, SIGKILL) therefore leaves the previous figure and
JSON untouched, never a new JSON beside an old figure; a ``.partial`` folder
left with its marker is finished (moved into place) by the next ``figures``
run into the same folder, one without it is removed.

Parallel sweeps (:mod:`dlrt_ref.experiments.runs`, :mod:`dlrt_ref.experiments.executors`): the experiments
that declare ``specs``/``run_one``/``assemble`` execute their runs through ``--jobs N`` (local processes),
``--dask ADDRESS`` or ``--dask local:N`` (Dask, optional extra ``cluster``), with the same JSON as a serial
run; the others run serially, with a one-line note (the timing experiments always: parallel runs would
distort the wall times they measure). Completed runs are cached in ``OUT/.runs/`` (checksummed;
``--no-cache`` ignores it), so a rerun resumes. When runs fail, the experiment draws no figure and writes
``OUT/data/NAME.partial.json`` (failed specs and errors, completed results); the command exits 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from dlrt_ref.backend import available_backends
from dlrt_ref.data import data_dir, set_data_dir
from dlrt_ref.errors import CommandError, UsageError
from dlrt_ref.experiments import EXPERIMENTS, PRESETS, load, select
from dlrt_ref.experiments import budget as B
from dlrt_ref.experiments.executors import _import_dask, make_executor
from dlrt_ref.experiments.plotting import jsonable
from dlrt_ref.experiments.runs import RunCache, SerialExecutor, sweep
from dlrt_ref.threads import describe_threads
from dlrt_ref.train.files import write_json

DEFAULT_OUT = {"full": Path("figures"), "quick": Path("figures/quick"), "paper": Path("figures/paper")}
COMMITTED = Path(__file__).resolve().parents[2] / "figures" / "data"  # the committed full-preset JSONs
FULL_TRAIN = 50_000  # images per epoch assumed where a preset says "all" (for the work ratio of the estimate)
PROBE_REF_S = 0.027  # :func:`probe` on the machine that produced the committed figures (2 cores, load ~2; measured)


def _positive(text: str, what: str = "must be a positive integer") -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
    return n


def _subset(text: str):
    return "all" if text == "all" else _positive(text, "--subset must be a positive integer or 'all'")


def add_arguments(p) -> None:
    p.add_argument("--preset", choices=PRESETS, default="quick",
                   help="quick (default): small versions, into figures/quick/; full: the committed figures, into "
                        "figures/; paper: the published protocol of each experiment (hours; a GPU helps), into "
                        "figures/paper/")
    p.add_argument("--only", nargs="+", metavar="NAME", default=None,
                   help="run only these experiments (a prefix selects all that start with it, e.g. 'ode')")
    p.add_argument("--epochs", type=_positive, default=None, metavar="N",
                   help="override the preset's epochs in every experiment that trains")
    p.add_argument("--seeds", type=_positive, default=None, metavar="N",
                   help="override the preset's seeds with 0 ... N-1 where an experiment runs several seeds")
    p.add_argument("--subset", type=_subset, default=None, metavar="N|all",
                   help="override the preset's number of training images ('all': the whole training set)")
    p.add_argument("--taus", type=float, nargs="+", default=None, metavar="TAU",
                   help="override the preset's τ values where an experiment sweeps τ")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy", help="array backend (all experiments)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default figures/, figures/quick/ or figures/paper/)")
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="folder with MNIST (IDX files or mnist/) and/or fashion-mnist/; default $DLRT_REF_DATA_DIR, "
                        "else the shipped MNIST (Fashion-MNIST: /usr/share/datasets/fashion-mnist or the cache)")
    p.add_argument("--jobs", type=_positive, default=None, metavar="N",
                   help="run the independent training runs of each experiment in N local processes (one BLAS "
                        "thread each); experiments not split into runs run serially, with a note")
    p.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="run them on a dask.distributed scheduler at ADDRESS, or 'local:N' for a LocalCluster of "
                        "N worker processes (needs pip install .[cluster])")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute every run (default: completed runs are kept in OUT/.runs/ and reused)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--plan", action="store_true", help="print the run plan and exit")
    p.add_argument("--quiet", action="store_true", help="no start line on stderr")


def run(args) -> int:
    if args.list:
        for name, (_, desc) in EXPERIMENTS.items():
            sys.stdout.write(f"{name:28s} {desc}\n")
        return 0
    try:
        names = select(args.only)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    try:
        budget = B.Budget(preset=args.preset, backend=args.backend, epochs=args.epochs, seeds=args.seeds,
                          subset=args.subset, taus=tuple(args.taus) if args.taus else None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.backend == "cupy":
        if "cupy" not in available_backends():
            raise UsageError("backend 'cupy' is not available on this machine")
    out = args.out if args.out is not None else DEFAULT_OUT[args.preset]
    for folder in (out, out / "data"):
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--out: {folder} is a file; give a folder")
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UsageError(f"--data-dir {args.data_dir} is not a folder")
    if args.jobs is not None and args.dask is not None:
        raise UsageError("give --jobs or --dask, not both")
    if args.dask is not None:
        _import_dask()  # a one-line error naming the extra, before anything runs
    sys.stdout.write(format_plan(plan(names, budget), budget))
    sys.stdout.flush()
    if args.plan:
        return 0
    try:
        (out / "data").mkdir(parents=True, exist_ok=True)
        probe_file = out / "data" / f".write-test.{os.getpid()}"
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as exc:
        raise CommandError(f"--out {out} is not writable: {exc.strerror or exc}") from None
    for line in recover(out):
        sys.stderr.write(line + "\n")
    set_data_dir(args.data_dir)
    if not args.quiet:
        sys.stderr.write(f"figures: {args.preset} preset, {len(names)} experiment(s) ({', '.join(names)}); data "
                         f"{data_dir() or 'default places (MNIST: the shipped copy; others: their default folders)'}; "
                         f"{describe_threads()}; out {out}\n")
        sys.stderr.flush()
    executor = make_executor(args.jobs, args.dask, args.backend)
    try:
        failed = _run_all(names, budget, out, executor, None if args.no_cache else RunCache(out / ".runs", _err))
    finally:
        executor.close()
        set_data_dir(None)
    if failed:
        raise CommandError(f"{failed} run(s) failed; their specs and errors are in OUT/data/NAME.partial.json; "
                           f"rerun the same command to resume (completed runs come from {out / '.runs'})")
    return 0


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# ---- the run plan ------------------------------------------------------------------------------------------------

def probe(repeats: int = 3) -> float:
    """Seconds of a fixed small workload (one forward of 784-500-500-10 on 256 images), median of ``repeats``."""
    rng = np.random.default_rng(0)
    x, w1, w2, w3 = (rng.standard_normal(s) for s in ((256, 784), (784, 500), (500, 500), (500, 10)))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(4):
            np.maximum(np.maximum(x @ w1, 0) @ w2, 0) @ w3  # (256,784)(784,500) -> (256,500)(500,500) -> (256,10)
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def work(module, cfg) -> float | None:
    """Rough work of a configuration: the module's own ``work(cfg)`` if it has one, else runs × epochs ×
    training images (None: the module does not count runs)."""
    if hasattr(module, "work") and cfg is not None:
        return float(module.work(cfg))
    runs = B.count_runs(module, cfg)
    if runs is None:  # not a set of training runs: no scaling rule
        return None
    epochs = cfg.get("epochs", cfg.get("dlrt_epochs", 1) + cfg.get("sonly_epochs", 0))
    n = cfg.get("subset") or cfg.get("n") or FULL_TRAIN
    return float(runs * (epochs if isinstance(epochs, int) else 1) * n)


def plan(names, budget) -> list[dict]:
    """One entry per experiment: runs, estimated seconds (or None) and notes."""
    factor = probe() / PROBE_REF_S
    rows = []
    for name in names:
        mod = load(name)
        cfg = B.resolve(mod, budget)
        est, how, upper = None, "no committed reference time", False
        ref = COMMITTED / f"{name}.json"
        if ref.is_file():
            rec = json.loads(ref.read_text())
            full_cfg = B.resolve(mod, B.Budget("full"))
            w, w_ref = work(mod, cfg), work(mod, full_cfg)
            if w is None:  # no scaling rule: full/paper as committed; quick is smaller
                est, upper = rec["seconds"] * factor, budget.preset == "quick"
                how = "upper bound: the committed full time" if upper else "committed full time"
            elif w_ref:
                est, how = rec["seconds"] * factor * w / w_ref, "scaled from the committed full time"
        rows.append({"name": name, "runs": B.count_runs(mod, cfg), "seconds": est, "upper": upper, "how": how,
                     "notes": B.notes(name, mod, budget)})
    return rows


def format_plan(rows, budget) -> str:
    over = ", ".join(f"--{k} {' '.join(map(str, v)) if isinstance(v, tuple) else v}"
                     for k, v in budget.overrides().items()) or "none"
    lines = [f"plan: preset {budget.preset}, overrides {over}, backend {budget.backend}"]
    for r in rows:
        est = "?" if r["seconds"] is None else f"{'≤' if r['upper'] else '~'}{_human(r['seconds'])}"
        runs = "-" if r["runs"] is None else str(r["runs"])
        lines.append(f"  {r['name']:24s} runs {runs:>4s}  est. {est:>8s}  ({r['how']})")
        lines += [f"    note: {n}" for n in r["notes"]]
    known = [r["seconds"] for r in rows if r["seconds"] is not None and not r["upper"]]
    upper = [r["seconds"] for r in rows if r["seconds"] is not None and r["upper"]]
    unknown = len(rows) - len(known) - len(upper)
    lines.append(f"plan: {len(rows)} experiment(s), {sum(r['runs'] or 0 for r in rows)} training run(s), "
                 f"estimated wall time ~{_human(sum(known))}"
                 + (f" + at most {_human(sum(upper))}" if upper else "")
                 + (f" + {unknown} unknown" if unknown else "")
                 + " (rough: a 0.1 s probe scales the committed times)")
    return "\n".join(lines) + "\n"


def _human(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


# ---- running and atomic output -------------------------------------------------------------------------------------

def _final_paths(out: Path, name: str) -> list[Path]:
    """The files an experiment owns, in the order they are moved into place (JSON last)."""
    return [out / f"{name}.png", out / f"{name}.pdf", out / "data" / f"{name}.json"]


def _commit(out: Path, name: str) -> None:
    """Move a COMPLETE ``.partial/NAME`` into place (JSON last) and remove the folder."""
    part = out / ".partial" / name
    for dst in _final_paths(out, name):
        src = part / dst.name
        if src.exists():
            os.replace(src, dst)
    shutil.rmtree(part)


def recover(out: Path) -> list[str]:
    """Finish (marker present) or discard (no marker) every ``.partial`` folder left by an interrupted run."""
    root = out / ".partial"
    lines = []
    if not root.is_dir():
        return lines
    for part in sorted(root.iterdir()):
        if (part / "COMPLETE").exists():
            _commit(out, part.name)
            lines.append(f"figures: finished the interrupted write of {part.name} (its complete output was waiting)")
        else:
            shutil.rmtree(part)
            lines.append(f"figures: removed the incomplete output of an interrupted {part.name} run")
    return lines


def write_outputs(out: Path, name: str, mod, record: dict) -> list[Path]:
    """Plot and write the JSON into ``.partial/NAME``, mark it complete, then move everything into place."""
    part = out / ".partial" / name
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    try:
        mod.plot(record["data"], part)
        (part / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
        missing = [p.name for p in _final_paths(out, name) if not (part / p.name).is_file()]
        if missing:
            raise CommandError(f"{name}: plot() did not write {', '.join(missing)}")
        (part / "COMPLETE.tmp").write_bytes(b"")
        os.replace(part / "COMPLETE.tmp", part / "COMPLETE")
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    _commit(out, name)
    return _final_paths(out, name)


def _run_all(names, budget, out, executor=None, cache=None) -> int:
    """Run each experiment, write its outputs; returns the number of failed runs (0: everything complete)."""
    executor = executor or SerialExecutor()
    total_failed = 0
    for name in names:
        mod = load(name)
        cfg = B.resolve(mod, budget)
        mine = dataclasses.replace(budget, backend=B.backend_for(mod, budget))  # host-only experiments: numpy
        split = hasattr(mod, "specs")
        if not split and not isinstance(executor, SerialExecutor):
            why = getattr(mod, "SERIAL", None)  # the module's one-line reason
            _err(f"figures: {name} runs serially ({why}); {executor.name} not used" if why else
                 f"figures: {name} is not split into runs; it runs serially here ({executor.name} not used)")
        B.start_progress(name, B.count_runs(mod, cfg))
        t0 = time.perf_counter()
        failures = []
        try:
            if split:
                specs = mod.specs(cfg, mine.backend)
                results, failures = sweep(specs, executor, cache, data_dir())
                data = None if failures else jsonable(mod.assemble(cfg, results))
            else:
                data = jsonable(mod.run(mine))
        finally:
            B.stop_progress()
        seconds = time.perf_counter() - t0
        over = " ".join(f"--{k} {' '.join(map(str, v)) if isinstance(v, tuple) else v}"
                        for k, v in budget.overrides().items())
        rec_budget = jsonable(B.record(mod, budget, cfg))
        record = {"name": name, "preset": budget.preset, "backend": mine.backend, "seconds": seconds,
                  "budget": rec_budget, "seeds": rec_budget["seeds"],
                  "command": f"python -m dlrt_ref figures --preset {budget.preset} --only {name}"
                             + (f" {over}" if over else "")}
        if split:
            record["sweep"] = {"runs": len(specs), "failed": failures,
                               "executor": executor.name}
        if failures:  # no figure from incomplete data: the completed runs are cached, the failures recorded
            total_failed += len(failures)
            record.update(partial=True, completed={k: v for k, v in results.items()})
            partial = out / "data" / f"{name}.partial.json"
            write_json(partial, record)
            _err(f"{name}: {len(failures)} of {len(specs)} run(s) failed (first: {failures[0]['key']}: "
                 f"{failures[0]['error']}); no figure drawn; partial data -> {partial}")
            continue
        (out / "data" / f"{name}.partial.json").unlink(missing_ok=True)
        record["data"] = data
        paths = write_outputs(out, name, mod, record)
        sys.stdout.write(f"{name}: {seconds:.1f} s -> {', '.join(str(p) for p in paths)}\n")
    return total_failed

