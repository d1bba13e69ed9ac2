"""The training loop: epochs of seeded mini-batches, evaluation, history, JSON, checkpoints.

:func:`fit` drives any trainer (``DLRT`` or a baseline of
:mod:`dlrt_ref.train.baselines`: objects with ``.net``, ``.opt``, ``.steps``,
``.step(x, y) -> StepInfo`` and ``.ranks()``) over a
:class:`~dlrt_ref.data.splits.Dataset`:

* epoch e visits the training set in the order
  ``numpy.random.default_rng([seed, e]).permutation(n)`` — a pure function of
  (seed, e), so a resumed run sees the same batches without saving RNG state;
* with ``augment`` (an :class:`~dlrt_ref.train.augment.Augment`, the thesis's
  CIFAR crop/flip/normalisation), batch b of epoch e is augmented with
  ``augment(x, step=e·n_batches + b)`` — its draw is again a pure function of
  (the augmentation's seed, e, b), so a run and its resumed copy see the same
  images; labels are not touched; evaluation sees ``augment.normalise(x)``.
  Without it (the default) the batches are the data as they are. A step's
  ``ms`` counts the step only, not the augmentation before it;
* after every epoch the network is evaluated on the validation set (if any)
  and the test set;
* a :class:`History` records per step the loss (at the step's starting point),
  ranks per low-rank layer, passes and ms, and per epoch the losses,
  accuracies, ranks, parameter counts and compression rates under every named
  definition (:mod:`dlrt_ref.train.accounting`) and the median ms/step;
* with ``out_dir``: ``config.json``, ``results.json`` and an atomically
  written ``checkpoint.npz`` (:mod:`dlrt_ref.train.checkpoint`) every
  ``checkpoint_every`` steps and after every epoch. ``resume=path`` continues
  from a checkpoint and reproduces the uninterrupted run bit for bit on CPU;
* a non-finite loss stops the run: :class:`~dlrt_ref.train.dlrt.NonFiniteLossError`
  is raised with the position and the last good checkpoint in its message, and
  that checkpoint is left as it was.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dlrt_ref.backend import to_numpy
from dlrt_ref.data.splits import validate_dataset
from dlrt_ref.nn.loss import SoftmaxCrossEntropy
from dlrt_ref.train import accounting
from dlrt_ref.nn.network import net_backend
from dlrt_ref.train.checkpoint import load_checkpoint, save_checkpoint
from dlrt_ref.train.dlrt import NonFiniteLossError
from dlrt_ref.train.files import write_json

__all__ = ["History", "fit", "evaluate", "write_json", "epoch_order", "DivergenceError", "DIVERGENCE_FACTOR",
           "remove_stale_temporaries"]

CHECKPOINT_NAME = "checkpoint.npz"


@dataclass
class History:
    """What a run did.

    Attributes
    ----------
    steps : list of dict
        Per step: ``step`` (global, from 1), ``epoch``, ``loss``, ``ranks``, ``passes``, ``ms``, and
        ``tails`` (per low-rank layer, ‖Ŷ1 − Y1‖_F discarded by the truncation; empty at fixed rank).
    epochs : list of dict
        Per epoch: ``epoch``, ``train_loss`` (mean batch loss), ``val_loss``,
        ``val_acc`` (None without validation data), ``test_loss``, ``test_acc``,
        ``ranks``, ``params`` ({definition: count}), ``cr`` ({cr_key: c.r.}),
        ``ms_per_step`` (median), ``passes_per_step`` (mean), ``steps``.
    status : str
        ``"running"``, ``"finished"`` or ``"diverged"``.
    message : str
    """

    steps: list = field(default_factory=list)
    epochs: list = field(default_factory=list)
    status: str = "running"
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(list(d.get("steps", [])), list(d.get("epochs", [])), d.get("status", "running"), d.get("message", ""))

    def summary(self) -> dict:
        """The final numbers: last epoch's accuracies, ranks, c.r. (eval and train-paper) and costs."""
        if not self.epochs:
            return {"status": self.status, "message": self.message}
        last = self.epochs[-1]
        return {
            "status": self.status, "message": self.message, "epochs": len(self.epochs),
            "test_acc": last["test_acc"], "test_loss": last["test_loss"], "val_acc": last["val_acc"],
            "val_loss": last["val_loss"], "train_loss": last["train_loss"], "ranks": last["ranks"],
            "cr_eval": last["cr"]["cr_eval"], "cr_eval_definition": "eval",
            "cr_train": last["cr"]["cr_train_paper"], "cr_train_definition": "train-paper",
            "cr": last["cr"], "params": last["params"],
            "ms_per_step": float(np.median([s["ms"] for s in self.steps])) if self.steps else None,
            "passes_per_step": float(np.mean([s["passes"] for s in self.steps])) if self.steps else None,
        }


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The seeded visiting order of epoch ``epoch`` (0-based): a permutation of range(n)."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def evaluate(net, x, y, batch_size: int = 1000, transform=None) -> tuple:
    """Mean softmax cross-entropy and accuracy of ``net`` on host arrays (x, y), in batches.

    ``transform``: applied to each batch on the network's backend before the forward (e.g.
    :meth:`Augment.normalise <dlrt_ref.train.augment.Augment.normalise>` for a network trained on
    normalised images). Returns ``(loss, accuracy)`` as floats, or ``(None, None)`` for empty data.
    """
    n = len(y)
    if n == 0:
        return None, None
    be = net_backend(net)
    loss_fn = SoftmaxCrossEntropy()
    total_loss, correct = 0.0, 0
    was_training = getattr(net, "training", None)
    if was_training is not None:
        net.eval()  # BatchNorm with its running statistics, no dropout
    try:
        for i in range(0, n, batch_size):
            xb, yb = be.asarray(x[i : i + batch_size]), be.asarray(y[i : i + batch_size])
            if transform is not None:
                xb = transform(xb)
            logits = net.forward(xb)  # (b, C)
            total_loss += loss_fn.forward(logits, yb) * len(yb)
            correct += int(to_numpy((logits.argmax(axis=1) == yb).sum()))
    finally:
        if was_training is not None:
            net.train(was_training)
    return total_loss / n, correct / n


