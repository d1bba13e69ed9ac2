r"""Does DLRT find the rank? Rank dynamics against a known true rank, and on MNIST.

Part 1 — teacher–student regression with a known rank. The teacher is the
random ReLU MLP of :func:`dlrt_ref.data.synthetic.teacher_student` with widths
64-64-64-10 and hidden weight ranks r* = (8, 16); the student is the same
architecture with two low-rank layers (dense classifier), trained in float64
by ``ra-bug`` on the mean squared error to the teacher's outputs (a realisable
problem: the teacher's ranks are a global minimiser's ranks). It starts *above*
(rank 32 = the cap ⌊min(m, n)/2⌋) and *below* (rank 4) the true ranks.
Swept: the tolerance rule of :class:`~dlrt_ref.train.dlrt.DLRT`

* ``relative``: ϑ = τ‖Ŝ‖_F, as published (Schotthöfer et al. 2022, Alg. 1),
* ``absolute``: a fixed ϑ (Ceruti, Kusch & Lubich 2022, Alg. 1),
* ``step``: ϑ = c·h·‖Ŝ1 − S̃0‖_F, scaled with the step's update (derived in
  :func:`dlrt_ref.integrators.step_scaled_theta`),

three values of each, and — one factor at a time around the middle value —
the learning rate, the optimiser and its state policy, the initial spectrum
shape (halfnormal, linear, gaussian-product, unit = flat at the same Frobenius
norm) and the initial scale (the He-scaled S times 0.01: "small init").
Recorded: rank trajectories, final ranks, and the first step after which the
rank stays within ±1 of its final value ("settle step").

Part 2 — MNIST, where no true rank exists: the tutorial-06 MLP 784-500-500-10
and LeNet5, started at the caps, Adam 1e-3, batch 256, 120 steps on a 10k
subset. For each τ and initial spectrum, the ranks that truncating the
*initial* S alone gives (the relative rule applied repeatedly to S0, no data,
no training: "predicted") are compared with the ranks after training. Also the
predicted ranks of the default init over 10 seeds.

Budget: ``full`` — part 1: 216 runs (3 rules × 3 values and 9 one-factor
variants × 3 rules, × 2 starts × 3 seeds; 1500 SGD steps of batch 64 each);
part 2: 7 MLP + 4 LeNet5 runs of 100 steps, one seed, plus the initial-S
truncation of every spectrum × τ and of 10 seeds (no training). Measured:
1533 s wall on one thread of a shared, loaded 2-core machine (≈ 10 min of
CPU). ``quick`` — a 16-16-16-4 teacher, mid values, the base setting and
"small init", one seed, 60 steps; a 784-32-32-10 MLP (6 steps) and one
LeNet5 step.

Runs (:mod:`dlrt_ref.experiments.runs`): every teacher run, every MNIST run and the no-training
truncation of the initial S are independent specs (228 in ``full``), so ``figures --jobs``/``--dask``
spread them.

Findings (figures/data/rank_dynamics.json; REPRODUCTION.md §10): with the
default He-scaled initial spectrum no rule ends within ±1 of the teacher's
ranks from above; the relative rule ends at (or, slowly, a few below) the
ranks that truncating the initial S gives and never grows from below; the
absolute and step rules grow from below and keep every initial direction
from above. On MNIST the trained ranks equal the initial-S truncation.
"""
from __future__ import annotations

import time

import numpy as np

from dlrt_ref.data import load_mnist
from dlrt_ref.data.synthetic import teacher_student
from dlrt_ref.experiments.plotting import jsonable, pyplot, save
from dlrt_ref.experiments.runs import RunSpec, serial_runner
from dlrt_ref.nn import lenet5, mlp
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.loop import evaluate
from dlrt_ref.train.optim import make_optimizer
from dlrt_ref.truncation import truncate

