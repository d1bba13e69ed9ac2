"""DLRT against pruning and SVD truncation at equal parameter budgets, with measured peak training memory.

The argument of [P]'s abstract (Schotthöfer et al. 2022) and of the thesis: DLRT finds a small
network *during* training, where pruning and post-hoc low-rank truncation need
a trained dense network first. Issue 16 §5 asks to show it: at 5 parameter
budgets (fractions of the dense weight count) compare, on MLP 784-500×4-10
and LeNet5 (MNIST),

``ra-bug``         rank-adaptive DLRT from the rank cap ⌊min(m,n)/2⌋, τ chosen to land on the budget
                   (:func:`tau_for_budget`, from the initial spectrum: REPRODUCTION §10 shows that
                   ra-bug's ranks are those of truncating the initial S, one truncation per step);
``fixed-rank``     DLRT with the fixed-rank BUG integrator at uniform ranks (:func:`~dlrt_ref.train.pruning.uniform_ranks`);
``uv``             vanilla W = U Vᵀ by Adam on U, V, same ranks and initial W as fixed-rank;
``svd``            truncated SVD of the trained dense network at the fixed-rank method's uniform ranks, no retraining
                   (the JSON also has its accuracy at :func:`~dlrt_ref.train.pruning.svd_ranks`' energy-per-weight
                   ranks, ``test_acc_energy_ranks``: that rule gives the 784-wide input layer rank 1–2 at 5–10 %);
``svd+retrain``    the same, retrained as fixed-rank DLRT (BUG) for ``epochs_re`` epochs;
``prune+retrain``  one-shot global magnitude pruning of the trained dense network, the mask kept while
                   retraining ``epochs_re`` epochs from the trained values (no rewinding).

Counts are :mod:`dlrt_ref.train.accounting`'s ``eval`` (weights only, no biases; r(m+n) per factorised
layer, nonzeros per pruned layer); the classifier stays dense (m n) in every method, as in [P]/[T].
Every method trains with Adam (lr 1e-3, ``transport`` state policy, batch ``batch``). Epochs: the
dense network trains ``epochs_pre`` epochs, the derived networks ``epochs_re`` more; ra-bug,
fixed-rank and UVᵀ train ``epochs_pre + epochs_re`` epochs from scratch (equal total epochs).
The accuracy is the test accuracy after the last epoch (no model selection).

**Peak training memory, measured** (:func:`peak_memory`): ``tracemalloc`` (NumPy reports its array
allocations to it) is started, the trainer is built (network, masks, factors, optimiser), the peak
is reset, and ``mem_steps`` training steps on the first batches are run; the figure is the peak of
traced memory over those steps. It counts every array allocated after the start and alive at the
peak: parameters (every update makes new arrays, and the build allocates the rest), masks,
optimiser state, gradients, the cached activations and the temporaries of a step, the batch. It
does not count the data set (loaded before) nor anything allocated before the start. Per method two
numbers: ``peak_produce`` — the largest peak of the runs that produce the small network (the dense
pre-training for svd / prune, the first steps from the rank cap for ra-bug, the training itself for
fixed-rank and UVᵀ) — and ``peak_final`` — the (re)training of the small network itself (ra-bug: a
few steps continued from its trained state; svd: none).

Budget. ``full``: MLP on a stratified 10 000-image subset, LeNet5 on a 4000-image subset (test on
all 10 000 / 2000 test images), 1 + 1 epochs (from-scratch methods 2), 3 seeds, 5 fractions, batch 128
(probed: 2 + 2 epochs would take ~50 min on the shared cores); measured 19.0 min on one shared core
(42.5 min when the cores were loaded). ``quick``: tiny widths/subsets for
the tests. ``paper``: no published table exists; the same comparison on the whole training set,
10 + 10 epochs, 5 seeds (for a user with hours).
"""
from __future__ import annotations

import gc
import tracemalloc

import numpy as np

from dlrt_ref.experiments.plotting import pyplot, save
from dlrt_ref.experiments.runs import RunSpec, code_version, serial_runner
from dlrt_ref.experiments.train_common import band, load_dataset, train_record
from dlrt_ref.nn import lenet5, mlp
from dlrt_ref.train import accounting
from dlrt_ref.train import pruning as P
from dlrt_ref.train.baselines import UVTrainer, dense_trainer, svd_truncate
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.loop import evaluate
from dlrt_ref.train.optim import Adam

