"""What ``train`` prints and where it writes: the ``--out`` checks, the start line and the final line.

* :func:`check_out` refuses an ``--out`` that is a file or already holds
  another run (unless ``--overwrite``, or ``--resume`` of the run in that
  folder); :func:`writable` proves the folder writable before any data loads.
* :func:`start_line`: one line with model, method, options, the data set (its
  name, folder and split sizes) and whether it is augmented, BLAS threads and
  output folder, printed before the data is loaded.
* :func:`final_line`: accuracy and c.r. in %, rounded (the JSON keeps full precision).
"""
from __future__ import annotations

import os
from pathlib import Path

from dlrt_ref.data import MNIST_FACTS
from dlrt_ref.errors import CommandError, UsageError
from dlrt_ref.threads import describe_threads

__all__ = ["check_out", "writable", "start_line", "final_line", "DATASET_NAMES"]

DATASET_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}  # --dataset -> printed name


def check_out(args) -> None:
    """Refuse an --out that is a file, or that holds another run (unless --overwrite, or --resume of that run)."""
    if args.checkpoint_every and not args.out:
        raise UsageError("--checkpoint-every needs --out")
    if args.overwrite and not args.out:
        raise UsageError("--overwrite needs --out")
    if not args.out:
        return
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    if not out.is_dir():
        return
    existing = [name for name in ("checkpoint.npz", "results.json", "config.json") if (out / name).exists()]
    if not existing or args.overwrite:
        return
    if args.resume and Path(args.resume).resolve().parent == out.resolve():
        return  # continuing the run that lives there
    resume = (f", or --resume {out / 'checkpoint.npz'} to continue it" if "checkpoint.npz" in existing else "")
    raise UsageError(f"--out {out} already holds a run ({', '.join(existing)}); add --overwrite to replace it{resume}")


def writable(out: Path) -> None:
    """Create --out and prove it writable now, not after the data is loaded (exit 1 with one line otherwise)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CommandError(f"--out {out} is not writable: {exc.strerror or exc}") from None


def start_line(opts, epochs, args, data_folder, k: int, sizes: dict | None = None) -> str:
    """One line stating what is about to run: model, method, options, data, threads and output folder.

    ``k``: the number of validation images (``dlrt_ref.train.cli.validation_count``); ``sizes``: the data set's
    ``{"train": n, "test": n}`` (``dlrt_ref.train.cli.DATASET_SIZES``; default MNIST's).
    """
    dataset = opts.get("dataset", "mnist")
    if sizes is None:
        sizes = {"train": MNIST_FACTS["n_train"], "test": MNIST_FACTS["n_test"]}
    n_train, n_test = sizes["train"], sizes["test"]
    train = opts["subset"] if opts["subset"] is not None else n_train - k
    test = opts["test_subset"] if opts["test_subset"] is not None else n_test
    what = f"{opts['model']} {opts['widths'] or ''}".strip()
    tau = f" tau {opts['tau']}" if opts["tau"] is not None else ""
    rank = f" rank {opts['rank']}" if opts["rank"] is not None else ""
    src = "shipped copy" if data_folder is None else str(data_folder)
    dest = f"out {args.out}" if args.out else "no --out (nothing saved)"
    resumed = f", resuming {args.resume}" if args.resume else ""
    if dataset == "mnist":
        aug = ""
    elif opts.get("augment"):
        aug = ", augmented (crop pad 4, flip, per-channel normalisation)"
    else:
        aug = ", not augmented"
    return (f"train: {what}, {opts['method']}{tau}{rank}, {opts['optimizer']} lr {opts['lr']}, batch "
            f"{opts['batch_size']}, {epochs} epoch(s), {opts['dtype']}, seed {opts['seed']}; "
            f"{DATASET_NAMES.get(dataset, dataset)} ({src}): {train} train / {k} val / {test} test images{aug}; "
            f"{describe_threads()}; {dest}{resumed}")


def final_line(opts, summary, out) -> str:
    """The readable result: accuracy and c.r. in % (rounded), ranks, cost; the JSON keeps full precision."""
    def pct(x, nd=2):
        return "-" if x is None else f"{100 * x:.{nd}f} %"

    ms = summary.get("ms_per_step")
    passes = summary.get("passes_per_step")
    parts = [f"{opts['model']} {opts['method']}: test accuracy {pct(summary.get('test_acc'))}",
             f"test loss {summary['test_loss']:.4f}" if summary.get("test_loss") is not None else "test loss -",
             f"ranks {summary.get('ranks')}",
             f"c.r. {pct(summary.get('cr_eval'), 1)} (eval), {pct(summary.get('cr_train'), 1)} (train-paper)",
             f"{ms:.0f} ms/step" if ms is not None else "- ms/step",
             f"{passes:g} pass(es)/step" if passes is not None else ""]
    if summary.get("val_acc") is not None:
        parts.insert(1, f"val accuracy {pct(summary['val_acc'])}")
    line = ", ".join(p for p in parts if p)
    return line + (f"; results in {out}" if out else "")
