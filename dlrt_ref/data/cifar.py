"""CIFAR-10, "python version" (Krizhevsky 2009): a loader for users who have the files.

Not shipped and not downloaded (it is not obtainable offline here). Each batch
file is a pickle of a dict with ``b"data"`` (N, 3072) uint8 (the 1024 red, then
green, then blue pixels of a 32x32 image, row-major) and ``b"labels"`` (N
ints). The pickles are read by an unpickler that only builds plain containers
and numpy arrays, so a tampered file cannot run code.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from dlrt_ref.data.idx import DataError
from dlrt_ref.data.splits import Dataset, make_dataset

__all__ = ["load_cifar10", "CIFAR10_CLASSES"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickle dicts, lists, bytes, str, numbers and numpy arrays only: a pickle cannot run code here."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol 2
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"CIFAR pickle refers to {module}.{name}, which a CIFAR batch never needs")


def _cifar_batch(raw: bytes, name: str):
    try:
        d = _ArraysOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DataError(f"{name}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DataError(f"{name}: expected a dict with b'data' and b'labels'")
    x, y = np.asarray(d[b"data"]), np.asarray(d[b"labels"])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or y.shape != (x.shape[0],):
        raise DataError(f"{name}: data {x.shape} {x.dtype} / labels {y.shape}, expected (N, 3072) uint8 / (N,)")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{name}: labels outside 0..9")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def load_cifar10(path, flatten=True, dtype=np.float32, validation=0, seed=0, subset=None, test_subset=None) -> Dataset:
    """CIFAR-10 from the "python version" (Krizhevsky 2009), scaled to [0, 1].

    Not shipped and not downloaded: pass the folder ``cifar-10-batches-py``
    (holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``), its
    parent, or the archive ``cifar-10-python.tar.gz``. The pickles are read by
    an unpickler that only builds plain containers and numpy arrays.
    ``flatten=False`` gives (N, 3, 32, 32); other options as :func:`load_mnist`.
    """
    path = Path(path)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if path.is_file():
        try:
            with tarfile.open(path) as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                missing = [n for n in names if n not in members]
                if missing:
                    raise DataError(f"{path}: archive lacks {', '.join(missing)}")
                raws = {n: tar.extractfile(members[n]).read() for n in names}
        except tarfile.TarError as exc:
            raise DataError(f"{path}: unreadable archive ({exc})") from None
    else:
        folder = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(f"CIFAR-10: {folder} lacks {', '.join(missing)} (expected the python-version batches)")
        raws = {n: (folder / n).read_bytes() for n in names}
    batches = [_cifar_batch(raws[n], n) for n in names]
    x_tr = np.concatenate([b[0] for b in batches[:5]])
    y_tr = np.concatenate([b[1] for b in batches[:5]])
    return make_dataset("cifar10", x_tr, y_tr, *batches[5], flatten=flatten, dtype=dtype, validation=validation,
                         seed=seed, subset=subset, test_subset=test_subset, classes=CIFAR10_CLASSES,
                         info={"source": str(path)})
