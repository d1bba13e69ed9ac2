"""Runs as values: an experiment's training runs as specifications, executed anywhere, cached on disk.

An experiment that can spread its runs declares, beside ``run`` and ``plot``,

``specs(cfg, backend) -> list[RunSpec]``
    one :class:`RunSpec` per training run: a pure JSON-able configuration with
    its seed (and the backend), so that a run depends on its spec only;
``run_one(config, tag, deps=None) -> dict``
    execute one run (``deps``: the results of the specs it depends on, by key);
``assemble(cfg, results) -> dict``
    the experiment's data dict from the results by key — the same dict as
    ``run(budget)``, which is ``assemble(cfg, run_serial(specs(cfg, backend)))``.

:func:`sweep` executes a list of specs through an executor (serial, local
processes, a Dask cluster: :mod:`dlrt_ref.experiments.executors`), hands a
spec that depends on others (a fine-tuning phase 2 on its phase 1) to the
executor only once their results exist, passing them to ``run_one``, and
returns the results in spec order (never in order of completion). Every
result is normalised to its JSON form (what a JSON round trip gives back), so
a fresh result and a cached one are the same value.

:class:`RunCache` keeps each completed run in ``OUT/.runs/<digest>.json``; the
digest hashes the experiment, the configuration, the digests of its
dependencies, the data folder and the source of the package
(:func:`code_digest`), so any change to the code makes a new entry. An entry is
written atomically (temporary file, then rename) with the SHA-256 of its
result; an entry whose checksum or spec does not match is reported, removed
and recomputed, never used.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from dlrt_ref.data import data_dir, set_data_dir
from dlrt_ref.experiments import budget as B
from dlrt_ref.experiments import EXPERIMENTS, load
from dlrt_ref.experiments.plotting import jsonable

__all__ = ["RunSpec", "execute", "normalise", "sweep", "run_serial", "serial_runner", "RunCache", "code_digest", "canonical",
           "SweepFailed", "SerialExecutor", "timed", "experiment_module"]

PACKAGE = Path(__file__).resolve().parents[1]  # dlrt_ref/


@dataclass(frozen=True)
class RunSpec:
    """One training run of ``experiment``: ``key`` names it within the experiment (``"cr=0.9 seed=0"``),
    ``config`` is JSON-able and holds everything the run depends on (seed and backend included), ``deps``
    are the keys of the runs (same experiment) whose results it needs."""

    experiment: str
    key: str
    config: dict
    deps: tuple = field(default=())

    def __post_init__(self):
        # the config in its JSON form (tuples -> lists, ...): what the cache stores, compares and hashes
        object.__setattr__(self, "config", normalise(self.config))
        object.__setattr__(self, "deps", tuple(self.deps))

    def as_dict(self) -> dict:
        return {"experiment": self.experiment, "key": self.key, "config": self.config, "deps": list(self.deps)}


class SweepFailed(RuntimeError):
    """Raised by :func:`run_serial` when a run failed (the direct ``run(budget)`` path has no partial data)."""


def canonical(obj) -> str:
    """The canonical JSON text of ``obj`` (sorted keys, no spaces; NaN refused) — what digests hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def normalise(result):
    """``result`` as a JSON round trip gives it back (NumPy → Python, tuples → lists, keys → str, NaN → None)."""
    return json.loads(json.dumps(jsonable(result), allow_nan=False))


_CODE = None


def code_digest() -> str:
    """SHA-256 of every ``.py`` file of the package (path and bytes): cache entries of other code never match."""
    global _CODE
    if _CODE is None:
        h = hashlib.sha256()
        for p in sorted(PACKAGE.rglob("*.py")):
            h.update(str(p.relative_to(PACKAGE)).encode() + b"\0" + p.read_bytes() + b"\0")
        _CODE = h.hexdigest()
    return _CODE


_VERSION = None


def code_version() -> dict:
    """The code the runs were started with: ``git rev-parse HEAD``, the package's source digest
    (:func:`code_digest`) and the package files that differ from HEAD (None where git is missing).

    Taken at the first call — an experiment's ``specs``, i.e. when its runs start — and kept: the
    process runs the code it imported then, whatever happens to the checkout later.
    """
    global _VERSION
    if _VERSION is None:
        def git(*args):
            try:
                out = subprocess.run(["git", "-C", str(PACKAGE.parent), *args], capture_output=True, text=True,
                                     timeout=10)
            except (OSError, subprocess.SubprocessError):
                return None
            return out.stdout if out.returncode == 0 else None
        head, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--", "dlrt_ref")
        _VERSION = {"commit": head.strip() if head else None, "code_digest": code_digest(),
                    "uncommitted": None if dirty is None else sorted(line[3:] for line in dirty.splitlines())}
    return _VERSION


