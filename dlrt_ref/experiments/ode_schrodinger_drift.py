"""Norm and energy drift on the discrete Schrödinger equation ([CKL22] Sec. 5.2).

iẎ = ½(DY + YDᵀ) + V_cos Y V_cos (N = 100), Y0 of rank 10 with
S0 = diag(10^{-i}) normalised, RK4 sub-steps. The exact flow conserves
‖Y‖_F = 1 and E(Y) = Re⟨Y, H[Y]⟩. For the rank-adaptive BUG ([CKL22]
Sec. 4) the Galerkin S-step conserves the norm of the augmented Ŷ1, so
‖Y_n‖² = 1 − Σ discarded σ² up to the sub-step error: the norm loss is
≈ ½ Σ discarded σ² (dashed), and the energy drift stays O(nϑ). Fixed-rank
KSL (a splitting of unitary flows) keeps the norm up to the RK4 error; fixed-rank
BUG (whose S-step starts from the projected M S0 Nᵀ) loses norm at every step.

.. [CKL22] G. Ceruti, J. Kusch, C. Lubich, BIT 62, 1149–1174, 2022.

Not split into runs (:mod:`dlrt_ref.experiments.runs`): the full preset takes ~5 s on one core,
less than starting workers.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.experiments.budget import preset_name
from dlrt_ref.experiments.ode_common import run_method
from dlrt_ref.experiments.plotting import STYLE, as_float, pyplot, save
from dlrt_ref.ode.problems import schrodinger

NAME = "ode_schrodinger_drift"
SERIAL = "one whole computation of ~5 s: nothing worth spreading"  # figures --jobs/--dask
CONFIG = {"quick": dict(T=1.0, steps=50), "full": dict(T=5.0, steps=500)}
RUNS = (("ksl", None), ("bug", None), ("ra-bug", 1e-3), ("ra-bug", 1e-6))


def label(method, theta):
    return method if theta is None else f"{method} ϑ = {theta:g}"
KNOBS_NOTE = "an ODE problem: its sizes and step counts are the experiment"
BACKENDS = ("numpy",)  # small problems, solved on the host whatever --backend says
SEEDS = [0]  # the problem's random data: seed 0, fixed in code (recorded in the JSON)


def run(preset="full", backend: str = "numpy") -> dict:
    """Run under ``preset`` (a name or a Budget; ``paper`` runs ``full``: no published protocol)."""
    preset = preset_name(preset)
    cfg = CONFIG[preset]
    P = schrodinger(N=100, r=10, seed=0, T=cfg["T"])
    n0, E0 = P.norm(P.Y0), P.energy(P.Y0)
    runs = []
    for method, theta in RUNS:
        rec = {"method": method, "theta": theta, "label": label(method, theta), "t": [0.0], "norm_drift": [0.0],
               "energy_drift": [0.0], "rank": [P.rank], "discarded_sq": [0.0]}

        def cb(t, Y, res, rec=rec):
            rec["t"].append(t)
            rec["norm_drift"].append(P.norm(Y) - n0)
            rec["energy_drift"].append(P.energy(Y) - E0)
            rec["rank"].append(Y.rank)
            tail = res.truncation.tail if res.truncation is not None else 0.0
            rec["discarded_sq"].append(rec["discarded_sq"][-1] + tail**2)

        opts = {} if theta is None else {"theta": theta}
        run_method(P, method, cfg["steps"], substep="rk4", callback=cb, **opts)
        runs.append(rec)
    return {"problem": "schrodinger", "N": 100, "r0": P.rank, "T": P.T, "steps": cfg["steps"],
            "h": P.T / cfg["steps"], "substep": "rk4", "norm0": n0, "energy0": E0, "runs": runs}


def plot(data: dict, out_dir):
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 5.4))
    adaptive_colours = iter(["C3", "C5", "C6", "C8", "C9"])
    for rec in data["runs"]:
        t = np.array(rec["t"])
        st = dict(STYLE[rec["method"]])
        st.pop("marker", None)
        if rec["theta"] is not None:
            st["color"] = next(adaptive_colours)
        a1.semilogy(t[1:], np.abs(as_float(rec["norm_drift"]))[1:], label=rec["label"], linewidth=1.4, **st)
        if rec["theta"] is not None:
            # the bound in its run's colour (one black style for every θ made the entries indistinguishable)
            a1.semilogy(t[1:], 0.5 * np.array(rec["discarded_sq"])[1:] + 1e-300, linestyle=":", linewidth=1.5,
                        marker="o", mfc="none", markevery=max(1, len(t) // 12), color=st["color"], zorder=5, label=f"½ Σ discarded σ² (ϑ = {rec['theta']:g})")
        a2.semilogy(t[1:], np.abs(as_float(rec["energy_drift"]))[1:], label=rec["label"], linewidth=1.4, **st)
    a1.set_ylabel(r"norm drift $|\,\|Y_n\|_F - \|Y_0\|_F\,|$")
    a2.set_ylabel(r"energy drift $|E(Y_n) - E(Y_0)|$")
    for ax, what in ((a1, "norm"), (a2, "energy")):
        ax.set_xlabel("time t")
        ax.set_title(f"Schrödinger N = {data['N']}, r0 = {data['r0']}: {what} "
                     f"(h = {data['h']:g}, {data['substep']} sub-steps)", fontsize=10)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    return save(fig, out_dir, NAME)
