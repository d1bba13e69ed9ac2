"""Files written atomically: a crash while writing leaves the previous file intact.

Used by the checkpoints (:mod:`dlrt_ref.train.checkpoint`) and by the fit loop's
``config.json`` and ``results.json`` (:mod:`dlrt_ref.train.loop`).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "write_json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write, mode: str = "wb") -> Path:
    """Write a file atomically: ``write(f)`` into a temporary file in the same folder, then :func:`os.replace`.

    A crash or an exception while writing leaves any previous file at ``path``
    unchanged. The file gets the usual permissions (0666 minus the umask).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path, obj) -> None:
    """Write JSON atomically (temporary file in the same folder, then :func:`os.replace`)."""

    def dump(f):
        json.dump(obj, f, indent=1)
        f.write("\n")

    atomic_write(path, dump, "w")
