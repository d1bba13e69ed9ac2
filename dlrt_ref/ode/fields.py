"""Vector fields with known structure: :class:`Increments` (a trajectory used through its increments)
and :class:`SylvesterField`.

The integrators recognise :class:`Increments` by its ``on_step`` method (duck
typing), so the core never imports this module. :class:`SylvesterField` is the affine field F(Y) = A Y + Y B + C. Its
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

from typing import Any, Callable

from dlrt_ref.linalg import H


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
        return self.A, H(V0) @ self.B @ V0, self.C @ V0

    def l_coefficients(self, U0):
        return H(self.B), H(U0) @ H(self.A) @ U0, H(self.C) @ U0

    def s_coefficients(self, U, V):
        return H(U) @ self.A @ U, H(V) @ self.B @ V, H(U) @ self.C @ V


class Increments:
    """A trajectory A(t) used through its increments A(t0+h) − A(t0) ([LO14] Sec. 5, [CL22] Sec. 3).

    On the step [t0, t0+h] the field is the constant (A(t0+h) − A(t0)) / h,
    so Euler sub-steps solve every sub-flow exactly. If A(t) has rank r for all
    t, KSL, Strang, BUG and the rank-adaptive BUG reproduce A(t) exactly.
    """

    def __init__(self, A: Callable[[float], Any]):
        self.A = A

    def on_step(self, t0: float, h: float):
        dA = (self.A(t0 + h) - self.A(t0)) / h  # (m, n)
        return lambda t, Y: dA
