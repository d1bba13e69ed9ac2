"""Error vs step size of every integrator on the toy problem ([LO14] Sec. 5, [CL22] Sec. 5.1).

A(t) = e^{tW1} e^t D e^{tW2} (N = 100, D = diag(2^{-i})) is given through its
increments, so every sub-flow is solved exactly by Euler and the error at
T = 1 is that of the low-rank integrator alone. The robust integrators
(KSL, LSK, Strang, BUG, RA-BUG and parallel BUG at fixed rank) approach the
best-approximation level ‖A(1) − T_r(A(1))‖_F as h → 0; the naive Euler
discretisation of the factor ODEs needs h ≲ σ_r and blows up at r = 20,
where σ_20(A) ≈ 1e-6.

A third panel uses the derivative field Ȧ(t) = W1 A + A + A W2 with Euler
sub-steps at r = 10: now the sub-steps add an O(h) error, and the robust
integrators show first-order convergence down to the best-approximation level.

Runs (:mod:`dlrt_ref.experiments.runs`): one per panel and integrator (21), so ``figures --jobs``/``--dask``
spread the ~75 s of the full preset.
"""
from __future__ import annotations

import time

import numpy as np

from dlrt_ref.experiments.ode_common import error_or_none, loglog_capped, run_method
from dlrt_ref.experiments.plotting import STYLE, pyplot, save
from dlrt_ref.experiments.runs import RunSpec, serial_runner
from dlrt_ref.ode.problems import toy

NAME = "ode_convergence"
# (panel key, rank, field given by increments?)
PANELS = (("increments r=10", 10, True), ("increments r=20", 20, True), ("derivative r=10", 10, False))
STEPS = {"quick": [4, 16, 64], "full": [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]}
CAP = 1e2  # errors above this (or non-finite) are drawn at CAP
# the integrators of the committed figure (midpoint-bug, added later, is tested in tests/core/test_core_properties.py)
METHODS = ("ksl", "lsk", "strang", "bug", "ra-bug", "parallel", "naive")
KNOBS_NOTE = "an ODE problem: its sizes and step counts are the experiment"
BACKENDS = ("numpy",)  # small problems, solved on the host whatever --backend says
SEEDS = [0]  # the problem's random data: seed 0, fixed in code (recorded in the JSON)


PRESETS = {name: dict(steps=steps) for name, steps in STEPS.items()}  # ``paper`` runs ``full``
KNOBS = {}


def count_runs(cfg) -> int:
    """One run per panel and method (each over every step count)."""
    return len(PANELS) * len(METHODS)


def work(cfg) -> float:
    """Steps integrated, for the run plan's estimate."""
    return float(len(PANELS) * len(METHODS) * sum(cfg["steps"]))


def specs(cfg, backend: str) -> list:
    """One spec per panel and method: the errors of that integrator at every step count."""
    return [RunSpec(NAME, f"{key} {m}", dict(panel=key, rank=r, increments=incr, method=m, steps=cfg["steps"]))
            for key, r, incr in PANELS for m in METHODS]


def run_one(c: dict, tag: str) -> dict:
    P = toy(N=100, r=c["rank"], seed=0, increments=c["increments"])
    t0 = time.perf_counter()
    errors = [error_or_none(P, run_method(P, c["method"], n)) for n in c["steps"]]
    return {"errors": errors, "seconds": time.perf_counter() - t0, "best_error": P.best_error(P.T, c["rank"])}


def assemble(cfg, results: dict) -> dict:
    steps = cfg["steps"]
    out = {"problem": "toy", "N": 100, "T": 1.0, "seed": 0, "steps": steps, "h": [1.0 / n for n in steps],
           "methods": list(METHODS), "panels": {}}
    for key, r, incr in PANELS:
        res = {m: results[f"{key} {m}"] for m in METHODS}
        out["panels"][key] = {"rank": r, "increments": incr, "best_error": res[METHODS[0]]["best_error"],
                              "errors": {m: res[m]["errors"] for m in METHODS},
                              "seconds": {m: res[m]["seconds"] for m in METHODS}}
    return out


run = serial_runner(PRESETS, KNOBS, specs, assemble)  # run(preset, backend): the specs, serially


def plot(data: dict, out_dir):
    plt = pyplot()
    from matplotlib.ticker import LogLocator, NullFormatter

    keys = list(data["panels"])
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 4.4))
    h = np.array(data["h"])
    for ax, key in zip(np.atleast_1d(axes), keys):
        d = data["panels"][key]
        r = d["rank"]
        clipped = loglog_capped(ax, h, {m: d["errors"][m] for m in data["methods"]}, CAP, STYLE)
        ax.axhline(d["best_error"], color="0.4", linestyle=":", linewidth=2,
                   label=f"best rank-{r} error {d['best_error']:.1e}")
        if not d["increments"]:
            ax.loglog(h, 0.5 * h, color="0.6", linewidth=1, label="slope 1: h/2")
        field = "increments A(t+h) − A(t)" if d["increments"] else "derivative Ȧ(t), Euler sub-steps"
        ax.set_title(f"toy N = {data['N']}, r = {r}\n{field}", fontsize=10)
        ax.set_xlabel("step size h (T = 1)")
        ax.set_ylabel(r"error $\|Y_n - A(1)\|_F$")
        ax.set_ylim(min(d["best_error"] / 3, ax.get_ylim()[0]), CAP * 5)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_locator(LogLocator(numticks=12))
        if clipped:
            ax.text(0.03, 0.97, f"naive: diverged / > {CAP:g}, drawn at {CAP:g}", transform=ax.transAxes,
                    va="top", fontsize=8)
    handles, labels = [], []
    for ax in np.atleast_1d(axes):  # one legend for all panels, below them
        for hd, lb in zip(*ax.get_legend_handles_labels()):
            if lb not in labels:
                handles.append(hd)
                labels.append(lb)
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=9, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return save(fig, out_dir, NAME, tight=False)
