"""Low-rank integrators for Ẏ = F(t, Y) on the manifold of rank-r matrices.

One step each, in the papers' notation. Y0 = U0 S0 V0^* is a
:class:`~dlrt_ref.lowrank.LowRankMatrix` with orthonormal U0, V0. The field is
a callable ``field(t, Y) -> F`` where Y is a LowRankMatrix (factors not
necessarily orthonormal) and F is an array or an operator of
:mod:`dlrt_ref.operators`; F is only used through ``F @ V``, ``F.H @ U`` and
``F.core(U, V) = U^* F V``. A field may also be an :class:`~dlrt_ref.ode.fields.Increments`
(a trajectory A(t) given through A(t1) − A(t0)). The sub-flows are solved by a
pluggable sub-step (:mod:`dlrt_ref.substeps`).

Each integrator is written once, as a generator of *stages*
(``*_stages(t0=..., Y0=..., h=..., substep=..., ortho=..., lin=...)``): whenever
it needs the field it yields a :class:`~dlrt_ref.substeps.Request` (t, Y, the
sub-flows served) and receives F. One driver, :func:`~dlrt_ref.substeps.drive`,
serves requests for both worlds: :func:`run_stages` gives it a field function
(matrix ODEs; every ``*_step`` below is ``run_stages(*_stages(...))``), and the
DLRT optimiser gives it one network pass per round for all layers at once.
The number of rounds is the number of field evaluations ("passes") per step:
ra-bug and parallel 1 (with Euler-type sub-steps), bug 2, midpoint-bug 2
(at Y0 and at the midpoint approximation), ksl/lsk 3.

Life of a request (training). ``DLRT.step(x, y)`` starts one
``ra_bug_stages(t0=0, Y0=W_ℓ, h=lr, substep=optimiser)`` generator per low-rank
layer ℓ and calls ``drive(generators, serve=one_pass)``. Each generator runs
until its first ``yield``: ``Request(t=0, Y=Y0, flows={"K", "L", "S"})``.
``drive`` collects one such request per layer and calls ``serve``, which sets
every layer to its requested point Y, runs one forward and backward pass on the
batch, keeps the dense parameters' gradients (the request serves an S-flow; they
take their step after the last pass), and returns per layer the lazy field
F = −Δᵀ X (``layer.grad_op``). ``drive`` sends each F
back into its generator, which resumes after the ``yield``: the K-step
``substep(flow=k_flow(V0, F0), ...)`` computes K1 from ``F0 @ V0``, the L-step L1
from ``F0.H @ U0``, :func:`augment` builds Û, V̂, the S-step uses ``F0.core(Û, V̂)``
(valid because Û S̃0 V̂^* = Y0), and :func:`truncate_core` returns the new
factors. The generator returns a :class:`StepResult`; ``drive`` returns all of
them with the number of passes, and ``DLRT.step`` writes the new factors into
the layers. Methods that need the field at other points (bug, ksl) yield more
requests; each further round is one more pass.

References
----------
.. [LO14] C. Lubich, I. V. Oseledets, "A projector-splitting integrator for
   dynamical low-rank approximation", BIT 54, 171–188, 2014.
.. [CL22] G. Ceruti, C. Lubich, "An unconventional robust integrator for
   dynamical low-rank approximation", BIT 62, 23–44, 2022.
.. [CKL22] G. Ceruti, J. Kusch, C. Lubich, "A rank-adaptive robust integrator
   for dynamical low-rank approximation", BIT 62, 1149–1174, 2022.
.. [CKL24] G. Ceruti, J. Kusch, C. Lubich, "A parallel rank-adaptive integrator
   for dynamical low-rank approximation", SIAM J. Sci. Comput. 46(3), 2024.
.. [CEKL24] G. Ceruti, L. Einkemmer, J. Kusch, C. Lubich, "A robust second-order
   low-rank BUG integrator based on the midpoint rule", BIT 64, 30, 2024.
.. [KL07] O. Koch, C. Lubich, "Dynamical low-rank approximation",
   SIAM J. Matrix Anal. Appl. 29, 434–454, 2007.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field
from typing import Optional

from dlrt_ref.backend import array_module
from dlrt_ref.linalg import H
from dlrt_ref.lowrank import LowRankMatrix
from dlrt_ref.operators import as_operator
from dlrt_ref.orthonormal import orthonormalise, orthonormalise_after
from dlrt_ref.substeps import Request, SubFlow, drive, euler, get_substep
from dlrt_ref.truncation import Truncation, truncate

__all__ = [
    "Request", "drive", "StepResult", "k_flow", "l_flow", "s_flow", "augment", "truncate_core", "step_scaled_rule",
    "ksl_stages", "lsk_stages", "strang_stages", "bug_stages", "augmented_galerkin_stages", "ra_bug_stages",
    "midpoint_bug_stages", "parallel_bug_stages", "naive_stages", "STAGES", "run_stages",
    "ksl_step", "lsk_step", "strang_step", "bug_step", "ra_bug_step", "midpoint_bug_step", "parallel_bug_step",
    "naive_step", "INTEGRATORS", "ADAPTIVE", "integrate", "Solution",
]


def _eye(Y_like, r):
    xp = array_module(Y_like)
    return xp.eye(r, dtype=Y_like.dtype)


@dataclass
class StepResult:
    """One step's outcome.

    Attributes
    ----------
    Y : LowRankMatrix — the new approximation.
    evaluations : int — field evaluations used (filled in by the driver).
    truncation : Truncation or None — for the rank-adaptive methods.
    """

    Y: LowRankMatrix
    evaluations: int = 0
    truncation: Optional[Truncation] = None


# --------------------------------------------------------------------------- #
# Sub-flows and shared building blocks
# --------------------------------------------------------------------------- #
def k_flow(V0, F0=None, lin=None, sign=1.0) -> SubFlow:
    """K-step ODE K̇ = F(t, K V0^*) V0 ([LO14] eq. (3.4); [CL22] Sec. 3). F0: field at Y0 = K0 V0^*."""
    I = _eye(V0, V0.shape[1])
    return SubFlow(
        "K",
        point=lambda K: LowRankMatrix(K, I, V0),  # K V0^*
        project=lambda F: sign * (F @ V0),  # (m, n) @ (n, r) -> (m, r)
        frame=(V0,),
        linear=tuple(sign * c for c in lin.k_coefficients(V0)) if lin is not None else None,
        rhs0=None if F0 is None else sign * (F0 @ V0),
    )


def l_flow(U0, F0=None, lin=None, sign=1.0) -> SubFlow:
    """L-step ODE L̇ = F(t, U0 L^*)^* U0 ([LO14] eq. (3.6); [CL22] Sec. 3). F0: field at Y0 = U0 L0^*."""
    I = _eye(U0, U0.shape[1])
    return SubFlow(
        "L",
        point=lambda L: LowRankMatrix(U0, I, L),  # U0 L^*
        project=lambda F: sign * (F.H @ U0),  # (n, m) @ (m, r) -> (n, r)
        frame=(U0,),
        linear=tuple(sign * c for c in lin.l_coefficients(U0)) if lin is not None else None,
        rhs0=None if F0 is None else sign * (F0.H @ U0),
    )


def s_flow(U, V, F0=None, lin=None, sign=1.0) -> SubFlow:
    """S-step ODE Ṡ = ±U^* F(t, U S V^*) V (Galerkin, [CL22]; backward for KSL, [LO14]).

    F0, if given, must be the field at U S(t0) V^* (e.g. at Y0 when Û S̃0 V̂^* = Y0).
    """
    return SubFlow(
        "S",
        point=lambda S: LowRankMatrix(U, S, V),
        project=lambda F: sign * F.core(U, V),  # (r, m)(m, n)(n, r) -> (r, r)
        frame=(U, V),
        linear=tuple(sign * c for c in lin.s_coefficients(U, V)) if lin is not None else None,
        rhs0=None if F0 is None else sign * F0.core(U, V),
    )


def augment(K1, U0, ortho: str = "householder"):
    """Augmented basis Û of span([U0 | K1]) and M̂ = Û^* U0 ([CKL22] Alg. 1, step 1), rank-revealing.

    span(Û) ⊇ span(U0), so Û M̂ = U0 and Û (M̂ S0 N̂^*) V̂^* = Y0 exactly.
    Returns (Û (m×(r+k)), M̂ ((r+k)×r)) where k ≤ min(r, m − r) is the numerical
    rank of the new directions (I − U0U0^*)K1.

    The span is the paper's up to round-off; the basis puts U0 first, Û = [U0 | Ũ],
    with Ũ from :func:`~dlrt_ref.orthonormal.orthonormalise_after`: an orthonormal basis
    of only the *numerically independent* part of (I − U0U0^*)K1 (singular values
    above a documented threshold), never arbitrary completion columns. So Û is
    orthonormal to working precision for every input (a batch smaller than r, a
    field with no new directions, 2r > m), and the ranks do not depend on
    round-off. The Galerkin S-step and the truncation do not depend on the basis
    of the span (they are invariant under Û ↦ ÛQ), but a per-coordinate
    optimiser state (Adam's second moment) does: with U0 first, the old
    coordinates stay coordinates of the new core, M̂ = [I; 0], and the state of S
    maps exactly.
    """
    xp = array_module(K1, U0)
    r = U0.shape[1]
    U_tilde = orthonormalise_after(U0, K1, ortho)  # (m, k), ⟂ U0, k ≤ r
    U_hat = xp.concatenate([U0, U_tilde], axis=1)  # (m, r + k)
    M_hat = xp.concatenate([xp.eye(r, dtype=U0.dtype), xp.zeros((U_tilde.shape[1], r), dtype=U0.dtype)])  # [I; 0]
    return U_hat, M_hat


def truncate_core(U_hat, S_hat, V_hat, **rule) -> tuple[LowRankMatrix, Truncation]:
    """Truncate Û Ŝ V̂^* to Û P Σ (V̂ Q)^* by :func:`~dlrt_ref.truncation.truncate` ([CKL22] Alg. 1, step 3)."""
    tr = truncate(S_hat, **rule)
    # (m, k̂) @ (k̂, r1) -> (m, r1);  (n, k̂) @ (k̂, r1) -> (n, r1)
    return LowRankMatrix(U_hat @ tr.P, tr.S, V_hat @ tr.Q), tr


def step_scaled_rule(rule: dict, h, *update_blocks) -> dict:
    r"""Resolve the step-scaled tolerance ``c_step=c`` into an absolute ϑ = c·h·‖Ŷ1 − Y0‖_F.

    Derivation. The DLRT error bound (Schotthöfer et al. 2022, Thm. 1; of the form of [CKL22]'s) is
    ‖W(t_n) − Y_n‖ ≤ c1 ε + c2 h + c3 ϑ/h for t_n ≤ T: each step may discard up to ϑ
    and T/h steps add up. A fixed ϑ spoils the O(h) of the time stepping as h → 0, and
    ϑ = τ‖Ŝ‖ (DLRT's relative rule) is O(‖Y‖), so its ϑ/h grows like 1/h. The
    step's own update, Ŷ1 − Y0 = Û(Ŝ1 − S̃0)V̂^*, has norm ‖Ŝ1 − S̃0‖_F = O(h‖F‖)
    (Euler: h‖Û^*F V̂‖). Choosing ϑ = c·h·‖Ŝ1 − S̃0‖_F = O(h²) gives ϑ/h = O(h),
    the order of the time-stepping error, and lets ϑ follow the field's size along the
    run. Seen from one step: a new direction (singular value O(h)) is kept when it
    exceeds the fraction c·h of the update, and an old one is dropped only once it has
    become that small. ``update_blocks`` are the blocks of Ŝ1 − S̃0 (their norms are
    combined), so nothing is computed when the rule is not used.
    """
    out = dict(rule)
    c = out.pop("c_step", None)
    if c is None:
        return out
    if not (math.isfinite(c) and c >= 0):
        raise ValueError(f"c_step must be finite and >= 0, got {c}")
    if any(out.get(k) is not None for k in ("theta", "tau", "rank")):
        raise ValueError("c_step (the step-scaled tolerance) replaces theta/tau/rank: give only one of them")
    dY = math.sqrt(sum(float(array_module(B).linalg.norm(B)) ** 2 for B in update_blocks))  # one host sync per block
    out["theta"] = float(c) * abs(float(h)) * dY
    return out


def _orth_and_coeff(K, ortho):
    """K = U R with orthonormal U: returns U and R = U^* K (works for any orthonormaliser)."""
    U = orthonormalise(K, ortho)
    return U, H(U) @ K  # (r, m) @ (m, r) -> (r, r)


# --------------------------------------------------------------------------- #
# Projector splitting [LO14]
# --------------------------------------------------------------------------- #
def ksl_stages(t0, Y0: LowRankMatrix, h, substep=euler, ortho="householder", lin=None):
    """Lie projector-splitting step K → S (backward) → L ([LO14] Sec. 3.2).

    1. K̇ = F(t, K V0^*) V0, K(t0) = U0 S0; QR: K(t1) = U1 Ŝ1.
    2. Ṡ = −U1^* F(t, U1 S V0^*) V0, S(t0) = Ŝ1  →  S̃0 = S(t1).
    3. L̇ = F(t, U1 L^*)^* U1, L(t0) = V0 S̃0^*; QR: L(t1) = V1 S1^*.

    Three field evaluations with Euler sub-steps (at Y0, U1 Ŝ1 V0^*, U1 S̃0 V0^*).
    """
    U0, S0, V0 = Y0.U, Y0.S, Y0.V
    K1 = yield from substep(flow=k_flow(V0, lin=lin), t0=t0, y0=U0 @ S0, h=h)  # (m, r)
    U1, S_hat1 = _orth_and_coeff(K1, ortho)
    S_tilde0 = yield from substep(flow=s_flow(U1, V0, lin=lin, sign=-1.0), t0=t0, y0=S_hat1, h=h)  # (r, r)
    L1 = yield from substep(flow=l_flow(U1, lin=lin), t0=t0, y0=V0 @ H(S_tilde0), h=h)  # (n, r)
    V1, S1h = _orth_and_coeff(L1, ortho)
    return StepResult(LowRankMatrix(U1, H(S1h), V1))


def lsk_stages(t0, Y0: LowRankMatrix, h, substep=euler, ortho="householder", lin=None):
    """The adjoint of :func:`ksl_stages`: L → S (backward) → K ([LO14] Sec. 3.3)."""
    U0, S0, V0 = Y0.U, Y0.S, Y0.V
    L1 = yield from substep(flow=l_flow(U0, lin=lin), t0=t0, y0=V0 @ H(S0), h=h)  # (n, r)
    V1, S_hat1h = _orth_and_coeff(L1, ortho)
    S_tilde0 = yield from substep(flow=s_flow(U0, V1, lin=lin, sign=-1.0), t0=t0, y0=H(S_hat1h), h=h)  # (r, r)
    K1 = yield from substep(flow=k_flow(V1, lin=lin), t0=t0, y0=U0 @ S_tilde0, h=h)  # (m, r)
    U1, S1 = _orth_and_coeff(K1, ortho)
    return StepResult(LowRankMatrix(U1, S1, V1))


def strang_stages(t0, Y0: LowRankMatrix, h, substep=euler, ortho="householder", lin=None):
    """Strang splitting KSLSK = LSK_{h/2} ∘ KSL_{h/2}, symmetric and of order 2 ([LO14] Sec. 3.3)."""
    a = yield from ksl_stages(t0=t0, Y0=Y0, h=h / 2, substep=substep, ortho=ortho, lin=lin)
    return (yield from lsk_stages(t0=t0 + h / 2, Y0=a.Y, h=h / 2, substep=substep, ortho=ortho, lin=lin))


# --------------------------------------------------------------------------- #
# Unconventional BUG integrators [CL22], [CKL22], [CKL24]
# --------------------------------------------------------------------------- #
def bug_stages(t0, Y0: LowRankMatrix, h, substep=euler, ortho="householder", lin=None):
    """Fixed-rank unconventional "basis update & Galerkin" step ([CL22] Sec. 3).

    K- and L-steps from Y0; U1 = orth(K1), V1 = orth(L1); M = U1^* U0,
    N = V1^* V0; Galerkin S-step Ṡ = U1^* F(t, U1 S V1^*) V1 from M S0 N^*.
    Two field evaluations with Euler sub-steps (at Y0 and at U1 M S0 N^* V1^*).
    """
    U0, S0, V0 = Y0.U, Y0.S, Y0.V
    F0 = yield Request(t=t0, Y=Y0, flows={"K", "L"})
    K1 = yield from substep(flow=k_flow(V0, F0, lin), t0=t0, y0=U0 @ S0, h=h)  # (m, r)
    L1 = yield from substep(flow=l_flow(U0, F0, lin), t0=t0, y0=V0 @ H(S0), h=h)  # (n, r)
    U1, V1 = orthonormalise(K1, ortho), orthonormalise(L1, ortho)
    M, N = H(U1) @ U0, H(V1) @ V0  # (r, r) each
    S1 = yield from substep(flow=s_flow(U1, V1, lin=lin), t0=t0, y0=M @ S0 @ H(N), h=h)  # (r, r)
    return StepResult(LowRankMatrix(U1, S1, V1))


def augmented_galerkin_stages(t0, Y0: LowRankMatrix, h, substep=euler, ortho="householder", lin=None):
    """Steps 1–3 of [CKL22] Alg. 1, without the truncation: returns (Û, S̃0, Ŝ1, V̂).

    1. K- and L-steps from Y0 (as in :func:`bug_stages`).
    2. Û = orth([U0 | K1]), V̂ = orth([V0 | L1]) as bases [U0 | Ũ], [V0 | Ṽ]
       (rank-revealing, see :func:`augment`); M̂ = Û^* U0, N̂ = V̂^* V0.
    3. Galerkin S-step on the (r+k)×(r+l) core from S̃0 = M̂ S0 N̂^*.
       Since Û S̃0 V̂^* = Y0, its field at t0 is the one already computed:
       one field evaluation per step with Euler sub-steps.
    """
    U0, S0, V0 = Y0.U, Y0.S, Y0.V
    F0 = yield Request(t=t0, Y=Y0, flows={"K", "L", "S"})
    K1 = yield from substep(flow=k_flow(V0, F0, lin), t0=t0, y0=U0 @ S0, h=h)  # (m, r)
    L1 = yield from substep(flow=l_flow(U0, F0, lin), t0=t0, y0=V0 @ H(S0), h=h)  # (n, r)
    U_hat, M_hat = augment(K1, U0, ortho)  # (m, r + k), (r + k, r)
    V_hat, N_hat = augment(L1, V0, ortho)  # (n, r + l), (r + l, r)
    # S̃0 = M̂ S0 N̂^* with M̂ = [I; 0], N̂ = [I; 0] (augment puts U0, V0 first): S0 padded with zeros, the
    # same numbers as the two GEMMs (r + k, r)(r, r)(r, r + l) without their cost
    xp, r = array_module(S0), S0.shape[0]
    S_tilde0 = xp.zeros((M_hat.shape[0], N_hat.shape[0]), dtype=xp.result_type(M_hat.dtype, S0.dtype, N_hat.dtype))
    S_tilde0[:r, :r] = S0  # (r + k, r + l)
    S_hat1 = yield from substep(flow=s_flow(U_hat, V_hat, F0, lin), t0=t0, y0=S_tilde0, h=h)
    return U_hat, S_tilde0, S_hat1, V_hat


def ra_bug_stages(t0, Y0: LowRankMatrix, h, substep=euler, ortho="householder", lin=None, **rule):
    """Rank-adaptive BUG step ([CKL22] Alg. 1).

    1.–3. K- and L-steps from Y0, augmented bases Û = [U0 | Ũ], V̂ = [V0 | Ṽ] and the
       Galerkin S-step on the augmented core (:func:`augmented_galerkin_stages`):
       one field evaluation per step with Euler sub-steps.
    4. Truncate Ŝ1 by SVD: ``rule`` is passed to :func:`~dlrt_ref.truncation.truncate`
       (``theta`` | ``tau`` | ``rank`` | ``c_step``, ``r_min``, ``r_max``, ``compat_2022``);
       ``c_step``: ϑ = c·h·‖Ŝ1 − S̃0‖_F (:func:`step_scaled_rule`).
    """
    U_hat, S_tilde0, S_hat1, V_hat = yield from augmented_galerkin_stages(
        t0=t0, Y0=Y0, h=h, substep=substep, ortho=ortho, lin=lin)
    Y1, tr = truncate_core(U_hat, S_hat1, V_hat, **step_scaled_rule(rule, h, S_hat1 - S_tilde0))
    return StepResult(Y1, truncation=tr)


def midpoint_bug_stages(t0, Y0: LowRankMatrix, h, substep=euler, ortho="householder", lin=None, **rule):
    """Midpoint BUG step, robust and of second order ([CEKL24]).

    "A half-step with a first-order BUG integrator, followed by a Galerkin update with
    a suitably augmented basis" ([CEKL24], abstract); the steps, as we implement them:

    1. Ŷ½ = Û½ Ŝ½ V̂½^*: one rank-adaptive BUG step of size h/2 from Y0, not
       truncated (:func:`augmented_galerkin_stages`; rank ≤ 2r, Û½ = [U0 | Ũ½]).
    2. F½ = F(t0 + h/2, Ŷ½): the field at the midpoint approximation.
    3. Augment again: Û = [Û½ | Ũ], Ũ the independent part of (I − Û½Û½^*) F½ V̂½;
       V̂ = [V̂½ | Ṽ] from F½^* Û½ (rank ≤ 4r).
    4. Galerkin update by the midpoint rule: Ŝ1 = Û^* Y0 V̂ + h Û^* F½ V̂, where
       Û^* Y0 V̂ = [[S0, 0], [0, 0]] because U0, V0 lead the bases.
    5. Truncate Ŝ1 as in :func:`ra_bug_stages` (``rule``).

    Two field evaluations per step with Euler sub-steps in step 1 (at Y0 and at Ŷ½).
    """
    xp = array_module(Y0.U)
    S0 = Y0.S
    r = S0.shape[0]
    U_half, _, S_half, V_half = yield from augmented_galerkin_stages(
        t0=t0, Y0=Y0, h=h / 2, substep=substep, ortho=ortho, lin=lin)
    F_half = yield Request(t=t0 + h / 2, Y=LowRankMatrix(U_half, S_half, V_half), flows={"K", "L", "S"})
    U_new = orthonormalise_after(U_half, F_half @ V_half, ortho)  # (m, k2): (m, n) @ (n, r½) directions
    V_new = orthonormalise_after(V_half, F_half.H @ U_half, ortho)  # (n, l2)
    U_hat = xp.concatenate([U_half, U_new], axis=1)  # (m, k̂), k̂ ≤ 4r
    V_hat = xp.concatenate([V_half, V_new], axis=1)  # (n, l̂)
    dS = h * F_half.core(U_hat, V_hat)  # (k̂, m)(m, n)(n, l̂) -> (k̂, l̂)
    S_tilde0 = xp.zeros(dS.shape, dtype=xp.result_type(S0, dS))
    S_tilde0[:r, :r] = S0  # Û^* Y0 V̂ = [[S0, 0], [0, 0]]
    S_hat1 = S_tilde0 + dS
    Y1, tr = truncate_core(U_hat, S_hat1, V_hat, **step_scaled_rule(rule, h, dS))
    return StepResult(Y1, truncation=tr)


def parallel_bug_stages(t0, Y0: LowRankMatrix, h, substep=euler, ortho="householder", lin=None, **rule):
    """Parallel rank-adaptive BUG step ([CKL24] Alg. 1): K, L and S from one point.

    K̇ = F(t, K V0^*) V0, L̇ = F(t, U0 L^*)^* U0, Ṡ = U0^* F(t, U0 S V0^*) V0, all
    from Y0. Ũ1 spans the part of K1 orthogonal to U0, Ṽ1 likewise; the core
    in the bases Û = [U0, Ũ1], V̂ = [V0, Ṽ1] is

    .. math:: \\hat S_1 = \\begin{pmatrix} \\bar S_1 & L_1^* \\tilde V_1 \\\\
              \\tilde U_1^* K_1 & 0 \\end{pmatrix},

    then truncated as in :func:`ra_bug_stages`. One field evaluation with Euler.
    """
    U0, S0, V0 = Y0.U, Y0.S, Y0.V
    xp = array_module(U0)
    F0 = yield Request(t=t0, Y=Y0, flows={"K", "L", "S"})
    K1 = yield from substep(flow=k_flow(V0, F0, lin), t0=t0, y0=U0 @ S0, h=h)  # (m, r)
    L1 = yield from substep(flow=l_flow(U0, F0, lin), t0=t0, y0=V0 @ H(S0), h=h)  # (n, r)
    S_bar1 = yield from substep(flow=s_flow(U0, V0, F0, lin), t0=t0, y0=S0, h=h)  # (r, r)
    # the numerically independent part of (I − U0U0^*)K1 (see augment): widths k, l ≤ r, possibly 0 or k ≠ l
    U_tilde = orthonormalise_after(U0, K1, ortho)  # (m, k)
    V_tilde = orthonormalise_after(V0, L1, ortho)  # (n, l)
    top = xp.concatenate([S_bar1, H(L1) @ V_tilde], axis=1)  # (r, r + l)
    zero = xp.zeros((U_tilde.shape[1], V_tilde.shape[1]), dtype=S_bar1.dtype)
    bottom = xp.concatenate([H(U_tilde) @ K1, zero], axis=1)  # (k, r + l)
    S_hat1 = xp.concatenate([top, bottom], axis=0)  # (r + k, r + l)
    U_hat = xp.concatenate([U0, U_tilde], axis=1)
    V_hat = xp.concatenate([V0, V_tilde], axis=1)
    # Ŝ1 − S̃0 with S̃0 = [[S0, 0], [0, 0]]: blocks S̄1 − S0, L1^*Ṽ, Ũ^*K1
    rule = step_scaled_rule(rule, h, S_bar1 - S0, top[:, S0.shape[1]:], bottom[:, : S0.shape[1]])
    Y1, tr = truncate_core(U_hat, S_hat1, V_hat, **rule)
    return StepResult(Y1, truncation=tr)


# --------------------------------------------------------------------------- #
# Negative control [KL07]
# --------------------------------------------------------------------------- #
def naive_stages(t0, Y0: LowRankMatrix, h, substep=None, ortho="householder", lin=None):
    """Explicit Euler on the Koch–Lubich factor ODEs ([KL07] Prop. 2.1) — the negative control.

    .. math:: \\dot U = (I - UU^*) F V S^{-1},\\quad \\dot V = (I - VV^*) F^* U S^{-*},
              \\quad \\dot S = U^* F V.

    The S^{-1} makes it blow up when σ_r(Y) is small. After the Euler step the
    factors are re-orthonormalised (U1 = Q_U R_U, V1 = Q_V R_V, S1 ← R_U S1 R_V^*),
    which leaves the matrix U1 S1 V1^* unchanged. ``substep`` is ignored.
    """
    xp = array_module(Y0.U)
    U0, S0, V0 = Y0.U, Y0.S, Y0.V
    F0 = yield Request(t=t0, Y=Y0, flows={"K", "L", "S"})
    FV, FhU = F0 @ V0, F0.H @ U0  # (m, r), (n, r)
    # X S0^{-1} = (S0^{-*} X^*)^*, by a solve rather than an inverse
    dU = H(xp.linalg.solve(H(S0), H(FV - U0 @ (H(U0) @ FV))))  # (m, r)
    dV = H(xp.linalg.solve(S0, H(FhU - V0 @ (H(V0) @ FhU))))  # (n, r)
    U1, RU = _orth_and_coeff(U0 + h * dU, ortho)
    V1, RV = _orth_and_coeff(V0 + h * dV, ortho)
    S1 = RU @ (S0 + h * (H(U0) @ FV)) @ H(RV)
    return StepResult(LowRankMatrix(U1, S1, V1))


STAGES = {
    "ksl": ksl_stages, "lsk": lsk_stages, "strang": strang_stages, "bug": bug_stages,
    "ra-bug": ra_bug_stages, "parallel": parallel_bug_stages, "naive": naive_stages,
    "midpoint-bug": midpoint_bug_stages,
}
ADAPTIVE = {"ra-bug", "parallel", "midpoint-bug"}


# --------------------------------------------------------------------------- #
# One step with a field function: run_stages and the *_step functions
# --------------------------------------------------------------------------- #
def run_stages(stages, field) -> StepResult:
    """Run one stage generator with :func:`~dlrt_ref.substeps.drive`, serving each request with ``field(t, Y)``."""
    (res,), rounds = drive([stages], serve=lambda requests: [as_operator(field(q.t, q.Y)) for q in requests])
    res.evaluations = rounds
    return res


def _on_step(field, t0, h):
    """The field function for the step [t0, t0+h] (an object with ``on_step``, such as
    :class:`dlrt_ref.ode.fields.Increments`, gives its constant field) and,
    if it is linear (has ``k_coefficients``...), the field itself for the "exact" sub-step."""
    f = field.on_step(t0, h) if hasattr(field, "on_step") else field
    return f, (f if hasattr(f, "k_coefficients") else None)


def ksl_step(field, t0, Y0: LowRankMatrix, h, substep="euler", ortho="householder") -> StepResult:
    """One Lie projector-splitting step K → S → L with a field function ``field(t, Y)``; see :func:`ksl_stages`.

    ``substep``: "euler" | "rk4" | "exact" | a sub-step generator function; ``ortho``: "householder" | "cholqr2".
    """
    f, lin = _on_step(field, t0, h)
    stages = ksl_stages(t0=t0, Y0=Y0, h=h, substep=get_substep(substep), ortho=ortho, lin=lin)
    return run_stages(stages, field=f)


def lsk_step(field, t0, Y0: LowRankMatrix, h, substep="euler", ortho="householder") -> StepResult:
    """One adjoint splitting step L → S → K; see :func:`lsk_stages` (arguments as :func:`ksl_step`)."""
    f, lin = _on_step(field, t0, h)
    stages = lsk_stages(t0=t0, Y0=Y0, h=h, substep=get_substep(substep), ortho=ortho, lin=lin)
    return run_stages(stages, field=f)


def strang_step(field, t0, Y0: LowRankMatrix, h, substep="euler", ortho="householder") -> StepResult:
    """Strang step LSK_{h/2} ∘ KSL_{h/2} ([LO14] Sec. 3.3); see :func:`strang_stages`.

    Composed from two half steps so that a field given by :class:`~dlrt_ref.ode.fields.Increments`
    uses A(t0+h/2) − A(t0) and A(t0+h) − A(t0+h/2) for its two halves.
    """
    a = ksl_step(field, t0=t0, Y0=Y0, h=h / 2, substep=substep, ortho=ortho)
    b = lsk_step(field, t0=t0 + h / 2, Y0=a.Y, h=h / 2, substep=substep, ortho=ortho)
    return StepResult(b.Y, a.evaluations + b.evaluations)


def bug_step(field, t0, Y0: LowRankMatrix, h, substep="euler", ortho="householder") -> StepResult:
    """One fixed-rank BUG step; see :func:`bug_stages` (arguments as :func:`ksl_step`)."""
    f, lin = _on_step(field, t0, h)
    stages = bug_stages(t0=t0, Y0=Y0, h=h, substep=get_substep(substep), ortho=ortho, lin=lin)
    return run_stages(stages, field=f)


def ra_bug_step(field, t0, Y0: LowRankMatrix, h, substep="euler", ortho="householder", **rule) -> StepResult:
    """One rank-adaptive BUG step; see :func:`ra_bug_stages`.

    Arguments as :func:`ksl_step`, and the truncation ``rule`` (``theta`` | ``tau`` | ``rank``,
    ``r_min``, ``r_max``, ``compat_2022``) of :func:`~dlrt_ref.truncation.truncate`.
    """
    f, lin = _on_step(field, t0, h)
    stages = ra_bug_stages(t0=t0, Y0=Y0, h=h, substep=get_substep(substep), ortho=ortho, lin=lin, **rule)
    return run_stages(stages, field=f)


def midpoint_bug_step(field, t0, Y0: LowRankMatrix, h, substep="euler", ortho="householder", **rule) -> StepResult:
    """One midpoint BUG step (second order); see :func:`midpoint_bug_stages` (arguments as :func:`ra_bug_step`)."""
    f, lin = _on_step(field, t0, h)
    stages = midpoint_bug_stages(t0=t0, Y0=Y0, h=h, substep=get_substep(substep), ortho=ortho, lin=lin, **rule)
    return run_stages(stages, field=f)


def parallel_bug_step(field, t0, Y0: LowRankMatrix, h, substep="euler", ortho="householder", **rule) -> StepResult:
    """One parallel rank-adaptive BUG step; see :func:`parallel_bug_stages` (arguments as :func:`ra_bug_step`)."""
    f, lin = _on_step(field, t0, h)
    stages = parallel_bug_stages(t0=t0, Y0=Y0, h=h, substep=get_substep(substep), ortho=ortho, lin=lin, **rule)
    return run_stages(stages, field=f)


def naive_step(field, t0, Y0: LowRankMatrix, h, substep="euler", ortho="householder") -> StepResult:
    """One explicit Euler step of the factor ODEs (negative control); see :func:`naive_stages`. ``substep`` is ignored."""
    f, lin = _on_step(field, t0, h)
    return run_stages(naive_stages(t0=t0, Y0=Y0, h=h, substep=None, ortho=ortho, lin=lin), field=f)


INTEGRATORS = {
    "ksl": ksl_step, "lsk": lsk_step, "strang": strang_step, "bug": bug_step,
    "ra-bug": ra_bug_step, "parallel": parallel_bug_step, "naive": naive_step,
    "midpoint-bug": midpoint_bug_step,
}


@dataclass
class Solution:
    """Output of :func:`integrate`: final Y and per-step history."""

    Y: LowRankMatrix
    t: list = dc_field(default_factory=list)
    ranks: list = dc_field(default_factory=list)
    discarded: list = dc_field(default_factory=list)  # Σ discarded σ² per step
    evaluations: int = 0


def integrate(field, Y0: LowRankMatrix, t0: float, T: float, n_steps: int, method: str = "bug",
              substep="euler", callback=None, **options) -> Solution:
    """Take ``n_steps`` equal steps of ``method`` from t0 to T.

    ``options`` go to the step function (``ortho``; and ``theta``/``tau``/``rank``/
    ``r_min``/``r_max`` for the adaptive methods). ``callback(t, Y, result)``
    is called after every step.
    """
    if method not in INTEGRATORS:
        raise ValueError(f"unknown integrator {method!r}; expected one of {sorted(INTEGRATORS)}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if method not in ADAPTIVE and any(k in options for k in ("theta", "tau", "rank", "c_step", "r_min", "r_max")):
        raise ValueError(f"integrator {method!r} has fixed rank; truncation options are for {sorted(ADAPTIVE)}")
    if method in ADAPTIVE and all(options.get(k) is None for k in ("theta", "tau", "rank", "c_step")):
        options = dict(options, rank=Y0.rank)  # no tolerance given: keep the rank fixed
    step = INTEGRATORS[method]
    h = (T - t0) / n_steps
    sol = Solution(Y0, [t0], [Y0.rank], [0.0])
    Y = Y0
    for k in range(n_steps):
        t = t0 + k * h
        res = step(field, t0=t, Y0=Y, h=h, substep=substep, **options)
        Y = res.Y
        sol.t.append(t0 + (k + 1) * h)
        sol.ranks.append(Y.rank)
        sol.discarded.append(res.truncation.tail ** 2 if res.truncation is not None else 0.0)
        sol.evaluations += res.evaluations
        if callback is not None:
            callback(sol.t[-1], Y, res)
    sol.Y = Y
    return sol
