"""The value of a vector field, seen only through products with thin matrices.

An integrator of dynamical low-rank approximation needs the field value
:math:`F \\in \\mathbb{C}^{m\\times n}` only through

.. math::

    F V \\;(m\\times r), \\qquad F^* U \\;(n\\times r), \\qquad U^* F V \\;(r\\times r).

A dense array offers these directly. For a network layer the (negative) loss
gradient is a sum of outer products, :math:`F = c\\,\\Delta^T X` with
:math:`\\Delta` (B×m) and :math:`X` (B×n), and the products cost O(B(m+n)r)
without ever forming the m×n matrix. Both are wrapped here behind one tiny
interface, so the integrators read ``F @ V0`` and ``F.H @ U0`` whatever F is.

Operators
---------
``DenseOperator(A)``             wraps an explicit array.
``OuterProductOperator(D, X, c)`` represents ``c * D.T @ X`` lazily (real or complex:
                                 ``c * D^T X`` with plain transpose, as the gradient
                                 of a linear layer ``Y = X W^T`` is ``Delta^T X``).
``as_operator(F)``               returns F unchanged if it already is an operator.
"""
from __future__ import annotations

from typing import Any

from dlrt_ref.backend import array_module

__all__ = ["Operator", "DenseOperator", "OuterProductOperator", "as_operator", "is_operator"]


class Operator:
    """Common interface: ``shape``, ``dtype``, ``F @ V``, ``F.H`` (adjoint), ``scaled``.

    Subclass it for a field value with structure of its own (e.g.
    :class:`dlrt_ref.ode.schrodinger.FieldValue`): :func:`is_operator` recognises subclasses.
    """

    shape: tuple
    dtype: Any

    def __matmul__(self, V):  # F @ V
        raise NotImplementedError

    @property
    def H(self) -> "Operator":
        """The conjugate transpose F^* as an operator."""
        raise NotImplementedError

    def core(self, U, V):
        """U^* F V, shape (r_U, r_V)."""
        return U.conj().T @ (self @ V)

    def scaled(self, c) -> "Operator":
        """The operator c·F."""
        raise NotImplementedError

    def to_dense(self):
        """The full m×n array. Only for tests and tiny problems."""
        raise NotImplementedError


class DenseOperator(Operator):
    """An explicit m×n array seen through the operator interface."""

    def __init__(self, A):
        if getattr(A, "ndim", None) != 2:
            raise ValueError(f"DenseOperator needs a 2-D array, got shape {getattr(A, 'shape', None)}")
        self.A = A
        self.shape = A.shape
        self.dtype = A.dtype

    def __matmul__(self, V):
        return self.A @ V  # (m, n) @ (n, r) -> (m, r)

    @property
    def H(self):
        return DenseOperator(self.A.conj().T)

    def scaled(self, c):
        return DenseOperator(c * self.A)

    def to_dense(self):
        return self.A

    def __repr__(self):
        return f"DenseOperator(shape={self.shape}, dtype={self.dtype})"


class OuterProductOperator(Operator):
    """The m×n matrix ``c * D.T @ X`` kept as its factors.

    Parameters
    ----------
    D : array, shape (B, m)
        Left factor (for a layer: upstream gradient Δ = ∂L/∂Y, one row per sample).
    X : array, shape (B, n)
        Right factor (for a layer: the layer input, or its im2col unfolding).
    c : scalar
        Scale; a training field is ``OuterProductOperator(Delta, X, -1.0)``.
    """

    def __init__(self, D, X, c=1.0):
        if D.ndim != 2 or X.ndim != 2 or D.shape[0] != X.shape[0]:
            raise ValueError(
                f"OuterProductOperator needs D (B, m) and X (B, n) with the same B; "
                f"got {D.shape} and {X.shape}"
            )
        array_module(D, X)  # refuses mixed backends
        self.D, self.X, self.c = D, X, c
        self.shape = (D.shape[1], X.shape[1])
        self.dtype = (D[:0, :0].sum() * X[:0, :0].sum()).dtype

    def __matmul__(self, V):
        # c * D^T (X V): (B, n) @ (n, r) -> (B, r);  (m, B) @ (B, r) -> (m, r)
        return self.c * (self.D.T @ (self.X @ V))

    @property
    def H(self):
        # (c D^T X)^* = conj(c) X^H conj(D) = conj(c) * (conj X)^T (conj D)
        return OuterProductOperator(self.X.conj(), self.D.conj(), self.c.conjugate() if hasattr(self.c, "conjugate") else self.c)

    def core(self, U, V):
        # U^* (c D^T X) V = c (D conj(U))^T (X V): (r_U, B) @ (B, r_V)
        return self.c * ((self.D @ U.conj()).T @ (self.X @ V))

    def scaled(self, c):
        return OuterProductOperator(self.D, self.X, c * self.c)

    def to_dense(self):
        return self.c * (self.D.T @ self.X)

    def __repr__(self):
        return f"OuterProductOperator(shape={self.shape}, batch={self.D.shape[0]}, c={self.c})"


def is_operator(F) -> bool:
    return isinstance(F, Operator)


def as_operator(F):
    """Wrap a 2-D array as :class:`DenseOperator`; pass operators through."""
    if is_operator(F):
        return F
    return DenseOperator(F)
