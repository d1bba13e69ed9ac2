"""Rank vs time of the rank-adaptive BUG at several tolerances ([CKL22] Sec. 5.2).

Schrödinger problem (N = 100), Y0 of rank 10 with σ_i ∝ 10^{-i}, RK4 sub-steps.
The exact solution's numerical rank grows as the flow spreads Y0 over more
modes; RA-BUG with truncation tolerance ϑ follows it: smaller ϑ, higher rank
and smaller error. Right: error ‖Y_n − Y(t_n)‖_F against the exact reference
(expm_multiply), sampled along the run.

.. [CKL22] G. Ceruti, J. Kusch, C. Lubich, BIT 62, 1149–1174, 2022.

Not split into runs (:mod:`dlrt_ref.experiments.runs`): the full preset takes ~6 s on one core,
less than starting workers.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.experiments.budget import preset_name
from dlrt_ref.experiments.ode_common import run_method
from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.ode.problems import schrodinger

NAME = "ode_rank_adaptive"
SERIAL = "one whole computation of ~6 s: nothing worth spreading"  # figures --jobs/--dask
CONFIG = {"quick": dict(T=1.0, steps=50, thetas=[1e-2, 1e-4]),
          "full": dict(T=5.0, steps=500, thetas=[1e-2, 1e-3, 1e-4, 1e-5, 1e-6])}
N_SAMPLES = 25  # error samples per run
KNOBS_NOTE = "an ODE problem: its sizes and step counts are the experiment"
BACKENDS = ("numpy",)  # small problems, solved on the host whatever --backend says
SEEDS = [0]  # the problem's random data: seed 0, fixed in code (recorded in the JSON)


def run(preset="full", backend: str = "numpy") -> dict:
    """Run under ``preset`` (a name or a Budget; ``paper`` runs ``full``: no published protocol)."""
    preset = preset_name(preset)
    cfg = CONFIG[preset]
    P = schrodinger(N=100, r=10, seed=0, T=cfg["T"])
    every = max(1, cfg["steps"] // N_SAMPLES)
    runs = []
    for theta in cfg["thetas"]:
        rec = {"theta": theta, "t": [0.0], "rank": [P.rank], "t_err": [0.0], "error": [0.0]}
        k = [0]

        def cb(t, Y, res, rec=rec, k=k):
            k[0] += 1
            rec["t"].append(t)
            rec["rank"].append(Y.rank)
            if k[0] % every == 0:
                rec["t_err"].append(t)
                rec["error"].append(P.error(Y, t))

        run_method(P, "ra-bug", cfg["steps"], substep="rk4", callback=cb, theta=theta)
        runs.append(rec)
    return {"problem": "schrodinger", "N": 100, "r0": P.rank, "T": P.T, "steps": cfg["steps"],
            "h": P.T / cfg["steps"], "substep": "rk4", "runs": runs}


def plot(data: dict, out_dir):
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.4))
    for i, rec in enumerate(data["runs"]):
        c = f"C{i % 10}"
        a1.step(rec["t"], rec["rank"], where="post", color=c, linewidth=1.5, label=f"ϑ = {rec['theta']:g}")
        a2.semilogy(rec["t_err"][1:], rec["error"][1:], color=c, marker="o", markersize=3, linewidth=1.3,
                    label=f"ϑ = {rec['theta']:g}")
    a1.set_ylabel("rank r(t)")
    a2.set_ylabel(r"error $\|Y_n - Y(t_n)\|_F$")
    for ax, what in ((a1, "rank"), (a2, "error")):
        ax.set_xlabel("time t")
        ax.set_title(f"RA-BUG on Schrödinger N = {data['N']}, r0 = {data['r0']}: {what}\n"
                     f"(h = {data['h']:g}, {data['substep']} sub-steps)", fontsize=10)
        ax.legend(fontsize=8)
    return save(fig, out_dir, NAME)