NAME = "dlrt_vs_pruning"
FRACTIONS = [0.05, 0.1, 0.2, 0.35, 0.5]
METHODS = ["ra-bug", "fixed-rank", "uv", "svd", "svd+retrain", "prune+retrain"]
FROM_DENSE = ["svd", "svd+retrain", "prune+retrain"]  # derived from the trained dense network of the same seed
LR = 1e-3
MIB = 2.0 ** 20
PRESETS = {
    "quick": dict(models={"mlp": dict(widths=[784, 32, 32, 10], subset=600, test_subset=300, batch=100),
                          "lenet5": dict(subset=100, test_subset=100, batch=50)},
                  fractions=[0.1, 0.4], seeds=[0], epochs_pre=1, epochs_re=1, mem_steps=1),
    "full": dict(models={"mlp": dict(widths=[784, 500, 500, 500, 500, 10], subset=10000, test_subset=None, batch=128),
                         "lenet5": dict(subset=4000, test_subset=2000, batch=128)},
                 fractions=FRACTIONS, seeds=[0, 1, 2], epochs_pre=1, epochs_re=1, mem_steps=3),
    # no published protocol (the comparison is issue 16's); the whole training set, 10 + 10 epochs, 5 seeds
    "paper": dict(models={"mlp": dict(widths=[784, 500, 500, 500, 500, 10], subset=None, test_subset=None, batch=128),
                          "lenet5": dict(subset=None, test_subset=None, batch=128)},
                  fractions=FRACTIONS, seeds=[0, 1, 2, 3, 4], epochs_pre=10, epochs_re=10, mem_steps=3),
}
KNOBS = {"epochs": ["epochs_pre", "epochs_re"], "seeds": ["seeds"], "subset": ["models.mlp.subset", "models.lenet5.subset"]}
KNOBS_NOTE = "the budgets are fractions of the dense count, not τ (ra-bug's τ is calibrated per budget)"


def count_runs(cfg) -> int:
    """Run specs: per model and seed, the dense run (with its 2 retrainings per fraction) and 3 from-scratch runs
    per fraction."""
    return len(cfg["models"]) * len(cfg["seeds"]) * (1 + 3 * len(cfg["fractions"]))


# --------------------------------------------------------------------------- building blocks
def build(model: str, mcfg: dict, ranks, seed: int):
    """The network: ``ranks`` one entry per weight layer (None: dense), or None for all dense."""
    if model == "mlp":
        return mlp(mcfg["widths"], ranks=ranks, seed=seed)
    return lenet5(ranks=ranks, seed=seed)


