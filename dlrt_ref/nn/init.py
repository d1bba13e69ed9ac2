r"""Seeded initialisation of dense and low-rank weights.

All random numbers are drawn on the host from ``numpy.random.default_rng(seed)``
in float64 and moved to the layer's backend and dtype by the layer, so NumPy and
CuPy networks built with the same seed start from identical weights.

Dense weights
-------------
A dense :math:`W \in \mathbb{R}^{n_\text{out}\times n_\text{in}}` has i.i.d.
:math:`\mathcal N(0, \sigma^2)` entries with

* ``"relu"``: :math:`\sigma^2 = 2/n_\text{in}` (He et al. 2015),
* ``"tanh"``: :math:`\sigma^2 = 2/(n_\text{in}+n_\text{out})` (Glorot & Bengio 2010),
* ``"linear"`` / ``None``: :math:`\sigma^2 = 1/n_\text{in}` (LeCun).

Low-rank factors
----------------
:math:`W = U S V^T` with :math:`U` (n_out×r) and :math:`V` (n_in×r) orthonormal
(Q factors of host Gaussian matrices, signs fixed so that ``diag(R) > 0``) and
:math:`S = \operatorname{diag}(s_0 > s_1 > \dots > s_{r-1} > 0)`.

The *shape* of the spectrum is set by ``spectrum``:

* ``"halfnormal"`` (default): the largest r of 2r sorted absolute values of
  standard normal draws. The public DLRT codes of 2022 draw the 2r diagonal
  entries of their initial augmented core from |N(0, 1)|; keeping the top half
  of such a draw gives a spread spectrum without near-zero values;
* ``"linear"``: :math:`s_k \propto 1 - \tfrac{k}{2r}` (largest over smallest < 2);
* ``"gaussian-product"``: the singular values of :math:`A B C` with i.i.d.
  Gaussian :math:`A` (n_out×r), :math:`B` (r×r), :math:`C` (r×n_in). This is the
  spectrum *shape* of the initial weight of the 2022 TensorFlow codes of
  Schotthöfer et al., whose factors U, S, Vᵀ are all drawn entrywise from
  N(0, 0.05²) (Keras ``random_normal``) without orthonormalisation. The square
  factor B has singular values down to ≈ 0, so this spectrum spans several
  decades (s_0/s_{r-1} ≈ 10³–10⁴ for r = 250), unlike the two shapes above.

The shape decides the ranks of rank-adaptive training with the published relative
tolerance: τ is *relative*, so the rank at which truncation stops removing initial
directions depends only on the shape, and the directions that training adds are
O(h) — far below ϑ = τ‖Ŝ‖ — so nothing is added afterwards. Truncating the
*initial* S alone, again and again (:func:`dlrt_ref.experiments.rank_dynamics.predicted_ranks`),
gives the ranks that training ends at. For a flat spectrum of r values dropping one
costs ‖σ‖²/r, so truncation stops at r ≈ 1/τ² = 100 for τ = 0.1 (computed: 99 for
the 784-500-500-10 MLP at r = 250 with a flat S); "linear" stops at 82, the default
"halfnormal" at 51–65 (10 seeds, both layers), "gaussian-product" at 51–52; small
layers (LeNet5's convolutions, r = 10 and 25) stay near their caps. Measured against
training and against a teacher with known ranks in ``experiments/rank_dynamics.py``
(figures/rank_dynamics.png; tests/experiments/test_rank_dynamics.py).

The *scale* is chosen so that

.. math::

    \|U S V^T\|_F^2 = \sum_k s_k^2 = n_\text{in}\, n_\text{out}\, \sigma^2
    = \mathbb E \|W_\text{dense}\|_F^2 ,

the expected Frobenius norm of the dense initialisation above. For an input
:math:`x` whose direction is uniformly random,
:math:`\mathbb E\|U S V^T x\|^2 = \tfrac{1}{n_\text{in}}\sum_k s_k^2 \|x\|^2
= \mathbb E\|W_\text{dense} x\|^2`, so the forward signal is preserved exactly as
with He (ReLU) or Glorot (tanh) initialisation, whatever the rank. For ReLU and
r = 20 in a 500×500 layer this gives :math:`s_0 \dots s_{19} \approx 9.1 \dots 4.8`
with ``"linear"`` and medians :math:`\approx 12.6 \dots 3.6` with the default
``"halfnormal"`` (over seeds; tests/experiments/test_rank_dynamics.py). A unit-scale
:math:`S = I` would instead shrink the signal by
:math:`\sqrt{r/(2 n_\text{out})} \approx 0.14` per such layer. Neither published
code starts from :math:`S = I`: the thesis code (Zangrando 2022) draws r sorted
|N(0, 1)| values at unit scale, and the paper's TensorFlow code (Schotthöfer et
al. 2022) draws U, S, Vᵀ entrywise from N(0, 0.05²) (the ``"gaussian-product"``
shape above). Measured effect of the initial spectrum on training (LeNet5 at rank
20, SGD): REPRODUCTION.md §6 (``dlrt_vs_uv``: S = I trails the He-scaled default,
74.6 vs 90.3 % after 470 steps).

Decay option
------------
``decay=d`` multiplies :math:`s_k` by :math:`d^{-k}` for :math:`k = 0, \dots, r-1`
*after* the scaling above (so :math:`s_0` keeps its value and the Frobenius norm
shrinks). This produces the rapidly decaying initial spectra used in the
thesis's comparison of DLRT with plain :math:`UV^T` training.
"""
from __future__ import annotations

