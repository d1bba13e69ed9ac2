"""MNIST (shipped) and Fashion-MNIST: folders, verified loading, downloads, ``python -m dlrt_ref.data``.

Every loader returns a :class:`Dataset` of host numpy arrays: images as floats
in [0, 1] (``flatten=True``: shape (N, features); ``flatten=False``: (N, C, H, W)),
labels as int64. The same keyword arguments select a seeded validation split
and seeded stratified subsets everywhere.

MNIST ships with the package (``dlrt_ref/datasets/``, see its README.md for
provenance, licence CC BY-SA 3.0 and checksums) and is verified by SHA-256 on
first load in a process, so it works offline from a fresh clone::

    >>> from dlrt_ref.data import load_mnist
    >>> ds = load_mnist(validation="last")        # the paper's 50k / 10k / 10k
    >>> ds.x_train.shape, ds.x_val.shape, ds.x_test.shape
    ((50000, 784), (10000, 784), (10000, 784))

Nothing is downloaded unless you call :func:`download_mnist` or
:func:`download_fashion_mnist` yourself. Check the shipped copy with
``python -m dlrt_ref.data --check``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from dlrt_ref.data.idx import DataError, default_cache_dir, download_files, file_digest, idx_bytes, read_idx
from dlrt_ref.data.splits import Dataset, make_dataset, stratified_subset, train_val_split
from dlrt_ref.data.synthetic import Teacher, teacher_student

__all__ = [
    "Dataset", "DataError", "read_idx", "load_mnist", "load_fashion_mnist",
    "download_mnist", "download_fashion_mnist", "stratified_subset", "train_val_split",
    "check_mnist_facts", "teacher_student", "Teacher", "SHIPPED_DIR", "FASHION_CLASSES",
    "DATA_DIR_ENV", "data_dir", "set_data_dir", "mnist_folder", "fashion_folder",
]

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "datasets"
IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# SHA-256 of the four files shipped in dlrt_ref/datasets/ (deterministic gzip -9 of the IDX bytes).
MNIST_SHIPPED_SHA256 = {
    "train-images-idx3-ubyte.gz": "71524e2cd1ad2968737f7f2f2ff69cbfc32df8ccddff51593f7cb2d4e0eb5b64",
    "train-labels-idx1-ubyte.gz": "fe03b8bd7915f70bf5aa08be480aa413fbd85afcaa58b35d230d335f284fd88e",
    "t10k-images-idx3-ubyte.gz": "5634745efa576a17e7d4cf5cd9d09123c75e6538e5114267c2d156edaf519341",
    "t10k-labels-idx1-ubyte.gz": "ae18e77e031ccde52407f794d123116439864147d33ac992975f85dd4dc42af6",
}
# SHA-256 of the decompressed IDX bytes (independent of how the file was gzipped). These equal
# the values published for the decompressed canonical files (e.g. next to the .gz SHA-256 below).
MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# The canonical .gz files on the mirrors (published by torchvision, TFDS and others).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_GZ_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
# Facts any copy of MNIST must satisfy (LeCun & Cortes; the usual torchvision/keras arrays).
MNIST_FACTS = {
    "n_train": 60000,
    "n_test": 10000,
    "first_test_labels": (7, 2, 1, 0, 4, 1, 4, 9, 5, 9),
    "train_counts": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test_counts": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}

FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian/Ubuntu package dataset-fashion-mnist
FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
FASHION_GZ_MD5 = {  # upstream's published MD5s of its .gz files
    "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
}
# SHA-256 of the decompressed IDX bytes, measured on Debian's dataset-fashion-mnist
# 0.0~git20200523.55506a9-1 (Debian re-gzipped upstream's files; the content is upstream's).
FASHION_IDX_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


# ----------------------------------------------------------------------------- the user's data folder

DATA_DIR_ENV = "DLRT_REF_DATA_DIR"
_DATA_DIR_OVERRIDE = [None]  # set by ``--data-dir`` of the figures command for the duration of a run


def set_data_dir(path) -> None:
    """Use ``path`` as the data folder in this process (``None``: back to ``$DLRT_REF_DATA_DIR``)."""
    _DATA_DIR_OVERRIDE[0] = None if path is None else Path(path)


def data_dir():
    """The user's data folder: :func:`set_data_dir` (``--data-dir``), else ``$DLRT_REF_DATA_DIR``, else None.

    The folder holds the four IDX files of MNIST, or subfolders ``mnist/`` and
    ``fashion-mnist/`` with them (``.gz`` or not). Every file is verified by
    checksum as when it is loaded from anywhere else.
    """
    if _DATA_DIR_OVERRIDE[0] is not None:
        return _DATA_DIR_OVERRIDE[0]
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else None


def _has_idx_set(folder: Path) -> bool:
    return folder.is_dir() and all(_find_file(folder, stem) for stem in IDX_STEMS)


def _is_fashion(folder: Path) -> bool:
    """Whether the folder's training labels are Fashion-MNIST's (decoded SHA-256; 60 kB, fast)."""
    try:
        labels = read_idx(_find_file(folder, "train-labels-idx1-ubyte"))
    except DataError:
        return False
    return file_digest(idx_bytes(labels)) == FASHION_IDX_SHA256["train-labels-idx1-ubyte"]


def mnist_folder(root):
    """The MNIST folder under a data folder ``root``: ``root/mnist``, or ``root`` itself unless it holds Fashion-MNIST.

    Returns None when neither holds the four files.
    """
    root = Path(root)
    for folder in (root / "mnist", root):
        if _has_idx_set(folder) and not (folder == root and _is_fashion(folder)):
            return folder
    return None


def fashion_folder(root):
    """The Fashion-MNIST folder under ``root``: ``root/fashion-mnist``, or ``root`` if it holds Fashion-MNIST; else None."""
    root = Path(root)
    if _has_idx_set(root / "fashion-mnist"):
        return root / "fashion-mnist"
    if _has_idx_set(root) and _is_fashion(root):
        return root
    return None


# ----------------------------------------------------------------------------- verified IDX sets

_VERIFIED: dict = {}  # (resolved path, size, mtime_ns, verify) -> read-only array; one check per process


def _find_file(folder: Path, stem: str):
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _verified_idx(path: Path, stem: str, file_sha256: set, idx_sha256: str, verify: bool, exact=False):
    """Read one IDX file, accepting it if its file SHA-256 is known or its decoded bytes hash to ``idx_sha256``.

    With ``exact`` (the shipped files), only a file SHA-256 in ``file_sha256`` is accepted.
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, verify)
    if key in _VERIFIED:
        return _VERIFIED[key]
    digest = file_digest(path) if verify else None
    if verify and exact and digest not in file_sha256:
        raise DataError(
            f"{path}: SHA-256 {digest}, expected {' or '.join(sorted(file_sha256))}: the shipped file is "
            "corrupt or was changed; restore it (git checkout / reinstall dlrt_ref)"
        )
    try:
        array = read_idx(path)
    except DataError as exc:
        want = " or ".join(sorted(file_sha256)) if exact else f"a file whose decoded {stem} has SHA-256 {idx_sha256}"
        raise DataError(f"{exc}; expected {want}: the file is corrupt, replace it") from None
    if verify:
        # Fast path: the file itself is a known one. Otherwise (e.g. re-gzipped by
        # a distribution) hash the decoded IDX bytes, which do not depend on gzip.
        if digest not in file_sha256:
            got = file_digest(idx_bytes(array))
            if got != idx_sha256:
                raise DataError(
                    f"{path}: SHA-256 of the decoded {stem} is {got}, expected {idx_sha256}; the file "
                    "is corrupt or not the canonical one (verify=False loads it anyway, unchecked)"
                )
    array.setflags(write=False)
    _VERIFIED[key] = array
    return array


