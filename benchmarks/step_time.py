#!/usr/bin/env python
"""Step time and peak memory of DLRT against rank, dense and UVᵀ as baselines.

Measures, for each method and rank, the median wall time of one optimiser step
(after warm-up), split into

* **ortho**: time inside :func:`dlrt_ref.orthonormal.orthonormalise` and
  :func:`~dlrt_ref.orthonormal.orthonormalise_after` (Householder QR or
  CholeskyQR2 with its Gram-Schmidt projections, including any Householder
  fallback);
* **trunc**: time inside :func:`dlrt_ref.integrators.truncate_core` — the SVD
  of the augmented core (:func:`dlrt_ref.truncation.truncate`, reported on its
  own as ``trunc_svd``) plus the two basis products Û P and V̂ Q;
* **gemm+rest** = total − ortho − trunc: the forward/backward passes, the
  factor products F V, Fᵀ U, Uᵀ F V, M̂ = Ûᵀ U0, the optimiser arithmetic,
  concatenations and Python overhead.

The split is obtained by wrapping those functions with timers *inside this
process only* (the library is not changed). Ratios are to the dense step
measured in the same run. Peak memory is the tracemalloc peak of one extra,
untimed step, above the traced memory just before it.

Threads: ``--threads N`` must take effect before NumPy loads its BLAS, so the
script sets ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS``
and re-executes itself when they differ. (Setting them after ``import numpy``
has no effect on OpenBLAS.) When :func:`main` is called from an importer that
has already loaded NumPy, a mismatching ``--threads`` is an error.

Backends: ``--backend cupy`` builds the networks on the GPU and synchronises the
device around every timed step (and, for the split, around every timed library
call — in a separate, instrumented pass so that the totals carry no extra
synchronisations). ``--layer-ranks`` fixes the rank of every low-rank layer
(e.g. 152,93,37 on the thesis net), ``--solver`` the truncation's solver
(``auto``/``svd``/``gram``, :func:`dlrt_ref.truncation.truncate`), and the truncation
micro-benchmark times both solvers on 2r×2r cores (on CuPy also a host SVD).

Run ``python benchmarks/step_time.py --help``; see ``benchmarks/README.md``.
"""
from __future__ import annotations