def code_fields() -> dict:
    """:func:`code_version` as the flat JSON keys ``code_commit``, ``code_digest``, ``code_uncommitted``."""
    v = code_version()
    return {"code_commit": v["commit"], "code_digest": v["code_digest"], "code_uncommitted": v["uncommitted"]}


def experiment_module(name: str):
    """The module of experiment ``name``: a name of the registry (:data:`dlrt_ref.experiments.EXPERIMENTS`),
    or a module path with a dot (an experiment outside the registry: a test's, a user's own)."""
    if name in EXPERIMENTS or "." not in name:
        return load(name)
    return importlib.import_module(name)


def execute(spec: RunSpec, data_folder=None, deps: dict | None = None) -> dict:
    """Execute one spec in this process and return its normalised result dict.

    ``data_folder``: the ``--data-dir`` of the sweep (set for the run, restored after). The per-run progress
    line of :func:`~dlrt_ref.experiments.budget.run_done` is paused: the sweep reports each run itself.
    """
    mod = experiment_module(spec.experiment)
    saved_dir, saved_progress = data_dir(), B.pause_progress()
    set_data_dir(data_folder)
    try:
        kw = {"deps": deps} if spec.deps else {}
        return normalise(mod.run_one(spec.config, f"{spec.experiment} {spec.key}", **kw))
    finally:
        set_data_dir(saved_dir)
        B.resume_progress(saved_progress)


# ---- the cache ---------------------------------------------------------------------------------------------------