def _load_idx_set(folder: Path, what: str, file_sha256: dict, idx_sha256: dict, verify: bool, exact=False):
    """The four IDX arrays of an MNIST-like set; ``file_sha256[stem]``: accepted whole-file hashes."""
    arrays = []
    for stem in IDX_STEMS:
        path = _find_file(folder, stem)
        if path is None:
            raise DataError(f"{what}: {folder} has no {stem}.gz (or {stem})")
        arrays.append(_verified_idx(path, stem, file_sha256.get(stem, set()), idx_sha256[stem], verify, exact))
    x_tr, y_tr, x_te, y_te = arrays
    for x, y, split in ((x_tr, y_tr, "train"), (x_te, y_te, "test")):
        if x.dtype != np.uint8 or x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{what} {split}: images {x.shape} {x.dtype} do not match labels {y.shape}")
    return x_tr[:, None], y_tr, x_te[:, None], y_te


# ----------------------------------------------------------------------------- MNIST

def check_mnist_facts(x_train, y_train, x_test, y_test) -> list:
    """Return a list of the ways the arrays differ from canonical MNIST (empty if none).

    Checks shapes (60000/10000 of 28x28), uint8 dtype, pixel range 0..255,
    labels 0..9, the first ten test labels, and the class counts of both sets.
    """
    f, problems = MNIST_FACTS, []
    x_train, x_test = np.asarray(x_train), np.asarray(x_test)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    for x, y, n, split in ((x_train, y_train, f["n_train"], "train"), (x_test, y_test, f["n_test"], "test")):
        if x.shape[0] != n or x.reshape(n, -1).shape[1] != 784 or y.shape != (n,):
            problems.append(f"{split}: images {x.shape} / labels {y.shape}, expected ({n}, 28, 28) / ({n},)")
            continue
        if x.dtype != np.uint8:
            problems.append(f"{split}: dtype {x.dtype}, expected uint8")
        if x.min() != 0 or x.max() != 255:
            problems.append(f"{split}: pixel range {x.min()}..{x.max()}, expected 0..255")
        counts = tuple(np.bincount(y.astype(np.int64), minlength=10).tolist()) if y.min() >= 0 else ()
        if y.min() < 0 or y.max() > 9:
            problems.append(f"{split}: labels outside 0..9")
        elif counts != f[f"{split}_counts"]:
            problems.append(f"{split}: class counts {counts}, expected {f[f'{split}_counts']}")
    if y_test.size >= 10 and tuple(y_test[:10].tolist()) != f["first_test_labels"]:
        problems.append(f"test labels begin {tuple(y_test[:10].tolist())}, expected {f['first_test_labels']}")
    return problems


