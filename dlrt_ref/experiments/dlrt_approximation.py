"""DLRT's approximation theorem measured against the full gradient flow ([SZ22] Thm. 1).

‖W(t_n) − Y_n‖ ≤ c1 ε + c2 h + c3 ϑ/h at T, constants independent of the
singular values. W(t) is exact for least squares
(:mod:`dlrt_ref.ode.least_squares`, 40×30, r0 = 4, L = 1, κ(A) = 10, T = 2) and
a DOP853 solve at rtol = atol = 1e-13 for the teacher–student network
(:mod:`dlrt_ref.ode.network_flow`, W 16×24, r0 = 4, T = 4). Explicit-Euler
sub-steps throughout (the DLRT setting: Euler = SGD). Panels:

A. least squares with ε = 0 (γ = η = 0: the flow stays rank 4): error vs h for
   ra-bug, bug, ksl, parallel (adaptive ones at ϑ = 1e-12) — order 1;
B. the network, same methods: the fixed-rank ones stop at their ε floor, the
   rank-adaptive ones keep order 1;
C. least squares with γ = 0.1 (ε ≈ 0.09): ra-bug / parallel error vs h at fixed
   ϑ — the ϑ/h rise at small h, up to the rank-4 floor;
D. the same problem: error vs ϑ at fixed h;
E. error vs measured ε (γ from 1e-4 to 1e-1) at small h: fixed-rank methods follow c1 ε;
F. σ_r(Y0) from 1e-1 down to 1e-10 (γ = 1e-3) at h = T/100: ra-bug, bug, ksl,
   parallel stay flat; explicit Euler on the factor ODEs (``naive``, [KL07]) blows
   up; gradient descent on the factors of W = UVᵀ (balanced start U = U0 S0^½,
   V = V0 S0^½) is shown for contrast. The same sweep on the network is in the JSON
   (``F_ls_sigma.network``), not drawn.

.. [SZ22] S. Schotthöfer et al., "Low-rank lottery tickets", NeurIPS 2022 (arXiv:2205.13571).
.. [KL07] O. Koch, C. Lubich, SIAM J. Matrix Anal. Appl. 29, 434–454, 2007.
"""
from __future__ import annotations

import time

import numpy as np

from dlrt_ref.experiments.budget import as_budget, configure
from dlrt_ref.experiments.plotting import STYLE, as_float, pyplot, save
from dlrt_ref.integrators import ADAPTIVE, integrate
from dlrt_ref.ode.least_squares import least_squares
from dlrt_ref.ode.network_flow import teacher_student
from dlrt_ref.ode.theorems import fit_bound, loglog_slope

NAME = "dlrt_approximation"
METHODS = ("ra-bug", "bug", "ksl", "parallel")
SMALL_THETA = 1e-12
LS_ARGS = dict(m=40, n=30, r=4, L=1.0, kappa=10.0, T=2.0)
NET_ARGS = dict(d=24, k=16, o=4, n_samples=128, r=4, teacher_rank=4, nu=0.0, T=4.0, seed=0)
CONFIG = {
    "quick": dict(seeds=[0], steps_a=[20, 40, 80], steps_net=[20, 40, 80], steps_c=[10, 40, 160],
                  thetas_c=[1e-4], steps_d=[40], thetas_d=[1e-6, 1e-4, 1e-2], gammas_e=[1e-3, 1e-2, 1e-1],
                  steps_e=160, sigmas_f=[1e-1, 1e-4, 1e-10], steps_f=100, steps_f_net=40),
    "full": dict(seeds=[0, 1, 2], steps_a=[10, 20, 40, 80, 160, 320, 640], steps_net=[20, 40, 80, 160, 320, 640],
                 steps_c=[10, 20, 40, 80, 160, 320, 640, 1280, 2560], thetas_c=[1e-5, 1e-4, 1e-3],
                 steps_d=[40, 320], thetas_d=list(np.logspace(-8, -1, 15)), gammas_e=list(np.logspace(-4, -1, 7)),
                 steps_e=640, sigmas_f=[10.0 ** -k for k in range(1, 11)], steps_f=100, steps_f_net=40),
}
PRESETS = CONFIG  # no published protocol (``--preset paper`` runs ``full``)
KNOBS = {"seeds": ["seeds"]}
KNOBS_NOTE = "a theorem check: step counts, not epochs, data or tau"


