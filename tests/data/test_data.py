"""Tests for the dlrt_ref.data package: mnist, idx, splits, synthetic, cifar.

The Fashion-MNIST tests need the Debian package ``dataset-fashion-mnist``
(/usr/share/datasets/fashion-mnist) and skip cleanly without it. Nothing here
uses the network: downloads are tested against a loopback HTTP server.
"""
import gzip
import hashlib
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlrt_ref.data import mnist as data  # the module whose constants the tests patch
from dlrt_ref.data import (
    DataError, Dataset, load_cifar10, load_fashion_mnist, load_mnist, stratified_subset, teacher_student,
    train_val_split,
)
from dlrt_ref.data.idx import download_files, idx_bytes, read_idx
from dlrt_ref.data.splits import validation_size

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


# ----------------------------------------------------------------------------- IDX reader

@given(
    dtype=st.sampled_from(["u1", "i1", ">i2", ">i4", ">f4", ">f8", "<i4", "f8"]),
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    gz=st.booleans(),
)
def test_read_idx_round_trip(dtype, shape, gz):
    a = (np.arange(int(np.prod(shape))) - 7).astype(dtype).reshape(shape)
    raw = idx_bytes(a)
    b = read_idx(gzip.compress(raw) if gz else raw)
    assert b.shape == a.shape and b.dtype.isnative and np.array_equal(a, b)
    assert b.dtype.kind == np.dtype(dtype).kind and b.dtype.itemsize == np.dtype(dtype).itemsize


def test_read_idx_path_and_expected_shape(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(idx_bytes(a)))
    assert np.array_equal(read_idx(p, expected_shape=(None, 3, 4)), a)
    with pytest.raises(DataError, match=r"shape \(2, 3, 4\), expected \(None, 4, 4\)"):
        read_idx(p, expected_shape=(None, 4, 4))


GOOD = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + GOOD[8:], "bad IDX magic"),
        (b"\x00\x00\x07\x02" + GOOD[4:], "unknown IDX element type 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (GOOD[:9], "truncated IDX header"),
        (GOOD[:-1], "payload truncated"),
        (GOOD + b"\x00", "trailing bytes"),
        (b"\x00\x00\x0c\x01\x00\x00\x00\x02" + b"\x00" * 7, "payload truncated"),  # int32 x 2 needs 8 bytes
        (gzip.compress(GOOD)[:-6], "corrupt or truncated gzip"),
        (b"\x1f\x8b" + b"junk" * 8, "corrupt or truncated gzip"),
    ],
)
def test_read_idx_rejects_bad_files(raw, message):
    with pytest.raises(DataError, match=message):
        read_idx(raw)


