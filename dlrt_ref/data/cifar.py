"""CIFAR-10 and CIFAR-100, "python version" (Krizhevsky 2009): verified archives, offline folders, downloads.

Not shipped. Give the official archive (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``), its extracted folder (``cifar-10-batches-py/``,
``cifar-100-python/``) or a folder holding either; or give no path, and the
loaders look in the data folder (``--data-dir`` / ``$DLRT_REF_DATA_DIR``, see
:func:`dlrt_ref.data.mnist.data_dir`) and then in the download cache
(``$DLRT_REF_CACHE`` or ``~/.cache/dlrt_ref``). If neither has the data, the
error is one line saying where to put it. :func:`download_cifar` fetches the
archive into the cache, verified.

Verification: an archive is checked against the SHA-256 of the official file
(:data:`CIFAR_SHA256`) before it is opened; ``verify=False`` skips that (for
private copies and the test fixtures). An extracted folder has no published
per-file hashes and is checked by structure only: each batch must unpickle to
``b"data"`` (N, 3072) uint8 (the 1024 red, then green, then blue pixels of a
32×32 image, row-major) and N labels in range, and the train/test sizes must
add up. The pickles are read by an unpickler that only builds plain containers
and numpy arrays, so a tampered file cannot run code.
"""
from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from dlrt_ref.data.idx import DataError, check_digest, default_cache_dir, download_files
from dlrt_ref.data.mnist import DATA_DIR_ENV, data_dir
from dlrt_ref.data.splits import Dataset, make_dataset

__all__ = ["load_cifar10", "load_cifar100", "download_cifar", "find_cifar", "CIFAR10_CLASSES", "CIFAR_SHA256",
           "CIFAR_ARCHIVES", "CIFAR_MIRRORS"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: archive name and extracted folder of each set
CIFAR_ARCHIVES = {"cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py"),
                  "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python")}
#: SHA-256 of the official archives (170 498 071 and 169 001 437 bytes; MD5 c58f30108f718f92721af3b95e74349a and
#: eb9058c3a382ffc7106e4002c42a8d85 as published on the CIFAR page)
CIFAR_SHA256 = {"cifar10": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                "cifar100": "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"}
CIFAR_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)

# member files, label key, number of classes, train/test sizes of the official sets
_LAYOUT = {
    "cifar10": dict(train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"], classes=10),
    "cifar100": dict(train=["train"], test=["test"], classes=100),
}


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


def _cifar_batch(raw: bytes, name: str, label_key: bytes = b"labels", classes: int = 10):
    """(x (N, 3, 32, 32) uint8, y (N,) int64) of one pickled batch; :class:`DataError` on anything else."""
    try:
        d = _ArraysOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        detail = " ".join(str(exc).split())  # one line
        raise DataError(f"{name}: not a readable CIFAR pickle ({type(exc).__name__}: {detail})") from None
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        raise DataError(f"{name}: expected a dict with b'data' and {label_key!r}")
    x, y = np.asarray(d[b"data"]), np.asarray(d[label_key])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or y.shape != (x.shape[0],):
        raise DataError(f"{name}: data {x.shape} {x.dtype} / labels {y.shape}, expected (N, 3072) uint8 / (N,)")
    if y.size and (y.min() < 0 or y.max() > classes - 1):
        raise DataError(f"{name}: labels outside 0..{classes - 1}")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _search_roots():
    roots = [data_dir(), default_cache_dir()]
    return [Path(r) for r in roots if r is not None]


def find_cifar(which: str = "cifar10"):
    """The archive or extracted folder of ``which`` in the data folder or the cache, else None."""
    archive, folder = CIFAR_ARCHIVES[_check_which(which)]
    for root in _search_roots():
        for candidate in (root / folder, root / which / folder, root / archive, root / which / archive):
            if candidate.exists():
                return candidate
    return None


def _check_which(which):
    if which not in CIFAR_ARCHIVES:
        raise ValueError(f"which must be one of {sorted(CIFAR_ARCHIVES)}, got {which!r}")
    return which


def _missing_message(which):
    archive, folder = CIFAR_ARCHIVES[which]
    where = data_dir() or f"${DATA_DIR_ENV} (unset)"
    return (f"{which}: no data found; put {archive} (https://www.cs.toronto.edu/~kriz/cifar.html) or its extracted "
            f"{folder}/ in {where} or {default_cache_dir()}, pass path=..., or run "
            f"dlrt_ref.data.download_cifar({which!r})")


def _raw_members(which, path, verify, sha256):
    """{member name: bytes} of the set's batches, from an archive (verified) or a folder."""
    archive, folder_name = CIFAR_ARCHIVES[which]
    names = _LAYOUT[which]["train"] + _LAYOUT[which]["test"]
    if path is None:
        path = find_cifar(which)
        if path is None:
            raise DataError(_missing_message(which))
    path = Path(path)
    if path.is_dir() and (path / archive).is_file() and not (path / folder_name).is_dir():
        path = path / archive
    if path.is_file():
        if verify:
            check_digest(path, "sha256:" + (sha256 or CIFAR_SHA256[which]))
        try:
            with tarfile.open(path) as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                missing = [n for n in names if n not in members]
                if missing:
                    raise DataError(f"{path}: archive lacks {', '.join(missing)}")
                return {n: tar.extractfile(members[n]).read() for n in names}, path
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            detail = " ".join(str(exc).split())  # tarfile's messages span several lines
            raise DataError(f"{path}: unreadable or truncated archive ({type(exc).__name__}: {detail})") from None
    if not path.exists():
        raise DataError(f"{which}: {path} does not exist (give the archive {archive} or the folder {folder_name})")
    folder = path / folder_name if (path / folder_name).is_dir() else path
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{which}: {folder} lacks {', '.join(missing)} (expected the python-version batches)")
    return {n: (folder / n).read_bytes() for n in names}, folder


def _load(which, path, label_key, classes, verify, sha256):
    raws, source = _raw_members(which, path, verify, sha256)
    layout = _LAYOUT[which]
    train = [_cifar_batch(raws[n], n, label_key, layout["classes"]) for n in layout["train"]]
    test = [_cifar_batch(raws[n], n, label_key, layout["classes"]) for n in layout["test"]]
    x_tr, y_tr = np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])
    x_te, y_te = np.concatenate([b[0] for b in test]), np.concatenate([b[1] for b in test])
    return x_tr, y_tr, x_te, y_te, source