def run_error(P, method: str, n_steps: int, **rule):
    """‖Y_N − W(T)‖_F after ``n_steps`` Euler-sub-step steps of ``method``; None if it broke down.

    Returns (error, final rank). ``rule``: the truncation (ra-bug, parallel); fixed-rank methods ignore it.
    """
    if method not in ADAPTIVE:
        rule = {}
    with np.errstate(all="ignore"):
        try:
            sol = integrate(P.field, P.Y0, 0.0, P.T, n_steps, method, substep="euler", **rule)
        except (np.linalg.LinAlgError, ValueError, FloatingPointError):
            return None, None
        e = P.error(sol.Y, P.T)
    return (float(e) if np.isfinite(e) else None), sol.Y.rank


def vanilla_uv(P, n_steps: int):
    """Gradient descent on the factors of W = U Vᵀ: U ← U − h∇E(W)V, V ← V − h∇E(W)ᵀU (simultaneous).

    Balanced start U = U0 S0^½, V = V0 S0^½ (S0 diagonal); the direct-factor control of [SZ22] Sec. 6
    ("vanilla" low-rank training). Returns ‖U Vᵀ − W(T)‖_F or None if it overflowed.
    """
    h = P.T / n_steps
    s = np.sqrt(np.diag(P.Y0.S))
    U, V = P.Y0.U * s, P.Y0.V * s  # (m, r), (n, r)
    with np.errstate(all="ignore"):
        for _ in range(n_steps):
            G = P.grad(U @ V.T)  # (m, n)
            U, V = U - h * (G @ V), V - h * (G.T @ U)  # (m, n)(n, r), (n, m)(m, r)
        e = P.error(U @ V.T, P.T)
    return float(e) if np.isfinite(e) else None


def _curve(P, method, steps, **rule):
    errs, ranks = zip(*(run_error(P, method, N, **rule) for N in steps))
    return list(errs), list(ranks)