def _fmt(v, spec=".4f") -> str:
    return "-" if v is None else format(v, spec)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


DIVERGENCE_FACTOR = 100.0  # a mean step loss above this many times the run's first loss counts as divergence
DIVERGENCE_WINDOW = 10  # ... the mean over this many last steps (fewer at the start: padded with the first loss)
STALE_PREFIXES = (f".{CHECKPOINT_NAME}.", ".results.json.", ".config.json.")  # atomic_write's temporary names


class DivergenceError(NonFiniteLossError):
    """The run diverged: a non-finite loss or parameter, or a loss far above its starting value.

    A subclass of :class:`~dlrt_ref.train.dlrt.NonFiniteLossError`, so code that
    catches that also catches the finite blow-up.
    """


def remove_stale_temporaries(out) -> list:
    """Delete the temporary files that a killed run left in ``out`` (``.checkpoint.npz.*.tmp`` and the JSONs').

    :func:`~dlrt_ref.train.files.atomic_write` removes its temporary file on
    any exception, but not on SIGKILL or power loss. One run per folder is
    assumed: a temporary file present when a run starts belongs to a dead run.
    """
    removed = []
    for p in Path(out).glob(".*.tmp"):
        if p.is_file() and p.name.startswith(STALE_PREFIXES):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def _nonfinite_param(net):
    """Name of the first parameter or factor holding NaN/inf, or None (one host synchronisation when all are finite)."""
    named = []
    for k, layer in enumerate(net.flat_layers()):
        named += [(f"layer {k} {name}", a) for name, a in sorted(layer.params.items())]
        if getattr(layer, "lowrank", False):
            named += [(f"layer {k} {name}", getattr(layer, name)) for name in ("U", "S", "V")]
    if not named:
        return None
    be = net_backend(net)
    flags = [be.xp.isfinite(a).all() for _, a in named]
    if bool(to_numpy(be.xp.stack(flags).all())):  # explicit: the one host synchronisation
        return None
    return next(name for (name, _), f in zip(named, flags) if not bool(to_numpy(f)))