def load_cifar10(path=None, flatten=True, dtype=np.float32, validation=0, seed=0, subset=None, test_subset=None,
                 verify=True, sha256=None) -> Dataset:
    """CIFAR-10 (50 000 + 10 000 images of 3×32×32, 10 classes), scaled to [0, 1].

    ``path``: the archive ``cifar-10-python.tar.gz`` (SHA-256 checked unless
    ``verify=False``; ``sha256`` overrides the expected digest), the folder
    ``cifar-10-batches-py`` (``data_batch_1`` .. ``data_batch_5``, ``test_batch``),
    a folder holding either, or None (search, see the module doc).
    ``flatten=False`` gives (N, 3, 32, 32); other options as :func:`load_mnist`.
    """
    x_tr, y_tr, x_te, y_te, source = _load("cifar10", path, b"labels", 10, verify, sha256)
    return make_dataset("cifar10", x_tr, y_tr, x_te, y_te, flatten=flatten, dtype=dtype, validation=validation,
                        seed=seed, subset=subset, test_subset=test_subset, classes=CIFAR10_CLASSES,
                        info={"source": str(source)})


def load_cifar100(path=None, flatten=True, dtype=np.float32, validation=0, seed=0, subset=None, test_subset=None,
                  verify=True, sha256=None, labels="fine") -> Dataset:
    """CIFAR-100 (50 000 + 10 000 images, 100 fine or 20 coarse classes), scaled to [0, 1].

    As :func:`load_cifar10`, with ``cifar-100-python.tar.gz`` / ``cifar-100-python/``
    (files ``train`` and ``test``); ``labels="fine"`` (100 classes, the thesis's
    CIFAR-100 rows) or ``"coarse"`` (20 superclasses).
    """
    if labels not in ("fine", "coarse"):
        raise ValueError(f"load_cifar100: labels must be 'fine' or 'coarse', got {labels!r}")
    key = b"fine_labels" if labels == "fine" else b"coarse_labels"
    x_tr, y_tr, x_te, y_te, source = _load("cifar100", path, key, 100, verify, sha256)
    return make_dataset(f"cifar100-{labels}", x_tr, y_tr, x_te, y_te, flatten=flatten, dtype=dtype,
                        validation=validation, seed=seed, subset=subset, test_subset=test_subset,
                        classes=tuple(str(c) for c in range(100 if labels == "fine" else 20)),
                        info={"source": str(source), "labels": labels})


def download_cifar(which="cifar10", cache_dir=None, mirrors=CIFAR_MIRRORS, sha256=None, timeout=60.0) -> Path:
    """Download the official archive of ``which`` into ``cache_dir`` (default the cache), SHA-256 verified.

    Returns the archive's path (an already present, verified archive is not
    fetched again). Nothing is left under the final name if every mirror fails
    or serves a file with another digest (:func:`dlrt_ref.data.idx.download_files`).
    """
    archive, _ = CIFAR_ARCHIVES[_check_which(which)]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    files = {archive: "sha256:" + (sha256 or CIFAR_SHA256[which])}
    return download_files(files, folder, mirrors, timeout=timeout, idx=False)[archive]
