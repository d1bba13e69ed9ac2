"""``dlrt-ref evaluate CHECKPOINT``: test accuracy, loss, ranks and every c.r. of a saved run, without training.

The network is rebuilt from the run options stored in the checkpoint (the same
:func:`~dlrt_ref.train.cli.build_trainer` that ``train`` uses), the weights and
factors are loaded (:func:`~dlrt_ref.train.checkpoint.load_checkpoint`, which
checks every array), and the network is evaluated on the MNIST test set — all
10 000 images by default, or the run's ``--test-subset`` with ``--as-trained``,
or ``--test-subset N``. With a validation split in the run, the validation
accuracy is reported too (same seed, same images).

The compression rates are those of :mod:`dlrt_ref.train.accounting`, every
definition by name (``cr_eval``: Σ r(m+n) for low-rank layers; ``cr_train_paper``,
``cr_train_lenet``, ``cr_thesis_*``: see that module).

Examples::

    dlrt-ref evaluate runs/bug20/checkpoint.npz
    dlrt-ref evaluate runs/bug20/checkpoint.npz --json
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dlrt_ref.data.splits import validate_dataset
from dlrt_ref.errors import UsageError
from dlrt_ref.train import accounting
from dlrt_ref.train import cli as train_cli
from dlrt_ref.train.augment import Augment
from dlrt_ref.train.checkpoint import CheckpointError, load_checkpoint, read_manifest
from dlrt_ref.train.loop import evaluate


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help="a checkpoint.npz written by 'train --out' (or the folder holding it)")
    p.add_argument("--test-subset", type=int, help="evaluate on a seeded stratified subset of N test images "
                   "(default: all 10000)")
    p.add_argument("--as-trained", action="store_true",
                   help="use the run's own --test-subset (the numbers its results.json reports)")
    p.add_argument("--data-dir", help="folder with the MNIST IDX files (as for train); default $DLRT_REF_DATA_DIR "
                                      "or the shipped copy")
    p.add_argument("--batch", type=int, default=1000, help="evaluation batch size (default 1000)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args) -> int:
    path = Path(args.checkpoint)
    if path.is_dir():
        path = path / "checkpoint.npz"
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    if args.test_subset is not None and args.as_trained:
        raise UsageError("give --test-subset or --as-trained, not both")
    if args.test_subset is not None and not 1 <= args.test_subset <= train_cli.MNIST_SIZES["test"]:
        raise UsageError(f"--test-subset must be in [1, {train_cli.MNIST_SIZES['test']}], got {args.test_subset}")
    manifest = read_manifest(path)  # CheckpointError (exit 1) if unreadable
    try:
        opts = dict(manifest["config"]["run"])
    except (KeyError, TypeError):
        raise CheckpointError(f"checkpoint {str(path)!r} holds no run options (not written by 'train')") from None
    opts.setdefault("ortho", "householder")
    opts.setdefault("init_spectrum", "halfnormal")
    if not args.as_trained:
        opts["test_subset"] = args.test_subset
    dataset = opts.get("dataset", "mnist")  # checkpoints from before --dataset trained on MNIST
    folder = (train_cli.mnist_path(args.data_dir) if dataset == "mnist"
              else train_cli.cifar_path(dataset, args.data_dir))
    return _evaluate(path, manifest, opts, folder, args)


def _evaluate(path, manifest, opts, folder, args) -> int:
    t0 = time.perf_counter()
    trainer = train_cli.build_trainer(opts)
    load_checkpoint(path, trainer)
    data = train_cli.load_data(opts, folder, test_only=True)
    validate_dataset(data, need_train=False)
    aug = (manifest.get("config") or {}).get("augment")  # a run trained with --augment saw normalised images
    norm = Augment.from_config(aug).normalise if aug else None
    test_loss, test_acc = evaluate(trainer.net, data.x_test, data.y_test, args.batch, norm)
    val_loss, val_acc = evaluate(trainer.net, data.x_val, data.y_val, args.batch, norm)
    result = {
        "checkpoint": str(path), "model": opts["model"], "method": opts["method"],
        "position": manifest.get("position"), "test_images": int(len(data.y_test)),
        "test_acc": test_acc, "test_loss": test_loss, "val_acc": val_acc, "val_loss": val_loss,
        "ranks": list(trainer.ranks()),
        "params": accounting.param_counts(trainer.net), "cr": accounting.compression_rates(trainer.net),
        "seconds": time.perf_counter() - t0,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    pos = result["position"] or {}
    cr = ", ".join(f"{k} {100 * v:.1f} %" for k, v in result["cr"].items())
    val = f", validation accuracy {100 * val_acc:.2f} %" if val_acc is not None else ""
    sys.stdout.write(
        f"{opts['model']} {opts['method']} after epoch {pos.get('epoch')} (step {pos.get('step')}): test accuracy "
        f"{100 * test_acc:.2f} % on {result['test_images']} images, test loss {test_loss:.4f}{val}; "
        f"ranks {result['ranks']}; c.r. {cr}\n")
    return 0
