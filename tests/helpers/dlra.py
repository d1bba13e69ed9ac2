"""Shared construction helpers for the DLRA property tests (``tests.helpers.dlra``; not a test module).

Structure (sizes, dtype, seed) is drawn by hypothesis in the tests; the bulk
values come from ``numpy.random.default_rng(seed)`` here. Everything is built
on the host and moved with ``Backend.asarray`` where a backend is given.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg as sla
from hypothesis import HealthCheck, settings

from dlrt_ref.backend import get_backend, to_numpy
from dlrt_ref.integrators import ADAPTIVE, INTEGRATORS
from dlrt_ref.lowrank import LowRankMatrix

EPS = float(np.finfo(np.float64).eps)
ALL_METHODS = ("ksl", "lsk", "strang", "bug", "ra-bug", "parallel", "midpoint-bug", "naive")
BUG_FAMILY = ("bug", "ra-bug", "parallel", "midpoint-bug")


def H(A):
    return A.conj().T


def fro(A) -> float:
    return float(np.linalg.norm(to_numpy(A)))


def draw(rng, shape, cplx):
    """Standard normal array (complex: real + i·imag, each N(0, 1))."""
    a = rng.standard_normal(shape)
    if cplx:
        a = a + 1j * rng.standard_normal(shape)
    return a


def orth(rng, m, r, cplx):
    return np.linalg.qr(draw(rng, (m, r), cplx))[0]


def orth_err(Q, ord="fro") -> float:
    """‖QᴴQ − I‖ (Frobenius, or ``ord=2`` for the spectral norm), computed on the host in double precision."""
    Q = to_numpy(Q)
    Q = Q.astype(np.result_type(Q.dtype, np.float64))
    return float(np.linalg.norm(H(Q) @ Q - np.eye(Q.shape[1]), ord))


def unitary(rng, r, cplx):
    return orth(rng, r, r, cplx)


def skew(rng, n, cplx, scale=1.0):
    """A skew-Hermitian n×n matrix (real skew-symmetric if not cplx), ‖·‖₂ ≈ scale."""
    G = draw(rng, (n, n), cplx)
    W = (G - H(G)) / 2
    return scale * W / np.linalg.norm(W, 2)


def lowrank(rng, m, n, r, cplx, sigmas=None, full_core=True, be=None):
    """Y = U S V^* with orthonormal U, V and singular values ``sigmas``.

    ``full_core=True`` hides the singular values behind random unitary
    rotations (S = P diag(σ) Q^*), so S is not diagonal.
    """
    sig = np.asarray(sigmas if sigmas is not None else np.sort(rng.uniform(0.5, 2.0, r))[::-1], dtype=float)
    U, V = orth(rng, m, r, cplx), orth(rng, n, r, cplx)
    S = np.diag(sig).astype(complex if cplx else float)
    if full_core:
        S = unitary(rng, r, cplx) @ S @ H(unitary(rng, r, cplx))
    be = be or get_backend("numpy")
    return LowRankMatrix(be.asarray(U), be.asarray(S), be.asarray(V))


def dense(Y):
    return to_numpy(Y.to_dense())


class GenericField:
    """A generic smooth nonlinear, time-dependent field (complex-safe).

    F(t, Y) = A Y + Y B + (1 + t) C + γ (Y ⊙ Y),  every entry O(1).
    Built from the dense Y, so it depends on the matrix only (gauge invariant).
    """

    def __init__(self, rng, m, n, cplx, gamma=0.3, be=None):
        be = be or get_backend("numpy")
        self.A = be.asarray(draw(rng, (m, m), cplx) / np.sqrt(m))
        self.B = be.asarray(draw(rng, (n, n), cplx) / np.sqrt(n))
        self.C = be.asarray(draw(rng, (m, n), cplx))
        self.gamma = gamma

    def __call__(self, t, Y):
        Yd = Y.to_dense()
        return self.A @ Yd + Yd @ self.B + (1.0 + t) * self.C + self.gamma * (Yd * Yd)

    def transposed(self):
        """The field G(t, X) = F(t, X^T)^T, whose flow is the transpose of F's."""
        f = self

        class _T:
            def __call__(self, t, X):
                return f(t, X.T).T

        return _T()


def hermitian(rng, n, scale=1.0):
    """A random complex Hermitian n×n matrix with spectral norm ``scale``."""
    G = draw(rng, (n, n), True)
    Hm = (G + H(G)) / 2
    return scale * Hm / np.linalg.norm(Hm, 2)


class HermitianSuperoperatorField:
    """F(Y) = −i 𝓗[Y], 𝓗[Y] = H1 Y + Y H2 + V1 Y V2 with H1, H2, V1, V2 Hermitian (‖·‖₂ = 1).

    𝓗 is self-adjoint in ⟨·,·⟩_F, so the flow conserves ‖Y‖ and E(Y) = Re⟨Y, 𝓗[Y]⟩;
    unlike the Sylvester case the V1 Y V2 term raises the rank (the structure of the
    [CKL22] Schrödinger problem). ρ = ‖𝓗‖ ≤ 3.
    """

    rho = 3.0

    def __init__(self, rng, m, n):
        self.H1, self.V1 = hermitian(rng, m), hermitian(rng, m)
        self.H2, self.V2 = hermitian(rng, n), hermitian(rng, n)

    def ham(self, Y):
        return self.H1 @ Y + Y @ self.H2 + self.V1 @ Y @ self.V2

    def __call__(self, t, Y):
        return -1j * self.ham(Y.to_dense())

    def energy(self, Y):
        return float(np.real(np.vdot(Y, self.ham(Y))))


def step(name, field, t0, Y0, h, substep="euler", **opts):
    """One step of integrator ``name``; the adaptive ones keep rank r unless told."""
    if name in ADAPTIVE and all(opts.get(k) is None for k in ("theta", "tau", "rank")):
        opts = dict(opts, rank=Y0.rank)
    return INTEGRATORS[name](field, t0, Y0, h, substep=substep, **opts)


def run(name, field, Y0, t0, T, n, substep="euler", **opts):
    h = (T - t0) / n
    Y = Y0
    for k in range(n):
        Y = step(name, field, t0 + k * h, Y, h, substep, **opts).Y
    return Y


def slope(hs, errs):
    """Least-squares slope of log(err) against log(h)."""
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


def expm(A):
    return sla.expm(A)


def fixture_settings(**kw):
    """settings for @given tests that use the (stateless) ``backend`` fixture."""
    return settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], **kw)