NAME = "rank_dynamics"
RULES = {"relative": [0.05, 0.1, 0.2], "absolute": [0.01, 0.05, 0.2], "step": [3.0, 10.0, 30.0]}
MID = {"relative": 0.1, "absolute": 0.05, "step": 10.0}
RULE_SYMBOL = {"relative": "τ", "absolute": "ϑ", "step": "c"}
# one factor at a time around the base setting (SGD lr 0.05, halfnormal, He scale)
VARIANTS = {
    "base": {},
    "lr 0.02": dict(lr=0.02),
    "lr 0.1": dict(lr=0.1),
    "momentum": dict(opt="momentum", lr=0.005),
    "adam": dict(opt="adam", lr=1e-3),
    "adam reset": dict(opt="adam", lr=1e-3, state_policy="reset"),
    "linear": dict(spectrum="linear"),
    "gaussian-product": dict(spectrum="gaussian-product"),
    "unit": dict(spectrum="unit"),
    "small init": dict(scale=0.01),
}
PRESETS = {
    "quick": dict(
        teacher=dict(widths=(16, 16, 16, 4), true=(2, 4), above=8, below=1, n_train=512, batch=32, steps=60,
                     every=5, seeds=[0], rules={k: [v] for k, v in MID.items()}, variants=["base", "small init"]),
        mnist=dict(widths=[784, 32, 32, 10], subset=512, steps=6, batch=64, taus=[0.1], spectra=["halfnormal"],
                   lenet_steps=1, lenet_taus=[0.1], lenet_spectra=["halfnormal"], below=4, seeds10=3)),
    "full": dict(
        teacher=dict(widths=(64, 64, 64, 10), true=(8, 16), above=32, below=4, n_train=4096, batch=64, steps=1500,
                     every=15, seeds=[0, 1, 2], rules=RULES, variants=list(VARIANTS)),
        mnist=dict(widths=[784, 500, 500, 10], subset=10_000, steps=100, batch=256, taus=[0.05, 0.1, 0.2],
                   spectra=["halfnormal", "linear", "gaussian-product", "unit"], lenet_steps=100,
                   lenet_taus=[0.05, 0.1, 0.2], lenet_spectra=["halfnormal", "gaussian-product"],
                   below=20, seeds10=10)),
}
MNIST_LR, MNIST_OPT = 1e-3, "adam"
# no published protocol (``--preset paper`` runs ``full``)
KNOBS = {"seeds": ["teacher.seeds"]}
KNOBS_NOTE = "step counts, not epochs; tau and data are part of the experiment"
BACKENDS = ("numpy",)  # runs on the host


class MeanSquaredError:
    """L = (1/2B) Σ_b ‖z_b − y_b‖², for regression on the teacher's outputs y (B, C).

    ``forward(z, y) -> float``; ``backward() -> ∂L/∂z = (z − y)/B``.
    """

    def forward(self, z, y):
        self._d = z - y  # (B, C)
        return float(0.5 * np.mean(np.sum(self._d**2, axis=1)))

    def backward(self, dloss=1.0):
        return self._d * (dloss / self._d.shape[0])  # d/dz of the mean: 1/B


def make_trainer(net, opt, rule: str, value: float, loss=None):
    """``DLRT(method="ra-bug")`` with tolerance rule ``rule`` at ``value`` (τ, ϑ or c)."""
    kw = dict(tau=value) if rule == "relative" else dict(tol_rule=rule, theta=value)
    return DLRT(net, opt, method="ra-bug", loss=loss, **kw)


def set_spectrum(net, spectrum: str, scale: float = 1.0):
    """``unit``: replace each low-rank S by the flat spectrum of the same Frobenius norm; then scale S."""
    for layer in net.lowrank_layers():
        S = np.asarray(layer.S)
        if spectrum == "unit":
            S = np.eye(S.shape[0], dtype=S.dtype) * np.linalg.norm(S) / np.sqrt(S.shape[0])  # ‖S‖_F kept
        layer.set_factors(layer.U, (S * scale).astype(layer.S.dtype), layer.V)


def predicted_ranks(S0, tau: float, r_min: int = 2, r_max=None) -> tuple:
    """Truncate the initial core alone, again and again, with the relative rule: (final rank, rank per round).

    This is what ra-bug's truncation does to S0 when the data add nothing above ϑ
    (the added directions are O(h), ϑ = τ‖Ŝ‖ is O(‖S0‖)).
    """
    s = np.sort(np.linalg.svd(np.asarray(S0, float), compute_uv=False))[::-1]
    trail = []
    while True:
        tr = truncate(np.diag(s), tau=tau, r_min=r_min, r_max=r_max)
        if tr.rank == s.size:
            return int(s.size), trail
        s = s[: tr.rank]
        trail.append(int(tr.rank))