def test_read_idx_corrupted_gzip_and_missing_file(tmp_path):
    packed = bytearray(gzip.compress(idx_bytes(np.arange(5000, dtype=np.int32))))
    packed[len(packed) // 2] ^= 0xFF
    with pytest.raises(DataError):
        read_idx(bytes(packed))
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope.gz")
    assert issubclass(DataError, ValueError)


# ----------------------------------------------------------------------------- shipped MNIST

def test_mnist_shapes_ranges_and_canonical_facts(mnist):
    assert mnist.x_train.shape == (60000, 784) and mnist.x_test.shape == (10000, 784)
    assert mnist.x_val.shape == (0, 784) and mnist.y_val.shape == (0,)
    assert mnist.x_train.dtype == np.float32 and mnist.y_train.dtype == np.int64
    assert mnist.x_train.min() == 0.0 and mnist.x_train.max() == 1.0
    assert list(mnist.y_test[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert list(np.bincount(mnist.y_train)) == MNIST_TRAIN_COUNTS
    assert mnist.n_classes == 10 and mnist.input_shape == (784,)
    assert abs(mnist.x_train.mean() - 0.1307) < 1e-4
    assert "mnist" in repr(mnist)


def test_mnist_options():
    ds = load_mnist(flatten=False, dtype=np.float64, validation="last", subset=1000, test_subset=500, seed=3)
    assert ds.x_train.shape == (1000, 1, 28, 28) and ds.x_val.shape == (10000, 1, 28, 28)
    assert ds.x_test.shape == (500, 1, 28, 28) and ds.x_train.dtype == np.float64
    assert np.array_equal(ds.info["val_index"], np.arange(50000, 60000))
    assert ds.info["train_index"].max() < 50000
    # subset classes follow the class frequencies of the 50k remaining training images
    full = load_mnist(validation="last")
    expected = 1000 * np.bincount(full.y_train) / 50000
    assert np.all(np.abs(np.bincount(ds.y_train, minlength=10) - expected) < 1)
    assert np.allclose(ds.x_train.reshape(1000, -1), full.x_train[ds.info["train_index"]], atol=1e-7, rtol=0)
    assert full.x_train.shape == (50000, 784) and full.x_test.shape == (10000, 784)


def test_mnist_seeded_validation_split():
    a = load_mnist(validation=5000, seed=1, subset=2000)
    b = load_mnist(validation=5000, seed=1, subset=2000)
    c = load_mnist(validation=5000, seed=2, subset=2000)
    assert a.x_val.shape == (5000, 784) and a.x_train.shape == (2000, 784)
    assert np.array_equal(a.info["val_index"], b.info["val_index"]) and np.array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.info["val_index"], c.info["val_index"])
    assert not set(a.info["val_index"]) & set(a.info["train_index"])
    for bad in (-1, 60001, "first", 0.5, True):
        with pytest.raises(ValueError):
            load_mnist(validation=bad)
    with pytest.raises(ValueError, match="floating"):
        load_mnist(dtype=np.int32)


def test_mnist_verification_is_cached(mnist):
    keys = [k for k in data._VERIFIED if "datasets" in k[0]]
    assert len(keys) >= 4  # the fixture verified the four shipped files once
    before = dict(data._VERIFIED)
    load_mnist(subset=10)
    assert all(data._VERIFIED[k] is before[k] for k in before)


def _copy_shipped(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in data.MNIST_SHIPPED_SHA256:
        os.symlink(data.SHIPPED_DIR / name, folder / name)
    return folder


def test_mnist_corrupt_or_missing_copy_is_rejected(tmp_path):
    folder = _copy_shipped(tmp_path)
    labels = read_idx(data.SHIPPED_DIR / "t10k-labels-idx1-ubyte.gz")
    target = folder / "t10k-labels-idx1-ubyte.gz"
    # one wrong label in an otherwise valid file: the content hash catches it
    target.unlink()
    labels[0] = 3
    target.write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DataError, match="SHA-256 of the decoded t10k-labels-idx1-ubyte"):
        load_mnist(path=folder)
    assert load_mnist(path=folder, verify=False).y_test[0] == 3  # the escape hatch
    # truncated file
    target.write_bytes(gzip.compress(idx_bytes(labels))[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_mnist(path=folder)
    # missing file
    target.unlink()
    with pytest.raises(DataError, match="has no t10k-labels-idx1-ubyte"):
        load_mnist(path=folder)
    # the uncompressed canonical file is accepted too
    labels[0] = 7
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    assert list(load_mnist(path=folder, subset=10).y_test[:3]) == [7, 2, 1]


def test_mnist_missing_or_corrupt_shipped_files(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "SHIPPED_DIR", tmp_path)
    with pytest.raises(DataError, match="shipped MNIST files are missing"):
        load_mnist()
    for name in data.MNIST_SHIPPED_SHA256:
        if name.startswith("t10k-labels"):
            packed = bytearray((_shipped() / name).read_bytes())
            packed[100] ^= 1
            (tmp_path / name).write_bytes(bytes(packed))
        else:
            os.symlink(_shipped() / name, tmp_path / name)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: SHA-256 .* the shipped file is corrupt"):
        load_mnist()


def _shipped():
    import dlrt_ref

    return Path(dlrt_ref.__file__).parent / "datasets"


def test_check_mnist_facts(mnist):
    x = np.zeros((60000, 28, 28), np.uint8)
    x[0, 0, 0] = 255
    xt = x[:10000]
    y = np.repeat(np.arange(10), 6000)
    problems = data.check_mnist_facts(x, y, xt, np.repeat(np.arange(10), 1000))
    assert any("class counts" in p for p in problems) and any("begin" in p for p in problems)
    assert data.check_mnist_facts(x[:5], y[:5], xt, y[:10000])[0].startswith("train: images (5, 28, 28)")


def test_cli_check(tmp_path, capsys):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "dlrt_ref.data", "--check"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert data.MNIST_SHIPPED_SHA256["train-images-idx3-ubyte.gz"] in proc.stdout
    assert "(60000, 28, 28)" in proc.stdout and "MNIST check OK" in proc.stdout
    assert data.main(["--check", "--path", str(tmp_path)]) == 1
    assert "MNIST check FAILED" in capsys.readouterr().err
    assert data.main([]) == 2  # no action: help, usage exit code


# ----------------------------------------------------------------------------- splits

@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=6).filter(lambda c: sum(c) > 0),
    frac=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_stratified_subset_properties(counts, frac, seed):
    y = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(0).shuffle(y)
    n = int(round(frac * y.size))
    idx = stratified_subset(y, n, seed)
    assert idx.size == n and np.all(np.diff(idx) > 0) and idx.dtype == np.int64
    got = np.bincount(y[idx], minlength=len(counts))
    assert np.all(np.abs(got - n * np.array(counts) / y.size) < 1)
    assert np.array_equal(idx, stratified_subset(y, n, seed))


def test_split_errors_and_partition():
    tr, va = train_val_split(10, 3, seed=0)
    assert sorted(np.concatenate([tr, va])) == list(range(10)) and len(va) == 3
    with pytest.raises(ValueError):
        train_val_split(10, 11)
    with pytest.raises(ValueError):
        stratified_subset([0, 1], 3)


# ----------------------------------------------------------------------------- downloads

def _sha(b):
    return hashlib.sha256(b).hexdigest()


def test_download_good_file_and_mirror_fallback(http_server, tmp_path):
    root, url, hits = http_server
    a = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    packed = gzip.compress(idx_bytes(a))
    (root / "good").mkdir()
    (root / "good" / "a.gz").write_bytes(packed)
    cache = tmp_path / "cache"
    mirrors = [url + "missing/", url + "good/"]  # the first mirror 404s
    paths = download_files({"a.gz": "sha256:" + _sha(packed)}, cache, mirrors)
    assert np.array_equal(read_idx(paths["a.gz"]), a)
    assert hits == ["/missing/a.gz", "/good/a.gz"]
    download_files({"a.gz": _sha(packed)}, cache, mirrors)  # already there and verified: no request
    assert len(hits) == 2
    md5 = hashlib.md5(packed).hexdigest()
    download_files({"a.gz": "md5:" + md5}, cache, mirrors, force=True)
    assert len(hits) == 4 and sorted(p.name for p in cache.iterdir()) == ["a.gz"]


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_download_bad_file_leaves_nothing(http_server, tmp_path, damage):
    root, url, _ = http_server
    packed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8)))
    served = bytearray(packed)
    if damage == "corrupt":
        served[len(served) // 2] ^= 0x55
    else:
        served = served[: len(served) // 2]
    (root / "a.gz").write_bytes(bytes(served))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"could not download a.gz from any mirror:\n.*sha256 mismatch"):
        download_files({"a.gz": _sha(packed)}, cache, [url])
    assert list(cache.iterdir()) == []


def test_download_checksum_of_truncated_file_still_caught_by_idx_check(http_server, tmp_path):
    root, url, _ = http_server
    truncated = idx_bytes(np.arange(1000, dtype=np.uint8))[:-10]
    (root / "a").write_bytes(truncated)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="payload truncated"):
        download_files({"a": _sha(truncated)}, cache, [url])  # checksum matches; the IDX header does not
    assert list(cache.iterdir()) == []