def _mnist_arrays(path, verify: bool):
    folder = SHIPPED_DIR if path is None else Path(path)
    if path is None and not all((SHIPPED_DIR / name).is_file() for name in MNIST_SHIPPED_SHA256):
        raise DataError(
            f"the shipped MNIST files are missing from {SHIPPED_DIR} (expected {', '.join(MNIST_SHIPPED_SHA256)}); "
            "reinstall dlrt_ref from a full clone, or download with dlrt_ref.data.download_mnist() "
            "and pass path=<that folder>"
        )
    if path is None:  # the shipped files must be exactly the shipped bytes
        known = {stem: {MNIST_SHIPPED_SHA256[f"{stem}.gz"]} for stem in IDX_STEMS}
    else:  # a user's copy: shipped, canonical .gz, or uncompressed canonical, else checked by content
        known = {stem: {MNIST_SHIPPED_SHA256[f"{stem}.gz"], MNIST_GZ_SHA256[f"{stem}.gz"], MNIST_IDX_SHA256[stem]}
                 for stem in IDX_STEMS}
    return _load_idx_set(folder, "MNIST", known, MNIST_IDX_SHA256, verify, exact=path is None), folder


def load_mnist(flatten=True, dtype=np.float32, validation=0, seed=0, subset=None, test_subset=None,
               path=None, verify=True) -> Dataset:
    """MNIST (LeCun & Cortes), 60 000 training and 10 000 test images of 28x28, scaled to [0, 1].

    Parameters
    ----------
    flatten : bool, optional
        ``True``: inputs of shape (N, 784); ``False``: (N, 1, 28, 28).
    dtype : numpy floating dtype, optional
        Dtype of the inputs (labels are always int64).
    validation : int or str, optional
        ``k`` (int): hold out a seeded random ``k`` of the 60 000 training
        images as validation (0: empty validation arrays). ``"last"``: the last
        10 000 training images, the paper setup (50k / 10k / 10k); ``"last:K"``:
        the last K.
    seed : int, optional
        Seed of the validation split and of the subsets.
    subset : int or None, optional
        Keep a seeded stratified subset of this many of the (remaining)
        training images; class proportions follow the full set.
    test_subset : int or None, optional
        Likewise for the test set.
    path : str, os.PathLike or None, optional
        Folder holding the four IDX files (``.gz`` or not), e.g. the one that
        :func:`download_mnist` returns. ``None`` (default): the MNIST folder of
        :func:`data_dir` (``--data-dir`` / ``$DLRT_REF_DATA_DIR``) if it has one,
        else the copy shipped in ``dlrt_ref/datasets``.
    verify : bool, optional
        Check the files' SHA-256 (once per process and file).

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        If a file is missing, corrupt or not canonical MNIST.
    """
    if path is None and data_dir() is not None:  # the user's folder if it holds MNIST, else the shipped copy
        path = mnist_folder(data_dir())
    (x_tr, y_tr, x_te, y_te), folder = _mnist_arrays(path, verify)
    return make_dataset("mnist", x_tr, y_tr, x_te, y_te, flatten=flatten, dtype=dtype, validation=validation,
                         seed=seed, subset=subset, test_subset=test_subset, classes=tuple("0123456789"),
                         info={"source": str(folder)})