def settle_step(steps, ranks) -> int:
    """First recorded step after which the rank stays within ±1 of its final value."""
    ranks = np.asarray(ranks)
    off = np.nonzero(np.abs(ranks - ranks[-1]) > 1)[0]
    return int(steps[off[-1] + 1]) if off.size else int(steps[0])


# --------------------------------------------------------------------------- #
# Part 1: teacher-student
# --------------------------------------------------------------------------- #
def teacher_run(cfg, data, rule, value, start, seed, lr=0.05, opt="sgd", state_policy="transport",
                spectrum="halfnormal", scale=1.0) -> dict:
    X = data.x_train
    Y = data.teacher.logits(X)  # (N, C) regression targets
    net = student(cfg["widths"], start, seed, spectrum, scale)
    trainer = make_trainer(net, make_optimizer(opt, lr, state_policy=state_policy), rule, value, MeanSquaredError())
    rng = np.random.default_rng([seed, 7])
    steps, ranks, losses = [0], [trainer.ranks()], []
    for s in range(1, cfg["steps"] + 1):
        idx = rng.integers(0, len(X), cfg["batch"])
        info = trainer.step(X[idx], Y[idx])
        losses.append(info.loss)
        if s % cfg["every"] == 0 or s == cfg["steps"]:
            steps.append(s)
            ranks.append(list(info.ranks))
    R = np.array(ranks)  # (records, layers)
    return {"steps": steps, "ranks": ranks, "final": list(info.ranks),
            "settle": [settle_step(steps, R[:, j]) for j in range(R.shape[1])],
            "loss_first": losses[0], "loss_last100": float(np.mean(losses[-100:])),
            "theta_last": list(info.thetas), "tail_last": list(info.tails)}


def student(widths, start, seed, spectrum="halfnormal", scale=1.0):
    """The student network of :func:`teacher_run`, float64, before training."""
    net = mlp(list(widths), ranks=[start] * (len(widths) - 2) + [None], seed=100 + seed, dtype=np.float64,
              spectrum="halfnormal" if spectrum == "unit" else spectrum)
    set_spectrum(net, spectrum, scale)
    return net


def teacher_predicted(widths, start_rank, seed, variant, value):
    """The ranks that truncating a relative-rule student's initial S alone gives (deterministic: the student's
    seed, start, spectrum and scale; no data, no training)."""
    v = VARIANTS[variant]
    net = student(widths, start_rank, seed, v.get("spectrum", "halfnormal"), v.get("scale", 1.0))
    return [predicted_ranks(l.S, value, 2, l.rank)[0] for l in net.lowrank_layers()]


def teacher_jobs(cfg) -> list:
    """(variant, rule, value, start, seed) of every teacher run, in the order of the figure's data."""
    jobs = []
    for rule, values in cfg["rules"].items():
        jobs += [("base", rule, v) for v in values]
    for variant in cfg["variants"]:
        if variant != "base":
            jobs += [(variant, rule, MID[rule]) for rule in cfg["rules"]]
    return [(variant, rule, value, start, seed) for variant, rule, value in jobs for start in ("above", "below")
            for seed in cfg["seeds"]]


def teacher_one(c: dict) -> dict:
    """One teacher-student run (a spec's config ``c``), with its ``predicted`` ranks (relative rule; else None)."""
    t0 = time.perf_counter()
    data = teacher_student(c["n_train"], 0, c["widths"], list(c["true"]) + [None], seed=c["seed"], dtype=np.float64)
    rec = teacher_run(c, data, c["rule"], c["value"], c["start_rank"], c["seed"], **VARIANTS[c["variant"]])
    rec.update(variant=c["variant"], rule=c["rule"], value=c["value"], start=c["start"], seed=c["seed"],
               seconds=time.perf_counter() - t0)
    print(f"[{NAME}] teacher {c['variant']:16s} {c['rule']:8s} {c['value']:<5g} {c['start']:5s} seed {c['seed']}: "
          f"ranks {rec['final']} (true {list(c['true'])}), settle {rec['settle']}, "
          f"loss {rec['loss_first']:.3g} -> {rec['loss_last100']:.3g}, {rec['seconds']:.1f} s", flush=True)
    rec["predicted"] = (teacher_predicted(c["widths"], c["start_rank"], c["seed"], c["variant"], c["value"])
                        if c["rule"] == "relative" else None)
    return rec