import os
import sys

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _threads_from_argv(argv):
    """The value of ``--threads`` in argv (str) or None, parsed without argparse (NumPy not loaded yet)."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return None


def _ensure_threads(argv, reexec: bool) -> None:
    """Put ``--threads`` into the BLAS environment variables, re-executing if needed."""
    n = _threads_from_argv(argv)
    if n is None:
        return
    if not n.isdigit() or int(n) < 1:
        sys.exit(f"step_time.py: --threads must be a positive integer, got {n!r}")
    if all(os.environ.get(v) == n for v in THREAD_VARS):
        return
    if "numpy" in sys.modules or not reexec:
        sys.exit(f"step_time.py: --threads {n} must be set before NumPy is imported; "
                 f"export {' '.join(v + '=' + n for v in THREAD_VARS)} first, or run the script directly")
    for v in THREAD_VARS:
        os.environ[v] = n
    os.execv(sys.executable, [sys.executable, os.path.abspath(__file__)] + list(argv))


if __name__ == "__main__":
    _ensure_threads(sys.argv[1:], reexec=True)

# NumPy (and the library) only after the thread variables are settled.
import argparse  # noqa: E402
import cProfile  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import numpy as np  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import dlrt_ref.integrators as integrators  # noqa: E402
import dlrt_ref.orthonormal as orthonormal  # noqa: E402
import dlrt_ref.truncation as truncation  # noqa: E402
from dlrt_ref.backend import get_backend, to_numpy  # noqa: E402
from dlrt_ref.nn import mlp  # noqa: E402
from dlrt_ref.threads import load_average  # noqa: E402
from dlrt_ref.train.baselines import UVTrainer, dense_trainer  # noqa: E402
from dlrt_ref.train.dlrt import DLRT  # noqa: E402
from dlrt_ref.train.optim import SGD  # noqa: E402

NETWORKS = {
    # Schotthöfer et al. 2022, timing experiment: 784 -> 5120 x4 -> 10, batch 500
    "paper": dict(widths=[784, 5120, 5120, 5120, 5120, 10], batch=500),
    # Zangrando 2022: 784-500-300-100-10, batch 256, classifier dense
    "thesis": dict(widths=[784, 500, 300, 100, 10], batch=256),
}
QUICK = {
    "paper": dict(widths=[784, 96, 96, 96, 96, 10], batch=32),
    "thesis": dict(widths=[784, 50, 30, 20, 10], batch=16),
}
METHODS = ("dense", "ra-bug", "bug", "ksl", "parallel", "uv")
ORTHOS = ("householder", "cholqr2")


# --------------------------------------------------------------------------- #
# Timers wrapped around the library functions (this process only)
# --------------------------------------------------------------------------- #
class Timers:
    """Accumulated seconds and call counts of the wrapped library functions."""

    def __init__(self, sync=None):
        self.sync = sync or (lambda: None)
        self.reset()

    def reset(self):
        self.seconds = {"ortho": 0.0, "trunc": 0.0, "trunc_svd": 0.0}
        self.calls = {"ortho": 0, "trunc": 0, "trunc_svd": 0, "householder": 0, "trunc_gram": 0}
        self.active = set()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_now = CLOCKS["wall"]  # set by run() from --clock


def _timed(fn, timers: Timers, key: str):
    """Time ``fn`` into ``timers.seconds[key]``; a call nested in another timed call of the same key counts once.

    ``timers.sync`` (the device synchronisation, on CuPy) is called before and after the call.
    """

    def wrapper(*args, **kwargs):
        if key in timers.active:
            return fn(*args, **kwargs)
        timers.active.add(key)
        timers.sync()
        t0 = _now()
        try:
            return fn(*args, **kwargs)
        finally:
            timers.sync()
            timers.seconds[key] += _now() - t0
            timers.calls[key] += 1
            timers.active.discard(key)

    wrapper.__wrapped__ = fn
    return wrapper


def _counted(fn, timers: Timers, key: str):
    def wrapper(*args, **kwargs):
        timers.calls[key] += 1
        return fn(*args, **kwargs)

    wrapper.__wrapped__ = fn
    return wrapper


@contextmanager
def instrumented(timers: Timers):
    """Wrap orthonormalise(_after), truncate and truncate_core (module-level names) with timers; restore afterwards.

    ``integrators`` imported ``orthonormalise(_after)`` and ``truncate`` by name, so both
    its references and those of the defining modules (``orthonormal``, ``truncation``) are
    replaced (the re-exports in ``dlrt_ref.lowrank`` are not: the step does not look them up
    there). ``orthonormal._householder`` is counted (not timed) to see how often CholeskyQR2
    falls back.
    """
    saved = {
        (orthonormal, "orthonormalise"): orthonormal.orthonormalise,
        (integrators, "orthonormalise"): integrators.orthonormalise,
        (orthonormal, "orthonormalise_after"): orthonormal.orthonormalise_after,
        (integrators, "orthonormalise_after"): integrators.orthonormalise_after,
        (truncation, "truncate"): truncation.truncate,
        (integrators, "truncate"): integrators.truncate,
        (integrators, "truncate_core"): integrators.truncate_core,
        (orthonormal, "_householder"): orthonormal._householder,
    }
    ortho = _timed(orthonormal.orthonormalise, timers, "ortho")

    def truncate_counted(*args, **kwargs):  # counts the calls that took the Gram path
        res = saved[(truncation, "truncate")](*args, **kwargs)
        timers.calls["trunc_gram"] += getattr(res, "solver", "svd") == "gram"
        return res

    trunc_svd = _timed(truncate_counted, timers, "trunc_svd")
    householder = _counted(orthonormal._householder, timers, "householder")
    try:
        orthonormal.orthonormalise = integrators.orthonormalise = ortho
        orthonormal.orthonormalise_after = integrators.orthonormalise_after = _timed(
            saved[(orthonormal, "orthonormalise_after")], timers, "ortho")
        truncation.truncate = integrators.truncate = trunc_svd
        integrators.truncate_core = _timed(saved[(integrators, "truncate_core")], timers, "trunc")
        orthonormal._householder = householder
        # the dispatch table holds the functions themselves; route it through the counter
        orthonormal.ORTHONORMALISERS["householder"] = householder
        yield timers
    finally:
        for (mod, name), fn in saved.items():
            setattr(mod, name, fn)
        orthonormal.ORTHONORMALISERS["householder"] = saved[(orthonormal, "_householder")]


# --------------------------------------------------------------------------- #
# Machine facts
# --------------------------------------------------------------------------- #
def blas_summary() -> dict:
    """BLAS/LAPACK name, version and configuration from ``np.show_config``."""
    try:
        cfg = np.show_config(mode="dicts")
        deps = cfg.get("Build Dependencies", {})
        return {k: {f: deps.get(k, {}).get(f) for f in ("name", "version", "openblas configuration")}
                for k in ("blas", "lapack")}
    except Exception as e:  # pragma: no cover - older NumPy
        buf = io.StringIO()
        return {"error": repr(e), "text": buf.getvalue()}


def load() -> list:
    return load_average(2)


def machine_facts(threads) -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_summary(),
        "threads_flag": threads,
        "thread_env": {v: os.environ.get(v) for v in THREAD_VARS},
    }


def device_name(be) -> str:
    """The GPU's name (CuPy), e.g. "NVIDIA H200"."""
    try:
        props = be.xp.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception as e:  # pragma: no cover - only on odd CuPy builds
        return f"unknown ({e!r})"


