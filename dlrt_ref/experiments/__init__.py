"""Experiments that regenerate the figures: one module per experiment.

Each module ``dlrt_ref.experiments.<name>`` provides

``run(preset, backend: str) -> dict``
    compute the data ("quick": seconds, for tests; "full": the committed
    figure; "paper": the published protocol). ``preset`` is a name or a
    :class:`~dlrt_ref.experiments.budget.Budget` (preset + overrides; see that
    module for ``PRESETS``, ``KNOBS`` and ``count_runs``); the dict must be JSON-able (lists, floats, str; no NaN — use None);
``plot(data: dict, out_dir: pathlib.Path) -> list[pathlib.Path]``
    draw it into ``out_dir/<name>.png`` and ``out_dir/<name>.pdf``
    (use :func:`dlrt_ref.experiments.plotting.save`).

An experiment made of training runs also declares ``specs(cfg, backend)`` (a run may name the runs it depends
on), ``run_one(config, tag[, deps])`` and ``assemble(cfg, results)`` (:mod:`dlrt_ref.experiments.runs`), so that
``figures --jobs N`` / ``--dask`` can spread its runs; ``run`` is then ``assemble`` of the serial results.

``python -m dlrt_ref figures`` (:mod:`dlrt_ref.experiments.cli`) runs them and
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
    "fc_tau_sweep": ("dlrt_ref.experiments.fc_tau_sweep",
                     "[P] fully-connected MNIST: accuracy/ranks/c.r. vs tau for d = 500, 784"),
    "fc_seed_bands": ("dlrt_ref.experiments.fc_seed_bands",
                      "[P] FC d = 500 at tau 0.07/0.11/0.15 + dense: seed bands (mean +- std, ddof 1) per epoch and row"),
    "adam_state_policy": ("dlrt_ref.experiments.adam_state_policy",
                          "[P] FC d = 500, tau 0.11: Adam state transported / reset / stale (2022 codes), 3 seeds"),
    "tf2022_emulation": ("dlrt_ref.experiments.tf2022_emulation",
                         "[P] the 2022 TensorFlow step emulated (and ablated) vs ra-bug and [P]'s logs; fixed rank at [P]'s ranks"),
    "rank_evolution": ("dlrt_ref.experiments.rank_evolution",
                       "[P] ranks of the 4 layers vs epochs, 784-200x4-10, one panel per tau"),
    "lenet_tau": ("dlrt_ref.experiments.lenet_tau",
                  "[T] LeNet5 ra-bug: accuracy, c.r. (thesis-test, eval, train) and ranks vs tau"),
    "lenet_paper": ("dlrt_ref.experiments.lenet_paper",
                    "[P] LeNet5, every layer low-rank (fc2 at rank 10), 0.45 tau on linear layers: acc/ranks/c.r. vs tau"),
    "lenet_band": ("dlrt_ref.experiments.lenet_band",
                   "[T] LeNet5 at tau = 0.11 and dense: mean +- std (ddof 1) over seeds, per epoch and at the chosen epoch"),
    "acc_vs_cr": ("dlrt_ref.experiments.acc_vs_cr",
                  "[T] fixed-rank LeNet5: accuracy vs layer-wise compression ratio"),
    "dlrt_vs_uv": ("dlrt_ref.experiments.dlrt_vs_uv",
                   "[T]/[P] LeNet5 rank 20: fixed-rank DLRT vs vanilla UV^T for decaying initial spectra"),
    "finetune": ("dlrt_ref.experiments.finetune",
                 "[T] S-only fine-tuning after DLRT (Fashion-MNIST + MNIST instead of CIFAR-10)"),
    "cifar_finetune": ("dlrt_ref.experiments.cifar_finetune",
                       "[T] S-only fine-tuning after DLRT on VGG16/AlexNet/LeNet5/ResNet20, CIFAR-10 (needs the data)"),
    "cifar_acc_vs_cr": ("dlrt_ref.experiments.cifar_acc_vs_cr",
                        "[T] fixed-rank CIFAR nets: accuracy vs layer-wise compression ratio (needs the data)"),
    "timings_paper": ("dlrt_ref.experiments.timings_paper",
                      "[P] train s/batch and predict time vs rank, 784-5120x4-10, against dense"),
    "timings_thesis": ("dlrt_ref.experiments.timings_thesis",
                       "[T] fwd / pass / step time vs layer-wise cr, 784-500-300-100-10, 70k batch"),
    "rank_dynamics": ("dlrt_ref.experiments.rank_dynamics",
                      "ra-bug ranks vs a teacher's known ranks (relative/absolute/step tolerance) and on MNIST vs init"),
    "dlrt_descent": ("dlrt_ref.experiments.dlrt_descent",
                     "[P] Thm. 2 descent inequality at every step (least squares, teacher-student MLP); h > 2/L controls"),
    "dlrt_vs_pruning": ("dlrt_ref.experiments.dlrt_vs_pruning",
                        "MLP and LeNet5: ra-bug, fixed-rank, UV^T vs SVD truncation and magnitude pruning at equal params, peak memory"),
    "dlrt_approximation": ("dlrt_ref.experiments.dlrt_approximation",
                           "[P] Thm. 1 error vs h, theta, eps against the full flow; sigma_r -> 1e-10 vs naive and vanilla UV"),
}

PRESETS = ("quick", "full", "paper")  # paper: the published protocol (see each module and budget.py)


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