def teacher_key(variant, rule, value, start, seed) -> str:
    return f"teacher {variant} {rule}={value:g} {start} seed={seed}"


def teacher_part(cfg, results) -> dict:
    """Part 1 of the figure's data from the runs' results."""
    return {"widths": list(cfg["widths"]), "true": list(cfg["true"]),
            "starts": {"above": cfg["above"], "below": cfg["below"]}, "steps": cfg["steps"], "batch": cfg["batch"],
            "n_train": cfg["n_train"], "seeds": cfg["seeds"], "variants": {k: VARIANTS[k] for k in cfg["variants"]},
            "mid": MID, "runs": [results[teacher_key(*job)] for job in teacher_jobs(cfg)]}


# --------------------------------------------------------------------------- #
# Part 2: MNIST
# --------------------------------------------------------------------------- #
def mnist_run(kind, build, data, tau, steps, batch, spectrum) -> dict:
    net = build(spectrum)
    if spectrum == "unit":
        set_spectrum(net, "unit")
    predicted = [predicted_ranks(l.S, tau, 2, l.rank) for l in net.lowrank_layers()]
    trainer = make_trainer(net, make_optimizer(MNIST_OPT, MNIST_LR), "relative", tau)
    n = len(data.y_train)
    order = np.concatenate([np.random.default_rng([0, e]).permutation(n) for e in range(-(-steps * batch // n) + 1)])
    t0 = time.perf_counter()
    ranks, thetas, tails = [trainer.ranks()], [], []
    for s in range(steps):
        idx = order[s * batch : (s + 1) * batch]
        info = trainer.step(data.x_train[idx], data.y_train[idx])
        ranks.append(list(info.ranks))
        thetas.append(list(info.thetas))
        tails.append(list(info.tails))
    _, acc = evaluate(net, data.x_test, data.y_test)
    R = np.array(ranks)
    last_change = [int(np.nonzero(np.diff(R[:, j]))[0][-1] + 1) if np.any(np.diff(R[:, j])) else 0
                   for j in range(R.shape[1])]
    rec = {"kind": kind, "tau": tau, "spectrum": spectrum, "start": ranks[0], "ranks": ranks,
           "final": ranks[-1], "predicted": [p[0] for p in predicted], "predicted_rounds": [len(p[1]) for p in predicted],
           "last_change": last_change, "theta_last": thetas[-1], "tail_last": tails[-1],
           "tail_max_after_10": [float(max(t[j] for t in tails[10:])) if len(tails) > 10 else None
                                 for j in range(R.shape[1])],
           "test_acc": acc, "seconds": time.perf_counter() - t0}
    print(f"[{NAME}] {kind} tau {tau} {spectrum:16s} start {ranks[0]}: predicted {rec['predicted']} "
          f"(rounds {rec['predicted_rounds']}), trained {rec['final']} (last change {last_change}), "
          f"acc {acc:.3f}, {rec['seconds']:.1f} s", flush=True)
    return rec


def mnist_jobs(cfg) -> list:
    """(kind, tau, spectrum) of every MNIST run, in the order of the figure's data."""
    jobs = [("mlp", tau, sp) for sp in cfg["spectra"] for tau in cfg["taus"] if sp == "halfnormal" or tau == 0.1]
    jobs.append(("mlp below", 0.1, "halfnormal"))
    return jobs + [("lenet5", tau, sp) for sp in cfg["lenet_spectra"] for tau in cfg["lenet_taus"]
                   if sp == "halfnormal" or tau == 0.1]


def _caps(widths) -> list:
    return [min(a, b) // 2 for a, b in zip(widths[:-2], widths[1:-1])]


def mnist_one(c: dict) -> dict:
    """One MNIST run (a spec's config ``c``): the tutorial MLP at its caps or at ``below``, or LeNet5."""
    w, caps = c["widths"], _caps(c["widths"])
    if c["kind"] == "lenet5":
        data = load_mnist(flatten=False, subset=c["subset"], test_subset=2000, seed=0)
        build = lambda sp: lenet5(ranks=[10, 25, 250, None], seed=0, spectrum=_init(sp))  # noqa: E731
    else:
        data = load_mnist(subset=c["subset"], test_subset=2000, seed=0)
        ranks = caps if c["kind"] == "mlp" else [c["below"]] * len(caps)
        build = lambda sp: mlp(w, ranks=ranks + [None], seed=0, spectrum=_init(sp))  # noqa: E731
    return mnist_run(c["kind"], build, data, c["tau"], c["steps"], c["batch"], c["spectrum"])


def mnist_predicted(c: dict) -> dict:
    """No training: the ranks truncating the initial S gives, for every spectrum and τ, and over seeds at τ = 0.1."""
    w, caps = c["widths"], _caps(c["widths"])
    grid = []
    for spectrum in ("halfnormal", "linear", "gaussian-product", "unit"):
        nets = {"mlp": mlp(w, ranks=caps + [None], seed=0, spectrum=_init(spectrum)),
                "lenet5": lenet5(ranks=[10, 25, 250, None], seed=0, spectrum=_init(spectrum))}
        for kind, net in nets.items():
            if spectrum == "unit":
                set_spectrum(net, "unit")
            for tau in (0.05, 0.1, 0.2):
                grid.append({"kind": kind, "spectrum": spectrum, "tau": tau,
                             "predicted": [predicted_ranks(l.S, tau, 2, l.rank)[0] for l in net.lowrank_layers()]})
    seeds10 = {}  # the default init's predicted ranks at tau = 0.1 over seeds
    for s in range(c["seeds10"]):
        net = mlp(w, ranks=caps + [None], seed=s)
        seeds10[str(s)] = [predicted_ranks(l.S, 0.1, 2, l.rank)[0] for l in net.lowrank_layers()]
    return {"predicted_grid": grid, "predicted_tau0.1_over_seeds": seeds10}


def mnist_key(kind, tau, spectrum) -> str:
    return f"mnist {kind} tau={tau:g} {spectrum}"


PREDICTED = "mnist predicted ranks (no training)"


def mnist_part(cfg, results) -> dict:
    """Part 2 of the figure's data from the runs' results."""
    return {"widths": cfg["widths"], "caps": _caps(cfg["widths"]), "lenet_caps": [10, 25, 250], "steps": cfg["steps"],
            "batch": cfg["batch"], "subset": cfg["subset"], "optimizer": f"{MNIST_OPT} {MNIST_LR}",
            "runs": [results[mnist_key(*job)] for job in mnist_jobs(cfg)], **results[PREDICTED]}


def _init(spectrum):
    return "halfnormal" if spectrum == "unit" else spectrum


def count_runs(cfg) -> int:
    """Teacher runs, MNIST runs, and the no-training truncation of the initial S (one run)."""
    return len(teacher_jobs(cfg["teacher"])) + len(mnist_jobs(cfg["mnist"])) + 1


LENET5_MACS = 2.3e6  # LeNet5's multiply-adds per 28x28 image (conv 288k + 1.6M, fc 400k + 5k), for work()


def work(cfg) -> float:
    """Rough multiply-adds of all training (samples x the dense layers' sizes), for the run plan's estimate."""
    T, M = cfg["teacher"], cfg["mnist"]
    dense = lambda w: sum(a * b for a, b in zip(w[:-1], w[1:]))  # noqa: E731
    lenets = sum(kind == "lenet5" for kind, _, _ in mnist_jobs(M))
    return float(len(teacher_jobs(T)) * T["steps"] * T["batch"] * dense(T["widths"])
                 + (len(mnist_jobs(M)) - lenets) * M["steps"] * M["batch"] * dense(M["widths"])
                 + lenets * M["lenet_steps"] * M["batch"] * LENET5_MACS)


def specs(cfg, backend: str) -> list:
    """One spec per teacher run and per MNIST run, and one for the predicted ranks (all independent)."""
    T, M = cfg["teacher"], cfg["mnist"]
    shared = {k: T[k] for k in ("widths", "true", "n_train", "batch", "steps", "every")}
    out = [RunSpec(NAME, teacher_key(v, r, x, st, sd), dict(shared, part="teacher", variant=v, rule=r, value=x,
                                                             start=st, start_rank=T[st], seed=sd))
           for v, r, x, st, sd in teacher_jobs(T)]
    shared = {k: M[k] for k in ("widths", "subset", "steps", "batch", "below")}
    out += [RunSpec(NAME, mnist_key(kind, tau, sp), dict(shared, part="mnist", kind=kind, tau=tau, spectrum=sp,
                                                         steps=M["lenet_steps"] if kind == "lenet5" else M["steps"]))
            for kind, tau, sp in mnist_jobs(M)]
    return out + [RunSpec(NAME, PREDICTED, dict(part="predicted", widths=M["widths"], seeds10=M["seeds10"]))]


def run_one(c: dict, tag: str) -> dict:
    return {"teacher": teacher_one, "mnist": mnist_one, "predicted": mnist_predicted}[c["part"]](c)


def assemble(cfg, results: dict) -> dict:
    teacher, mnist = teacher_part(cfg["teacher"], results), mnist_part(cfg["mnist"], results)
    return jsonable({"teacher": teacher, "mnist": mnist,
                     "seconds": {"teacher": sum(r["seconds"] for r in teacher["runs"]),
                                 "mnist": sum(r["seconds"] for r in mnist["runs"])},
                     "budget": f"teacher: {len(teacher['runs'])} runs x {cfg['teacher']['steps']} steps "
                               f"({len(cfg['teacher']['seeds'])} seeds); MNIST: {len(mnist['runs'])} runs x "
                               f"{cfg['mnist']['steps']} steps, 1 seed", "threads": "OMP_NUM_THREADS=1"})


run = serial_runner(PRESETS, KNOBS, specs, assemble)  # run(preset, backend): the specs, serially


# --------------------------------------------------------------------------- #
# Summaries (used by the plot, the tests and the docs)
# --------------------------------------------------------------------------- #
def final_ranks(data: dict, variant="base", rule="relative", value=None, start="above") -> np.ndarray:
    """Final ranks (seeds × layers) of the teacher runs matching the arguments."""
    value = MID[rule] if value is None else value
    rows = [r["final"] for r in data["teacher"]["runs"]
            if r["variant"] == variant and r["rule"] == rule and r["value"] == value and r["start"] == start]
    return np.array(rows, dtype=float)


def plot(data: dict, out_dir):
    plt = pyplot()
    T = data["teacher"]
    true = T["true"]
    fig, axes = plt.subplots(3, 3, figsize=(17, 14))
    # row 1: trajectories at the base setting, mid value of each rule
    for ax, rule in zip(axes[0], RULES):
        for start, ls in (("above", "-"), ("below", "--")):
            rs = [r for r in T["runs"] if r["variant"] == "base" and r["rule"] == rule and r["value"] == MID[rule]
                  and r["start"] == start]
            for r in rs:
                R = np.array(r["ranks"])
                for j in range(R.shape[1]):
                    ax.plot(r["steps"], R[:, j], ls, color=f"C{j}", alpha=0.6, linewidth=1,
                            label=f"layer {j + 1}, start {start}" if r is rs[0] else None)
        for j, t in enumerate(true):
            ax.axhline(t, color=f"C{j}", linestyle=":", linewidth=2)
        ax.set(title=f"{rule} rule, {RULE_SYMBOL[rule]} = {MID[rule]:g} (dotted: teacher ranks)", xlabel="step",
               ylabel="rank", ylim=(0, T["starts"]["above"] + 2))
        ax.legend(fontsize=7)
    # row 2, left: final ranks against the rule's value, base setting
    ax = axes[1, 0]
    xt, labels = [], []
    for i, (rule, values) in enumerate((r, [v for v in vs if any(x["rule"] == r and x["value"] == v for x in T["runs"])])
                                       for r, vs in RULES.items()):
        for k, v in enumerate(values):
            x = 4 * i + k
            xt.append(x)
            labels.append(f"{RULE_SYMBOL[rule]}={v:g}")
            for start, mk, dx in (("above", "v", -0.15), ("below", "^", 0.15)):
                F = final_ranks(data, "base", rule, v, start)
                for j in range(F.shape[1] if F.size else 0):
                    ax.plot(np.full(len(F), x + dx), F[:, j], mk, color=f"C{j}", alpha=0.7,
                            label=f"layer {j + 1}, start {start}" if (i, k) == (0, 0) else None)
                P = [r["predicted"] for r in T["runs"] if r["variant"] == "base" and r["rule"] == rule
                     and r["value"] == v and r["start"] == "above" and r.get("predicted")]
                for j in range(len(P[0]) if P and start == "above" else 0):
                    ax.plot(np.full(len(P), x - 0.3), [p[j] for p in P], "x", color=f"C{j}", markersize=7,
                            label="initial S truncated alone (start above)" if (i, k, j) == (0, 0, 0) else None)
    for j, t in enumerate(true):
        ax.axhline(t, color=f"C{j}", linestyle=":", linewidth=2)
    ax.set_xticks(xt, labels, rotation=45, fontsize=7)
    ax.set(ylabel="final rank", title="final ranks vs rule and value (SGD 0.05, halfnormal), all seeds")
    ax.legend(fontsize=6, loc="center right")
    # row 2, middle and right: variants, one panel per layer
    variants = list(T["variants"])
    for j, ax in enumerate(axes[1, 1:]):
        if j >= len(true):
            ax.set_visible(False)
            continue
        for i, rule in enumerate(RULES):
            for start, mk in (("above", "v"), ("below", "^")):
                for k, variant in enumerate(variants):
                    F = final_ranks(data, variant, rule, MID[rule], start)
                    if F.size:
                        ax.plot(np.full(len(F), k + 0.25 * (i - 1)), F[:, j], mk, color=f"C{i + 2}", alpha=0.7,
                                label=f"{rule} {RULE_SYMBOL[rule]}={MID[rule]:g}, start {start}" if k == 0 else None)
        ax.axhline(true[j], color="k", linestyle=":", linewidth=2, label=f"teacher rank {true[j]}")
        ax.set_xticks(range(len(variants)), variants, rotation=45, fontsize=7)
        ax.set(ylabel="final rank", title=f"layer {j + 1}: one factor changed at a time", ylim=(0, None))
        ax.legend(fontsize=6)
    # row 3: MNIST
    M = data["mnist"]
    ax = axes[2, 0]
    for r in M["runs"]:
        mk = {"mlp": "o", "mlp below": "s", "lenet5": "D"}[r["kind"]]
        ax.plot(r["predicted"], r["final"], mk, alpha=0.6, color={0.05: "C0", 0.1: "C1", 0.2: "C2"}.get(r["tau"], "C3"))
    lim = max(max(r["start"]) for r in M["runs"]) + 5
    ax.plot([1, lim], [1, lim], "k:", linewidth=1)
    for kind, mk in (("mlp", "o"), ("mlp below", "s"), ("lenet5", "D")):
        ax.plot([], [], mk, color="gray", label=kind)
    for tau, c in ((0.05, "C0"), (0.1, "C1"), (0.2, "C2")):
        ax.plot([], [], "o", color=c, label=f"τ = {tau}")
    ax.set(xlabel="rank from truncating the initial S alone (no training)", ylabel="rank after training",
           title="MNIST: every layer, spectrum and τ (dotted: y = x)", xscale="log", yscale="log")
    ax.legend(fontsize=7)
    for ax, kind in zip(axes[2, 1:], ("mlp", "lenet5")):
        for r in M["runs"]:
            if r["kind"] not in (kind, kind + " below") or r["tau"] != 0.1:
                continue
            R = np.array(r["ranks"])
            style = "--" if "below" in r["kind"] else "-"
            for j in range(R.shape[1]):
                c = {"halfnormal": "C0", "linear": "C1", "gaussian-product": "C2", "unit": "C3"}[r["spectrum"]]
                ax.plot(R[:, j], style, color=c, alpha=0.8, linewidth=1,
                        label=f"{r['spectrum']}{' start ' + str(r['start'][0]) if 'below' in r['kind'] else ''}"
                        if j == 0 else None)
                ax.plot([len(R) - 1], [r["predicted"][j]], "x", color=c, markersize=8)
        ax.set(xlabel="step", ylabel="rank", yscale="symlog",
               title=f"MNIST {kind}, τ = 0.1, every layer\n(x: initial S truncated alone)")
        ax.legend(fontsize=7)
    w = "-".join(map(str, T["widths"]))
    fig.suptitle(f"Rank dynamics of ra-bug. Rows 1-2: teacher-student regression {w}, teacher ranks {true}, "
                 f"start {T['starts']['above']} (▼) / {T['starts']['below']} (▲), {T['steps']} steps, seeds {T['seeds']}. "
                 f"Row 3: MNIST, Adam 1e-3, {M['steps']} steps")
    return save(fig, out_dir, NAME)