def check_load(wait_quiet: float, per_core: float = 0.5) -> list:
    """Warn when the 1-min load exceeds ``per_core`` per core; optionally wait up to ``wait_quiet`` s for quiet."""
    ncpu = os.cpu_count() or 1
    deadline = time.time() + wait_quiet
    while True:
        la = load()
        if la[0] <= per_core * ncpu:
            return la
        if time.time() >= deadline:
            break
        time.sleep(min(15.0, max(0.0, deadline - time.time())))
    print(f"WARNING: load average {la} exceeds {per_core} per core on {ncpu} cores. BLAS threads spin-wait on "
          f"shared cores: one busy process can slow a step 10-100x. Timings below are unreliable.", file=sys.stderr)
    return la


# --------------------------------------------------------------------------- #
# Networks and trainers
# --------------------------------------------------------------------------- #
def layer_ranks(widths, r) -> list:
    """Rank per weight layer: min(r, ⌊min(m, n)/2⌋) (room to augment to 2r), classifier dense (None).

    ``r`` may be a list with one rank per low-rank layer (``--layer-ranks``), used as given.
    """
    pairs = list(zip(widths[:-1], widths[1:]))
    if isinstance(r, (list, tuple)):
        if len(r) != len(pairs) - 1:
            raise SystemExit(f"step_time.py: --layer-ranks needs {len(pairs) - 1} ranks for widths {widths}, got {r}")
        return [int(x) for x in r] + [None]
    return [max(1, min(r, min(m, n) // 2)) for m, n in pairs[:-1]] + [None]


def make_trainer(method, widths, r, dtype, ortho, lr, seed=0, backend="numpy", solver="auto"):
    """A fresh network and its trainer. ra-bug/parallel at constant rank: per layer τ = 0, r_min = r_max = r_l."""
    ranks = None if method == "dense" else layer_ranks(widths, r)
    net = mlp(widths, ranks=ranks, dtype=dtype, seed=seed, backend=backend)
    opt = SGD(lr)
    if method == "dense":
        return dense_trainer(net, opt)
    if method == "uv":
        return UVTrainer(net, opt)
    tr = DLRT(net, opt, method=method, tau=0.0, r_min=1, ortho=ortho)
    if method in integrators.ADAPTIVE:
        # the same truncation code path as a τ-run, with r_min = r_max = the layer's rank: the rank stays fixed
        tr._rule = lambda layer, *_: dict(tau=0.0, r_min=layer.rank, r_max=layer.rank, compat_2022=False, solver=solver)
    return tr


def batch(widths, B, dtype, seed=0, be=None):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, widths[0])).astype(dtype)
    y = rng.integers(0, widths[-1], size=B)
    if be is not None:
        return be.asarray(x), be.asarray(y)
    return x, y


def measure(trainer, x, y, warmup, repeats, timers, profile_top=0, device=False) -> dict:
    """Median step time and its split; tracemalloc peak of one extra step (host backends only).

    On a device (``device=True``, ``timers.sync`` synchronises it) the totals come from plain
    steps between two synchronisations, and the split from a second, instrumented set of
    steps (whose per-call synchronisations would otherwise inflate the totals).
    """
    sync = timers.sync
    for _ in range(warmup):
        trainer.step(x, y)
    totals, orthos, truncs, svds, passes = [], [], [], [], []
    if device:
        for _ in range(repeats):
            sync()
            t0 = _now()
            info = trainer.step(x, y)
            sync()
            totals.append(_now() - t0)
            passes.append(info.passes)
    with instrumented(timers):
        for _ in range(repeats):
            gc.collect()
            timers.reset()
            sync()
            t0 = _now()
            info = trainer.step(x, y)
            sync()
            if not device:
                totals.append(_now() - t0)
                passes.append(info.passes)
            orthos.append(timers.seconds["ortho"])
            truncs.append(timers.seconds["trunc"])
            svds.append(timers.seconds["trunc_svd"])
        calls = dict(timers.calls)
    peak = -1
    if not device:  # memory: one untimed step under tracemalloc (NumPy buffers only)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        trainer.step(x, y)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    prof = None
    if profile_top:
        pr = cProfile.Profile()
        pr.enable()
        trainer.step(x, y)
        pr.disable()
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(profile_top)
        prof = buf.getvalue()
    med = lambda v: 1e3 * statistics.median(v)
    total, ortho, trunc = med(totals), med(orthos), med(truncs)
    split_rest = [1e3 * (t - o - c) for t, o, c in zip(totals, orthos, truncs)]
    if device:  # the split comes from other steps than the totals: rest = median total − median parts
        split_rest = [total - ortho - trunc]
    return {
        "ms_median": total,
        "ms_all": [1e3 * t for t in totals],
        "ortho_ms": ortho,
        "trunc_ms": trunc,
        "trunc_svd_ms": med(svds),
        "gemm_rest_ms": statistics.median(split_rest),
        "passes": passes[-1],
        "calls_last_step": calls,
        "peak_traced_bytes": int(peak),
        "ranks_after": trainer.ranks() if hasattr(trainer, "ranks") else None,
        "profile": prof,
    }


def param_bytes(net) -> int:
    total = 0
    for layer in net.layers:
        for a in list(getattr(layer, "params", {}).values()):
            total += a.nbytes
        if getattr(layer, "lowrank", False):
            total += layer.U.nbytes + layer.S.nbytes + layer.V.nbytes
    return int(total)


# --------------------------------------------------------------------------- #
# Micro-benchmark of orthonormalise
# --------------------------------------------------------------------------- #
def ortho_micro(m, ks, dtype, repeats, B) -> list:
    """orthonormalise on m×k (random, and an augmented [K1 | U0] as in ra-bug), both methods; a GEMM for scale."""
    rng = np.random.default_rng(1)
    out = []
    timers = Timers()
    for k in ks:
        A = rng.standard_normal((m, k)).astype(dtype)
        # as in ra-bug's augment with r = k/2: K1 = U0 S0 + h·(small correction), nearly dependent on U0
        r = max(1, k // 2)
        U0 = np.linalg.qr(rng.standard_normal((m, r)))[0].astype(dtype)
        K1 = (U0 @ np.diag(np.linspace(2.0, 0.5, r)) + 1e-3 * rng.standard_normal((m, r))).astype(dtype)
        aug = np.concatenate([K1, U0], axis=1)  # (m, 2r)
        X = rng.standard_normal((B, m)).astype(dtype)
        t = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            _ = X @ A  # (B, m) @ (m, k) -> (B, k), a GEMM of the forward pass
            t.append(time.perf_counter() - t0)
        gemm = 1e3 * statistics.median(t)
        for method in ORTHOS:
            for name, M in (("random", A), ("augmented [K1|U0]", aug)):
                with instrumented(timers):
                    orthonormal.orthonormalise(M, method)  # warm-up
                    t, hh = [], 0
                    for _ in range(repeats):
                        timers.reset()
                        t0 = time.perf_counter()
                        Q = orthonormal.orthonormalise(M, method)
                        t.append(time.perf_counter() - t0)
                        hh = timers.calls["householder"]
                err = float(np.linalg.norm(Q.T.astype(np.float64) @ Q - np.eye(Q.shape[1])))
                out.append({"m": m, "k": M.shape[1], "method": method, "input": name, "dtype": str(np.dtype(dtype)),
                            "ms_median": 1e3 * statistics.median(t), "householder_calls": hh,
                            "fell_back": bool(method == "cholqr2" and hh > 0), "orth_err_fro": err,
                            "gemm_X_at_A_ms": gemm, "gemm_shape": f"({B},{m})@({m},{k})"})
    return out


# --------------------------------------------------------------------------- #
# Micro-benchmark of the truncation's solvers
# --------------------------------------------------------------------------- #
def truncation_micro(be, ks, dtype, repeats) -> list:
    """``truncate(S, rank=k/2)`` of a k×k ra-bug-like core (diag(σ) block + update) by each solver.

    On CuPy also "host-svd": the core copied to the host, NumPy's SVD, the kept factors copied back.
    """
    rng = np.random.default_rng(2)
    out = []
    for k in ks:
        r = k // 2
        S = np.zeros((k, k))
        S[:r, :r] = np.diag(np.sort(np.abs(rng.standard_normal(r)))[::-1] + 0.1)
        S = (S + 0.05 * rng.standard_normal((k, k)) / np.sqrt(k)).astype(dtype)
        Sd = be.asarray(S)

        def host_svd():
            P, s, Qh = np.linalg.svd(to_numpy(Sd))
            return be.asarray(P[:, :r]), be.asarray(s[:r]), be.asarray(Qh[:r].T)

        runs = {"svd": lambda: truncation.truncate(Sd, rank=r, solver="svd"),
                "gram": lambda: truncation.truncate(Sd, rank=r, solver="gram")}
        if be.name != "numpy":
            runs["host-svd"] = host_svd
        for name, f in runs.items():
            f()  # warm-up (kernel compilation on a GPU)
            t = []
            for _ in range(repeats):
                be.synchronize()
                t0 = time.perf_counter()
                res = f()
                be.synchronize()
                t.append(time.perf_counter() - t0)
            out.append({"k": k, "solver": name, "dtype": str(np.dtype(dtype)), "backend": be.name,
                        "ms_median": 1e3 * statistics.median(t),
                        "path": getattr(res, "solver", name)})
    return out


# --------------------------------------------------------------------------- #
# Driver
# --------------------------------------------------------------------------- #
def _csv(text, cast=str):
    return [cast(t) for t in str(text).split(",") if t.strip()]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", choices=("paper", "thesis", "both"), default="both")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="array backend; cupy synchronises the device around every timing")
    p.add_argument("--layer-ranks", default=None,
                   help="comma-separated rank of every low-rank layer (e.g. 152,93,37 on the thesis net); replaces --ranks")
    p.add_argument("--solver", default="auto", help="truncation solver(s) for ra-bug/parallel: auto, svd, gram (comma-separated)")
    p.add_argument("--trunc-ks", default="64,160,320,640", help="core sizes k of the truncation micro-benchmark ('' to skip)")
    p.add_argument("--ranks", default="5,10,20,40,80,160,320", help="comma-separated ranks (capped per layer at ⌊min(m,n)/2⌋)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--ortho", default="householder", help="householder, cholqr2 or both comma-separated (DLRT methods)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--lr", type=float, default=1e-3, help="SGD step (timing does not depend on it)")
    p.add_argument("--threads", type=int, default=None, help="BLAS/OpenMP threads; set via env + re-exec before NumPy loads")
    p.add_argument("--micro-ranks", default="40,80,160,320", help="k of the orthonormalise micro-benchmark on 5120×k")
    p.add_argument("--no-micro", action="store_true", help="skip the orthonormalise micro-benchmark")
    p.add_argument("--wait-quiet", type=float, default=0.0, help="wait up to this many seconds for load ≤ 0.5/core")
    p.add_argument("--profile", type=int, default=0, help="print the top N cProfile entries (tottime) per configuration")
    p.add_argument("--quick", action="store_true", help="tiny networks, ranks 2,4, 1 repeat: a smoke test")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="step timings and their split by wall time (default) or by the process's CPU time "
                        "(time.process_time; NumPy, one thread: much less affected by other jobs on a shared machine)")
    p.add_argument("--out", default=os.path.join(_ROOT, "benchmarks", "results", "step_time.json"))
    args = p.parse_args(argv)
    args.ranks = _csv(args.ranks, int)
    args.methods = _csv(args.methods)
    args.ortho = _csv(args.ortho)
    args.solver = _csv(args.solver)
    args.trunc_ks = _csv(args.trunc_ks, int)
    if args.layer_ranks:
        args.ranks = [_csv(args.layer_ranks, int)]
    bad = [m for m in args.methods if m not in METHODS] + [o for o in args.ortho if o not in ORTHOS]
    bad += [v for v in args.solver if v not in truncation.TRUNCATION_SOLVERS]
    flat = [x for r in args.ranks for x in (r if isinstance(r, list) else [r])]
    if bad or not args.ranks or min(flat) < 1 or args.repeats < 1 or args.warmup < 0:
        p.error(f"bad --methods/--ortho/--solver/--ranks/--repeats/--warmup: {bad or ''}")
    if args.quick:
        if not args.layer_ranks:
            args.ranks = [r for r in args.ranks if r <= 4] or [2, 4]
        args.repeats, args.warmup = min(args.repeats, 1), min(args.warmup, 1)
        args.micro_ranks = "4,8"
        args.trunc_ks = [k for k in args.trunc_ks if k <= 16] or [8, 16]
    args.micro_ranks = _csv(args.micro_ranks, int)
    return args


def run(args) -> dict:
    global _now
    dtype = np.dtype(args.dtype)
    be = get_backend(args.backend)
    device = be.name != "numpy"
    if args.clock == "cpu" and device:
        raise SystemExit("step_time.py: --clock cpu measures the host process; use the wall clock with --backend cupy")
    _now = CLOCKS[args.clock]
    networks = ["paper", "thesis"] if args.network == "both" else [args.network]
    load_start = check_load(args.wait_quiet)
    doc = {
        "benchmark": "step_time",
        "machine": machine_facts(args.threads),
        "backend": be.name,
        "config": {"network": networks, "ranks": args.ranks, "methods": args.methods, "ortho": args.ortho,
                   "solver": args.solver, "backend": be.name,
                   "repeats": args.repeats, "warmup": args.warmup, "dtype": str(dtype), "lr": args.lr,
                   "quick": args.quick, "clock": args.clock, "constant_rank": "ra-bug/parallel: tau=0, r_min=r_max=layer rank",
                   "timer_split": "ortho = orthonormalise; trunc = truncate_core (SVD + basis products); "
                                  "gemm_rest = total - ortho - trunc"},
        "load_before": load_start,
        "ortho_micro": [],
        "truncation_micro": [],
        "networks": {},
    }
    if device:
        doc["machine"]["device"] = device_name(be)
    if not args.no_micro and not device:
        m = 64 if args.quick else 5120
        doc["ortho_micro"] = ortho_micro(m, args.micro_ranks, dtype, max(3, args.repeats), 8 if args.quick else 500)
    if args.trunc_ks:
        doc["truncation_micro"] = truncation_micro(be, args.trunc_ks, dtype, max(3, args.repeats))
    timers = Timers(be.synchronize if device else None)
    for name in networks:
        spec = (QUICK if args.quick else NETWORKS)[name]
        widths, B = spec["widths"], spec["batch"]
        x, y = batch(widths, B, dtype, be=be)
        rows = []
        dense_ms = None
        configs = []
        if "dense" in args.methods:
            configs.append(("dense", None, None, None))
        for r in args.ranks:
            for method in args.methods:
                if method == "dense":
                    continue
                for ortho in (args.ortho if method in ("ra-bug", "bug", "ksl", "parallel") else [None]):
                    for solver in (args.solver if method in integrators.ADAPTIVE else [None]):
                        configs.append((method, r, ortho, solver))
        for method, r, ortho, solver in configs:
            la0 = load()
            trainer = make_trainer(method, widths, r, dtype, ortho or "householder", args.lr, backend=be.name,
                                   solver=solver or "auto")
            res = measure(trainer, x, y, args.warmup, args.repeats, timers, args.profile, device=device)
            res.update(method=method, rank=r, ortho=ortho, solver=solver,
                       layer_ranks=None if r is None else layer_ranks(widths, r),
                       param_bytes=param_bytes(trainer.net), load_before=la0, load_after=load())
            if method == "dense":
                dense_ms = res["ms_median"]
            res["ratio_to_dense"] = None if dense_ms is None else res["ms_median"] / dense_ms
            if res["profile"]:
                print(f"--- profile {name} {method} r={r} {ortho or ''}\n{res['profile']}", file=sys.stderr)
            rows.append(res)
            print(_row_text(name, res), flush=True)
            del trainer
            gc.collect()
        doc["networks"][name] = {"widths": widths, "batch": B, "dense_ms": dense_ms, "results": rows}
    doc["load_after"] = load()
    return doc


HEADER = (f"{'net':6} {'method':9} {'ortho':11} {'solver':6} {'rank':>11} {'ms/step':>9} {'x dense':>8} {'ortho':>8} "
          f"{'trunc':>7} {'gemm+':>9} {'pass':>4} {'peak MB':>8} {'load':>5}")


def _row_text(net, r) -> str:
    ratio = "" if r["ratio_to_dense"] is None else f"{r['ratio_to_dense']:.3f}"
    rank = "-" if r["rank"] is None else (",".join(map(str, r["rank"])) if isinstance(r["rank"], list) else str(r["rank"]))
    peak = "-" if r["peak_traced_bytes"] < 0 else f"{r['peak_traced_bytes'] / 2**20:.1f}"
    return (f"{net:6} {r['method']:9} {(r['ortho'] or '-'):11} {(r.get('solver') or '-'):6} {rank:>11} "
            f"{r['ms_median']:9.2f} {ratio:>8} {r['ortho_ms']:8.2f} {r['trunc_ms']:7.2f} {r['gemm_rest_ms']:9.2f} "
            f"{r['passes']:4d} {peak:>8} {r['load_before'][0]:5.2f}")


def _print_table(rows, title, header, line):
    """A title, a header and ``line(row)`` for each row; nothing when there are no rows."""
    if rows:
        print(title(rows[0]))
        print(header)
        for r in rows:
            print(line(r))


def print_micro(rows):
    _print_table(
        rows, lambda r0: f"\northonormalise micro-benchmark (m = {r0['m']}, {r0['dtype']}); GEMM = X({r0['gemm_shape']})",
        f"{'k':>4} {'method':11} {'input':18} {'ms':>8} {'fallback':>8} {'|QtQ-I|':>9} {'GEMM ms':>8}",
        lambda r: (f"{r['k']:4d} {r['method']:11} {r['input']:18} {r['ms_median']:8.2f} {str(r['fell_back']):>8} "
                   f"{r['orth_err_fro']:9.1e} {r['gemm_X_at_A_ms']:8.2f}"))


def print_trunc_micro(rows):
    _print_table(
        rows, lambda r0: f"\ntruncate(S, rank=k/2) of a k×k core ({r0['dtype']}, {r0['backend']}), median ms",
        f"{'k':>5} {'solver':9} {'ms':>9} {'path':>5}",
        lambda r: f"{r['k']:5d} {r['solver']:9} {r['ms_median']:9.2f} {r['path']:>5}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _ensure_threads(argv, reexec=False)
    args = parse_args(argv)
    print(HEADER, flush=True)
    doc = run(args)
    print_micro(doc["ortho_micro"])
    print_trunc_micro(doc["truncation_micro"])
    print(f"\nload average before {doc['load_before']}, after {doc['load_after']}; "
          f"cpus {doc['machine']['cpu_count']}; threads env {doc['machine']['thread_env']}")
    for row in (r for n in doc["networks"].values() for r in n["results"]):
        row.pop("profile", None)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, allow_nan=False)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
