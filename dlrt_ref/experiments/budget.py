"""Budgets on demand: one preset, plus the user's overrides, resolved per experiment.

A :class:`Budget` is what ``python -m dlrt_ref figures`` hands to every
experiment's ``run(budget)``: a preset name (``quick``, ``full`` or ``paper``),
the backend, and optional overrides — ``epochs``, ``seeds`` (a count: seeds
0 … N−1), ``subset`` (training images; ``"all"`` for the whole training set)
and ``taus``. ``run(preset: str, backend)`` keeps working: :func:`as_budget`
turns the string into a budget without overrides.

Each experiment module declares

``PRESETS``
    ``{"quick": cfg, "full": cfg[, "paper": cfg]}`` (a module without ``paper``
    has no published protocol; ``paper`` then means ``full``, with a note);
``KNOBS``
    ``{override: [config paths]}``, e.g. ``{"epochs": ["epochs", "long.epochs"]}``
    (a dotted path reaches into a nested dict); an override a module does not
    list does not apply to it, and :func:`notes` says so in one line;
``KNOBS_NOTE`` (optional)
    why the other overrides do not apply (shown in the note);
``count_runs(cfg)`` (optional)
    the number of training runs, for the progress lines and the run plan;
``BACKENDS`` (optional, default numpy and cupy)
    ``("numpy",)`` for an experiment that runs on the host whatever
    ``--backend`` says (:func:`backend_for`);
``SEEDS`` (optional)
    the seeds of an experiment whose seed is fixed in code (no ``seeds`` in
    its configuration), so that its JSON still records them.

:func:`resolve` returns the module's configuration with the overrides
applied; :func:`record` is what the JSON stores as ``"budget"``.
Progress: while ``figures`` runs an experiment, :func:`start_progress` is
active and every finished training run (:func:`run_done`, called by
:func:`dlrt_ref.experiments.train_common.train_record`) prints one line with
its time and an ETA.
"""
from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass

PRESET_NAMES = ("quick", "full", "paper")
OVERRIDES = ("epochs", "seeds", "subset", "taus")

__all__ = ["Budget", "as_budget", "backend_for", "configure", "preset_name", "resolve", "notes", "record", "count_runs", "seeds_of",
           "start_progress", "stop_progress", "pause_progress", "resume_progress", "run_done", "PRESET_NAMES", "OVERRIDES"]


@dataclass(frozen=True)
class Budget:
    """A preset plus overrides (None: keep the preset's value)."""

    preset: str = "full"
    backend: str = "numpy"
    epochs: int | None = None
    seeds: int | None = None
    subset: int | str | None = None  # an image count, or "all"
    taus: tuple | None = None

    def __post_init__(self):
        if self.preset not in PRESET_NAMES:
            raise ValueError(f"preset must be one of {', '.join(PRESET_NAMES)}, got {self.preset!r}")
        for name in ("epochs", "seeds"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.subset is not None and self.subset != "all" and (
                not isinstance(self.subset, int) or isinstance(self.subset, bool) or self.subset < 1):
            raise ValueError(f"subset must be a positive integer or 'all', got {self.subset!r}")
        if self.taus is not None:
            taus = tuple(self.taus)
            if not taus or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1
                                   for t in taus):
                raise ValueError(f"taus must be a non-empty list of numbers in (0, 1), got {self.taus!r}")
            object.__setattr__(self, "taus", tuple(float(t) for t in taus))

    def overrides(self) -> dict:
        """The overrides that were given, by name."""
        return {k: getattr(self, k) for k in OVERRIDES if getattr(self, k) is not None}


def as_budget(preset, backend: str | None = None) -> Budget:
    """A :class:`Budget` from a preset name (old ``run(preset, backend)`` calls) or a Budget."""
    if isinstance(preset, Budget):
        return preset
    if not isinstance(preset, str):
        raise TypeError(f"preset must be a preset name or a Budget, got {type(preset).__name__}")
    return Budget(preset=preset, backend=backend or "numpy")


def base_preset(module, budget: Budget) -> str:
    """The preset of ``module`` that ``budget`` starts from (``paper`` → ``full`` where no paper protocol exists)."""
    presets = getattr(module, "PRESETS", None)
    if budget.preset == "paper" and (presets is None or "paper" not in presets):
        return "full"
    return budget.preset


def _value(name: str, v, budget: Budget):
    if name == "seeds":
        return list(range(budget.seeds))
    if name == "subset":
        return None if budget.subset == "all" else budget.subset
    if name == "taus":
        return list(budget.taus)
    return v


def preset_name(budget) -> str:
    """``quick`` or ``full`` for an experiment without a preset table or paper protocol (``paper`` → ``full``)."""
    return base_preset(None, as_budget(budget))