class RunCache:
    """Completed runs under ``folder`` (``OUT/.runs``), one checksummed JSON file per spec digest."""

    def __init__(self, folder, log=None):
        self.folder = Path(folder)
        self.log = log or (lambda line: None)

    def digest(self, spec: RunSpec, dep_digests=(), data_folder=None) -> str:
        return hashlib.sha256(canonical({
            "experiment": spec.experiment, "config": spec.config, "deps": list(dep_digests),
            "data_dir": None if data_folder is None else str(Path(data_folder).resolve()),
            "code": code_digest()}).encode()).hexdigest()

    def path(self, digest: str) -> Path:
        return self.folder / f"{digest}.json"

    def get(self, spec: RunSpec, digest: str):
        """The cached result, or None (absent; a corrupted or mismatched entry is reported and removed)."""
        p = self.path(digest)
        if not p.is_file():
            return None
        try:
            entry = json.loads(p.read_text())
            ok = (entry["digest"] == digest and entry["spec"] == spec.as_dict()
                  and entry["sha256"] == hashlib.sha256(canonical(entry["result"]).encode()).hexdigest())
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            self.log(f"cache: entry {p.name} of {spec.experiment} {spec.key} is corrupted; removed, recomputing")
            p.unlink(missing_ok=True)
            return None
        return entry["result"]

    def put(self, spec: RunSpec, digest: str, result) -> None:
        """Write the entry atomically (temporary file, fsync, rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = {"digest": digest, "spec": spec.as_dict(), "sha256": hashlib.sha256(canonical(result).encode()).hexdigest(),
                 "result": result}
        tmp = self.folder / f".{digest}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path(digest))


# ---- the sweep ---------------------------------------------------------------------------------------------------

def _check(specs) -> None:
    """Unique keys; every dependency a spec of the sweep; no cycle (each a one-line ValueError)."""
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"specs: duplicate keys {sorted({k for k in keys if keys.count(k) > 1})}")
    for s in specs:
        for d in s.deps:
            if d not in keys:
                raise ValueError(f"specs: {s.key!r} depends on {d!r}, which is not a spec of the sweep")
    settled, left = set(), list(specs)
    while left:  # peel off the specs whose dependencies are settled; what cannot be peeled is a cycle
        ready = [s for s in left if all(d in settled for d in s.deps)]
        if not ready:
            raise ValueError(f"specs: dependency cycle among {sorted(s.key for s in left)}")
        settled.update(s.key for s in ready)
        left = [s for s in left if s.key not in settled]


def sweep(specs, executor=None, cache: RunCache | None = None, data_folder=None, progress: bool = True):
    """Execute ``specs`` (skipping those in ``cache``) and return ``(results, failures)``.

    ``results``: {key: result} in spec order (only the runs that completed); ``failures``: one dict per run
    that failed, ``{"key", "spec", "error"}``; a run whose dependency failed is not started and fails with
    ``"skipped: dependency failed: KEY"``.
    ``executor``: an object with ``map(calls)`` (:class:`SerialExecutor`, or one of
    :mod:`~dlrt_ref.experiments.executors`; None: serial).

    A spec is handed to the executor as soon as the results of its ``deps`` exist (never before), together
    with them: ``calls`` grows while ``executor.map`` runs — each executor submits the calls appended to the
    list since its last look, after every result it yields — so a phase 2 starts when its own phase 1 ends,
    not when every phase 1 has ended.
    """
    specs = list(specs)
    _check(specs)
    executor = executor or SerialExecutor()
    done, failed, digests = {}, {}, {}
    waiting, calls = list(specs), []

    def release() -> None:
        """Settle every waiting spec whose dependencies are settled: skip it, take it from the cache, or call it."""
        while True:
            ready = [s for s in waiting if all(d in done or d in failed for d in s.deps)]
            if not ready:
                return
            for s in ready:
                waiting.remove(s)
                bad = [d for d in s.deps if d in failed]
                if bad:
                    failed[s.key] = f"skipped: dependency failed: {', '.join(bad)}"
                    _report(s, 0.0, failed[s.key], progress, failed=True)
                    continue
                digests[s.key] = None if cache is None else cache.digest(s, [digests[d] for d in s.deps],
                                                                         data_folder)
                hit = None if cache is None else cache.get(s, digests[s.key])
                if hit is not None:
                    done[s.key] = hit
                    _report(s, 0.0, "from the cache", progress)
                    continue
                calls.append((s, data_folder, {d: done[d] for d in s.deps} if s.deps else None))

    release()
    for i, result, error, seconds in executor.map(calls):
        s = calls[i][0]
        if error is None:
            result = normalise(result)
            done[s.key] = result
            if cache is not None:
                cache.put(s, digests[s.key], result)
            _report(s, seconds, None, progress)
        else:
            failed[s.key] = error
            _report(s, seconds, f"FAILED: {error}", progress, failed=True)
        release()  # the specs that waited for this one
    for s in specs:  # an executor that ended without yielding every call (never silently dropped)
        if s.key not in done and s.key not in failed:
            failed[s.key] = "not run: the executor ended without its result"
    results = {s.key: done[s.key] for s in specs if s.key in done}  # spec order, not completion order
    failures = [{"key": s.key, "spec": s.as_dict(), "error": failed[s.key]} for s in specs if s.key in failed]
    return results, failures


def _report(spec: RunSpec, seconds: float, note, progress: bool, failed: bool = False) -> None:
    if progress:
        B.run_done(f"{spec.experiment} {spec.key}" + (f"; {note}" if note else ""), seconds, failed=failed)


def run_serial(specs) -> dict:
    """Results by key of ``specs`` executed here, one after the other, without a cache (``run(budget)``)."""
    results, failures = sweep(specs, None, None, data_dir())
    if failures:
        raise SweepFailed(f"{failures[0]['spec']['experiment']} {failures[0]['key']}: {failures[0]['error']}")
    return results


class SerialExecutor:
    """Each call here, one after the other (the default; ``run(budget)`` uses it)."""

    name = "serial"

    def map(self, calls):
        """Yield ``(index, result, error, seconds)`` for each ``(spec, data_folder, deps)`` of ``calls``
        (including the calls appended to the list while this runs: :func:`sweep`)."""
        i = 0
        while i < len(calls):
            yield (i, *timed(execute, *calls[i]))
            i += 1

    def close(self):
        pass


def serial_runner(presets, knobs, specs, assemble):
    """The ``run(preset, backend)`` of an experiment given as run specs (every split experiment's ``run``).

    It resolves the budget (:func:`~dlrt_ref.experiments.budget.configure`), builds the specs, executes
    them here one after the other (:func:`run_serial`) and assembles the figure's data; ``figures --jobs``
    and ``--dask`` run the same specs through :func:`sweep` instead.
    """

    def run(preset="full", backend: str = "numpy") -> dict:
        """Run under ``preset`` (a preset name or a :class:`~dlrt_ref.experiments.budget.Budget`), serially here."""
        budget = B.as_budget(preset, backend)
        cfg = B.configure(presets, knobs, budget)
        return assemble(cfg, run_serial(specs(cfg, budget.backend)))

    return run


def timed(fn, *args):
    """(result, error text or None, seconds) of ``fn(*args)``; an exception becomes its one-line text."""
    t0 = time.perf_counter()
    try:
        return fn(*args), None, time.perf_counter() - t0
    except Exception as exc:  # a failing run is reported, the others go on
        return None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0