def download_mnist(cache_dir=None, mirrors=MNIST_MIRRORS, checksums=None, timeout=60.0) -> Path:
    """Download the four canonical MNIST ``.gz`` files into ``<cache_dir>/mnist`` and verify them.

    Only for users who want the files from the mirrors; the shipped copy is
    identical in content and needs no network.

    Parameters
    ----------
    cache_dir : str, os.PathLike or None, optional
        Default ``$DLRT_REF_CACHE`` or ``~/.cache/dlrt_ref``.
    mirrors : sequence of str, optional
        Base URLs tried in turn for each file.
    checksums : dict or None, optional
        File name -> checksum (``"sha256:<hex>"``/``"md5:<hex>"``/bare hex);
        default :data:`MNIST_GZ_SHA256`.
    timeout : float, optional
        Seconds per connection attempt.

    Returns
    -------
    pathlib.Path
        The folder, to pass as ``load_mnist(path=...)``.

    Raises
    ------
    DataError
        If a file cannot be fetched with the right checksum from any mirror.
    """
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "mnist"
    download_files(dict(checksums or MNIST_GZ_SHA256), folder, mirrors, timeout=timeout)
    return folder


# ----------------------------------------------------------------------------- Fashion-MNIST

def _fashion_folders(path, cache_dir=None):
    if path is not None:
        return [Path(path)]
    root = data_dir()
    user = [fashion_folder(root) or root / "fashion-mnist"] if root is not None else []
    return user + [FASHION_DEBIAN_DIR, Path(cache_dir if cache_dir is not None else default_cache_dir()) / "fashion-mnist"]