def fit(trainer, data, epochs: int, batch_size: int, seed: int = 0, log_every: int = 50, out_dir=None,
        checkpoint_every: int | None = None, resume=None, eval_batch: int = 1000, on_epoch=None,
        config: dict | None = None, log=None, divergence_factor: float | None = DIVERGENCE_FACTOR,
        augment=None) -> History:
    """Train ``trainer`` on ``data`` for ``epochs`` epochs of mini-batches.

    Parameters
    ----------
    trainer : DLRT, UVTrainer, SOnlyTrainer, ...
    data : Dataset
        Host arrays ``x_train, y_train, x_val, y_val, x_test, y_test``; checked
        once (:func:`~dlrt_ref.data.splits.validate_dataset`: finite inputs, labels
        in range, a non-empty training split).
    epochs, batch_size : int
        The last batch of an epoch may be smaller.
    seed : int
        Seed of the shuffle (see :func:`epoch_order`).
    log_every : int
        One log line on the first step and every that many steps (0: none), plus one per epoch.
    out_dir : str or Path, optional
        Folder for ``config.json``, ``results.json`` and ``checkpoint.npz``.
        Temporary files left there by a killed run are removed first.
    checkpoint_every : int, optional
        Also checkpoint every that many steps (it always does after an epoch
        when ``out_dir`` is given).
    resume : str or Path, optional
        Continue from this checkpoint (the trainer must be built like the
        original one). ``epochs`` is the total, counted from the start of the
        run, and must exceed the epochs the checkpoint has completed.
    eval_batch : int
        Batch size of evaluation.
    on_epoch : callable, optional
        ``on_epoch(record, trainer)`` after each epoch; returning True stops the run.
    config : dict, optional
        JSON-able description of the run, stored in ``config.json``, results and checkpoints.
    log : callable, optional
        ``log(line)``; default: print to stderr.
    divergence_factor : float or None
        The run counts as diverged when the mean loss of the last
        :data:`DIVERGENCE_WINDOW` = 10 steps (padded with the first loss during
        the first 9 steps) exceeds this factor times the loss of the run's first
        step (default :data:`DIVERGENCE_FACTOR` = 100; for 10 classes the first
        loss is about ln 10 = 2.3, so the threshold is a mean of about 230, which
        no converging run reaches; one spiking batch must exceed about 2300 to
        count). ``None`` or 0: only non-finite values count.
    augment : Augment, optional
        Training-batch augmentation (:class:`~dlrt_ref.train.augment.Augment`, or any object with
        ``__call__(x, step)`` and ``normalise(x)``): batch b of epoch e becomes ``augment(x, e·n_batches + b)``
        on the network's backend, evaluation uses ``augment.normalise``. None (default): no change to the data.

    Returns
    -------
    History

    Raises
    ------
    DivergenceError (a NonFiniteLossError)
        When a step meets a NaN/inf loss, leaves a NaN/inf parameter, or its
        loss exceeds ``divergence_factor`` times the first loss. The message says
        where and names the last good checkpoint, which is left untouched; no
        checkpoint is written after the failing step.
    KeyboardInterrupt
        Re-raised on Ctrl-C with a message naming the last checkpoint.
    """
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"fit: need epochs >= 0 and batch_size >= 1, got epochs={epochs}, batch_size={batch_size}")
    validate_dataset(data, need_train=epochs > 0)
    log = _stderr if log is None else log
    be = net_backend(trainer.net)
    config = dict(config or {})
    config.setdefault("fit", {"epochs": epochs, "batch_size": batch_size, "seed": seed, "eval_batch": eval_batch})
    if augment is not None and hasattr(augment, "to_config"):
        config.setdefault("augment", augment.to_config())
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    history, epoch0, batch0 = History(), 0, 0
    if resume is not None:
        manifest = load_checkpoint(resume, trainer)
        epoch0, batch0 = manifest["position"]["epoch"], manifest["position"]["batch"]
        if epochs <= epoch0:
            raise ValueError(f"the checkpoint {resume} has completed {epoch0} epoch(s); epochs={epochs} is the new "
                             f"total and must be larger")
        history = History.from_dict(manifest["history"])
        history.status = "running"
        log(f"resumed from {resume}: epoch {epoch0 + 1}, batch {batch0}, step {trainer.steps}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        stale = remove_stale_temporaries(out)
        if stale:
            log(f"removed {len(stale)} temporary file(s) left by an interrupted run in {out}")
        write_json(out / "config.json", config)
    last_good = {"path": str(resume) if resume is not None else None,
                 "step": trainer.steps if resume is not None else None}

    def checkpoint(epoch, batch):
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, trainer, {"epoch": epoch, "batch": batch, "step": trainer.steps},
                            history.to_dict(), config)
            last_good.update(path=str(ckpt_path), step=trainer.steps)

    def kept():
        if last_good["path"]:
            return f"last good checkpoint: {last_good['path']} (step {last_good['step']})"
        if ckpt_path is not None and ckpt_path.exists():
            return f"checkpoint {ckpt_path} left as it was"
        return "no checkpoint was written" + ("" if out is not None else " (no --out folder)")

    n = len(data.y_train)
    n_batches = -(-n // batch_size)
    epoch, b, first_logged = epoch0, batch0, False
    reference = history.steps[0]["loss"] if history.steps else None  # the run's first loss (kept on resume)
    try:
        for epoch in range(epoch0, epochs):
            order = epoch_order(n, seed, epoch)
            for b in range(batch0 if epoch == epoch0 else 0, n_batches):
                idx = order[b * batch_size : (b + 1) * batch_size]
                xb, yb = be.asarray(data.x_train[idx]), be.asarray(data.y_train[idx])
                if augment is not None:
                    xb = augment(xb, epoch * n_batches + b)  # (B, C, H, W): cropped, flipped, normalised
                t0 = time.perf_counter()
                info = trainer.step(xb, yb)
                be.synchronize()
                ms = 1e3 * (time.perf_counter() - t0)
                loss = float(info.loss)
                bad = _nonfinite_param(trainer.net)
                if bad is not None:
                    raise DivergenceError(f"non-finite values in {bad} after the step")
                if reference is None:
                    reference = loss
                recent = [s["loss"] for s in history.steps[-(DIVERGENCE_WINDOW - 1):]] + [loss]
                level = (sum(recent) + reference * (DIVERGENCE_WINDOW - len(recent))) / DIVERGENCE_WINDOW
                if divergence_factor and level > divergence_factor * max(reference, 1e-12):
                    raise DivergenceError(f"loss {loss:.4g} (mean of the last {DIVERGENCE_WINDOW} steps {level:.4g}) "
                                          f"is more than {divergence_factor:g} times the first loss {reference:.4g} "
                                          "(a smaller learning rate may help)")
                history.steps.append({"step": trainer.steps, "epoch": epoch + 1, "loss": loss,
                                      "ranks": list(info.ranks), "passes": int(info.passes), "ms": ms,
                                      "tails": [float(t) for t in getattr(info, "tails", [])]})
                if log_every and (trainer.steps % log_every == 0 or not first_logged):
                    first_logged = True
                    log(f"epoch {epoch + 1}/{epochs} step {b + 1}/{n_batches} (#{trainer.steps}) "
                        f"loss {loss:.4f} ranks {list(info.ranks)} {ms:.1f} ms" + _eta(history, epochs, n_batches,
                                                                                      trainer.steps))
                if checkpoint_every and trainer.steps % checkpoint_every == 0 and b + 1 < n_batches:
                    checkpoint(epoch, b + 1)
            record = _epoch_record(trainer, data, history, epoch + 1, eval_batch,
                                   None if augment is None else augment.normalise)
            history.epochs.append(record)
            log(f"epoch {epoch + 1}/{epochs} done: train loss {_fmt(record['train_loss'])} "
                f"val acc {_fmt(record['val_acc'])} test acc {_fmt(record['test_acc'])} ranks {record['ranks']} "
                f"cr_eval {_fmt(record['cr']['cr_eval'])} {_fmt(record['ms_per_step'], '.1f')} ms/step")
            checkpoint(epoch + 1, 0)
            if out is not None:
                write_json(out / "results.json", _results(history, config))
            if on_epoch is not None and on_epoch(record, trainer):
                break
    except NonFiniteLossError as exc:
        history.status = "diverged"
        if isinstance(exc, DivergenceError):  # detected here, after step trainer.steps
            where = f"epoch {epoch + 1}, batch {b + 1} (step {trainer.steps})"
            history.message = f"the run diverged at {where}: {exc}; the run stopped; {kept()}"
        else:  # raised by the trainer during step trainer.steps + 1
            where = f"epoch {epoch + 1}, batch {b + 1} (step {trainer.steps + 1})"
            history.message = f"non-finite loss at {where}; the run stopped; {kept()} ({exc})"
        if out is not None:
            write_json(out / "results.json", _results(history, config))
        raise DivergenceError(history.message) from exc
    except KeyboardInterrupt:
        history.status = "interrupted"
        history.message = f"interrupted at epoch {epoch + 1}, batch {b + 1} (step {trainer.steps}); {kept()}"
        if last_good["path"]:
            history.message += f"; continue with --resume {last_good['path']}"
        if out is not None:
            try:
                write_json(out / "results.json", _results(history, config))
            except (OSError, KeyboardInterrupt):
                pass
        raise KeyboardInterrupt(history.message) from None
    history.status = "finished"
    if out is not None:
        write_json(out / "results.json", _results(history, config))
    return history


def _eta(history, epochs, n_batches, step) -> str:
    """' (about M min left)' from the median step time so far (evaluation not included)."""
    left = epochs * n_batches - step
    if left <= 0 or not history.steps:
        return ""
    ms = float(np.median([s["ms"] for s in history.steps[-50:]]))
    sec = left * ms / 1e3
    return f", about {sec / 60:.1f} min left" if sec >= 60 else f", about {sec:.0f} s left"


def _epoch_record(trainer, data, history, epoch, eval_batch, transform=None) -> dict:
    steps = [s for s in history.steps if s["epoch"] == epoch]
    val_loss, val_acc = evaluate(trainer.net, data.x_val, data.y_val, eval_batch, transform)
    test_loss, test_acc = evaluate(trainer.net, data.x_test, data.y_test, eval_batch, transform)
    return {
        "epoch": epoch,
        "train_loss": float(np.mean([s["loss"] for s in steps])) if steps else None,
        "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
        "ranks": list(trainer.ranks()),
        "params": accounting.param_counts(trainer.net),
        "cr": accounting.compression_rates(trainer.net),
        "ms_per_step": float(np.median([s["ms"] for s in steps])) if steps else None,
        "passes_per_step": float(np.mean([s["passes"] for s in steps])) if steps else None,
        "steps": len(steps),
    }


def _results(history: History, config: dict) -> dict:
    return {"config": config, "summary": history.summary(), "epochs": history.epochs, "steps": history.steps}
