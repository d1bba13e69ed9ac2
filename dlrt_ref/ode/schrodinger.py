"""The discrete Schrödinger equation of [CKL22] Sec. 6.1, Eq. (23), in factored form.

.. math::

    i \\dot Y = H[Y] := \\tfrac12 (D Y + Y D^T) + V_{\\cos} Y V_{\\cos}, \\qquad
    D = \\mathrm{tridiag}(-1, 2, -1), \\quad
    V_{\\cos} = \\mathrm{diag}\\big(1 - \\cos(2\\pi j / N)\\big)_{j=1}^N,

Y(t) ∈ C^{N×N}. H is a Hermitian (self-adjoint) linear operator on C^{N×N}
with the Frobenius inner product, so the exact flow Y(t) = e^{−itH} Y0
conserves the norm ‖Y‖_F and the energy E(Y) = Re⟨Y, H[Y]⟩ = Re tr(Y^* H[Y]).
The rank-adaptive BUG loses norm exactly by the discarded singular values
(‖Y1‖² = ‖Ŷ1‖² − Σ discarded σ², [CKL22] Sec. 4) and its energy drifts by at
most O(nϑ) after n steps.

The field value F = −i H[Y] is an :class:`FieldValue` operator: for
Y = U S V^* (any factors, r columns) it applies D (tridiagonal) and V_cos
(diagonal) to thin matrices only, so F·W costs O(N r k), and the N×N array is
never formed. F^* = +i H[Y^*] because D and V_cos are real symmetric.

The reference is exact: vec(H[Y]) = (½(I⊗D + D⊗I) + V⊗V) vec(Y) is a sparse
N²×N² matrix and ``scipy.sparse.linalg.expm_multiply`` evaluates
e^{−itH} vec(Y0) to near machine precision (cached per t by
:class:`~dlrt_ref.ode.reference.Continuation`).

References
----------
.. [CKL22] G. Ceruti, J. Kusch, C. Lubich, "A rank-adaptive robust integrator
   for dynamical low-rank approximation", BIT 62, 1149–1174, 2022.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import expm_multiply

from dlrt_ref.linalg import H, random_orthonormal
from dlrt_ref.lowrank import LowRankMatrix
from dlrt_ref.ode.problem import Problem
from dlrt_ref.ode.reference import Continuation
from dlrt_ref.operators import Operator

__all__ = ["SchrodingerField", "FieldValue", "schrodinger", "apply_D", "potential"]


def apply_D(X):
    """D X for D = tridiag(−1, 2, −1) (N×N, Dirichlet) and X (N, k), in O(N k)."""
    out = 2.0 * X
    out[1:] -= X[:-1]
    out[:-1] -= X[1:]
    return out


def potential(N: int):
    """The diagonal of V_cos: 1 − cos(2πj/N), j = 1..N."""
    j = np.arange(1, N + 1)
    return 1.0 - np.cos(2.0 * np.pi * j / N)


class FieldValue(Operator):
    """The N×N matrix c·H[Y] with Y = U S W^* kept as factors (Y (N×N), c scalar)."""

    def __init__(self, U, S, W, v, c=-1j):
        self.U, self.S, self.W, self.v, self.c = U, S, W, v, c
        self.shape = (U.shape[0], W.shape[0])
        self.dtype = np.result_type(U, S, W, np.complex128)

    def _Y(self, X):
        return self.U @ (self.S @ (H(self.W) @ X))  # (N,r)(r,r)(r,N)(N,k) -> (N, k)

    def __matmul__(self, X):
        # H[Y] X = ½ (D (Y X) + Y (D X)) + v ∘ (Y (v ∘ X)),  D = Dᵀ, v ∘ = diag(v) @
        YX = self._Y(X)
        out = 0.5 * (apply_D(YX) + self._Y(apply_D(X))) + self.v[:, None] * self._Y(self.v[:, None] * X)
        return self.c * out

    @property
    def H(self):
        # (c H[Y])^* = conj(c) H[Y^*], Y^* = W S^* U^*
        return FieldValue(self.W, H(self.S), self.U, self.v, np.conj(self.c))

    def scaled(self, c):
        return FieldValue(self.U, self.S, self.W, self.v, c * self.c)

    def to_dense(self):
        return self @ np.eye(self.shape[1], dtype=self.dtype)

    def __repr__(self):
        return f"FieldValue(shape={self.shape}, rank={self.U.shape[1]}, c={self.c})"


class SchrodingerField:
    """F(t, Y) = −i H[Y] for Y a :class:`LowRankMatrix`; returns a lazy :class:`FieldValue`."""

    def __init__(self, N: int):
        self.N = N
        self.v = potential(N)

    def __call__(self, t, Y: LowRankMatrix):
        return FieldValue(Y.U, Y.S, Y.V, self.v, -1j)

    def hamiltonian(self, Y):
        """H[Y] for a dense N×N Y: ½(DY + YDᵀ) + V Y V, in O(N²)."""
        return 0.5 * (apply_D(Y) + apply_D(Y.T).T) + self.v[:, None] * Y * self.v[None, :]

    def rhs(self, t, Y):
        """−i H[Y] on dense Y (for solve_ivp cross-checks)."""
        return -1j * self.hamiltonian(Y)

    def energy(self, Y) -> float:
        """E(Y) = Re⟨Y, H[Y]⟩_F, conserved by the exact flow (Y dense or LowRankMatrix)."""
        if isinstance(Y, LowRankMatrix):
            # tr(Y^* H[Y]) = tr(S^* U^* H[Y] V) for orthonormal V (as the integrators keep it)
            HY = FieldValue(Y.U, Y.S, Y.V, self.v, 1.0)  # H[Y], lazily
            return float(np.real(np.trace(H(Y.S) @ (H(Y.U) @ (HY @ Y.V)))))  # (r,r)(r,N)(N,r)
        return float(np.real(np.vdot(Y, self.hamiltonian(Y))))

    def sparse_generator(self):
        """The N²×N² sparse matrix of Y ↦ H[Y] on column-major vec(Y)."""
        N = self.N
        D = sp.diags([-np.ones(N - 1), 2 * np.ones(N), -np.ones(N - 1)], [-1, 0, 1], format="csr")
        I = sp.identity(N, format="csr")
        # vec(DY) = (I⊗D) vec Y; vec(Y Dᵀ) = (D⊗I) vec Y; vec(V Y V) = (V⊗V) vec Y
        Vv = np.kron(self.v, self.v)  # diag of V⊗V
        return (0.5 * (sp.kron(I, D) + sp.kron(D, I)) + sp.diags(Vv)).tocsr()


def schrodinger(N: int = 100, r: int = 10, seed: int = 0, T: float = 5.0, complex_factors: bool = False):
    """The [CKL22] Sec. 6.1, Eq. (23) problem: Y0 = U0 S0 V0^*, S0 = diag(10^{-i})_{i=1..r} / ‖·‖_F.

    U0, V0 are random orthonormal N×r (complex if ``complex_factors``),
    so ‖Y0‖_F = 1 and Y0 has rank r. The exact solution leaves the rank-r
    manifold at once (its rank grows); ``best_error`` is from its SVD.
    Reference: ``expm_multiply`` on the sparse vec operator (exact).
    """
    if not (1 <= r <= N):
        raise ValueError(f"schrodinger: rank must be in [1, {N}], got {r}")
    rng = np.random.default_rng(seed)
    U0 = random_orthonormal(rng, N, r, complex_factors).astype(np.complex128)
    V0 = random_orthonormal(rng, N, r, complex_factors).astype(np.complex128)
    s = 10.0 ** -np.arange(1, r + 1)
    S0 = np.diag(s / np.linalg.norm(s)).astype(np.complex128)
    Y0 = LowRankMatrix(U0, S0, V0)
    f = SchrodingerField(N)
    Hs = f.sparse_generator()

    def propagate(Yfrom, t_from, t_to):
        y = expm_multiply((-1j * (t_to - t_from)) * Hs, Yfrom.reshape(-1, order="F"))
        return y.reshape((N, N), order="F")

    return Problem(
        name="schrodinger", field=f, Y0=Y0, t0=0.0, T=float(T),
        reference=Continuation(propagate, Y0.to_dense(), 0.0), rhs=f.rhs, exact=True,
        energy=f.energy, params=dict(N=N, r=r, seed=seed, T=T, complex_factors=complex_factors),
    )
