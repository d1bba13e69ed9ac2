"""Experiments that regenerate the figures: one module per experiment.

Each module ``dlrt_ref.experiments.<name>`` provides

``run(preset: str, backend: str) -> dict``
    compute the data ("quick": seconds, for tests; "full": the published
    figure); the dict must be JSON-able (lists, floats, str; no NaN — use None);
``plot(data: dict, out_dir: pathlib.Path) -> list[pathlib.Path]``
    draw it into ``out_dir/<name>.png`` and ``out_dir/<name>.pdf``
    (use :func:`dlrt_ref.experiments.plotting.save`).

``python -m dlrt_ref figures`` (:mod:`dlrt_ref.figures_cli`) runs them and
writes ``data/<name>.json`` beside the figures. To add an experiment, add
its module and one line to :data:`EXPERIMENTS`.
"""
from __future__ import annotations

import importlib

# name -> (module, one-line description)
EXPERIMENTS = {
    "ode_convergence": ("dlrt_ref.experiments.ode_convergence",
                        "toy problem: error vs step size for every integrator at r = 10 and 20"),
    "ode_robustness": ("dlrt_ref.experiments.ode_robustness",
                       "Sylvester problem: error vs sigma_r(Y0); naive blows up, KSL/BUG do not"),
    "ode_schrodinger_drift": ("dlrt_ref.experiments.ode_schrodinger_drift",
                              "Schrodinger: norm and energy drift vs time (ksl, bug, ra-bug)"),
    "ode_rank_adaptive": ("dlrt_ref.experiments.ode_rank_adaptive",
                          "Schrodinger: rank and error vs time of RA-BUG at several tolerances"),
    "truncation_2022": ("dlrt_ref.experiments.truncation_2022",
                        "MLP on MNIST: correct truncation vs the 2022 codes' (Vh untransposed), same seed"),
}

PRESETS = ("quick", "full")


def load(name: str):
    """The experiment module of ``name``."""
    return importlib.import_module(EXPERIMENTS[name][0])


def select(only=None) -> list[str]:
    """Names to run: all, or those equal to or starting with any of ``only`` (``ode`` → all ode_*)."""
    if not only:
        return list(EXPERIMENTS)
    names = [n for n in EXPERIMENTS if any(n == o or n.startswith(o) for o in only)]
    unknown = [o for o in only if not any(n == o or n.startswith(o) for n in EXPERIMENTS)]
    if unknown:
        raise KeyError(f"no experiment named or starting with {', '.join(map(repr, unknown))}; "
                       f"known: {', '.join(EXPERIMENTS)}")
    return names
