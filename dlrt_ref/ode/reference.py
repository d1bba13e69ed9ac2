"""Reference solutions for the matrix ODE problems.

Three ways to know Y(t) to (near) machine precision:

``NormalSylvesterFlow``
    The exact flow of the affine Sylvester ODE Ẏ = A Y + Y B + C when A and B
    are *normal* (unitarily diagonalisable, e.g. symmetric, skew-symmetric or
    shifts of them). With A = Q_A diag(a) Q_A^*, B = Q_B diag(b) Q_B^* and
    Ŷ = Q_A^* Y Q_B, Ĉ = Q_A^* C Q_B, every entry decouples,

    .. math:: \\dot{\\hat y}_{jk} = z_{jk} \\hat y_{jk} + \\hat c_{jk},\\quad
              z_{jk} = a_j + b_k
              \\;\\Longrightarrow\\;
              \\hat y_{jk}(t) = e^{t z_{jk}} \\hat y_{jk}(0) + \\varphi_1(t, z_{jk})\\, \\hat c_{jk},

    with :math:`\\varphi_1(t, z) = (e^{tz} - 1)/z` (= t for z = 0), evaluated
    by ``expm1`` so that z → 0 is harmless. No steady state is needed, so
    purely imaginary spectra (rotations) are fine.

``Continuation``
    Caches Y(t) at the times asked for and propagates from the latest cached
    time ≤ t with a user-given propagator (``expm_multiply`` for Schrödinger,
    ``solve_ivp`` otherwise), so repeated and increasing queries are cheap.

``ivp_solve``
    ``scipy.integrate.solve_ivp`` (DOP853) on vec(Y) at rtol = atol = 1e-10,
    real or complex — the generic reference, and the cross-check of the exact
    ones in the tests.
"""
from __future__ import annotations

import bisect
from typing import Callable

import numpy as np
from scipy.integrate import solve_ivp

from dlrt_ref.linalg import H

__all__ = ["phi1", "NormalSylvesterFlow", "Continuation", "ivp_solve", "IVP_TOL"]

IVP_TOL = 1e-10  # rtol = atol of every solve_ivp reference


def phi1(t: float, z):
    """φ₁(t, z) = (e^{tz} − 1)/z, with the limit t at z = 0 (elementwise, complex ok)."""
    z = np.asarray(z)
    tz = t * z
    small = np.abs(tz) < 1e-8
    safe = np.where(small, 1.0, z)
    return np.where(small, t * (1.0 + tz / 2.0), np.expm1(tz) / safe)


class NormalSylvesterFlow:
    """Exact solution of Ẏ = A Y + Y B + C, Y(t0) = Y0, for normal A (m×m) and B (n×n).

    Parameters
    ----------
    a, Qa : eigenvalues (m,) and unitary eigenvectors (m, m) of A.
    b, Qb : eigenvalues (n,) and unitary eigenvectors (n, n) of B.
    C, Y0 : arrays (m, n).
    t0 : initial time.
    real : return the real part (when A, B, C, Y0 are real the solution is real).
    """

    def __init__(self, a, Qa, b, Qb, C, Y0, t0=0.0, real=True):
        self.Qa, self.Qb, self.t0, self.real = Qa, Qb, float(t0), real
        self.z = a[:, None] + b[None, :]  # (m, n): z_jk = a_j + b_k
        self.Y0_hat = H(Qa) @ Y0 @ Qb  # (m, m)(m, n)(n, n)
        self.C_hat = H(Qa) @ C @ Qb

    def __call__(self, t: float):
        s = float(t) - self.t0
        Y_hat = np.exp(s * self.z) * self.Y0_hat + phi1(s, self.z) * self.C_hat  # (m, n), entrywise
        Y = self.Qa @ Y_hat @ H(self.Qb)  # (m, m)(m, n)(n, n)
        return Y.real.copy() if self.real else Y

    @staticmethod
    def skew_eig(W):
        """Eigen-decomposition of a real skew-symmetric W = Q diag(−iμ) Q^* via eigh of the Hermitian iW."""
        mu, Q = np.linalg.eigh(1j * W)
        return -1j * mu, Q


class Continuation:
    """Y(t) by propagation from the latest cached time ≤ t, with a cache.

    ``propagate(Y_from, t_from, t_to) -> Y_to`` must solve the ODE forward
    (or backward) from ``t_from`` to ``t_to``.
    """

    def __init__(self, propagate: Callable, Y0, t0: float):
        self.propagate = propagate
        self._t = [float(t0)]
        self._Y = [np.array(Y0, copy=True)]

    def __call__(self, t: float):
        t = float(t)
        i = bisect.bisect_right(self._t, t) - 1
        if i >= 0 and self._t[i] == t:
            return self._Y[i].copy()
        i = max(i, 0)  # before t0: integrate backwards from t0
        Y = self.propagate(self._Y[i], self._t[i], t)
        j = bisect.bisect_left(self._t, t)
        self._t.insert(j, t)
        self._Y.insert(j, Y)
        return Y.copy()


def ivp_solve(rhs: Callable, Y0, t0: float, t1: float, rtol: float = IVP_TOL, atol: float = IVP_TOL):
    """Y(t1) for Ẏ = rhs(t, Y) (dense m×n arrays), by solve_ivp DOP853 on vec(Y).

    Complex data are integrated as complex (solve_ivp supports it for DOP853).
    """
    Y0 = np.asarray(Y0)
    shape = Y0.shape
    if t1 == t0:
        return Y0.copy()
    sol = solve_ivp(
        lambda t, y: np.asarray(rhs(t, y.reshape(shape))).reshape(-1),
        (float(t0), float(t1)), Y0.reshape(-1), method="DOP853", rtol=rtol, atol=atol,
    )
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    return sol.y[:, -1].reshape(shape)
