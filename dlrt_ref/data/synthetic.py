"""Synthetic teacher-student classification data with a known weight rank r*.

A *teacher* MLP has weight matrices of exactly known rank, W_l = A_l B_lᵀ with
Gaussian A_l (n_out × r_l) and B_l (n_in × r_l). Inputs are Gaussian, and the
label of an input is the argmax of the teacher's output, so the data is a
classification problem that the ordinary training loop can fit, and a student
trained by DLRT can be asked: did its adaptive ranks settle at r*?

Pure numpy; independent of :mod:`dlrt_ref.nn`. Layer convention (the same as
the layers there): ``h_{l+1} = act(h_l W_lᵀ + b_l)`` with W_l of shape
(n_out, n_in), no activation after the last layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlrt_ref.data.splits import Dataset

__all__ = ["Teacher", "teacher_student"]

_ACTIVATIONS = {
    "relu": (lambda z: np.maximum(z, 0.0), np.sqrt(2.0)),  # (function, He/Glorot-style gain)
    "tanh": (np.tanh, 1.0),
}


@dataclass(repr=False)
class Teacher:
    """The network that labelled a teacher-student dataset.

    Attributes
    ----------
    widths : tuple of int
        Layer widths ``(d_in, h_1, ..., n_classes)``.
    ranks : tuple of int
        Exact rank of each weight matrix (its factors are checked to have full column rank).
    weights : list of numpy.ndarray
        ``W_l`` of shape (widths[l+1], widths[l]), ``W_l = A_l B_lᵀ`` (times a scale).
    factors : list of tuple of numpy.ndarray
        ``(A_l, B_l)`` with the scale folded into ``A_l``: ``W_l == A_l @ B_l.T``.
    biases : list of numpy.ndarray
        Zero for hidden layers; the output bias is calibrated so classes are
        roughly balanced (if ``balance=True``).
    activation : str
        ``"relu"`` or ``"tanh"``.
    """

    widths: tuple
    ranks: tuple
    weights: list
    factors: list
    biases: list
    activation: str

    def logits(self, x) -> np.ndarray:
        """Teacher output for inputs ``x`` of shape (N, d_in), in float64."""
        act = _ACTIVATIONS[self.activation][0]
        h = np.asarray(x, dtype=np.float64)
        for l, ((A, B), b) in enumerate(zip(self.factors, self.biases)):
            h = (h @ B) @ A.T + b  # h W_lᵀ = ((N, n_in) @ (n_in, r)) @ (r, n_out): O(N r (n_in + n_out))
            if l < len(self.weights) - 1:
                h = act(h)
        return h

    def predict(self, x) -> np.ndarray:
        """Teacher labels ``argmax(logits(x))``, int64."""
        return np.argmax(self.logits(x), axis=1).astype(np.int64)

    def __repr__(self) -> str:
        return f"Teacher(widths={self.widths}, ranks={self.ranks}, activation={self.activation!r})"


def _layer_ranks(widths, ranks):
    pairs = list(zip(widths[:-1], widths[1:]))
    if ranks is None or isinstance(ranks, (int, np.integer)):
        if ranks is not None and ranks < 1:
            raise ValueError(f"rank must be >= 1, got {ranks}")
        return [min(n_in, n_out) if ranks is None else min(int(ranks), n_in, n_out) for n_in, n_out in pairs]
    ranks = list(ranks)
    if len(ranks) != len(pairs):
        raise ValueError(f"need {len(pairs)} ranks (one per layer of widths {tuple(widths)}), got {len(ranks)}")
    out = []
    for l, ((n_in, n_out), r) in enumerate(zip(pairs, ranks)):
        full = min(n_in, n_out)
        r = full if r is None else int(r)
        if not 1 <= r <= full:
            raise ValueError(f"layer {l} ({n_in}->{n_out}): rank must be in [1, {full}], got {r}")
        out.append(r)
    return out


def _balance_output_bias(teacher: Teacher, x_cal: np.ndarray, iters: int = 200) -> None:
    """Shift the output bias so that argmax labels on ``x_cal`` are close to uniform over classes."""
    z = teacher.logits(x_cal) - teacher.biases[-1]
    C = z.shape[1]
    b = -z.mean(axis=0)  # centre each class's logit first
    step = 0.5 * float(z.std())
    for _ in range(iters):
        freq = np.bincount(np.argmax(z + b, axis=1), minlength=C) / len(z)
        if np.abs(freq - 1.0 / C).max() < 0.1 / C:
            break
        b -= step * (freq - 1.0 / C) * C  # over-represented classes move down
        step *= 0.97
    teacher.biases[-1] = b


def teacher_student(n_train, n_test, widths, ranks, seed=0, noise=0.0, activation="relu", n_val=0,
                    dtype=np.float32, balance=True):
    """Classification data labelled by a random MLP whose weights have known ranks.

    Parameters
    ----------
    n_train, n_test : int
        Number of training and test examples.
    widths : sequence of int
        ``(d_in, h_1, ..., n_classes)``, at least two entries, ``n_classes >= 2``.
    ranks : int, sequence of (int or None), or None
        Rank r* of each weight matrix. An int applies to every layer, capped at
        ``min(n_in, n_out)`` (so a small output layer is full rank); a
        sequence gives one entry per layer, each in ``[1, min(n_in, n_out)]``
        or None for full rank; None makes every layer full rank.
    seed : int, optional
        The teacher depends on ``seed``, ``widths``, ``ranks`` and
        ``activation`` only; the inputs also on the sizes.
    noise : float, optional
        Fraction of training and validation labels replaced by a uniformly
        random class (which may equal the true one). Test labels stay clean,
        so test accuracy against the teacher is measurable.
    activation : {"relu", "tanh"}, optional
        Hidden activation of the teacher.
    n_val : int, optional
        Number of validation examples (drawn like the training ones).
    dtype : numpy floating dtype, optional
        Dtype of the inputs; labels are int64.
    balance : bool, optional
        Calibrate the output bias so that classes are roughly equally frequent
        (a random teacher otherwise often gives one class most of the inputs).

    Returns
    -------
    dlrt_ref.data.splits.Dataset
        Inputs x ~ N(0, I) of shape (N, d_in) (not in [0, 1]); ``.teacher`` is the
        :class:`Teacher` (with ``.ranks`` and ``.weights``); ``.info`` records
        the options, the class frequencies and ``noise_mask`` (train, val).
    """
    widths = tuple(int(w) for w in widths)
    if len(widths) < 2 or min(widths) < 1 or widths[-1] < 2:
        raise ValueError(f"widths must be (d_in, ..., n_classes) with n_classes >= 2, got {widths}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be a fraction in [0, 1], got {noise}")
    if min(n_train, n_test, n_val) < 0:
        raise ValueError("n_train, n_test and n_val must be >= 0")
    layer_ranks = _layer_ranks(widths, ranks)
    gain = _ACTIVATIONS[activation][1]

    rng_w = np.random.default_rng([seed, 0])
    weights, factors = [], []
    for l, ((n_in, n_out), r) in enumerate(zip(zip(widths[:-1], widths[1:]), layer_ranks)):
        A = rng_w.standard_normal((n_out, r))  # (n_out, r)
        B = rng_w.standard_normal((n_in, r))  # (n_in, r)
        # Var(W_ij) = gain² / n_in, as for a dense He (ReLU) / LeCun (tanh) init; the
        # output layer uses gain 1.
        A *= (gain if l < len(layer_ranks) - 1 else 1.0) / np.sqrt(r * n_in)
        W = A @ B.T  # (n_out, n_in), rank r exactly iff A and B have full column rank
        for F in (A, B):
            if np.linalg.cond(F.T @ F) > 1e12:  # pragma: no cover - probability zero
                raise RuntimeError(f"layer {l}: drew rank-deficient factors; change seed")
        weights.append(W)
        factors.append((A, B))
    biases = [np.zeros(n_out) for n_out in widths[1:]]
    teacher = Teacher(widths, tuple(layer_ranks), weights, factors, biases, activation)
    if balance:
        _balance_output_bias(teacher, np.random.default_rng([seed, 1]).standard_normal((10000, widths[0])))

    rng_x = np.random.default_rng([seed, 2])
    x = {k: rng_x.standard_normal((n, widths[0])) for k, n in (("train", n_train), ("val", n_val), ("test", n_test))}
    y = {k: teacher.predict(v) for k, v in x.items()}
    rng_noise = np.random.default_rng([seed, 3])
    masks = {}
    for k in ("train", "val"):
        masks[k] = rng_noise.random(len(y[k])) < noise
        y[k][masks[k]] = rng_noise.integers(0, widths[-1], int(masks[k].sum()))
    C = widths[-1]
    info = {
        "widths": widths, "ranks": tuple(layer_ranks), "activation": activation, "noise": noise, "seed": seed,
        "class_frequency_test": np.bincount(y["test"], minlength=C) / max(len(y["test"]), 1),
        "noise_mask": masks,
    }
    return Dataset(x["train"].astype(dtype), y["train"], x["val"].astype(dtype), y["val"],
                   x["test"].astype(dtype), y["test"], name="teacher_student",
                   classes=tuple(str(c) for c in range(C)), info=info, teacher=teacher)