def test_download_all_mirrors_fail_and_stale_file_removed(http_server, tmp_path):
    _, url, _ = http_server
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "a.gz").write_bytes(b"stale")
    with pytest.raises(DataError) as info:
        download_files({"a.gz": "0" * 64}, cache, [url + "x/", "http://127.0.0.1:9/"], timeout=5)
    assert "x/a.gz" in str(info.value) and "127.0.0.1:9/a.gz" in str(info.value)
    assert list(cache.iterdir()) == []
    with pytest.raises(ValueError, match="cannot parse checksum"):
        download_files({"a.gz": "sha1:abc"}, cache, [url])


def test_download_mnist_then_load(http_server, tmp_path, monkeypatch):
    """The full user path, on a miniature MNIST: download_mnist -> load_mnist(path=...)."""
    root, url, _ = http_server
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(30, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(10, dtype=np.uint8),
    }
    sums = {}
    for stem, a in arrays.items():
        packed = gzip.compress(idx_bytes(a))
        (root / f"{stem}.gz").write_bytes(packed)
        sums[f"{stem}.gz"] = _sha(packed)
    monkeypatch.setenv("DLRT_REF_CACHE", str(tmp_path / "cache"))
    folder = data.download_mnist(mirrors=[url], checksums=sums)
    assert folder == tmp_path / "cache" / "mnist"
    with pytest.raises(DataError, match="not the canonical one"):
        load_mnist(path=folder)
    ds = load_mnist(path=folder, verify=False, flatten=False, validation=10, seed=0)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert np.allclose(ds.x_test[:, 0] * 255, arrays["t10k-images-idx3-ubyte"])


