"""CIFAR-10/100 loaders against fixture archives in the official format, written here: verified and
unverified archives, folders, the offline search and its error, corrupted and truncated files, and the
download from a loopback server."""
import gzip
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest

from dlrt_ref.data import DataError, download_cifar, load_cifar10, load_cifar100
from dlrt_ref.data.cifar import CIFAR_SHA256, find_cifar

N = 6  # images per batch file


def _batch(rng, n, cifar100=False):
    x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    if cifar100:
        return {b"filenames": [b"f"] * n, b"fine_labels": rng.integers(0, 100, n).tolist(),
                b"coarse_labels": rng.integers(0, 20, n).tolist(), b"data": x}
    return {b"batch_label": b"b", b"labels": rng.integers(0, 10, n).tolist(), b"data": x, b"filenames": [b"f"] * n}


def write_archive(folder, which="cifar10", seed=0):
    """An archive with the official layout (folder, member names, pickle protocol 2 dicts); returns (path, truth)."""
    rng = np.random.default_rng(seed)
    inner, archive = {"cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz"),
                      "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz")}[which]
    src = folder / "src" / inner
    src.mkdir(parents=True)
    names = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]) if which == "cifar10" else ["train", "test"]
    truth = {}
    for name in names:
        d = _batch(rng, N, which == "cifar100")
        (src / name).write_bytes(pickle.dumps(d, protocol=2))
        truth[name] = d
    (src / ("batches.meta" if which == "cifar10" else "meta")).write_bytes(pickle.dumps({b"x": [b"y"]}, protocol=2))
    path = folder / archive
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(src, arcname=inner, filter=lambda info: (setattr(info, "mtime", 0), info)[1])
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))  # byte-for-byte reproducible
    return path, truth


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cifar10_archive_is_verified_and_read_like_its_folder(tmp_path):
    path, truth = write_archive(tmp_path)
    with pytest.raises(DataError, match="sha256 mismatch"):  # a fixture is not the official archive
        load_cifar10(path)
    ds = load_cifar10(path, sha256=sha(path), flatten=False)
    assert ds.x_train.shape == (5 * N, 3, 32, 32) and ds.x_test.shape == (N, 3, 32, 32)
    assert np.array_equal(ds.y_test, truth["test_batch"][b"labels"])
    np.testing.assert_allclose(ds.x_train[0, 1].ravel() * 255, truth["data_batch_1"][b"data"][0, 1024:2048])  # green
    same = load_cifar10(path, verify=False, flatten=False)
    assert np.array_equal(same.x_train, ds.x_train)
    folder = load_cifar10(tmp_path / "src", flatten=False)  # the extracted folder's parent
    assert np.array_equal(folder.x_train, ds.x_train) and np.array_equal(folder.y_train, ds.y_train)


@pytest.mark.parametrize("labels, classes", [("fine", 100), ("coarse", 20)])
def test_cifar100_archive_fine_and_coarse(tmp_path, labels, classes):
    path, truth = write_archive(tmp_path, "cifar100")
    ds = load_cifar100(path, sha256=sha(path), labels=labels, validation=2)
    assert ds.x_train.shape == (N - 2, 3072) and ds.x_val.shape == (2, 3072) and ds.x_test.shape == (N, 3072)
    assert np.array_equal(ds.y_test, truth["test"][f"{labels}_labels".encode()]) and len(ds.classes) == classes
    with pytest.raises(ValueError, match="labels"):
        load_cifar100(path, verify=False, labels="medium")


def test_official_digests_are_the_published_ones():
    assert CIFAR_SHA256["cifar10"].startswith("6d958be0") and CIFAR_SHA256["cifar100"].startswith("85cd44d0")
    assert all(len(v) == 64 for v in CIFAR_SHA256.values())


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_corrupted_and_truncated_archives_are_one_line_errors(tmp_path, damage):
    path, _ = write_archive(tmp_path)
    good = sha(path)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw = b""
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="sha256 mismatch") as exc:
        load_cifar10(path, sha256=good)
    assert "\n" not in str(exc.value)
    if damage == "flip":  # unverified, a flipped byte may land in pixel data and load: only the SHA-256 sees it
        try:
            load_cifar10(path, verify=False)
        except DataError as exc:
            assert "\n" not in str(exc)
        return
    with pytest.raises(DataError) as exc:  # unverified, the archive itself is found broken
        load_cifar10(path, verify=False)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_damaged_folder_members(tmp_path):
    write_archive(tmp_path)
    folder = tmp_path / "src" / "cifar-10-batches-py"
    raw = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="data_batch_2: not a readable CIFAR pickle"):
        load_cifar10(folder)
    bad = _batch(np.random.default_rng(1), N)
    bad[b"labels"] = [10] * N
    (folder / "data_batch_2").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="labels outside 0..9"):
        load_cifar10(folder)


def test_offline_search_and_the_missing_data_message(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir(), cache.mkdir()
    monkeypatch.setenv("DLRT_REF_DATA_DIR", str(data))
    monkeypatch.setenv("DLRT_REF_CACHE", str(cache))
    with pytest.raises(DataError) as exc:
        load_cifar10()
    msg = str(exc.value)
    assert "\n" not in msg and "cifar-10-python.tar.gz" in msg and str(data) in msg and str(cache) in msg
    path, truth = write_archive(cache)  # the cache is searched after the data folder
    assert find_cifar("cifar10") == path
    ds = load_cifar10(sha256=sha(path))
    assert np.array_equal(ds.y_test, truth["test_batch"][b"labels"])
    with pytest.raises(ValueError, match="which"):
        find_cifar("cifar11")


def test_download_from_a_loopback_server_verified(http_server, tmp_path):
    root, url, _ = http_server
    path, truth = write_archive(root)
    cache = tmp_path / "dl"
    with pytest.raises(DataError, match="could not download"):  # the official digest: the fixture is refused
        download_cifar("cifar10", cache_dir=cache, mirrors=[url], timeout=5)
    assert not (cache / path.name).exists()
    got = download_cifar("cifar10", cache_dir=cache, mirrors=[url + "missing/", url], sha256=sha(path), timeout=5)
    assert got == cache / path.name and sha(got) == sha(path)
    assert np.array_equal(load_cifar10(got, sha256=sha(path)).y_test, truth["test_batch"][b"labels"])
