"""Robustness to small singular values: error vs σ_r(Y0) ([KLW16]; [CL22] Thm. 4).

Sylvester problem Ẏ = AY + YB + εC (A, B skew-symmetric rotations, ε = 1e-3,
100×100, r = 10) with Y0 of prescribed singular values 1 … σ_r. [KLW16]
prove for the projector-splitting integrator, and [CL22] for BUG, an error
bound c(ε + h) independent of σ_r; explicit Euler on the Koch–Lubich
factor ODEs has S^{-1} in its vector field and needs h ≲ σ_r. At fixed
h = 0.01, the naive error grows without bound as σ_r → 0, the robust ones
stay flat. The dotted line is the best rank-r approximation error at T.

.. [KLW16] E. Kieri, C. Lubich, H. Walach, SIAM J. Numer. Anal. 54(2), 2016.
.. [CL22] G. Ceruti, C. Lubich, BIT 62, 23–44, 2022.

Not split into runs (:mod:`dlrt_ref.experiments.runs`): the full preset takes ~3 s on one core,
less than starting workers.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.experiments.budget import preset_name
from dlrt_ref.experiments.ode_common import error_or_none, loglog_capped, run_method
from dlrt_ref.experiments.plotting import STYLE, pyplot, save
from dlrt_ref.ode.problems import sylvester

NAME = "ode_robustness"
SERIAL = "one whole computation of ~3 s: nothing worth spreading"  # figures --jobs/--dask
METHODS = ("ksl", "strang", "bug", "ra-bug", "parallel", "naive")
SIGMAS = {"quick": [1e-1, 1e-4, 1e-7, 1e-10], "full": [10.0 ** -k for k in range(1, 11)]}
CAP = 1e2
KNOBS_NOTE = "an ODE problem: its sizes and step counts are the experiment"
BACKENDS = ("numpy",)  # small problems, solved on the host whatever --backend says
SEEDS = [0]  # the problem's random data: seed 0, fixed in code (recorded in the JSON)


def run(preset="full", backend: str = "numpy") -> dict:
    """Run under ``preset`` (a name or a Budget; ``paper`` runs ``full``: no published protocol)."""
    preset = preset_name(preset)
    sigmas, r, n_steps, eps = SIGMAS[preset], 10, 100, 1e-3
    errs = {m: [] for m in METHODS}
    best = []
    for s in sigmas:
        P = sylvester(m=100, n=100, r=r, sigma_min=s, eps=eps, seed=0)
        best.append(P.best_error(P.T, r))
        for m in METHODS:
            errs[m].append(error_or_none(P, run_method(P, m, n_steps)))
    return {"problem": "sylvester", "m": 100, "n": 100, "r": r, "eps": eps, "T": 1.0, "steps": n_steps,
            "h": 1.0 / n_steps, "substep": "euler", "sigma_min": sigmas, "best_error": best, "errors": errs}


def plot(data: dict, out_dir):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    s = np.array(data["sigma_min"])
    clipped = loglog_capped(ax, s, data["errors"], CAP, STYLE)
    ax.loglog(s, data["best_error"], color="0.4", linestyle=":", linewidth=2, label=f"best rank-{data['r']} error")
    ax.invert_xaxis()
    ax.set_xlabel(r"smallest singular value $\sigma_r(Y_0)$")
    ax.set_ylabel(r"error $\|Y_n - Y(T)\|_F$ at T = 1")
    ax.set_title(f"Sylvester {data['m']}×{data['n']}, r = {data['r']}, ε = {data['eps']:g}, "
                 f"h = {data['h']:g}, Euler sub-steps", fontsize=10)
    if clipped:
        ax.text(0.03, 0.97, f"naive: diverged / > {CAP:g}, drawn at {CAP:g}", transform=ax.transAxes, va="top", fontsize=8)
    ax.set_ylim(top=CAP * 5)
    ax.legend(loc="center left", fontsize=8)
    return save(fig, out_dir, NAME)