def load_fashion_mnist(flatten=True, dtype=np.float32, validation=0, seed=0, subset=None, test_subset=None,
                       path=None, verify=True) -> Dataset:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence), same shapes and options as :func:`load_mnist`.

    Not shipped. Searched in ``path`` if given, else in the data folder of
    :func:`data_dir` (``<dir>/fashion-mnist`` or ``<dir>`` itself), then in
    ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu: ``apt-get install
    dataset-fashion-mnist``), then in ``<cache>/fashion-mnist`` (filled by
    :func:`download_fashion_mnist`). Tests that need these files skip when
    they are absent.

    Raises
    ------
    DataError
        If the files are found nowhere (the message says how to get them), or
        are corrupt.
    """
    folders = _fashion_folders(path)
    for folder in folders:
        if all(_find_file(folder, stem) for stem in IDX_STEMS) or path is not None:
            x_tr, y_tr, x_te, y_te = _load_idx_set(folder, "Fashion-MNIST", {}, FASHION_IDX_SHA256, verify)
            return make_dataset("fashion_mnist", x_tr, y_tr, x_te, y_te, flatten=flatten, dtype=dtype,
                                 validation=validation, seed=seed, subset=subset, test_subset=test_subset,
                                 classes=FASHION_CLASSES, info={"source": str(folder)})
    raise DataError(
        "Fashion-MNIST not found in " + " or ".join(map(str, folders)) + ". Get it with "
        "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or with network "
        "`dlrt_ref.data.download_fashion_mnist()`, or put the four IDX files in DIR/fashion-mnist and pass "
        "--data-dir DIR (figures) or path=<folder> (Python)."
    )


def download_fashion_mnist(cache_dir=None, mirrors=FASHION_MIRRORS, checksums=None, timeout=60.0) -> Path:
    """Download Fashion-MNIST's four ``.gz`` files into ``<cache_dir>/fashion-mnist`` (see :func:`download_mnist`)."""
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "fashion-mnist"
    download_files(dict(checksums or FASHION_GZ_MD5), folder, mirrors, timeout=timeout)
    return folder

# ----------------------------------------------------------------------------- command line

def check_shipped(path=None, out=sys.stdout) -> int:
    """Verify a copy of MNIST (default: the shipped one) and print what was checked; return an exit code."""
    folder = SHIPPED_DIR if path is None else Path(path)
    try:
        (x_tr, y_tr, x_te, y_te), folder = _mnist_arrays(path, verify=True)
    except DataError as exc:
        print(f"MNIST check FAILED: {exc}", file=sys.stderr)
        return 1
    problems = check_mnist_facts(x_tr[:, 0], y_tr, x_te[:, 0], y_te)
    print(f"MNIST in {folder}", file=out)
    for stem, array in zip(IDX_STEMS, (x_tr[:, 0], y_tr, x_te[:, 0], y_te)):
        p = _find_file(folder, stem)
        raw = idx_bytes(array)
        content = file_digest(raw)
        if content != MNIST_IDX_SHA256[stem]:
            problems.append(f"{stem}: decoded SHA-256 {content}, expected {MNIST_IDX_SHA256[stem]}")
        print(f"  {p.name:28s} {p.stat().st_size:9d} bytes  file sha256 {file_digest(p)}", file=out)
        print(f"  {'  decoded IDX':28s} {len(raw):9d} bytes   idx sha256 {content}",
              file=out)
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        counts = " ".join(map(str, np.bincount(y, minlength=10)))
        print(f"  {split:5s} images {x[:, 0].shape} {x.dtype} range {x.min()}..{x.max()}  "
              f"labels {y.shape}  class counts {counts}", file=out)
    print(f"  test labels begin {' '.join(map(str, y_te[:10]))}", file=out)
    print(f"  train pixel mean/std (scaled) {x_tr.mean() / 255:.4f} / {x_tr.std() / 255:.4f}", file=out)
    if problems:
        print("MNIST check FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("MNIST check OK: file and decoded SHA-256 verified (decoded = the canonical IDX files), "
          "canonical sizes, pixel range, labels and class counts", file=out)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlrt_ref.data", description="Check or fetch datasets.")
    parser.add_argument("--check", action="store_true", help="verify the shipped MNIST (or --path) and print it")
    parser.add_argument("--path", help="folder of MNIST IDX files to check instead of the shipped copy")
    parser.add_argument("--download", action="store_true",
                        help="download MNIST from the mirrors into the cache (network), then check it")
    args = parser.parse_args(argv)
    if args.download:
        try:
            args.path = str(download_mnist())
        except DataError as exc:
            print(f"download FAILED: {exc}", file=sys.stderr)
            return 1
        args.check = True
    if not args.check:
        parser.print_help()
        return 2
    return check_shipped(args.path)
