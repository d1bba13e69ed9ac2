#!/usr/bin/env python
"""What BLAS threads do to a DLRT step: small LAPACK calls and whole steps at 1 and N threads, in one run.

The thread count of OpenBLAS is fixed when NumPy loads, so every count runs in its own
process; the processes alternate (1, 2, 1, 2, ...) so that a change in machine load hits
all counts alike. Each process times (median wall time of ``--repeats``):

* the small calls of a step's orthonormalisation at the thesis net's sizes (500×80, float32):
  a triangular solve (k×k) \\ (k×m) as CholeskyQR applies it, a Householder QR, a Cholesky
  factorisation and a symmetric eigen-decomposition of the k×k float64 Gram matrix, and
  one product (256×784)·(784×152) as a pass runs it;
* one training step of the thesis net 784-500-300-100-10 (batch 256, float32, SGD 0.1) with
  ra-bug (cholqr2, constant rank 80 per low-rank layer) and with the dense network.

The default thread count of the commands (``dlrt_ref.threads.default_threads``) is chosen
from this measurement; ``benchmarks/README.md`` ("BLAS threads") has the numbers.

    .venv/bin/python benchmarks/blas_threads.py --threads 1,2 --out benchmarks/results/blas_threads.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dlrt_ref.threads import THREAD_VARS, load_average  # noqa: E402  (imports no NumPy)

CHILD = r"""
import json, sys, time
import numpy as np, scipy.linalg as sl
sys.path.insert(0, {root!r})
from dlrt_ref.nn import mlp
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.baselines import dense_trainer
from dlrt_ref.train.optim import SGD
repeats = {repeats}
rng = np.random.default_rng(0)

def median_ms(f):
    f()
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter(); f(); t.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(t))

m, k = 500, 80
W = rng.standard_normal((m, k)).astype(np.float32)
G = (W.T.astype(np.float64) @ W.astype(np.float64))  # (k, k) float64 Gram matrix
L32 = np.linalg.cholesky(G).astype(np.float32)
X = rng.standard_normal((256, 784)).astype(np.float32)
V = rng.standard_normal((784, 152)).astype(np.float32)
out = {{"ops_ms": {{
    "trsm_80x500_f32": median_ms(lambda: sl.solve_triangular(L32, W.T, lower=True, check_finite=False)),  # (k,k) \ (k,m)
    "qr_500x80_f32": median_ms(lambda: np.linalg.qr(W)),
    "cholesky_80_f64": median_ms(lambda: np.linalg.cholesky(G)),
    "eigh_80_f64": median_ms(lambda: np.linalg.eigh(G)),
    "gemm_256x784x152_f32": median_ms(lambda: X @ V),  # (256, 784) @ (784, 152)
}}}}
x = rng.standard_normal((256, 784)).astype(np.float32)
y = rng.integers(0, 10, 256)
net = mlp([784, 500, 300, 100, 10], ranks=[80, 80, 80, None], dtype=np.float32, seed=0)
tr = DLRT(net, SGD(0.1), method="ra-bug", tau=0.0, r_min=1, ortho="cholqr2")
tr._rule = lambda layer, *_: dict(tau=0.0, r_min=layer.rank, r_max=layer.rank, compat_2022=False)
dense = dense_trainer(mlp([784, 500, 300, 100, 10], ranks=None, dtype=np.float32, seed=0), SGD(0.1))
for _ in range(2):
    tr.step(x, y); dense.step(x, y)
out["step_ms"] = {{"ra-bug": median_ms(lambda: tr.step(x, y)), "dense": median_ms(lambda: dense.step(x, y))}}
print(json.dumps(out))
"""


def run_child(threads: int, repeats: int) -> dict:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    p = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT, repeats=repeats)], env=env,
                       capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"blas_threads: the {threads}-thread process failed: {p.stderr.strip().splitlines()[-1]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    ap.add_argument("--rounds", type=int, default=3, help="processes per thread count, alternating (default 3)")
    ap.add_argument("--repeats", type=int, default=9, help="timed calls per measurement in a process (default 9)")
    ap.add_argument("--out", help="JSON path")
    a = ap.parse_args(argv)
    try:
        counts = [int(v) for v in a.threads.split(",") if v.strip()]
    except ValueError:
        ap.error(f"--threads: expected comma-separated integers, got {a.threads!r}")
    if not counts or min(counts) < 1 or a.rounds < 1 or a.repeats < 1:
        ap.error("--threads, --rounds and --repeats must be >= 1")
    load_before = load_average(2)
    runs = {n: [] for n in counts}
    for r in range(a.rounds):
        for n in counts:
            runs[n].append(run_child(n, a.repeats))
            print(f"round {r + 1}/{a.rounds} threads {n}: ra-bug step {runs[n][-1]['step_ms']['ra-bug']:.1f} ms, "
                  f"dense step {runs[n][-1]['step_ms']['dense']:.1f} ms", file=sys.stderr, flush=True)
    summary = {}
    for n, rs in runs.items():
        summary[str(n)] = {group: {key: statistics.median(r[group][key] for r in rs) for key in rs[0][group]}
                           for group in ("ops_ms", "step_ms")}
    result = {"benchmark": "blas_threads", "threads": counts, "rounds": a.rounds, "repeats": a.repeats,
              "median_of_round_medians_ms": summary, "runs": {str(n): rs for n, rs in runs.items()},
              "cpu_count": os.cpu_count(), "load_before": load_before, "load_after": load_average(2),
              "env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")}}
    for n in counts:
        s = summary[str(n)]
        print(f"threads {n}: " + ", ".join(f"{k} {v:.3f}" for k, v in {**s["ops_ms"], **s["step_ms"]}.items()) + " (ms)")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