# ----------------------------------------------------------------------------- Fashion-MNIST

def test_fashion_mnist_missing_message(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_DEBIAN_DIR", tmp_path / "none")
    monkeypatch.setenv("DLRT_REF_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist()
    with pytest.raises(DataError, match="has no train-images"):
        load_fashion_mnist(path=tmp_path)


@pytest.mark.skipif(not (data.FASHION_DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_debian_package():
    ds = load_fashion_mnist(flatten=False, validation="last", test_subset=1000)
    assert ds.x_train.shape == (50000, 1, 28, 28) and ds.x_val.shape == (10000, 1, 28, 28)
    assert ds.n_classes == 10 and ds.classes[9] == "Ankle boot"
    assert list(np.bincount(ds.y_test)) == [100] * 10
    full = load_fashion_mnist()
    assert list(full.y_test[:10]) == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert list(np.bincount(full.y_train)) == [6000] * 10
    assert 0.0 <= full.x_train.min() and full.x_train.max() == 1.0


# ----------------------------------------------------------------------------- CIFAR-10

def _write_cifar(folder, n=7, seed=0, labels_as_list=True, protocol=2):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, n)
        d = {b"batch_label": name.encode(), b"data": x, b"labels": y.tolist() if labels_as_list else y}
        (folder / name).write_bytes(pickle.dumps(d, protocol=protocol))
        truth[name] = (x, y)
    return truth


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_folder_parent_and_tarball(tmp_path, protocol):
    truth = _write_cifar(tmp_path / "cifar-10-batches-py", labels_as_list=protocol == 2, protocol=protocol)
    ds = load_cifar10(tmp_path / "cifar-10-batches-py", flatten=False)
    assert ds.x_train.shape == (35, 3, 32, 32) and ds.x_test.shape == (7, 3, 32, 32)
    x0, y0 = truth["data_batch_1"]
    assert np.allclose(ds.x_train[0, 0].ravel() * 255, x0[0, :1024])  # red plane first
    assert np.allclose(ds.x_train[0, 2].ravel() * 255, x0[0, 2048:])
    assert np.array_equal(ds.y_train[:7], y0) and ds.y_train.dtype == np.int64
    assert np.array_equal(ds.y_test, truth["test_batch"][1])
    flat = load_cifar10(tmp_path, validation=5, seed=1)  # the parent folder works too
    assert flat.x_train.shape == (30, 3072) and flat.x_val.shape == (5, 3072)
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    assert np.array_equal(load_cifar10(tgz, verify=False).x_test, load_cifar10(tmp_path).x_test)  # a fixture: not the official SHA-256


def test_cifar10_errors(tmp_path):
    folder = tmp_path / "c"
    _write_cifar(folder, labels_as_list=False)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks data_batch_3"):
        load_cifar10(folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match="expected \\(N, 3072\\) uint8"):
        load_cifar10(folder)
    (folder / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="not a readable CIFAR pickle"):
        load_cifar10(folder)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="system"):
        load_cifar10(folder)


# ----------------------------------------------------------------------------- teacher-student

def test_teacher_student_known_ranks_and_labels():
    ds = teacher_student(2000, 500, widths=[30, 40, 20, 5], ranks=[4, 3, None], seed=0, n_val=100)
    assert isinstance(ds, Dataset) and ds.x_train.shape == (2000, 30) and ds.x_val.shape == (100, 30)
    t = ds.teacher
    assert t.ranks == (4, 3, 5)
    for W, (A, B), r in zip(t.weights, t.factors, t.ranks):
        assert np.linalg.matrix_rank(W) == r and np.allclose(W, A @ B.T)
    assert np.array_equal(ds.y_test, t.predict(ds.x_test))  # test labels are clean
    assert np.array_equal(ds.y_train, t.predict(ds.x_train))  # noise=0
    assert np.bincount(ds.y_test, minlength=5).min() > 0.1 * 500  # balanced-ish
    again = teacher_student(2000, 500, widths=[30, 40, 20, 5], ranks=[4, 3, None], seed=0, n_val=100)
    assert np.array_equal(again.x_train, ds.x_train) and np.array_equal(again.y_train, ds.y_train)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_teacher_student_noise_and_int_rank(activation):
    ds = teacher_student(4000, 100, widths=[20, 30, 3], ranks=5, seed=1, noise=0.3, activation=activation)
    assert ds.teacher.ranks == (5, 3)  # the int rank is capped at min(n_in, n_out) = 3 for the output layer
    flipped = ds.y_train != ds.teacher.predict(ds.x_train)
    assert 0.3 * (2 / 3) - 0.05 < flipped.mean() < 0.3 * (2 / 3) + 0.05
    assert np.array_equal(flipped & ~ds.info["noise_mask"]["train"], np.zeros_like(flipped))


def test_teacher_student_errors():
    with pytest.raises(ValueError, match=r"rank must be in \[1, 10\]"):
        teacher_student(10, 10, [10, 20, 3], [11, None])
    with pytest.raises(ValueError, match=r"rank must be in \[1"):
        teacher_student(10, 10, [10, 20, 3], [0, None])
    with pytest.raises(ValueError, match="need 2 ranks"):
        teacher_student(10, 10, [10, 20, 3], [2])
    with pytest.raises(ValueError, match="activation"):
        teacher_student(10, 10, [10, 3], 1, activation="gelu")
    with pytest.raises(ValueError, match="n_classes >= 2"):
        teacher_student(10, 10, [10, 1], 1)


def test_data_dir_and_environment_variable(tmp_path, monkeypatch, capsys):
    """--data-dir / $DLRT_REF_DATA_DIR: MNIST from DIR or DIR/mnist (checksum-verified); otherwise the shipped copy."""
    import shutil

    from dlrt_ref.data import mnist as D
    from dlrt_ref.cli import main

    mn = tmp_path / "root" / "mnist"
    mn.mkdir(parents=True)
    for p in D.SHIPPED_DIR.glob("*.gz"):
        shutil.copy(p, mn / p.name)
    assert D.mnist_folder(tmp_path / "root") == mn and D.mnist_folder(mn) == mn
    assert D.mnist_folder(tmp_path) is None and D.fashion_folder(tmp_path / "root") is None
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "root"))
    ds = D.load_mnist(subset=20, test_subset=10)
    assert ds.info["source"] == str(mn) and ds.x_train.shape == (20, 784)
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "nothing-here"))
    assert D.load_mnist(subset=20, test_subset=10).info["source"] == str(D.SHIPPED_DIR)
    monkeypatch.delenv(D.DATA_DIR_ENV)
    args = ["train", "--widths", "784,8,10", "--subset", "100", "--test-subset", "50", "--epochs", "1", "--json",
            "--log-every", "0"]
    assert main([*args, "--data-dir", str(tmp_path / "root")]) == 0
    assert f"MNIST ({mn})" in capsys.readouterr().err
    (mn / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    assert main([*args, "--data-dir", str(mn), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "t10k-labels-idx1-ubyte.gz" in err and D.MNIST_IDX_SHA256["t10k-labels-idx1-ubyte"] in err


def test_data_dir_tells_mnist_from_fashion(tmp_path, monkeypatch, capsys):
    """A folder is Fashion-MNIST when its decoded training labels have Fashion's SHA-256 (simulated here by
    declaring MNIST's labels hash to be Fashion's)."""
    import shutil

    from dlrt_ref.data import mnist as D
    from dlrt_ref.cli import main

    for p in D.SHIPPED_DIR.glob("*.gz"):
        shutil.copy(p, tmp_path / p.name)
    assert D.mnist_folder(tmp_path) == tmp_path and D.fashion_folder(tmp_path) is None
    fake = dict(D.FASHION_IDX_SHA256, **{"train-labels-idx1-ubyte": D.MNIST_IDX_SHA256["train-labels-idx1-ubyte"]})
    monkeypatch.setattr(D, "FASHION_IDX_SHA256", fake)
    assert D.mnist_folder(tmp_path) is None and D.fashion_folder(tmp_path) == tmp_path
    assert main(["train", "--data-dir", str(tmp_path), "--epochs", "1"]) == 2
    assert "holds Fashion-MNIST" in capsys.readouterr().err


@pytest.mark.parametrize("given,want", [("last", ("last", 10000)), ("last:5", ("last", 5)), ("last:0", ("last", 0)),
                                        (7, ("random", 7)), (np.int64(3), ("random", 3))])
def test_validation_size_reads_the_format(given, want):
    """The one parser of the validation option (loaders and ``train --validation``)."""
    assert validation_size(given) == want


@pytest.mark.parametrize("bad", ["last:", "last:x", "last:-5", "lots", "5", 1.5, True, None])
def test_validation_size_rejects_everything_else(bad):
    with pytest.raises(ValueError, match="validation must be an int, 'last' or 'last:K'"):
        validation_size(bad)
