"""``python -m dlrt_ref figures``: run experiments and write their figures and data.

For each selected experiment NAME (registry: :data:`dlrt_ref.experiments.EXPERIMENTS`)
this writes ``OUT/NAME.png``, ``OUT/NAME.pdf`` and ``OUT/data/NAME.json``
(the data the figure was drawn from, plus preset, backend and seconds).
With no arguments it runs the quick preset of every experiment, into
``figures/quick/`` (git-ignored), so a user's run never overwrites the
committed results; ``--preset full`` writes to ``figures/`` (committed). ``--only ode`` selects every experiment whose name starts
with "ode". The ODE experiments run on the host whatever ``--backend`` says
(their problems are small); the backend is recorded in the JSON.

``--data-dir DIR`` (or ``$DLRT_REF_DATA_DIR``) points the training experiments
at a folder with MNIST (its four IDX files, or a ``mnist/`` subfolder) and/or
Fashion-MNIST (a ``fashion-mnist/`` subfolder); every file is verified by
checksum. Without it MNIST comes from the copy shipped with the package.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from dlrt_ref.backend import available_backends
from dlrt_ref.data import data_dir, set_data_dir
from dlrt_ref.errors import CommandError, UsageError
from dlrt_ref.experiments import EXPERIMENTS, PRESETS, load, select
from dlrt_ref.experiments.plotting import jsonable
from dlrt_ref.threads import describe_threads

DEFAULT_OUT = {"full": Path("figures"), "quick": Path("figures/quick")}


def add_arguments(p) -> None:
    p.add_argument("--preset", choices=PRESETS, default="quick",
                   help="quick (default): small versions, into figures/quick/; full: the committed figures, into figures/")
    p.add_argument("--only", nargs="+", metavar="NAME", default=None,
                   help="run only these experiments (a prefix selects all that start with it, e.g. 'ode')")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy", help="array backend")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default figures/ or figures/quick/)")
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="folder with MNIST (IDX files or mnist/) and/or fashion-mnist/; default $DLRT_REF_DATA_DIR, "
                        "else the shipped MNIST (Fashion-MNIST: /usr/share/datasets/fashion-mnist or the cache)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--quiet", action="store_true", help="no start line on stderr")


def run(args) -> int:
    if args.list:
        for name, (_, desc) in EXPERIMENTS.items():
            sys.stdout.write(f"{name:28s} {desc}\n")
        return 0
    try:
        names = select(args.only)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    if args.backend == "cupy":
        if "cupy" not in available_backends():
            raise UsageError("backend 'cupy' is not available on this machine")
    out = args.out if args.out is not None else DEFAULT_OUT[args.preset]
    for folder in (out, out / "data"):
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--out: {folder} is a file; give a folder")
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UsageError(f"--data-dir {args.data_dir} is not a folder")
    try:
        (out / "data").mkdir(parents=True, exist_ok=True)
        probe = out / "data" / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CommandError(f"--out {out} is not writable: {exc.strerror or exc}") from None
    set_data_dir(args.data_dir)
    if not args.quiet:
        sys.stderr.write(f"figures: {args.preset} preset, {len(names)} experiment(s) ({', '.join(names)}); data "
                         f"{data_dir() or 'shipped MNIST'}; {describe_threads()}; out {out}\n")
        sys.stderr.flush()
    try:
        _run_all(names, args, out)
    finally:
        set_data_dir(None)
    return 0


def _run_all(names, args, out) -> None:
    for name in names:
        mod = load(name)
        t0 = time.perf_counter()
        data = jsonable(mod.run(args.preset, args.backend))
        seconds = time.perf_counter() - t0
        record = {"name": name, "preset": args.preset, "backend": args.backend, "seconds": seconds,
                  "command": f"python -m dlrt_ref figures --preset {args.preset} --only {name}", "data": data}
        (out / "data" / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
        paths = mod.plot(data, out)
        sys.stdout.write(f"{name}: {seconds:.1f} s -> {', '.join(str(p) for p in paths)}\n")
