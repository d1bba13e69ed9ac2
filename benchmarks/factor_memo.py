#!/usr/bin/env python
"""ra-bug step time with and without the identity-keyed memo of ``FactorGradOperator`` (issue 13).

One BLAS thread; two trainers built alike (same seed, same batch) step in the same process,
interleaved (the order alternates every round), after 3 warm-up rounds; medians and quartiles of
the wall time per step. Without the memo every X V and Δ U is recomputed; the memo returns the
pass's own products instead, so the factors must come out bit-identical (``same_factors``).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/factor_memo.py [ROUNDS]`` (default 30); prints one
JSON line (committed: ``benchmarks/results/factor_memo.json``).
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before NumPy loads its BLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from dlrt_ref.nn import mlp  # noqa: E402
from dlrt_ref.nn.lowrank_layers import FactorGradOperator  # noqa: E402
from dlrt_ref.threads import load_average  # noqa: E402
from dlrt_ref.train.dlrt import DLRT  # noqa: E402
from dlrt_ref.train.optim import make_optimizer  # noqa: E402

WITH_MEMO = (FactorGradOperator._XV, FactorGradOperator._DU)


def _xv_recomputed(self, V):
    return self.X @ V  # (B, n) @ (n, r) -> (B, r)


def _du_recomputed(self, U):
    return self.D @ U.conj()  # (B, m) @ (m, r) -> (B, r)


def build():
    """784-500×4-10 MLP, four low-rank layers held at rank 100 (τ = 0, r_min = r_max = 100), ra-bug, Adam."""
    net = mlp([784, 500, 500, 500, 500, 10], ranks=[100, 100, 100, 100, None], seed=0)
    return DLRT(net, make_optimizer("adam", 1e-3), method="ra-bug", tau=0.0, r_min=100, r_max=100)


def main(rounds: int = 30) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 784)).astype(np.float32)  # (B, 784)
    y = rng.integers(0, 10, 256)
    trainers = {"memo": build(), "no_memo": build()}
    times = {k: [] for k in trainers}
    load_before = load_average()
    try:
        for i in range(rounds + 3):
            for k in ("memo", "no_memo") if i % 2 == 0 else ("no_memo", "memo"):
                memo = WITH_MEMO if k == "memo" else (_xv_recomputed, _du_recomputed)
                FactorGradOperator._XV, FactorGradOperator._DU = memo
                t0 = time.perf_counter()
                trainers[k].step(x, y)
                if i >= 3:
                    times[k].append(1e3 * (time.perf_counter() - t0))
    finally:
        FactorGradOperator._XV, FactorGradOperator._DU = WITH_MEMO
    same = all(np.array_equal(a.U, b.U) and np.array_equal(a.S, b.S) and np.array_equal(a.V, b.V)
               for a, b in zip(trainers["memo"].layers, trainers["no_memo"].layers))
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"median_ms": med, "q25_q75_ms": {k: [float(np.percentile(v, q)) for q in (25, 75)] for k, v in times.items()},
            "ratio_no_memo_over_memo": med["no_memo"] / med["memo"], "same_factors": bool(same), "rounds": rounds,
            "load_before": load_before, "load_after": load_average(), "ranks": trainers["memo"].ranks()}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)))
