"""``python -m dlrt_ref ode``: integrate one matrix ODE problem with one low-rank integrator.

Example::

    python -m dlrt_ref ode --problem toy --integrator bug --rank 10 --steps 100 --json

prints one JSON object with the inputs and ``error`` (‖Y_n − A(T)‖_F against
the problem's reference), ``best_error`` (‖A(T) − T_r(A(T))‖_F, the
best rank-r approximation's error, r = --rank), ``ratio`` = error/best_error,
``rank`` (final), ``norm_drift`` (‖Y_n‖_F − ‖A(T)‖_F; for Schrödinger the exact
norm is ‖Y0‖_F, so this is the loss of a conserved quantity), ``seconds``
(wall time of the integration alone), and, where the problem has them,
``energy_drift`` and ``loss``. Non-finite results (the naive integrator can
overflow) are written as ``null`` with ``"diverged": true``.

The toy problem is given by its increments A(t0+h) − A(t0) (Euler sub-steps
then solve the sub-flows exactly; see :func:`dlrt_ref.ode.problems.toy`).
"""
from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

from dlrt_ref.errors import UsageError
from dlrt_ref.integrators import ADAPTIVE, INTEGRATORS, integrate
from dlrt_ref.ode.problems import PROBLEMS, make_problem
from dlrt_ref.substeps import SUBSTEPS

# problem sizes used by the command (m, n); the constructors' defaults
SHAPES = {"toy": (100, 100), "sylvester": (100, 100), "schrodinger": (100, 100), "lsq": (60, 40)}
# default sub-step: explicit Euler is unstable for the oscillatory Schrödinger flow (|1 − ihλ| > 1)
DEFAULT_SUBSTEP = {"toy": "euler", "sylvester": "euler", "schrodinger": "rk4", "lsq": "euler"}


