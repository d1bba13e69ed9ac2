"""Vector fields with known structure.

:class:`SylvesterField` is the affine field F(Y) = A Y + Y B + C. Its
K-, L- and S-sub-flows are again of Sylvester type, so
:func:`dlrt_ref.substeps.exact_linear` can solve them exactly; the
coefficients are provided by ``k_coefficients`` etc. (derivation below, with
orthonormal U0, V0, U, V).

.. math::

    \\dot K &= F(K V_0^*) V_0 = A K + K (V_0^* B V_0) + C V_0, \\\\
    \\dot L &= F(U_0 L^*)^* U_0 = B^* L + L (U_0^* A^* U_0) + C^* U_0, \\\\
    \\dot S &= U^* F(U S V^*) V = (U^* A U) S + S (V^* B V) + U^* C V.
"""
from __future__ import annotations


def _H(A):
    return A.conj().T


class SylvesterField:
    """F(t, Y) = A Y + Y B + C with A (m×m), B (n×n), C (m×n); time independent."""

    def __init__(self, A, B, C):
        m, n = C.shape
        if A.shape != (m, m) or B.shape != (n, n):
            raise ValueError(f"SylvesterField: need A ({m},{m}), B ({n},{n}) for C {C.shape}; got A {A.shape}, B {B.shape}")
        self.A, self.B, self.C = A, B, C

    def __call__(self, t, Y):
        Yd = Y.to_dense()  # (m, n); the test problems are small
        return self.A @ Yd + Yd @ self.B + self.C

    def k_coefficients(self, V0):
        return self.A, _H(V0) @ self.B @ V0, self.C @ V0

    def l_coefficients(self, U0):
        return _H(self.B), _H(U0) @ _H(self.A) @ U0, _H(self.C) @ U0

    def s_coefficients(self, U, V):
        return _H(U) @ self.A @ U, _H(V) @ self.B @ V, _H(U) @ self.C @ V