import numpy as np

from dlrt_ref.linalg import random_orthonormal
from dlrt_ref.nn.errors import RankError

__all__ = ["weight_variance", "dense_weight", "lowrank_factors", "orthonormal"]

ACTIVATIONS = ("relu", "tanh", "linear", None)


def weight_variance(n_in: int, n_out: int, activation: str | None = "relu") -> float:
    """Entry variance :math:`\\sigma^2` of the dense initialisation for ``activation``."""
    if activation == "relu":
        return 2.0 / n_in
    if activation == "tanh":
        return 2.0 / (n_in + n_out)
    if activation in ("linear", None):
        return 1.0 / n_in
    raise ValueError(f"unknown activation {activation!r} for initialisation; expected one of {ACTIVATIONS}")


def dense_weight(n_out: int, n_in: int, seed=0, activation: str | None = "relu") -> np.ndarray:
    """Host float64 array (n_out, n_in) with i.i.d. N(0, weight_variance) entries."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_out, n_in)) * np.sqrt(weight_variance(n_in, n_out, activation))


def orthonormal(n: int, r: int, seed=0) -> np.ndarray:
    """Host (n, r) matrix with orthonormal columns: Q of a Gaussian, with diag(R) > 0."""
    return random_orthonormal(np.random.default_rng(seed), n, r)


SPECTRA = ("halfnormal", "linear", "gaussian-product")


def lowrank_factors(n_out: int, n_in: int, rank: int, seed=0, activation: str | None = "relu", decay: float | None = None,
                    spectrum: str = "halfnormal"):
    """Host float64 factors ``(U, S, V)`` of a rank-``rank`` initial weight.

    Parameters
    ----------
    n_out, n_in : int
        Shape of :math:`W = U S V^T`.
    rank : int
        ``1 <= rank <= min(n_in, n_out)``.
    seed : int or numpy.random.Generator
    activation : {"relu", "tanh", "linear", None}
        Picks the dense variance whose expected Frobenius norm is matched.
    decay : float > 0, optional
        Multiply :math:`s_k` by ``decay**(-k)``, k = 0..rank-1.
    spectrum : {"halfnormal", "linear", "gaussian-product"}
        Shape of the initial singular values (see the module docstring).

    Returns
    -------
    U : (n_out, rank), S : (rank, rank) diagonal, V : (n_in, rank)
    """
    if not 1 <= rank <= min(n_in, n_out):
        raise RankError(f"rank must satisfy 1 <= rank <= min(n_in, n_out) = {min(n_in, n_out)}, got {rank}")
    rng = np.random.default_rng(seed)
    U = orthonormal(n_out, rank, rng)  # (n_out, r)
    V = orthonormal(n_in, rank, rng)  # (n_in, r)
    k = np.arange(rank)
    if spectrum == "halfnormal":
        s = np.sort(np.abs(rng.standard_normal(2 * rank)))[::-1][:rank]  # top half of 2r draws: positive, decreasing
    elif spectrum == "linear":
        s = 1.0 - k / (2.0 * rank)  # positive, strictly decreasing, s_0/s_{r-1} < 2
    elif spectrum == "gaussian-product":
        # σ(A B C) = σ(R_A B R_Cᵀ) with A = Q_A R_A, Cᵀ = Q_C R_C: an r×r SVD instead of n_out×n_in
        R_A = np.linalg.qr(rng.standard_normal((n_out, rank)), mode="r")  # (r, r)
        B = rng.standard_normal((rank, rank))  # (r, r)
        R_C = np.linalg.qr(rng.standard_normal((n_in, rank)), mode="r")  # (r, r)
        s = np.linalg.svd(R_A @ B @ R_C.T, compute_uv=False)  # (r,), decreasing, > 0 almost surely
    else:
        raise ValueError(f"unknown initial spectrum {spectrum!r}; expected one of {SPECTRA}")
    s *= np.sqrt(n_in * n_out * weight_variance(n_in, n_out, activation) / np.sum(s**2))
    if decay is not None:
        if not decay > 0:
            raise ValueError(f"decay must be > 0, got {decay}")
        s = s * float(decay) ** (-k)
    return U, np.diag(s), V