def add_arguments(p) -> None:
    p.add_argument("--problem", required=True, choices=sorted(PROBLEMS), help="matrix ODE problem")
    p.add_argument("--integrator", required=True, choices=list(INTEGRATORS), help="low-rank integrator")
    p.add_argument("--rank", required=True, type=int, metavar="R", help="rank of Y0 (and of the fixed-rank methods)")
    p.add_argument("--tol", type=float, default=None, metavar="THETA",
                   help="absolute truncation tolerance ϑ of ra-bug/parallel/midpoint-bug (default: keep the rank fixed)")
    p.add_argument("--r-max", type=int, default=None, metavar="R", help="rank cap of the rank-adaptive integrators (with --tol)")
    p.add_argument("--steps", type=int, default=100, metavar="N", help="number of equal time steps (default 100)")
    p.add_argument("--T", type=float, default=None, metavar="T", help="final time (default: the problem's)")
    p.add_argument("--sigma-min", type=float, default=None, metavar="S",
                   help="sylvester only: σ_r(Y0) (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="seed of the problem's random data")
    p.add_argument("--substep", choices=sorted(SUBSTEPS), default=None,
                   help="sub-flow solver (default: rk4 for schrodinger, euler otherwise)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _finite(x, name):
    if x is not None and not math.isfinite(x):
        raise UsageError(f"{name} must be finite, got {x}")


def validate(args) -> None:
    """Checks that argparse cannot do; raises :class:`UsageError` (exit 2)."""
    m, n = SHAPES[args.problem]
    for name in ("tol", "T", "sigma_min"):
        _finite(getattr(args, name), "--" + name.replace("_", "-"))
    if not 1 <= args.rank <= min(m, n):
        raise UsageError(f"--rank must be in [1, {min(m, n)}] for the {m}x{n} {args.problem} problem, got {args.rank}")
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.T is not None and args.T <= 0:
        raise UsageError(f"--T must be > 0, got {args.T}")
    if args.tol is not None:
        if args.tol < 0:
            raise UsageError(f"--tol must be >= 0, got {args.tol}")
        if args.integrator not in ADAPTIVE:
            raise UsageError(f"--tol is for the rank-adaptive integrators {sorted(ADAPTIVE)}, not {args.integrator!r}")
    if args.r_max is not None:
        if args.integrator not in ADAPTIVE:
            raise UsageError(f"--r-max is for the rank-adaptive integrators {sorted(ADAPTIVE)}, not {args.integrator!r}")
        if not args.rank <= args.r_max <= min(m, n):
            raise UsageError(f"--r-max must be in [--rank, {min(m, n)}], got {args.r_max}")
        if args.tol is None:
            raise UsageError("--r-max caps the rank chosen by --tol; without --tol the rank stays --rank")
    if args.sigma_min is not None:
        if args.problem != "sylvester":
            raise UsageError("--sigma-min applies to --problem sylvester only")
        if not 0 < args.sigma_min <= 1:
            raise UsageError(f"--sigma-min must be in (0, 1], got {args.sigma_min}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.substep == "exact" and args.problem not in ("sylvester", "lsq"):
        raise UsageError(f"--substep exact needs a Sylvester-type field (sylvester, lsq), not {args.problem!r}")


def _clean(x):
    """JSON-safe: non-finite floats become None."""
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def solve(args) -> dict:
    """Build the problem, integrate, compare with the reference; returns the result record."""
    kw = dict(r=args.rank, seed=args.seed)
    if args.T is not None:
        kw["T"] = args.T
    if args.sigma_min is not None:
        kw["sigma_min"] = args.sigma_min
    P = make_problem(args.problem, **kw)
    substep = args.substep or DEFAULT_SUBSTEP[args.problem]
    options = {}
    if args.integrator in ADAPTIVE:
        options = dict(theta=args.tol, r_max=args.r_max) if args.tol is not None else dict(rank=args.rank)
    t_start = time.perf_counter()
    diverged = False
    with np.errstate(all="ignore"):
        try:
            sol = integrate(P.field, P.Y0, P.t0, P.T, args.steps, args.integrator, substep=substep, **options)
            Y, ranks, disc = sol.Y, sol.ranks, sol.discarded
        except np.linalg.LinAlgError:  # the naive method's S^{-1} can become singular / non-finite
            Y, ranks, disc, diverged = None, [args.rank], [float("nan")], True
    seconds = time.perf_counter() - t_start
    A_T = P.reference(P.T)
    with np.errstate(all="ignore"):
        error = P.error(Y, P.T) if Y is not None else float("nan")
        norm = P.norm(Y) if Y is not None else float("nan")
    diverged = diverged or not math.isfinite(error)
    rec = dict(
        problem=args.problem, integrator=args.integrator, rank0=args.rank, tol=args.tol, r_max=args.r_max,
        steps=args.steps, T=P.T, h=(P.T - P.t0) / args.steps, sigma_min=P.params.get("sigma_min"),
        seed=args.seed, substep=substep, shape=list(P.shape),
        error=error, best_error=P.best_error(P.T, args.rank), rank=int(ranks[-1]), max_rank=int(max(ranks)),
        norm=norm, norm_reference=P.norm(A_T), norm_drift=norm - P.norm(A_T),
        discarded=float(np.sum(disc)), seconds=seconds, diverged=diverged,
    )
    rec["ratio"] = rec["error"] / rec["best_error"] if rec["best_error"] > 0 else None
    if rec["rank"] != args.rank:  # adaptive: the floor at the final rank too
        rec["best_error_final_rank"] = P.best_error(P.T, rec["rank"])
    if P.energy is not None:
        with np.errstate(all="ignore"):
            rec["energy_drift"] = (P.energy(Y) if Y is not None else float("nan")) - P.energy(P.Y0)
    if P.loss is not None:
        with np.errstate(all="ignore"):
            rec["loss"] = P.loss(Y) if Y is not None else float("nan")
            rec["loss_reference"] = P.loss(A_T)
        rec["lipschitz"] = P.lipschitz
    return {k: _clean(v) for k, v in rec.items()}


def _fmt(x):
    return "n/a" if x is None else f"{x:.3e}"


def run(args) -> int:
    validate(args)
    try:
        rec = solve(args)
    except ValueError as exc:  # constructor checks (e.g. sizes) not caught above
        raise UsageError(str(exc)) from None
    if args.json:
        sys.stdout.write(json.dumps(rec) + "\n")
        return 0
    lines = [
        f"{rec['problem']} {rec['shape'][0]}x{rec['shape'][1]}, {rec['integrator']} ({rec['substep']} sub-steps), "
        f"rank {rec['rank0']} -> {rec['rank']}, {rec['steps']} steps of h = {rec['h']:.3g} to T = {rec['T']:g}",
        f"  error      {_fmt(rec['error'])}   best rank-{rec['rank0']} error {_fmt(rec['best_error'])}"
        f"   ratio {_fmt(rec['ratio'])}" + ("   DIVERGED" if rec["diverged"] else ""),
        f"  norm drift {_fmt(rec['norm_drift'])}" + (
            f"   energy drift {_fmt(rec['energy_drift'])}" if "energy_drift" in rec else "") + (
            f"   loss {_fmt(rec['loss'])} (exact flow {_fmt(rec['loss_reference'])})" if "loss" in rec else ""),
        f"  {rec['seconds']:.2f} s",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
