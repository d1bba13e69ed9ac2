"""The training loop: epochs of seeded mini-batches, evaluation, history, JSON, checkpoints.

:func:`fit` drives any trainer (``DLRT`` or a baseline of
:mod:`dlrt_ref.train.baselines`: objects with ``.net``, ``.opt``, ``.steps``,
``.step(x, y) -> StepInfo`` and ``.ranks()``) over a
:class:`~dlrt_ref.splits.Dataset`:

* epoch e visits the training set in the order
  ``numpy.random.default_rng([seed, e]).permutation(n)`` — a pure function of
  (seed, e), so a resumed run sees the same batches without saving RNG state;
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

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dlrt_ref.backend import to_numpy
from dlrt_ref.nn.loss import SoftmaxCrossEntropy
from dlrt_ref.train import accounting
from dlrt_ref.train.checkpoint import net_backend, atomic_write, load_checkpoint, save_checkpoint
from dlrt_ref.train.dlrt import NonFiniteLossError

__all__ = ["History", "fit", "evaluate", "write_json", "epoch_order"]

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


def evaluate(net, x, y, batch_size: int = 1000) -> tuple:
    """Mean softmax cross-entropy and accuracy of ``net`` on host arrays (x, y), in batches.

    Returns ``(loss, accuracy)`` as floats, or ``(None, None)`` for empty data.
    """
    n = len(y)
    if n == 0:
        return None, None
    be = net_backend(net)
    loss_fn = SoftmaxCrossEntropy()
    total_loss, correct = 0.0, 0
    for i in range(0, n, batch_size):
        xb, yb = be.asarray(x[i : i + batch_size]), be.asarray(y[i : i + batch_size])
        logits = net.forward(xb)  # (b, C)
        total_loss += loss_fn.forward(logits, yb) * len(yb)
        correct += int(to_numpy((logits.argmax(axis=1) == yb).sum()))
    return total_loss / n, correct / n


def write_json(path, obj) -> None:
    """Write JSON atomically (temporary file in the same folder, then :func:`os.replace`)."""

    def dump(f):
        json.dump(obj, f, indent=1)
        f.write("\n")

    atomic_write(path, dump, "w")


def _fmt(v, spec=".4f") -> str:
    return "-" if v is None else format(v, spec)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def fit(trainer, data, epochs: int, batch_size: int, seed: int = 0, log_every: int = 50, out_dir=None,
        checkpoint_every: int | None = None, resume=None, eval_batch: int = 1000, on_epoch=None,
        config: dict | None = None, log=None) -> History:
    """Train ``trainer`` on ``data`` for ``epochs`` epochs of mini-batches.

    Parameters
    ----------
    trainer : DLRT, UVTrainer, SOnlyTrainer, ...
    data : Dataset
        Host arrays ``x_train, y_train, x_val, y_val, x_test, y_test``.
    epochs, batch_size : int
        The last batch of an epoch may be smaller.
    seed : int
        Seed of the shuffle (see :func:`epoch_order`).
    log_every : int
        One log line every that many steps (0: none), plus one per epoch.
    out_dir : str or Path, optional
        Folder for ``config.json``, ``results.json`` and ``checkpoint.npz``.
    checkpoint_every : int, optional
        Also checkpoint every that many steps (it always does after an epoch
        when ``out_dir`` is given).
    resume : str or Path, optional
        Continue from this checkpoint (the trainer must be built like the
        original one). ``epochs`` is the total, counted from the start of the run.
    eval_batch : int
        Batch size of evaluation.
    on_epoch : callable, optional
        ``on_epoch(record, trainer)`` after each epoch; returning True stops the run.
    config : dict, optional
        JSON-able description of the run, stored in ``config.json``, results and checkpoints.
    log : callable, optional
        ``log(line)``; default: print to stderr.

    Returns
    -------
    History

    Raises
    ------
    NonFiniteLossError
        When a step meets a NaN/inf loss; the message says where, and names the
        last good checkpoint, which is left untouched.
    """
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"fit: need epochs >= 0 and batch_size >= 1, got epochs={epochs}, batch_size={batch_size}")
    log = _stderr if log is None else log
    be = net_backend(trainer.net)
    config = dict(config or {})
    config.setdefault("fit", {"epochs": epochs, "batch_size": batch_size, "seed": seed, "eval_batch": eval_batch})
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    history, epoch0, batch0 = History(), 0, 0
    if resume is not None:
        manifest = load_checkpoint(resume, trainer)
        history = History.from_dict(manifest["history"])
        history.status = "running"
        epoch0, batch0 = manifest["position"]["epoch"], manifest["position"]["batch"]
        log(f"resumed from {resume}: epoch {epoch0 + 1}, batch {batch0}, step {trainer.steps}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", config)
    last_good = {"path": None, "step": None}

    def checkpoint(epoch, batch):
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, trainer, {"epoch": epoch, "batch": batch, "step": trainer.steps},
                            history.to_dict(), config)
            last_good.update(path=str(ckpt_path), step=trainer.steps)

    n = len(data.y_train)
    n_batches = -(-n // batch_size)
    epoch, b = epoch0, batch0
    try:
        for epoch in range(epoch0, epochs):
            order = epoch_order(n, seed, epoch)
            for b in range(batch0 if epoch == epoch0 else 0, n_batches):
                idx = order[b * batch_size : (b + 1) * batch_size]
                xb, yb = be.asarray(data.x_train[idx]), be.asarray(data.y_train[idx])
                t0 = time.perf_counter()
                info = trainer.step(xb, yb)
                be.synchronize()
                ms = 1e3 * (time.perf_counter() - t0)
                history.steps.append({"step": trainer.steps, "epoch": epoch + 1, "loss": float(info.loss),
                                      "ranks": list(info.ranks), "passes": int(info.passes), "ms": ms,
                                      "tails": [float(t) for t in getattr(info, "tails", [])]})
                if log_every and trainer.steps % log_every == 0:
                    log(f"epoch {epoch + 1}/{epochs} step {b + 1}/{n_batches} (#{trainer.steps}) "
                        f"loss {info.loss:.4f} ranks {list(info.ranks)} {ms:.1f} ms")
                if checkpoint_every and trainer.steps % checkpoint_every == 0 and b + 1 < n_batches:
                    checkpoint(epoch, b + 1)
            record = _epoch_record(trainer, data, history, epoch + 1, eval_batch)
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
        where = f"epoch {epoch + 1}, batch {b + 1} (step {trainer.steps + 1})"
        kept = (f"last good checkpoint: {last_good['path']} (step {last_good['step']})" if last_good["path"]
                else "no checkpoint was written" if ckpt_path is None or not ckpt_path.exists()
                else f"checkpoint {ckpt_path} left as it was")
        history.status, history.message = "diverged", f"non-finite loss at {where}; the run stopped; {kept}"
        log(history.message)
        if out is not None:
            write_json(out / "results.json", _results(history, config))
        raise NonFiniteLossError(f"{history.message} ({exc})") from exc
    history.status = "finished"
    if out is not None:
        write_json(out / "results.json", _results(history, config))
    return history


def _epoch_record(trainer, data, history, epoch, eval_batch) -> dict:
    steps = [s for s in history.steps if s["epoch"] == epoch]
    val_loss, val_acc = evaluate(trainer.net, data.x_val, data.y_val, eval_batch)
    test_loss, test_acc = evaluate(trainer.net, data.x_test, data.y_test, eval_batch)
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
