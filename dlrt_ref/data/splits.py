"""The :class:`Dataset` container and the seeded splits that every loader in :mod:`dlrt_ref.data` shares.

Kept apart from the loaders so that :mod:`dlrt_ref.data.synthetic` and
:mod:`dlrt_ref.data.cifar` can build datasets without importing the MNIST machinery.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dlrt_ref.data.idx import DataError

__all__ = ["Dataset", "train_val_split", "stratified_subset", "make_dataset", "validate_dataset"]


@dataclass(repr=False)
class Dataset:
    """Train / validation / test arrays on the host, plus where they came from.

    Attributes
    ----------
    x_train, x_val, x_test : numpy.ndarray
        Inputs, floating point; images scaled to [0, 1]. ``x_val`` has zero rows
        when no validation split was asked for.
    y_train, y_val, y_test : numpy.ndarray
        Integer class labels, int64.
    name : str
        Short dataset name.
    classes : tuple of str
        Class names, index = label.
    info : dict
        Provenance: source folder, seed, split options, and the indices of the
        selected rows in the original train/test sets (``train_index``,
        ``val_index``, ``test_index``).
    teacher : object or None
        For synthetic data, the generating network (see :mod:`dlrt_ref.data.synthetic`).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str = ""
    classes: tuple = ()
    info: dict = field(default_factory=dict)
    teacher: object = None

    @property
    def n_classes(self) -> int:
        """Number of classes (from ``classes``, else from the labels)."""
        if self.classes:
            return len(self.classes)
        ys = [y for y in (self.y_train, self.y_val, self.y_test) if y.size]
        return int(max(y.max() for y in ys)) + 1 if ys else 0

    @property
    def input_shape(self) -> tuple:
        """Shape of one input, e.g. (784,) or (1, 28, 28)."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={getattr(self, 'x_' + k).shape}" for k in ("train", "val", "test"))
        return f"Dataset({self.name!r}, {parts}, dtype={self.x_train.dtype}, n_classes={self.n_classes})"


def validate_dataset(data, need_train: bool = True) -> None:
    """Check a :class:`Dataset` once before training or evaluation; raise :class:`DataError` (one line) if

    * a split's inputs and labels differ in length, or inputs are not floating point;
    * an input is NaN or infinite (a NaN image silently gives wrong accuracies);
    * a label is not an integer in ``[0, n_classes)``;
    * ``need_train`` and the training split is empty (e.g. a validation split that took every image).

    Costs one pass over the arrays (about 0.1 s for MNIST).
    """
    name = data.name or "dataset"
    n_classes = len(data.classes) if data.classes else None
    for split in ("train", "val", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        x, y = np.asarray(x), np.asarray(y)
        if len(x) != len(y):
            raise DataError(f"{name} {split}: {len(x)} inputs but {len(y)} labels")
        if x.size and x.dtype.kind not in "fc":
            raise DataError(f"{name} {split}: inputs must be floating point, got dtype {x.dtype}")
        if x.size and not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
            raise DataError(f"{name} {split}: {bad} input(s) hold NaN or infinity; fix or drop them before training")
        if y.size:
            if y.dtype.kind not in "iu":
                raise DataError(f"{name} {split}: labels must be integers, got dtype {y.dtype}")
            if y.min() < 0 or (n_classes is not None and y.max() >= n_classes):
                raise DataError(f"{name} {split}: labels must lie in [0, {n_classes}), got {y.min()}..{y.max()}")
    if need_train and len(data.y_train) == 0:
        raise DataError(f"{name}: the training split is empty (the validation split or subset took every image)")


# ----------------------------------------------------------------------------- splits

def train_val_split(n: int, k: int, seed=0):
    """Seeded random split of ``range(n)`` into ``n - k`` training and ``k`` validation indices.

    Parameters
    ----------
    n : int
        Number of examples.
    k : int
        Number held out for validation, ``0 <= k <= n``.
    seed : int or sequence of int
        Anything :func:`numpy.random.default_rng` accepts.

    Returns
    -------
    train_index, val_index : numpy.ndarray of int64
        Disjoint, each sorted ascending, together ``range(n)``.
    """
    n, k = int(n), int(k)
    if not 0 <= k <= n:
        raise ValueError(f"validation size must be in [0, {n}], got {k}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]).astype(np.int64), np.sort(perm[:k]).astype(np.int64)


def stratified_subset(y, n: int, seed=0) -> np.ndarray:
    """Seeded subset of ``n`` indices whose class counts are proportional to those of ``y``.

    Class c gets ``floor(n * count_c / len(y))`` examples, and the ``n - sum``
    left over go to the classes with the largest remainders (ties to the
    smaller label), so the counts sum to exactly ``n``. Within each class the
    examples are drawn uniformly without replacement.

    Parameters
    ----------
    y : array_like of int
        Labels.
    n : int
        Subset size, ``0 <= n <= len(y)``.
    seed : int or sequence of int
        Anything :func:`numpy.random.default_rng` accepts.

    Returns
    -------
    numpy.ndarray of int64
        Sorted indices into ``y``.
    """
    y = np.asarray(y)
    n = int(n)
    if not 0 <= n <= y.size:
        raise ValueError(f"subset size must be in [0, {y.size}], got {n}")
    labels, counts = np.unique(y, return_counts=True)
    exact = n * counts / y.size
    take = np.floor(exact).astype(np.int64)
    extra = n - int(take.sum())
    order = np.lexsort((labels, -(exact - take)))  # largest remainder first, then smaller label
    take[order[:extra]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == c), size=t, replace=False) for c, t in zip(labels, take)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


VALIDATION_LAST = 10000  # 'last': the paper's last 10 000 training images


def validation_size(validation) -> tuple:
    """("random", K) for an int K, ("last", K) for 'last' (K = 10 000) or 'last:K' (K digits); else ValueError.

    The one parser of the ``validation`` option (the loaders' argument, and
    ``--validation`` of ``train`` after its digits became an int).
    """
    if isinstance(validation, str):
        head, sep, size = validation.partition(":")
        if head != "last" or (sep and not size.isdigit()):
            raise ValueError(f"validation must be an int, 'last' or 'last:K', got {validation!r}")
        return "last", int(size) if sep else VALIDATION_LAST
    if isinstance(validation, (bool, float)) or not isinstance(validation, (int, np.integer)):
        raise ValueError(f"validation must be an int, 'last' or 'last:K', got {validation!r}")
    return "random", int(validation)


def _parse_validation(validation, n: int, seed):
    """Return (train_index, val_index) for the ``validation`` option of the loaders."""
    kind, k = validation_size(validation)
    if kind == "last":
        if not 0 <= k <= n:
            raise ValueError(f"validation {validation!r}: need 0 <= K <= {n}")
        return np.arange(n - k, dtype=np.int64), np.arange(n - k, n, dtype=np.int64)
    return train_val_split(n, validation, [seed, 0])


def make_dataset(name, x_tr, y_tr, x_te, y_te, *, flatten, dtype, validation, seed, subset, test_subset,
                  classes=(), info=None, scale=255.0) -> Dataset:
    """Split, subset, scale and shape raw arrays (x as uint8 (N, C, H, W)) into a :class:`Dataset`."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating type, got {dtype}")
    train_index, val_index = _parse_validation(validation, len(y_tr), seed)
    if subset is not None:
        train_index = train_index[stratified_subset(y_tr[train_index], subset, [seed, 1])]
    test_index = np.arange(len(y_te), dtype=np.int64)
    if test_subset is not None:
        test_index = stratified_subset(y_te, test_subset, [seed, 2])

    def x_of(x, index):
        out = x[index].astype(dtype)
        out /= dtype.type(scale)
        return out.reshape(len(index), int(np.prod(x.shape[1:]))) if flatten else out

    def y_of(y, index):
        return y[index].astype(np.int64)

    info = dict(info or {}, seed=seed, validation=validation, subset=subset, test_subset=test_subset,
                train_index=train_index, val_index=val_index, test_index=test_index)
    return Dataset(x_of(x_tr, train_index), y_of(y_tr, train_index), x_of(x_tr, val_index), y_of(y_tr, val_index),
                   x_of(x_te, test_index), y_of(y_te, test_index), name=name, classes=tuple(classes), info=info)
