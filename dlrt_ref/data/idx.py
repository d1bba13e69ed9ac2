"""IDX files, checksums and verified downloads: the file layer under :mod:`dlrt_ref.data`.

IDX is the format of MNIST and Fashion-MNIST (LeCun et al., "The MNIST database
of handwritten digits", http://yann.lecun.com/exdb/mnist/): a big-endian header

    bytes 0-1   zero
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    4 .. 4+4d   the d sizes, 32-bit unsigned big-endian
    then        prod(sizes) elements, row-major, big-endian

usually gzipped. :func:`read_idx` checks every one of these facts, and that the
payload has *exactly* the announced length, so that a corrupted or truncated
file raises :class:`DataError` instead of returning a wrong array.

:func:`download_files` fetches files from a list of mirrors into a cache
folder. Each file is written to a temporary name in that folder, its checksum
and (optionally) its IDX structure are checked, and only then is it renamed
into place (``os.replace``, atomic on POSIX and Windows). A failed or corrupt
download therefore never leaves a file under the final name.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "DataError",
    "read_idx",
    "idx_bytes",
    "file_digest",
    "check_digest",
    "default_cache_dir",
    "download_files",
]

# IDX element-type code -> big-endian numpy dtype
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODE_OF = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """A data file is missing, corrupt, truncated, or not the one expected."""


def _raw_bytes(source) -> tuple[bytes, str]:
    """Bytes of ``source`` (a path, or bytes-like), gunzipped if they start with the gzip magic."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw, name = bytes(source), "<bytes>"
    else:
        path = Path(source)
        name = str(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{name}: file not found") from None
        except OSError as exc:
            raise DataError(f"{name}: cannot read ({exc})") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise DataError(f"{name}: corrupt or truncated gzip stream ({exc})") from None
    return raw, name


def read_idx(source, *, expected_shape=None) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a native-endian numpy array.

    Parameters
    ----------
    source : str, os.PathLike or bytes-like
        A file path, or the file's bytes. Gzip is detected from the content
        (magic ``1f 8b``), not from the name.
    expected_shape : tuple of int or None, optional
        If given, the shape the file must declare; ``None`` in a position
        accepts any size there.

    Returns
    -------
    numpy.ndarray
        Array of the declared shape and element type, native byte order.

    Raises
    ------
    DataError
        If the file is missing or unreadable, the gzip stream is corrupt or
        truncated, the magic number or type code is invalid, the header is
        short, the payload is shorter or longer than the header declares, or
        the shape differs from ``expected_shape``.
    """
    raw, name = _raw_bytes(source)
    if len(raw) < 4:
        raise DataError(f"{name}: {len(raw)} bytes, too short for an IDX magic number")
    zero0, zero1, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0:
        raise DataError(f"{name}: bad IDX magic number 0x{raw[:4].hex()} (first two bytes must be zero)")
    if code not in IDX_DTYPES:
        raise DataError(f"{name}: unknown IDX element type 0x{code:02x} (magic 0x{raw[:4].hex()})")
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{name}: truncated IDX header ({len(raw)} bytes, need {header_len})")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    dtype = np.dtype(IDX_DTYPES[code])
    expected_len = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got_len = len(raw) - header_len
    if got_len != expected_len:
        kind = "truncated" if got_len < expected_len else "has trailing bytes"
        raise DataError(
            f"{name}: IDX payload {kind}: header declares shape {shape} of {dtype.name} "
            f"= {expected_len} bytes, file holds {got_len}"
        )
    if expected_shape is not None:
        ok = len(expected_shape) == len(shape) and all(e is None or e == s for e, s in zip(expected_shape, shape))
        if not ok:
            raise DataError(f"{name}: IDX shape {shape}, expected {tuple(expected_shape)}")
    array = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a native-endian, writable copy


def idx_bytes(array) -> bytes:
    """Encode ``array`` as an (uncompressed) IDX file: the inverse of :func:`read_idx`.

    Raises
    ------
    DataError
        If the array's dtype has no IDX type code or it has no dimensions.
    """
    array = np.asarray(array)
    code = _CODE_OF.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"dtype {array.dtype} has no IDX type code (allowed: {sorted(set(_CODE_OF))})")
    if array.ndim == 0:
        raise DataError("IDX needs at least one dimension")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def file_digest(source, algorithm: str = "sha256") -> str:
    """Hex digest of a file (path) or of bytes, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    if isinstance(source, (bytes, bytearray, memoryview)):
        h.update(source)
        return h.hexdigest()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _parse_checksum(checksum: str) -> tuple[str, str]:
    """``"sha256:<hex>"``, ``"md5:<hex>"``, or bare hex (64 digits: sha256, 32: md5)."""
    algo, sep, value = checksum.partition(":")
    if not sep:
        algo, value = {64: "sha256", 32: "md5"}.get(len(checksum), "?"), checksum
    if algo not in ("sha256", "md5") or not value or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ValueError(f"cannot parse checksum {checksum!r}: use 'sha256:<hex>' or 'md5:<hex>'")
    return algo, value.lower()


def check_digest(path, checksum: str) -> None:
    """Raise :class:`DataError` unless the file at ``path`` has ``checksum`` (see :func:`_parse_checksum`)."""
    algo, want = _parse_checksum(checksum)
    got = file_digest(path, algo)
    if got != want:
        raise DataError(f"{path}: {algo} mismatch: expected {want}, got {got}")


def default_cache_dir() -> Path:
    """``$DLRT_REF_CACHE`` if set, else ``~/.cache/dlrt_ref``."""
    env = os.environ.get("DLRT_REF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dlrt_ref"


def _fetch(url: str, dest: Path, timeout: float) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "dlrt_ref"})
    with urllib.request.urlopen(req, timeout=timeout) as resp, open(dest, "wb") as out:
        for block in iter(lambda: resp.read(1 << 20), b""):
            out.write(block)


