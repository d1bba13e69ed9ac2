"""DLRT's descent theorem measured step by step ([SZ22] Thm. 2), with the h > 2/L negative control.

At every explicit-Euler rank-adaptive BUG step (:func:`dlrt_ref.ode.theorems.descent_check`)

    E(Y1) ≤ E(Y0) − h(1 − Lh/2)‖P(Y0)∇E(Y0)‖² + β‖Y1 − Ŷ1‖,   ‖Y1 − Ŷ1‖ ≤ ϑ,

on two problems:

* least squares E(W) = ½‖XWZ − C‖² (40×30, r0 = 4, L = 1 exactly, κ(A) = 10,
  η = 0.2, ‖D‖ = γ = 0.1; :mod:`dlrt_ref.ode.least_squares`), h·L ∈ {0.1, 0.5, 1, 1.9}
  and τ ∈ {1e-3, 1e-1} (ϑ = τ‖Ŝ‖, DLRT's relative rule);
* the teacher–student network of :mod:`dlrt_ref.ode.network_flow` (W 16×24,
  r0 = 4), L = the largest Hessian |eigenvalue| at 11 points of its full
  gradient flow (the curvature at every iterate is recorded next to it),
  β from 5 points of [Ŷ1, Y1].

Negative controls (h > 2/L): the loss must rise (descent lost) on both
problems; on a least-squares problem with isotropic curvature (κ = 1, η = 0:
Hessian = L·I; γ = 0.1, ϑ = 0) the inequality itself must fail at the steps
where the augmented projection P̂G is larger than P(Y0)G (while the rank grows).

.. [SZ22] S. Schotthöfer et al., "Low-rank lottery tickets", NeurIPS 2022 (arXiv:2205.13571).
"""
from __future__ import annotations

import time

import numpy as np

from dlrt_ref.experiments.budget import as_budget, configure
from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.ode.least_squares import least_squares
from dlrt_ref.ode.network_flow import teacher_student
from dlrt_ref.ode.theorems import descent_check

NAME = "dlrt_descent"
CONFIG = {
    "quick": dict(seeds=[0], steps=8, net_steps=8, hL=[0.5, 1.0, 1.9], taus=[1e-1], bad_hL=[2.2], curvature_every=4),
    "full": dict(seeds=[0, 1, 2, 3, 4], steps=40, net_steps=40, hL=[0.1, 0.5, 1.0, 1.9], taus=[1e-3, 1e-1], bad_hL=[2.05, 2.2, 2.5],
                 curvature_every=1),
}
LS_ARGS = dict(m=40, n=30, r=4, L=1.0, kappa=10.0, eta=0.2, gamma=0.1, T=1.0, seed=0)
ISO_ARGS = dict(m=40, n=30, r=2, L=1.0, kappa=1.0, eta=0.0, gamma=0.1, T=1.0, seed=0)
NET_ARGS = dict(d=24, k=16, o=4, n_samples=128, r=4, teacher_rank=4, nu=0.0, T=4.0, seed=0)
PRESETS = CONFIG  # no published protocol (``--preset paper`` runs ``full``)
KNOBS = {"seeds": ["seeds"], "taus": ["taus"]}
KNOBS_NOTE = "a theorem check: step counts, not epochs or data"
BACKENDS = ("numpy",)  # float64 on the host


def _record(run, keep_steps: bool) -> dict:
    out = run.summary()
    if keep_steps:
        out["per_step"] = {k: [float(getattr(s, k)) for s in run.steps]
                           for k in ("loss0", "loss1", "bound", "slack", "rel_slack", "dist", "theta", "beta",
                                     "decrease", "rank")}
    return out