def rank_caps(net) -> list:
    """ra-bug's start rank and cap ⌊min(m,n)/2⌋ per compressed layer (the library default), None for the classifier."""
    shapes = [w for w in accounting.weight_table(net)]
    return [max(1, min(w.m, w.n) // 2) for w in shapes[:-1]] + [None]


def truncation_trail(s, tau: float, rounds: int, r_min: int = 2) -> int:
    """The rank after ``rounds`` truncations of the singular values ``s`` alone (relative rule ϑ = τ‖σ‖,
    :func:`dlrt_ref.truncation.truncate`), stopping early at a fixed point: ra-bug's rank when the data add
    nothing above ϑ (REPRODUCTION §10). Same rule as :func:`dlrt_ref.truncation.truncate` with r_max = the current
    rank, written out on the sorted values (no SVD per round; the tests compare the two)."""
    s = np.sort(np.asarray(s, dtype=np.float64))[::-1]
    for _ in range(rounds):
        tails = np.sqrt(np.cumsum((s ** 2)[::-1])[::-1])  # tails[j] = (Σ_{i ≥ j} σ_i²)^{1/2}, j = 0..k-1
        theta = tau * np.linalg.norm(s)
        r = int(np.argmax(np.append(tails, 0.0) <= theta))  # smallest r with (Σ_{i ≥ r} σ_i²)^{1/2} ≤ ϑ
        r = min(max(r, min(r_min, s.size)), s.size)
        if r == s.size:
            break
        s = s[:r]
    return int(s.size)


TAU_GRID = np.round(np.arange(0.005, 0.9501, 0.0025), 4)  # candidate τ of the calibration


def tau_for_budget(net, budget: int, rounds: int) -> tuple:
    """(τ, predicted ranks): the τ of :data:`TAU_GRID` whose predicted ``eval`` count after ``rounds`` steps is the
    largest within ``budget`` (the smallest such τ on ties). ``net`` holds ra-bug's initial factors.

    A grid, not a bisection: the repeated truncation is not monotone in τ (a slightly smaller τ can let the
    cascade of rounds run further and end at a lower rank). None of the grid within budget: the largest τ.
    """
    table = accounting.weight_table(net)
    spectra = [np.linalg.svd(np.asarray(l.S, np.float64), compute_uv=False) for l in net.lowrank_layers()]
    fixed = sum(w.m * w.n for w in table if w.rank is None)
    sizes = [w.m + w.n for w in table if w.rank is not None]
    best = (None, float(TAU_GRID[-1]), None)  # (count, tau, ranks)
    for tau in TAU_GRID:
        ranks = [truncation_trail(s, float(tau), rounds) for s in spectra]
        count = fixed + sum(r * k for r, k in zip(ranks, sizes))
        if count <= budget and (best[0] is None or count > best[0]):
            best = (count, float(tau), ranks)
    if best[2] is None:
        tau = float(TAU_GRID[-1])
        return tau, [truncation_trail(s, tau, rounds) for s in spectra]
    return best[1], best[2]


def peak_memory(make_trainer, x, y, batch: int, steps: int) -> float:
    """Peak traced memory (MiB) over ``steps`` training steps of a freshly built trainer (module docstring).

    ``make_trainer()`` runs with tracing on (what it leaves alive is counted, its temporaries are not:
    the peak is reset after it); then ``steps`` steps on the batches ``x[k·batch:(k+1)·batch]``.
    """
    gc.collect()
    tracemalloc.start()
    try:
        trainer = make_trainer()
        tracemalloc.reset_peak()
        for k in range(steps):
            start = (k * batch) % max(1, len(y) - batch + 1)
            trainer.step(x[start : start + batch], y[start : start + batch])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del trainer
    gc.collect()
    return peak / MIB


def peaks(make_trainer, x, y, batch: int, steps: int) -> dict:
    """:func:`peak_memory` at the training batch size (``"batch"``) and at batch size 1 (``"b1"``: what the
    parameters, gradients and optimiser state need, with almost no activations)."""
    return {"batch": peak_memory(make_trainer, x, y, batch, steps), "b1": peak_memory(make_trainer, x, y, 1, steps)}


def _max_peaks(a: dict, b: dict) -> dict:
    return {k: max(a[k], b[k]) for k in a}


def _summary(rec: dict, net) -> dict:
    """Last-epoch numbers of a ``train_record``: accuracy, ``eval`` count, ranks."""
    return {"test_acc": rec["test_acc"][-1], "test_acc_epochs": rec["test_acc"], "train_loss": rec["train_loss"],
            "params_eval": accounting.count_params(net, "eval"), "ranks": rec["ranks"][-1], "seconds": rec["seconds"]}


# --------------------------------------------------------------------------- runs
def specs(cfg, backend: str) -> list:
    """Per model and seed: the dense run with its derived networks, then ra-bug, fixed-rank and UVᵀ per fraction."""
    code_version()  # the code at the start of the runs
    out = []
    for model, mcfg in cfg["models"].items():
        common = dict(model=model, mcfg=mcfg, epochs_pre=cfg["epochs_pre"], epochs_re=cfg["epochs_re"],
                      mem_steps=cfg["mem_steps"], backend=backend)
        for seed in cfg["seeds"]:
            out.append(RunSpec(NAME, f"{model} dense s={seed}", dict(common, method="dense", seed=seed,
                                                                       fractions=cfg["fractions"])))
            for method in ("ra-bug", "fixed-rank", "uv"):
                out += [RunSpec(NAME, f"{model} {method} f={f} s={seed}", dict(common, method=method, seed=seed, fraction=f))
                        for f in cfg["fractions"]]
    return out


def run_one(c: dict, tag: str) -> dict:
    """One spec: the dense run and its derived networks (``method`` "dense"), or one from-scratch method."""
    model, mcfg, seed, method = c["model"], c["mcfg"], c["seed"], c["method"]
    batch, steps = mcfg["batch"], c["mem_steps"]
    data = load_dataset("mnist", model == "mlp", 0, seed, mcfg["subset"], mcfg["test_subset"])
    x, y = data.x_train, data.y_train
    template = build(model, mcfg, None, seed)
    dense_params = accounting.dense_count(template)
    epochs_all = c["epochs_pre"] + c["epochs_re"]
    if method == "dense":
        return _dense_and_derived(c, tag, data, template, dense_params)
    budget = int(c["fraction"] * dense_params)
    if method == "ra-bug":
        steps_total = epochs_all * -(-len(y) // batch)
        caps = rank_caps(template)
        tau, predicted = tau_for_budget(build(model, mcfg, caps, seed), budget, steps_total)
        make = lambda: DLRT(build(model, mcfg, caps, seed), Adam(LR), method="ra-bug", tau=tau)  # noqa: E731
        trainer = make()
        rec = train_record(trainer, data, epochs_all, batch, seed, tag)
        out = dict(_summary(rec, trainer.net), tau=tau, predicted_ranks=predicted,
                   peak_produce=peaks(make, x, y, batch, steps))
        trained = trainer.net
        out["peak_final"] = peaks(lambda: DLRT(trained.copy(), Adam(LR), method="ra-bug", tau=tau), x, y, batch, steps)
    else:
        ranks = P.uniform_ranks(template, budget)
        cls = (lambda net: DLRT(net, Adam(LR), method="bug")) if method == "fixed-rank" else (lambda net: UVTrainer(net, Adam(LR)))
        make = lambda: cls(build(model, mcfg, ranks, seed))  # noqa: E731
        trainer = make()
        rec = train_record(trainer, data, epochs_all, batch, seed, tag)
        out = dict(_summary(rec, trainer.net), peak_produce=peaks(make, x, y, batch, steps))
        out["peak_final"] = out["peak_produce"]  # the same training: fixed ranks from the start
    return dict(out, budget=budget, dense_params=dense_params, epochs=epochs_all)


def _dense_and_derived(c, tag, data, template, dense_params) -> dict:
    """Dense training, then per fraction: SVD truncation (evaluated, and retrained), magnitude pruning (retrained)."""
    model, mcfg, seed = c["model"], c["mcfg"], c["seed"]
    batch, steps, x, y = mcfg["batch"], c["mem_steps"], data.x_train, data.y_train
    fixed = sum(w.m * w.n for w in accounting.weight_table(template)[-1:])  # the dense classifier
    trainer = dense_trainer(template, Adam(LR))
    rec = train_record(trainer, data, c["epochs_pre"], batch, seed, f"{tag} pre")
    dense = trainer.net
    peak_dense = peaks(lambda: dense_trainer(build(model, mcfg, None, seed), Adam(LR)), x, y, batch, steps)
    out = {"dense": dict(_summary(rec, dense), peak_produce=peak_dense, peak_final=peak_dense, epochs=c["epochs_pre"]),
           "derived": {}}
    for f in c["fractions"]:
        budget = int(f * dense_params)
        energy = P.svd_ranks(dense, budget)
        low_energy = svd_truncate(dense, energy)
        _, acc_energy = evaluate(low_energy, data.x_test, data.y_test)
        ranks = P.uniform_ranks(dense, budget)  # the ranks of fixed-rank and UVᵀ: only the start differs
        low = svd_truncate(dense, ranks)
        _, acc = evaluate(low, data.x_test, data.y_test)
        res = {"svd": {"test_acc": acc, "params_eval": accounting.count_params(low, "eval"), "ranks": ranks[:-1],
                       "test_acc_energy_ranks": acc_energy, "energy_ranks": energy[:-1],
                       "params_eval_energy_ranks": accounting.count_params(low_energy, "eval"),
                       "peak_produce": peak_dense, "peak_final": None, "epochs": c["epochs_pre"]}}
        tr = DLRT(low, Adam(LR), method="bug")
        r = train_record(tr, data, c["epochs_re"], batch, seed, f"{tag} svd+retrain f={f}")
        res["svd+retrain"] = dict(_summary(r, tr.net), peak_produce=None, epochs=c["epochs_pre"] + c["epochs_re"],
                                  peak_final=peaks(lambda: DLRT(svd_truncate(dense, ranks), Adam(LR), method="bug"),
                                                         x, y, batch, steps))
        keep = budget - fixed
        tr = dense_trainer(P.prune(dense, keep), Adam(LR))
        r = train_record(tr, data, c["epochs_re"], batch, seed, f"{tag} prune+retrain f={f}")
        res["prune+retrain"] = dict(_summary(r, tr.net), peak_produce=None, epochs=c["epochs_pre"] + c["epochs_re"],
                                    peak_final=peaks(lambda: dense_trainer(P.prune(dense, keep), Adam(LR)),
                                                           x, y, batch, steps))
        for m in ("svd+retrain", "prune+retrain"):  # the run that produces it: dense training, then the retraining
            res[m]["peak_produce"] = _max_peaks(peak_dense, res[m]["peak_final"])
        for m in res.values():
            m.update(budget=budget, dense_params=dense_params)
        out["derived"][str(f)] = res
    return out


# --------------------------------------------------------------------------- assembling and drawing
def _stats(values) -> dict:
    """mean and std (ddof = 1; None for one value) of the non-None values."""
    a = np.array([v for v in values if v is not None], dtype=float)
    if a.size == 0:
        return {"mean": None, "std": None}
    mean, std = band(a)
    return {"mean": mean, "std": std}


def assemble(cfg, results: dict) -> dict:
    """Per model, method and fraction: accuracy, landed parameter fraction and peak memories over the seeds."""
    table, runs = {}, {}
    for model in cfg["models"]:
        table[model], runs[model] = {}, {}
        dense_runs = [results[f"{model} dense s={s}"] for s in cfg["seeds"]]
        dparams = dense_runs[0]["derived"][str(cfg["fractions"][0])]["svd"]["dense_params"]
        table[model]["dense"] = {"dense_params": dparams, "test_acc": _stats([d["dense"]["test_acc"] for d in dense_runs]),
                                 "peak_produce_mib": _stats([d["dense"]["peak_produce"]["batch"] for d in dense_runs]),
                                 "peak_produce_b1_mib": _stats([d["dense"]["peak_produce"]["b1"] for d in dense_runs]),
                                 "epochs": cfg["epochs_pre"]}
        for method in METHODS:
            table[model][method] = {}
            for f in cfg["fractions"]:
                per_seed = [(dense_runs[i]["derived"][str(f)][method] if method in FROM_DENSE
                             else results[f"{model} {method} f={f} s={s}"]) for i, s in enumerate(cfg["seeds"])]
                runs[model].setdefault(method, {})[str(f)] = per_seed
                row = {"budget": per_seed[0]["budget"], "epochs": per_seed[0]["epochs"],
                       "test_acc": _stats([r["test_acc"] for r in per_seed]),
                       "params_eval": [r["params_eval"] for r in per_seed],
                       "fraction_landed": _stats([r["params_eval"] / dparams for r in per_seed]),
                       "ranks": [r.get("ranks") for r in per_seed]}
                for key in ("peak_produce", "peak_final"):
                    for b, suffix in (("batch", ""), ("b1", "_b1")):
                        row[f"{key}{suffix}_mib"] = _stats([None if r[key] is None else r[key][b] for r in per_seed])
                if method == "svd":
                    row.update(test_acc_energy_ranks=_stats([r.get("test_acc_energy_ranks") for r in per_seed]),
                               energy_ranks=[r.get("energy_ranks") for r in per_seed])
                if method == "ra-bug":
                    row.update(tau=[r["tau"] for r in per_seed], predicted_ranks=[r["predicted_ranks"] for r in per_seed])
                table[model][method][str(f)] = row
    models = ", ".join(f"{m}: subset {c['subset'] or 'all'}, test {c['test_subset'] or 10000}, batch {c['batch']}"
                       for m, c in cfg["models"].items())
    return {"config": cfg, "methods": METHODS, "optimizer": "adam", "lr": LR, "state_policy": "transport",
            "count_definition": "eval: weights only (no biases); r(m+n) per factorised layer, nonzeros per pruned "
                                "layer, m n per dense layer; the classifier dense in every method",
            "pruning": "one-shot global magnitude pruning after dense training, retrained from the trained values "
                       "(no lottery-ticket rewinding)",
            "memory": "tracemalloc peak (NumPy array allocations included) over mem_steps training steps of a freshly "
                      "built trainer, after its build (what the build leaves alive counts); data set not counted; "
                      "peak_produce: the runs that produce the small network (dense pre-training for svd/prune), "
                      "peak_final: the (re)training of the small network; *_b1: the same at batch size 1 (parameters, "
                      "gradients, optimiser state, nearly no activations); MiB",
            "accuracy": "test accuracy after the last epoch; mean and std over seeds (ddof = 1)",
            "budget": f"{len(cfg['models'])} models ({models}) x {len(cfg['fractions'])} fractions "
                      f"{cfg['fractions']} x {len(cfg['seeds'])} seeds; dense {cfg['epochs_pre']} epochs + "
                      f"retraining {cfg['epochs_re']}; from-scratch methods {cfg['epochs_pre'] + cfg['epochs_re']} "
                      f"epochs; memory over {cfg['mem_steps']} steps",
            "code": code_version(), "table": table, "runs": runs}


run = serial_runner(PRESETS, KNOBS, specs, assemble)  # run(preset, backend): the specs, serially

STYLE = {"ra-bug": ("C0", "o-"), "fixed-rank": ("C1", "s-"), "uv": ("C2", "^-"), "svd": ("C7", "x:"),
         "svd+retrain": ("C4", "D--"), "prune+retrain": ("C3", "v--")}


def plot(data: dict, out_dir):
    plt = pyplot()
    models = list(data["table"])
    fig, axes = plt.subplots(len(models), 5, figsize=(26, 4.8 * len(models)), squeeze=False)
    panels = (("peak_produce_mib", "run that produces it", "batch"), ("peak_final_mib", "final (re)training", "batch"),
              ("peak_produce_b1_mib", "run that produces it, batch 1", "b1"),
              ("peak_final_b1_mib", "final (re)training, batch 1", "b1"))
    for row, model in zip(axes, models):
        tab = data["table"][model]
        dense = tab["dense"]
        batch = data["config"]["models"][model]["batch"]
        for method in data["methods"]:
            c, style = STYLE[method]
            rows = list(tab[method].values())
            x = 100 * np.array([r["fraction_landed"]["mean"] for r in rows])
            m = 100 * np.array([r["test_acc"]["mean"] for r in rows])
            s = 100 * np.array([r["test_acc"]["std"] or 0.0 for r in rows])
            row[0].plot(x, m, style, color=c, label=method)
            row[0].fill_between(x, m - s, m + s, color=c, alpha=0.15)
            for ax, (key, _, _) in zip(row[1:], panels):
                mem = np.array([np.nan if r[key]["mean"] is None else r[key]["mean"] for r in rows])
                if np.isfinite(mem).any():
                    ax.plot(x, mem, style, color=c, label=method)
        row[0].axhline(100 * dense["test_acc"]["mean"], color="k", linestyle=":", label=f"dense ({dense['epochs']} epochs)")
        for ax, (key, what, b) in zip(row[1:], panels):
            ax.axhline(dense["peak_produce_b1_mib" if b == "b1" else "peak_produce_mib"]["mean"], color="k",
                       linestyle=":", label="dense training")
            ax.set(xlabel="parameters, % of dense", ylabel="peak traced memory [MiB]",
                   title=f"{model}: peak memory, {what}" + ("" if b == "b1" else f" (batch {batch})"))
        n = len(data["config"]["seeds"])
        row[0].set(xlabel="parameters, % of dense (eval count, landed)", ylabel="test accuracy [%]",
                   title=f"{model}: test accuracy (mean ± std, {n} seeds)")
        for ax in row:
            ax.legend(fontsize=7)
    fig.suptitle(f"DLRT vs pruning and SVD truncation at equal parameters, Adam {data['lr']}\nbudget: {data['budget']}",
                 fontsize=9)
    return save(fig, out_dir, NAME)