def download_files(files: dict, folder, mirrors, *, timeout: float = 60.0, idx: bool = True, force: bool = False):
    """Download ``files`` into ``folder``, trying ``mirrors`` in turn, with checksums.

    Parameters
    ----------
    files : dict of str -> str
        File name -> checksum (``"sha256:<hex>"``, ``"md5:<hex>"`` or bare hex).
    folder : str or os.PathLike
        Destination; created if needed.
    mirrors : sequence of str
        Base URLs; the URL of a file is ``mirror.rstrip('/') + '/' + name``.
    timeout : float, optional
        Seconds per connection attempt.
    idx : bool, optional
        Also parse each file with :func:`read_idx` before accepting it.
    force : bool, optional
        Download even if a verified file is already present.

    Returns
    -------
    dict of str -> pathlib.Path
        File name -> path of the verified file.

    Raises
    ------
    DataError
        If some file could not be obtained from any mirror with the right
        checksum; the message lists each mirror's failure. Nothing is left
        under the final name for a file that failed, and no temporary file
        is left behind.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not mirrors:
        raise DataError("no mirrors given")
    result = {}
    for name, checksum in files.items():
        _parse_checksum(checksum)  # fail early on a malformed checksum
        final = folder / name
        if final.exists() and not force:
            try:
                check_digest(final, checksum)
                result[name] = final
                continue
            except DataError:
                final.unlink()  # known bad: never leave it where a loader would find it
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
            os.close(fd)
            tmp = Path(tmp)
            try:
                _fetch(url, tmp, timeout)
                check_digest(tmp, checksum)
                if idx:
                    read_idx(tmp)
                os.replace(tmp, final)
                result[name] = final
                break
            except (OSError, urllib.error.URLError, DataError, ValueError) as exc:
                failures.append(f"{url}: {exc}")
            finally:
                if tmp.exists():
                    tmp.unlink()
        else:
            raise DataError(
                f"could not download {name} from any mirror:\n  " + "\n  ".join(failures)
            )
    return result
