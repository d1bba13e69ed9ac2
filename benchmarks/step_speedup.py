#!/usr/bin/env python
"""Step time of this checkout against another checkout (e.g. the commit before a change), in one run.

Both code versions run the same configuration in separate processes, interleaved
(base, new, base, new, ...) so that a change in machine load hits both alike; each
process builds the network, takes ``--warmup`` untimed steps and times ``--steps``
steps. Reported: the median over all timed steps of each side and the ratio
base/new (> 1: this checkout is faster), with the 1-min load before and after. The CPU time of
each step (``time.process_time``; one BLAS thread, so one core) is recorded too, with its own
medians and ratios: on a shared machine it is much less affected by time-sharing than the wall time.
``--base`` may be given several times: all checkouts then run interleaved in the
same run (base0, base1, ..., new, base0, ...) and the ratio is given against each.

Default configuration (issue 14's CPU target): the thesis net 784-500-300-100-10,
batch 256, float32, ra-bug at constant ranks [152, 93, 37] (τ = 0, r_min = r_max),
one BLAS thread, SGD.

    git worktree add /tmp/base <commit>
    .venv/bin/python benchmarks/step_speedup.py --base /tmp/base --lr 0.1,0.001 --ortho cholqr2,householder \\
        --out benchmarks/results/step_speedup_issue14.json
    git worktree remove /tmp/base
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, {root!r})
import dlrt_ref
from dlrt_ref.nn import mlp
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import SGD
assert dlrt_ref.__file__.startswith({root!r}), dlrt_ref.__file__
cfg = json.loads(sys.argv[1])
net = mlp(cfg["widths"], ranks=cfg["ranks"] + [None], dtype=np.float32, seed=0)
tr = DLRT(net, SGD(cfg["lr"]), method=cfg["method"], tau=0.0, r_min=1, ortho=cfg["ortho"])
tr._rule = lambda layer, *_: dict(tau=0.0, r_min=layer.rank, r_max=layer.rank, compat_2022=False)
rng = np.random.default_rng(0)
x = rng.standard_normal((cfg["batch"], cfg["widths"][0])).astype(np.float32)
y = rng.integers(0, cfg["widths"][-1], cfg["batch"])
for _ in range(cfg["warmup"]):
    tr.step(x, y)
t, c = [], []
for _ in range(cfg["steps"]):
    c0, t0 = time.process_time(), time.perf_counter()
    tr.step(x, y)
    t.append(time.perf_counter() - t0)
    c.append(time.process_time() - c0)
print(json.dumps({{"ms": [1e3 * v for v in t], "cpu_ms": [1e3 * v for v in c], "ranks": tr.ranks()}}))
"""


def run_side(root, cfg, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=os.path.abspath(root)), json.dumps(cfg)],
                         capture_output=True, text=True, env=env, timeout=600, cwd=root)
    if out.returncode != 0:
        raise SystemExit(f"step_speedup.py: the run in {root} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, action="append",
                   help="path of the other checkout (e.g. a git worktree of the old commit); give it again to compare "
                        "with several checkouts in the same interleaved run (speed-ups against each)")
    p.add_argument("--new", default=ROOT, help="path of the checkout to compare (default: this one)")
    p.add_argument("--widths", default="784,500,300,100,10")
    p.add_argument("--ranks", default="152,93,37")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--method", default="ra-bug")
    p.add_argument("--ortho", default="cholqr2,householder")
    p.add_argument("--lr", default="0.1", help="SGD step(s); with a small lr the augmentation finds few new directions")
    p.add_argument("--rounds", type=int, default=3, help="interleaved process pairs per configuration")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    commit = lambda path: subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],  # noqa: E731
                                         capture_output=True, text=True).stdout.strip()
    bases = [{"path": b, "commit": commit(b)} for b in a.base]
    new_commit = commit(a.new)
    dirty = subprocess.run(["git", "-C", a.new, "status", "--porcelain", "--untracked-files=no", "--", "dlrt_ref"],
                           capture_output=True, text=True).stdout.split("\n")
    dirty = [line.strip() for line in dirty if line.strip()]
    doc = {"benchmark": "step_speedup", "base": bases[0], "bases": bases,
           "new": {"path": a.new, "commit": new_commit, "uncommitted_library_changes": dirty}, "threads": a.threads,
           "cpu_count": os.cpu_count(), "results": []}
    sides = [(f"base{i}", b["path"]) for i, b in enumerate(bases)] + [("new", a.new)]
    t_start = time.time()
    for ortho in a.ortho.split(","):
        for lr in (float(v) for v in a.lr.split(",")):
            cfg = dict(widths=[int(v) for v in a.widths.split(",")], ranks=[int(v) for v in a.ranks.split(",")],
                       batch=a.batch, method=a.method, ortho=ortho, lr=lr, warmup=a.warmup, steps=a.steps)
            load0 = list(os.getloadavg())
            ms = {label: [] for label, _ in sides}
            cpu = {label: [] for label, _ in sides}
            ranks = {}
            for _ in range(a.rounds):
                for label, root in sides:  # interleaved: base0, base1, ..., new, base0, ...
                    res = run_side(root, cfg, a.threads)
                    ms[label] += res["ms"]
                    cpu[label] += res["cpu_ms"]
                    ranks[label] = res["ranks"]
            med = {label: statistics.median(v) for label, v in ms.items()}
            cmed = {label: statistics.median(v) for label, v in cpu.items()}
            row = dict(config=cfg, base_ms_median=med["base0"], new_ms_median=med["new"], base_ms_all=ms["base0"],
                       new_ms_all=ms["new"], ranks_after=ranks, load_before=load0, load_after=list(os.getloadavg()))
            row["speedup"] = med["base0"] / med["new"]
            row.update(new_cpu_ms_median=cmed["new"], new_cpu_ms_all=cpu["new"])
            row["per_base"] = [dict(commit=b["commit"], ms_median=med[f"base{i}"], ms_all=ms[f"base{i}"],
                                    speedup=med[f"base{i}"] / med["new"], cpu_ms_median=cmed[f"base{i}"],
                                    cpu_ms_all=cpu[f"base{i}"], cpu_speedup=cmed[f"base{i}"] / cmed["new"])
                               for i, b in enumerate(bases)]
            doc["results"].append(row)
            vs = "  ".join(f"{b['commit']} {pb['ms_median']:7.1f} ms ({pb['speedup']:.2f}x; cpu {pb['cpu_ms_median']:.1f} "
                           f"ms, {pb['cpu_speedup']:.2f}x)" for b, pb in zip(bases, row["per_base"]))
            print(f"{a.method} ortho={ortho:11} lr={lr:<6g} new {row['new_ms_median']:7.1f} ms (cpu "
                  f"{row['new_cpu_ms_median']:.1f} ms)  vs {vs}  load {load0[0]:.2f}->{row['load_after'][0]:.2f}", flush=True)
    doc["wall_s"] = time.time() - t_start
    if a.out:
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
