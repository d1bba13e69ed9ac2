r"""Low-rank linear layer :math:`y = x\,(U S V^T)^T + b` and the factor machinery
shared with the low-rank convolution.

The weight :math:`W = U S V^T \in \mathbb R^{n_\text{out}\times n_\text{in}}` is
never formed. For an input :math:`X` (N×n_in, the batch; for a convolution the
im2col rows) and upstream gradient :math:`\Delta = \partial L/\partial Y`
(N×n_out), the gradient with respect to :math:`W` is the sum of outer products

.. math::

    G = \frac{\partial L}{\partial W} = \Delta^T X \qquad (n_\text{out}\times n_\text{in}),

kept lazily as :class:`~dlrt_ref.operators.OuterProductOperator` ``(Δ, X)`` in
``layer.grad_op``. The factor gradients of DLRT (Schotthöfer et al. 2022, Alg. 1;
Zangrando 2022, ch. 3: K-, L- and S-steps) follow in closed form, in O(N(n_in+n_out)r):

.. math::

    \frac{\partial L}{\partial K}\Big|_{W = K V^T} = G V = \Delta^T (X V), \quad
    \frac{\partial L}{\partial L}\Big|_{W = U L^T} = G^T U = X^T (\Delta U), \quad
    \frac{\partial L}{\partial S}\Big|_{W = U S V^T} = U^T G V = (\Delta U)^T (X V).

(The sign is that of the loss gradient; the training code negates it to get the
field :math:`F = -\nabla L`.)
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.backend import array_module
from dlrt_ref.linalg import svd_factors
from dlrt_ref.nn import init
from dlrt_ref.nn.errors import RankError, ShapeError, check_backend, check_shape
from dlrt_ref.nn.layers import Dense, Layer
from dlrt_ref.operators import OuterProductOperator

__all__ = ["LowRankFactors", "LowRankLinear", "FactorGradOperator", "check_rank"]


def _extends(A, A0) -> bool:
    """Whether A = [A0 | more columns] (NumPy arrays only): the augmented bases Û = [U0 | Ũ], V̂ = [V0 | Ṽ] of
    the rank-adaptive steps (:func:`dlrt_ref.integrators.augment`) start with the layer's factor.

    Compared by value (an m×r comparison, ~1 % of the GEMM it saves); on CuPy never (the answer would cost a
    host synchronisation), which only means the product is recomputed.
    """
    return (A0 is not None and type(A) is np.ndarray and type(A0) is np.ndarray and A.ndim == 2
            and A.shape[0] == A0.shape[0] and A.shape[1] > A0.shape[1] and A.dtype == A0.dtype
            and np.array_equal(A[:, :A0.shape[1]], A0))


class FactorGradOperator(OuterProductOperator):
    r"""The lazy gradient :math:`G = c\,\Delta^T X` of a low-rank layer, reusing the pass's products.

    The forward pass computed :math:`X V` and the backward pass :math:`\Delta U`
    for the layer's factors (U, V) at that point. The integrators then ask for
    :math:`F V_0 = c\,\Delta^T (X V_0)`, :math:`F^T U_0 = c\,X^T(\Delta U_0)` and
    :math:`U^T F V = c\,(\Delta U)^T (X V)` at *the same* U0 = U, V0 = V (K-, L-
    and S-steps of bug, ksl, parallel; K and L of ra-bug). This operator returns
    the stored product instead of recomputing it — the same BLAS call on the
    same arrays, so the result is unchanged — and computes anything else as
    :class:`~dlrt_ref.operators.OuterProductOperator` does.

    A stored product is used only when the argument *is* the array object it
    was computed from (``V is self.V_known``). The library never modifies factors
    in place (:meth:`LowRankFactors.set_factors` replaces them), so identity
    implies equal values. Complex data falls back to the plain operator for the
    adjoint (the conjugations would break the identity).

    The S-step of the rank-adaptive methods asks for Û^T F V̂ with the augmented bases
    Û = [U0 | Ũ], V̂ = [V0 | Ṽ]: then only Δ Ũ and X Ṽ are computed and the stored
    Δ U0, X V0 are reused (:func:`_extends`; NumPy only), which saves B·(m + n)·r more flops
    per layer and step (the result equals the full product up to the BLAS's rounding).

    Why keep a memo keyed on identity: it saves two GEMMs of B·n·r flops per layer
    and step (X V0 and Δ U0 of the K- and L-steps), with bit-identical results.
    Measured on the README MLP (784-500×4-10, rank 100, batch 256, ra-bug, one
    thread, both variants interleaved in one process): 81.7 against 84.1 ms per
    step (median of 80; two more runs 88.9/92.4 and 89.0/92.3 ms), i.e. 3–4 %
    (``benchmarks/factor_memo.py``, ``benchmarks/results/factor_memo.json``).
    """

    def __init__(self, D, X, c=1.0, V=None, XV=None, U=None, DU=None):
        super().__init__(D, X, c)
        self._known = (V, XV, U, DU)

    def _XV(self, V):
        kV, kXV = self._known[0], self._known[1]
        if kV is not None and V is kV:
            return kXV
        if _extends(V, kV):  # V = [V0 | Ṽ] (an augmented basis): X V = [X V0 | X Ṽ]
            return np.concatenate([kXV, self.X @ V[:, kV.shape[1]:]], axis=1)  # (B, r) | (B, n) @ (n, k)
        return self.X @ V  # (B, n) @ (n, r) -> (B, r)

    def _DU(self, U):  # D conj(U)
        kU, kDU = self._known[2], self._known[3]
        if self.dtype.kind != "c" and kU is not None:
            if U is kU:
                return kDU
            if _extends(U, kU):  # U = [U0 | Ũ]: D U = [D U0 | D Ũ]
                return np.concatenate([kDU, self.D @ U[:, kU.shape[1]:]], axis=1)  # (B, r) | (B, m) @ (m, k)
        return self.D @ U.conj()  # (B, m) @ (m, r) -> (B, r)

    def __matmul__(self, V):
        # c * D^T (X V): (m, B) @ (B, r) -> (m, r), X V reused when V is the layer's V
        return self.c * (self.D.T @ self._XV(V))

    @property
    def H(self):
        if self.dtype.kind == "c":
            return OuterProductOperator.H.fget(self)
        V, XV, U, DU = self._known
        # (c D^T X)^T = c X^T D: the roles of (D, U) and (X, V) swap
        return FactorGradOperator(self.X, self.D, self.c, V=U, XV=DU, U=V, DU=XV)

    def core(self, U, V):
        # U^* (c D^T X) V = c (D conj(U))^T (X V): (r_U, B) @ (B, r_V)
        return self.c * (self._DU(U).T @ self._XV(V))

    def scaled(self, c):
        return FactorGradOperator(self.D, self.X, c * self.c, *self._known)


def check_rank(owner: str, rank, n_out: int, n_in: int) -> int:
    """Return ``int(rank)`` or raise :class:`RankError` naming ``owner``."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise RankError(f"{owner}: rank must be an integer, got {rank!r}")
    if not 1 <= rank <= min(n_out, n_in):
        raise RankError(
            f"{owner}: rank must satisfy 1 <= rank <= min(n_out, n_in) = min({n_out}, {n_in}) = "
            f"{min(n_out, n_in)}, got rank={rank}"
        )
    return int(rank)


class LowRankFactors(Layer):
    r"""Factors :math:`U` (n_out×r), :math:`S` (r×r), :math:`V` (n_in×r) of
    :math:`W = U S V^T`, acting on 2-D matrices, and their gradients.

    Subclasses set ``n_out``, ``n_in`` and call :meth:`_init_factors`; they map
    their input to a matrix ``X`` (N, n_in), call :meth:`_lr_forward`, and in the
    backward call :meth:`_lr_backward` with ``D`` (N, n_out).
    """

    lowrank = True
    input_grad_optional = True  # backward(dy, input_grad=False): no dX (see dlrt_ref.nn.layers)

    def _init_factors(self, rank, seed, activation, decay, spectrum="halfnormal"):
        rank = check_rank(repr(self), rank, self.n_out, self.n_in)
        U, S, V = init.lowrank_factors(self.n_out, self.n_in, rank, seed, activation, decay, spectrum)
        be = self.backend
        self.U, self.S, self.V = (be.asarray(A, self.dtype) for A in (U, S, V))
        self.params = {"b": be.xp.zeros(self.n_out, dtype=self.dtype)}
        self.grad_op = None
        self._products = None

    # -- factors -----------------------------------------------------------
    @property
    def rank(self) -> int:
        return int(self.S.shape[0])

    @property
    def shape(self):
        """(n_out, n_in): the shape of W."""
        return (self.n_out, self.n_in)

    def set_factors(self, U, S, V):
        """Replace the factors; the rank may change.

        Shapes, backend and dtype are checked (orthonormality is not): the
        factors must have the layer's dtype exactly — a float64 factor in a
        float32 layer (or an integer one) raises :class:`TypeError` instead of
        being cast silently; convert with ``A.astype(layer.dtype)``. ``grad_op`` of
        the last backward is kept (it is G at the point where backward ran), but
        :meth:`grad_K`, :meth:`grad_L`, :meth:`grad_S` need a new backward.
        """
        r = getattr(S, "shape", (None,))[0]
        if r is None:
            raise ShapeError(f"{self!r}.set_factors: S must be an (r, r) array, got {type(S).__name__}")
        check_rank(f"{self!r}.set_factors", r, self.n_out, self.n_in)
        for A, name, pattern in ((U, "U", (self.n_out, r)), (S, "S", (r, r)), (V, "V", (self.n_in, r))):
            check_backend(self, A, f"set_factors {name}", self.backend.name)
            check_shape(self, A, f"set_factors {name}", pattern)
        for A, name in ((U, "U"), (S, "S"), (V, "V")):
            if A.dtype != self.dtype:
                raise TypeError(f"{self!r}.set_factors: {name} has dtype {A.dtype}, the layer {self.dtype}; "
                                f"convert with .astype({str(self.dtype)!r}) first")
        self.U, self.S, self.V = U, S, V
        self._products = None

    def to_dense(self):
        """W = U S V^T (n_out×n_in). For tests and tiny layers only."""
        return (self.U @ self.S) @ self.V.T  # (n_out, r) @ (r, r) @ (r, n_in)

    def num_params(self) -> int:
        """r (n_out + n_in) + r² + n_out (factors and bias)."""
        r = self.rank
        return r * (self.n_out + self.n_in) + r * r + self.n_out

    # -- the linear map on matrices ----------------------------------------
    def _lr_forward(self, X):
        U, S, V, b = self.U, self.S, self.V, self.params["b"]
        XV = X @ V  # (N, n_in) @ (n_in, r) -> (N, r)
        Z = XV @ S.T  # (N, r) @ (r, r) -> (N, r)
        self._lr_cache = (X, XV, V)
        self._products = None
        return Z @ U.T + b  # (N, r) @ (r, n_out) -> (N, n_out)

    def _lr_backward(self, D, input_grad=True):
        X, XV, V_fwd = self._lr_cache
        U, S, V = self.U, self.S, self.V
        self.grads["b"] = D.sum(axis=0)  # Y = ... + b: (n_out,)
        DU = D @ U  # Y = Z U^T   -> dZ  = D U:   (N, n_out) @ (n_out, r) -> (N, r)
        dXV = DU @ S  # Z = XV S^T -> dXV = dZ S:  (N, r) @ (r, r) -> (N, r)
        dX = dXV @ V.T if input_grad else None  # XV = X V -> dX = dXV V^T: (N, r) @ (r, n_in) -> (N, n_in)
        # G = D^T X (n_out, n_in), lazy; keeps X V (at the forward's V) and D U for reuse by the integrators
        self.grad_op = FactorGradOperator(D, X, V=V_fwd, XV=XV, U=U, DU=DU)
        self._products = (D, X, XV, DU)
        return dX

    def _grad_products(self, what):
        if self._products is None:
            raise RuntimeError(
                f"{self!r}.{what}: no gradient for the current factors; run forward and backward first "
                f"(set_factors invalidates it; grad_op still holds G of the last backward)"
            )
        return self._products

    def grad_K(self):
        r"""∂L/∂K for :math:`W = K V^T` (V fixed): :math:`G V = \Delta^T (X V)`, shape (n_out, r)."""
        D, X, XV, DU = self._grad_products("grad_K")
        return D.T @ XV  # (n_out, N) @ (N, r) -> (n_out, r)

    def grad_L(self):
        r"""∂L/∂L for :math:`W = U L^T` (U fixed): :math:`G^T U = X^T (\Delta U)`, shape (n_in, r)."""
        D, X, XV, DU = self._grad_products("grad_L")
        return X.T @ DU  # (n_in, N) @ (N, r) -> (n_in, r)

    def grad_S(self):
        r"""∂L/∂S for :math:`W = U S V^T` (U, V fixed): :math:`U^T G V = (\Delta U)^T (X V)`, shape (r, r)."""
        D, X, XV, DU = self._grad_products("grad_S")
        return DU.T @ XV  # (r, N) @ (N, r) -> (r, r)


class LowRankLinear(LowRankFactors):
    r"""Low-rank affine layer :math:`y = ((x V) S^T) U^T + b`, i.e. :math:`W = U S V^T`.

    Parameters
    ----------
    n_in, n_out : int
    rank : int, 1 <= rank <= min(n_in, n_out)
    activation : {"relu", "tanh", "linear", None}
        Selects the scale of the initial singular values (see :mod:`dlrt_ref.nn.init`).
    decay : float, optional
        Initial singular values scaled by ``decay**(-k)``.
    spectrum : {"halfnormal", "linear", "gaussian-product"}
        Shape of the initial singular values (see :mod:`dlrt_ref.nn.init`).
    backend, dtype, seed : as for :class:`~dlrt_ref.nn.layers.Dense`.

    Attributes
    ----------
    U : (n_out, r), S : (r, r), V : (n_in, r)
    params : {"b": (n_out,)};  grads : {"b": (n_out,)} after backward
    grad_op : OuterProductOperator(Δ, X), the lazy (n_out, n_in) gradient G = ∂L/∂W
    """

    def __init__(self, n_in, n_out, rank, *, activation="relu", decay=None, spectrum="halfnormal", backend="numpy",
                 dtype=np.float32, seed=0):
        Layer.__init__(self, backend, dtype)
        self.n_in, self.n_out = int(n_in), int(n_out)
        if self.n_in < 1 or self.n_out < 1:
            raise ShapeError(f"LowRankLinear: n_in and n_out must be >= 1, got n_in={n_in}, n_out={n_out}")
        self._init_factors(rank, seed, activation, decay, spectrum)

    @classmethod
    def from_dense(cls, dense, rank):
        """Truncated SVD of a :class:`Dense` layer (bias, backend, dtype copied) or of a 2-D array W.

        Keeps the ``rank`` largest singular triplets: U S V^T is the best rank-r
        approximation of W in every unitarily invariant norm (Eckart–Young).
        """
        if isinstance(dense, Dense):
            W, b, be, dtype = dense.params["W"], dense.params["b"], dense.backend, dense.dtype
        else:
            W = dense
            if getattr(W, "ndim", None) != 2:
                raise ShapeError(f"LowRankLinear.from_dense: W must be a 2-D array, got shape {getattr(W, 'shape', None)}")
            xp = array_module(W)
            b, be, dtype = None, xp.__name__, W.dtype
        n_out, n_in = W.shape
        layer = cls(n_in, n_out, check_rank("LowRankLinear.from_dense", rank, n_out, n_in), backend=be, dtype=dtype)
        layer.set_factors(*svd_factors(W, rank))  # U (n_out, r), S (r, r), V (n_in, r) = (Qh[:r])ᴴ, not Qh[:r]
        if b is not None:
            layer.params["b"] = b.copy()
        return layer

    def forward(self, x):
        x = self._input(x, (None, self.n_in))
        self._cache = x.shape
        return self._lr_forward(x)  # (B, n_in) -> (B, n_out), see _lr_forward

    def backward(self, dy, input_grad=True):
        B = self._cached()[0]
        dy = self._upstream(dy, (B, self.n_out))
        return self._lr_backward(dy, input_grad)  # (B, n_out) -> (B, n_in) or None, see _lr_backward

    def __repr__(self):
        return f"LowRankLinear({self.n_in}->{self.n_out}, rank={self.rank if hasattr(self, 'S') else '?'})"