def run(preset="full", backend: str = "numpy") -> dict:
    """Run under ``preset`` (a preset name or a :class:`~dlrt_ref.experiments.budget.Budget`)."""
    budget = as_budget(preset, backend)
    backend = budget.backend
    cfg = configure(PRESETS, KNOBS, budget)
    t_start = time.perf_counter()
    out = {"preset": budget.preset, "config": cfg, "seeds": cfg["seeds"], "problems": {}}

    # ---------------------------------------------------------------- least squares
    ls = None
    for seed in cfg["seeds"]:  # per-step data kept for the first seed (the plot), summaries for all
        P = least_squares(**dict(LS_ARGS, seed=seed))
        L = P.lipschitz
        if ls is None:
            ls = {"args": LS_ARGS, "L": L, "epsilon": P.epsilon(), "seeds": cfg["seeds"], "runs": []}
        for hL in cfg["hL"] + cfg["bad_hL"]:
            for tau in cfg["taus"]:
                rec = _record(descent_check(P, hL / L, cfg["steps"], L, tau=tau), keep_steps=seed == cfg["seeds"][0])
                rec.update(tau=tau, seed=seed, negative_control=hL > 2)
                ls["runs"].append(rec)
    out["problems"]["least_squares"] = ls

    # isotropic curvature: the inequality itself fails for h > 2/L
    Q = least_squares(**ISO_ARGS)
    iso = {"args": ISO_ARGS, "L": Q.lipschitz, "runs": []}
    for hL in [1.0, 1.9] + cfg["bad_hL"]:
        rec = _record(descent_check(Q, hL / Q.lipschitz, cfg["steps"], Q.lipschitz, theta=0.0), keep_steps=True)
        rec.update(theta=0.0, negative_control=hL > 2)
        iso["runs"].append(rec)
    out["problems"]["least_squares_isotropic"] = iso

    # ---------------------------------------------------------------- network
    N = teacher_student(**NET_ARGS)
    flow_curv = [N.curvature(N.flow(t)) for t in np.linspace(0.0, N.T, 11)]
    L_net = max(flow_curv)
    net = {"args": NET_ARGS, "L": L_net, "L_source": "max |Hessian eigenvalue| at 11 points of the full flow",
           "flow_curvature": flow_curv, "epsilon": N.epsilon(), "runs": []}
    for hL in cfg["hL"] + cfg["bad_hL"][:1]:
        for tau in cfg["taus"]:
            r = descent_check(N, hL / L_net, cfg["net_steps"], L_net, tau=tau, beta_points=5)
            rec = _record(r, keep_steps=True)
            # the curvature at the iterates: is L_net an upper bound along this run?
            every = r.iterates[::cfg["curvature_every"]]
            rec["iterate_curvature_max"] = max(N.curvature(Y) for Y in every) if hL <= 2 else None
            rec.update(tau=tau, negative_control=hL > 2)
            net["runs"].append(rec)
    out["problems"]["teacher_student"] = net

    # ---------------------------------------------------------------- summary
    def worst(runs, neg):
        vals = [r["worst_rel_slack"] for r in runs if r["negative_control"] == neg and r["worst_rel_slack"] is not None]
        return min(vals) if vals else None

    out["summary"] = {
        name: {"holds_all_h_le_2_over_L": all(r["holds"] for r in p["runs"] if not r["negative_control"]),
               "worst_rel_slack_h_le_2_over_L": worst(p["runs"], False),
               "violations_h_gt_2_over_L": [r["violations"] for r in p["runs"] if r["negative_control"]],
               "ascents_h_gt_2_over_L": [r["ascents"] for r in p["runs"] if r["negative_control"]],
               "ascents_h_le_2_over_L": [r["ascents"] for r in p["runs"] if not r["negative_control"]]}
        for name, p in out["problems"].items()}
    out["budget"] = (f"{cfg['steps']} steps per least-squares run (seeds {cfg['seeds']}), {cfg['net_steps']} per "
                     f"network run (seed 0); h·L in {cfg['hL']} (+ controls {cfg['bad_hL']}); tau in {cfg['taus']}; float64")
    out["wall_s"] = time.perf_counter() - t_start
    return out


def plot(data: dict, out_dir):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    probs = data["problems"]
    for ax, key, title in ((axes[0], "least_squares", "least squares"), (axes[1], "teacher_student", "teacher–student MLP")):
        p = probs[key]
        tau = max(r["tau"] for r in p["runs"])
        for i, r in enumerate(x for x in p["runs"] if x["tau"] == tau and "per_step" in x):
            ps = r["per_step"]
            n = np.arange(0, len(ps["loss1"]) + 1)
            ls = "--" if r["negative_control"] else "-"
            ax.semilogy(n, [ps["loss0"][0]] + ps["loss1"], ls, color=f"C{i}", label=f"E(Y_n), hL = {r['hL']:.3g}")
            ax.semilogy(n[1:], ps["bound"], ":", color=f"C{i}", linewidth=2)
        ax.set_xlabel("step n")
        ax.set_ylabel("loss")
        ax.set_title(f"{title}: E(Y_n) (solid) and the bound (dotted), τ = {tau:g}\n"
                     f"L = {p['L']:.3g}; dashed: h > 2/L", fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[2]
    marks = {"least_squares": ("o", "C0"), "teacher_student": ("s", "C1"), "least_squares_isotropic": ("^", "C3")}
    for key, p in probs.items():
        mk, c = marks[key]
        x = [r["hL"] for r in p["runs"]]
        y = [np.nan if r["worst_rel_slack"] is None else r["worst_rel_slack"] for r in p["runs"]]
        ax.plot(x, y, mk, color=c, label=key.replace("_", " "), alpha=0.8)
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.axvline(2.0, color="0.5", linestyle="--", linewidth=0.8)
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_xlabel("h·L")
    ax.set_ylabel("worst relative slack over the steps")
    ax.set_title("slack (bound − E(Y1)) / (|decrease| + β‖Y1 − Ŷ1‖)\n< 0: the inequality fails", fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, out_dir, NAME)