def run(preset="full", backend: str = "numpy") -> dict:
    """Run under ``preset`` (a preset name or a :class:`~dlrt_ref.experiments.budget.Budget`)."""
    budget = as_budget(preset, backend)
    backend = budget.backend
    cfg = configure(PRESETS, KNOBS, budget)
    t_start = time.perf_counter()
    out = {"preset": budget.preset, "config": cfg, "ls_args": LS_ARGS, "net_args": NET_ARGS, "small_theta": SMALL_THETA,
           "substep": "euler", "seeds": cfg["seeds"], "wall_s_panels": {}}

    # A: least squares, ε = 0
    t0 = time.perf_counter()
    A = {"steps": cfg["steps_a"], "h": [LS_ARGS["T"] / N for N in cfg["steps_a"]], "seeds": {}}
    for seed in cfg["seeds"]:
        P = least_squares(**LS_ARGS, gamma=0.0, eta=0.0, seed=seed)
        runs = {m: _curve(P, m, cfg["steps_a"], theta=SMALL_THETA) for m in METHODS}
        A["seeds"][str(seed)] = {"epsilon": P.epsilon(), "errors": {m: v[0] for m, v in runs.items()},
                                 "ranks": {m: v[1] for m, v in runs.items()},
                                 "slopes": {m: loglog_slope(A["h"], v[0]) for m, v in runs.items()}}
    A["slope_range"] = {m: [min(s["slopes"][m] for s in A["seeds"].values()),
                            max(s["slopes"][m] for s in A["seeds"].values())] for m in METHODS}
    out["A_ls_order"] = A
    out["wall_s_panels"]["A"] = time.perf_counter() - t0

    # B: network
    t0 = time.perf_counter()
    N = teacher_student(**NET_ARGS)
    B = {"steps": cfg["steps_net"], "h": [N.T / n for n in cfg["steps_net"]], "epsilon": N.epsilon(),
         "best_error": N.best_error(N.T), "ivp_evaluations": None}
    runs = {m: _curve(N, m, cfg["steps_net"], theta=SMALL_THETA) for m in METHODS}
    B["ivp_evaluations"] = N.ivp_evaluations
    B["errors"] = {m: v[0] for m, v in runs.items()}
    B["ranks"] = {m: v[1] for m, v in runs.items()}
    B["slopes"] = {m: loglog_slope(B["h"], v[0]) for m, v in runs.items()}
    out["B_network"] = B
    out["wall_s_panels"]["B"] = time.perf_counter() - t0

    # C, D: least squares with γ = 0.1
    t0 = time.perf_counter()
    P = least_squares(**LS_ARGS, gamma=0.1, eta=0.0, seed=0)
    eps_c = P.epsilon()
    C = {"gamma": 0.1, "epsilon": eps_c, "best_error": P.best_error(P.T), "steps": cfg["steps_c"],
         "h": [P.T / n for n in cfg["steps_c"]], "thetas": [SMALL_THETA] + cfg["thetas_c"], "errors": {}, "ranks": {}}
    for m in ("ra-bug", "parallel"):
        for th in C["thetas"]:
            e, r = _curve(P, m, cfg["steps_c"], theta=th)
            C["errors"][f"{m} {th:g}"], C["ranks"][f"{m} {th:g}"] = e, r
    C["rise"] = {}
    for key, e in C["errors"].items():  # the rising branch: left of the minimum, h below h_min
        ea = as_float(e)
        if not np.any(np.isfinite(ea)):
            continue
        i = int(np.nanargmin(ea))
        left = list(range(i, len(ea)))  # steps_c increasing -> h decreasing
        C["rise"][key] = {"h_min": C["h"][i], "err_min": float(ea[i]), "err_smallest_h": float(ea[-1]),
                          "ratio": float(ea[-1] / ea[i]),
                          "slope_left": loglog_slope([C["h"][j] for j in left], [ea[j] for j in left])}
    out["C_ls_vs_h"] = C
    out["wall_s_panels"]["C"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    D = {"gamma": 0.1, "epsilon": eps_c, "steps": cfg["steps_d"], "thetas": cfg["thetas_d"], "errors": {}, "ranks": {}}
    for m in ("ra-bug", "parallel"):
        for n in cfg["steps_d"]:
            errs, ranks = zip(*(run_error(P, m, n, theta=th) for th in cfg["thetas_d"]))
            D["errors"][f"{m} N={n}"], D["ranks"][f"{m} N={n}"] = list(errs), list(ranks)
    # where the truncation takes over: the smallest ϑ whose error exceeds 2× the error at the smallest ϑ;
    # ϑ*/h ≈ constant across h says that ϑ/h, not ϑ, is the variable (the c3 ϑ/h term)
    D["theta_star"], D["theta_star_over_h"] = {}, {}
    for key, e in D["errors"].items():
        ea = as_float(e)
        n = int(key.split("N=")[1])
        above = [j for j in range(len(ea)) if np.isfinite(ea[j]) and ea[j] > 2 * ea[0]]
        D["theta_star"][key] = cfg["thetas_d"][above[0]] if above else None
        D["theta_star_over_h"][key] = cfg["thetas_d"][above[0]] / (LS_ARGS["T"] / n) if above else None
    out["D_ls_vs_theta"] = D
    out["wall_s_panels"]["D"] = time.perf_counter() - t0

    # E: error vs ε
    t0 = time.perf_counter()
    E = {"gammas": cfg["gammas_e"], "steps": cfg["steps_e"], "h": LS_ARGS["T"] / cfg["steps_e"], "epsilon": [],
         "best_error": [], "errors": {m: [] for m in METHODS}}
    for g in cfg["gammas_e"]:
        Pg = least_squares(**LS_ARGS, gamma=g, eta=0.0, seed=0)
        E["epsilon"].append(Pg.epsilon())
        E["best_error"].append(Pg.best_error(Pg.T))
        for m in METHODS:
            E["errors"][m].append(run_error(Pg, m, cfg["steps_e"], theta=1e-4)[0])
    E["theta_adaptive"] = 1e-4
    E["slopes"] = {m: loglog_slope(E["epsilon"], v) for m, v in E["errors"].items()}
    big = [j for j, ep in enumerate(E["epsilon"]) if ep >= 1e-3]  # where c1 ε dominates c2 h
    E["slopes_eps_ge_1e-3"] = {m: loglog_slope([E["epsilon"][j] for j in big], [v[j] for j in big])
                               for m, v in E["errors"].items()}
    out["E_ls_vs_eps"] = E
    out["wall_s_panels"]["E"] = time.perf_counter() - t0

    # F: σ_r → 1e-10
    t0 = time.perf_counter()
    F = {"gamma": 1e-3, "steps": cfg["steps_f"], "h": LS_ARGS["T"] / cfg["steps_f"], "sigma_min": cfg["sigmas_f"],
         "theta_adaptive": 1e-6, "best_error": [], "epsilon": [], "errors": {m: [] for m in METHODS + ("naive", "vanilla UV")}}
    for s in cfg["sigmas_f"]:
        Ps = least_squares(**LS_ARGS, gamma=1e-3, eta=0.0, sigma_min=s, seed=0)
        F["best_error"].append(Ps.best_error(Ps.T))
        F["epsilon"].append(Ps.epsilon())
        for m in METHODS + ("naive",):
            F["errors"][m].append(run_error(Ps, m, cfg["steps_f"], theta=1e-6)[0])
        F["errors"]["vanilla UV"].append(vanilla_uv(Ps, cfg["steps_f"]))

    def growth(v):
        a = as_float(v)
        return float(np.nanmax(a) / a[0]) if np.all(np.isfinite(a)) else None  # None: a run diverged

    F["growth_max_over_first"] = {m: growth(v) for m, v in F["errors"].items()}
    # the same sweep on the network (σ_r of the student's start), h = T/steps_f_net
    F["network"] = {"sigma_min": cfg["sigmas_f"], "steps": cfg["steps_f_net"], "h": NET_ARGS["T"] / cfg["steps_f_net"],
                    "errors": {m: [] for m in ("ra-bug", "bug", "naive", "vanilla UV")}, "epsilon": []}
    for s in cfg["sigmas_f"]:
        Ns = teacher_student(**dict(NET_ARGS, sigma_min=s))
        F["network"]["epsilon"].append(Ns.epsilon())
        for m in ("ra-bug", "bug", "naive"):
            F["network"]["errors"][m].append(run_error(Ns, m, cfg["steps_f_net"], theta=1e-6)[0])
        F["network"]["errors"]["vanilla UV"].append(vanilla_uv(Ns, cfg["steps_f_net"]))
    F["network"]["growth_max_over_first"] = {m: growth(v) for m, v in F["network"]["errors"].items()}
    out["F_ls_sigma"] = F
    out["wall_s_panels"]["F"] = time.perf_counter() - t0

    # fitted constants of c1 ε + c2 h + c3 ϑ/h
    rows = []  # (ε, h, ϑ, err) for ra-bug over C, D, E
    for th in C["thetas"]:
        rows += [(eps_c, h, th, e) for h, e in zip(C["h"], C["errors"][f"ra-bug {th:g}"]) if e is not None]
    for n in cfg["steps_d"]:
        rows += [(eps_c, LS_ARGS["T"] / n, th, e) for th, e in zip(cfg["thetas_d"], D["errors"][f"ra-bug N={n}"]) if e is not None]
    rows += [(ep, E["h"], 1e-4, e) for ep, e in zip(E["epsilon"], E["errors"]["ra-bug"]) if e is not None]
    fixed = [(ep, E["h"], 0.0, e) for ep, e in zip(E["epsilon"], E["errors"]["bug"]) if e is not None]
    for s in A["seeds"].values():
        fixed += [(s["epsilon"], h, 0.0, e) for h, e in zip(A["h"], s["errors"]["bug"]) if e is not None]
    out["fits"] = {"ra-bug": fit_bound(*zip(*rows)), "bug": fit_bound(*zip(*fixed))}
    out["budget"] = (f"least squares 40x30 r0=4 (seeds {cfg['seeds']} in panel A, seed 0 elsewhere), "
                     f"network 16x24 r0=4 seed 0; Euler sub-steps; float64")
    out["wall_s"] = time.perf_counter() - t_start
    return out


def _label(ax, xlabel: str, title: str, legend_size: int, ncol: int = 1) -> None:
    """The x label, the common y label ‖W(T) − Y_N‖_F, a title and the legend of one panel."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("‖W(T) − Y_N‖_F")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=legend_size, ncol=ncol)


def plot(data: dict, out_dir):
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    ax = axes[0, 0]
    A = data["A_ls_order"]
    s0 = A["seeds"][sorted(A["seeds"])[0]]
    for m in METHODS:
        ax.loglog(A["h"], as_float(s0["errors"][m]), label=f"{m} (slope {s0['slopes'][m]:.2f})", **STYLE[m])
    h = np.array(A["h"])
    ax.loglog(h, s0["errors"]["bug"][0] * h / h[0], "k:", linewidth=1, label="order 1")
    _label(ax, "h", f"A. least squares, ε = {s0['epsilon']:.0e} (flow stays rank 4), ϑ = {data['small_theta']:g}", 7)

    ax = axes[0, 1]
    B = data["B_network"]
    for m in METHODS:
        ax.loglog(B["h"], as_float(B["errors"][m]), label=f"{m} (slope {B['slopes'][m]:.2f})", **STYLE[m])
    ax.axhline(B["best_error"], color="0.4", linestyle=":", label="best rank-4 error of W(T)")
    _label(ax, "h", f"B. teacher–student MLP vs DOP853 flow, ε = {B['epsilon']:.2f}, ϑ = {data['small_theta']:g}", 7)

    ax = axes[0, 2]
    C = data["C_ls_vs_h"]
    for i, th in enumerate(C["thetas"]):
        for m, ls in (("ra-bug", "-"), ("parallel", "--")):
            ax.loglog(C["h"], as_float(C["errors"][f"{m} {th:g}"]), ls, marker="o" if m == "ra-bug" else "x",
                      markersize=4, color=f"C{i}", label=f"{m}, ϑ = {th:g}")
    ax.axhline(C["best_error"], color="0.4", linestyle=":", label="best rank-4 error (ε floor)")
    _label(ax, "h", f"C. least squares ε = {C['epsilon']:.2f}: error vs h at fixed ϑ (ϑ/h rise)", 6, ncol=2)

    ax = axes[1, 0]
    D = data["D_ls_vs_theta"]
    for i, (key, e) in enumerate(D["errors"].items()):
        ts = D["theta_star_over_h"][key]
        ax.loglog(D["thetas"], as_float(e), "-o" if key.startswith("ra-bug") else "--x", markersize=4, color=f"C{i}",
                  label=f"{key}" + (f" (jump at ϑ/h ≈ {ts:.1e})" if ts is not None else ""))
    ax.axhline(C["best_error"], color="0.4", linestyle=":", label="best rank-4 error")
    _label(ax, "ϑ (absolute)", f"D. least squares ε = {D['epsilon']:.2f}: error vs ϑ at fixed h (h = T/N)", 7)

    ax = axes[1, 1]
    E = data["E_ls_vs_eps"]
    for m in METHODS:
        ax.loglog(E["epsilon"], as_float(E["errors"][m]), label=f"{m} (slope {E['slopes_eps_ge_1e-3'][m]:.2f} for ε ≥ 1e-3)",
                  **STYLE[m])
    ax.loglog(E["epsilon"], E["best_error"], color="0.4", linestyle=":", label="best rank-4 error")
    _label(ax, "measured ε = max ‖(I − P(Y))∇E(Y)‖",
           f"E. least squares: error vs ε at h = {E['h']:g} (adaptive: ϑ = {E['theta_adaptive']:g})", 7)

    ax = axes[1, 2]
    F = data["F_ls_sigma"]
    cap = 1e2
    style = dict(STYLE, **{"vanilla UV": dict(color="C5", marker="*", linestyle="-.")})
    for m, v in F["errors"].items():
        e = as_float(v)
        bad = ~np.isfinite(e) | (e > cap)
        ax.loglog(F["sigma_min"], np.where(bad, cap, e), label=m, markersize=5, **style[m])
    ax.loglog(F["sigma_min"], F["best_error"], color="0.4", linestyle=":", label="best rank-4 error")
    ax.invert_xaxis()
    ax.set_ylim(top=cap * 5)
    _label(ax, "σ_r(Y0)", f"F. σ_r → 1e-10, ε = {F['epsilon'][0]:.0e}, h = {F['h']:g} (diverged / > {cap:g}: at {cap:g})",
           7)
    return save(fig, out_dir, NAME)