def configure(presets: dict, knobs: dict, budget) -> dict:
    """``presets[preset]`` (deep copy) with every override of ``budget`` that ``knobs`` lists applied.

    Called by each experiment's ``run``: ``cfg = configure(PRESETS, KNOBS, budget)``.
    """
    budget = as_budget(budget)
    preset = budget.preset if budget.preset in presets else "full"
    cfg = copy.deepcopy(presets[preset])
    for name, v in budget.overrides().items():
        for path in knobs.get(name, ()):
            *parents, leaf = path.split(".")
            d = cfg
            for p in parents:
                d = d.get(p) if isinstance(d, dict) else None
            if isinstance(d, dict):  # a part the preset switches off (None) takes no override
                d[leaf] = _value(name, v, budget)
    return cfg


def resolve(module, budget):
    """The configuration ``module.run(budget)`` will use (None for a module without a preset table)."""
    if getattr(module, "PRESETS", None) is None:
        return None
    return configure(module.PRESETS, getattr(module, "KNOBS", {}), budget)


def notes(name: str, module, budget: Budget) -> list[str]:
    """One line naming the overrides that do not apply to ``module`` (and one for ``paper`` without a protocol)."""
    out = []
    knobs = getattr(module, "KNOBS", {})
    why = getattr(module, "KNOBS_NOTE", "")
    left = [f"--{k}" for k in budget.overrides() if k not in knobs]
    parts = []
    if left:
        verb = "does" if len(left) == 1 else "do"
        parts.append(f"{', '.join(left)} {verb} not apply here{' (' + why + ')' if why else ''}")
    if backend_for(module, budget) != budget.backend:
        parts.append(f"--backend {budget.backend} does not apply (runs on {backend_for(module, budget)}, on the host)")
    if parts:
        out.append(f"{name}: {'; '.join(parts)}; ignored")
    if budget.preset == "paper" and base_preset(module, budget) == "full":
        out.append(f"{name}: no published protocol to follow; --preset paper runs its full preset")
    return out


def backend_for(module, budget) -> str:
    """The backend ``module`` runs on under ``budget``: ``budget.backend`` if the module lists it in ``BACKENDS``
    (default: numpy and cupy), else numpy (host-only experiments: the ODE problems, the 2022 emulation)."""
    return budget.backend if budget.backend in getattr(module, "BACKENDS", ("numpy", "cupy")) else "numpy"


def count_runs(module, cfg) -> int | None:
    """Number of training runs of ``module`` under ``cfg`` (None: the module does not say)."""
    f = getattr(module, "count_runs", None)
    return None if f is None or cfg is None else int(f(cfg))


def seeds_of(cfg):
    """Every ``seeds`` / ``seed`` value found in a (nested) configuration, as a sorted list (None: none found)."""
    found = set()

    def walk(c):
        if isinstance(c, dict):
            for k, v in c.items():
                if k == "seeds" and isinstance(v, (list, tuple)):
                    found.update(v)
                elif k == "seed" and isinstance(v, int):
                    found.add(v)
                else:
                    walk(v)

    walk(cfg)
    return sorted(found) if found else None


def record(module, budget: Budget, cfg) -> dict:
    """What a figure's JSON stores as ``"budget"``: preset, overrides, the resolved configuration, seeds, runs."""
    seeds = seeds_of(cfg) or getattr(module, "SEEDS", None)  # SEEDS: a seed fixed in the module's code
    return {"preset": budget.preset, "base_preset": base_preset(module, budget), "overrides": budget.overrides(),
            "config": cfg, "seeds": seeds, "runs": count_runs(module, cfg)}


# ---- progress: one line per finished training run, with an ETA -------------------------------------------------

_progress: dict | None = None


def start_progress(name: str, total: int | None, stream=None) -> None:
    """Start counting the runs of experiment ``name`` (``total`` None: no ETA)."""
    global _progress
    _progress = {"name": name, "total": total, "done": 0, "failed": 0, "t0": time.perf_counter(),
                 "stream": stream if stream is not None else sys.stderr}


def stop_progress() -> None:
    global _progress
    _progress = None


def pause_progress():
    """Stop reporting (a sweep reports its runs itself); returns what :func:`resume_progress` restores."""
    global _progress
    saved, _progress = _progress, None
    return saved


def resume_progress(saved) -> None:
    global _progress
    _progress = saved


def run_done(tag: str, seconds: float, failed: bool = False) -> None:
    """Report one finished run: ``[name] run k/N (tag) 12.3 s; elapsed 45 s, ETA 90 s`` (no-op outside ``figures``).

    ``failed``: the run failed (counted; the line then also says how many have failed so far).
    """
    p = _progress
    if p is None:
        return
    p["done"] += 1
    p["failed"] += bool(failed)
    k, n = p["done"], p["total"]
    elapsed = time.perf_counter() - p["t0"]
    if n is not None and k <= n:
        eta = f"ETA {elapsed / k * (n - k):.0f} s"
        of = f"{k}/{n}"
    else:
        eta, of = "ETA unknown", f"{k}"
    fails = f", {p['failed']} failed" if p["failed"] else ""
    p["stream"].write(f"[{p['name']}] run {of} ({tag}) {seconds:.1f} s; elapsed {elapsed:.0f} s{fails}, {eta}\n")
    p["stream"].flush()
