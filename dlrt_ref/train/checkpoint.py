"""Training checkpoints: one ``.npz`` file, written atomically, loaded without pickle.

A checkpoint holds everything a run needs to continue exactly where it
stopped (so that a resumed run reproduces the uninterrupted one bit for bit on
CPU):

* every layer's ordinary parameters (``layer.params``) and, for low-rank
  layers, the factors U, S, V — whose rank may differ from layer to layer and
  from the rank the network was built with;
* the optimiser state (:meth:`~dlrt_ref.train.optim.Optimizer.state_dict`:
  keys are tuples of ints and strings, each entry has arrays, a step count
  ``t`` and a *frame*, a tuple of arrays — the basis the state is expressed in);
* the trainer's step counter, the loop position (epoch, batch) and the
  history so far, and the run's configuration.

Format
------
A NumPy ``.npz`` (zip) archive of plain numeric arrays plus one uint8 array
``__manifest__`` holding UTF-8 JSON (the structure, the names of the arrays,
the history and config). It is read with ``allow_pickle=False``, so loading an
untrusted file cannot execute code. Arrays keep their dtype and memory order.

Writing is atomic: the archive is written to a temporary file in the same
folder and moved over the target with :func:`os.replace`, so a crash while
writing leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from dlrt_ref.backend import to_numpy

__all__ = ["save_checkpoint", "load_checkpoint", "read_manifest", "atomic_write", "net_backend", "CheckpointError", "FORMAT"]

FORMAT = "dlrt_ref-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed or does not fit the network/trainer."""


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


def _encode_key(key):
    if isinstance(key, tuple):
        return {"tuple": [_encode_key(k) for k in key]}
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer, str)):
        raise CheckpointError(f"optimiser state key {key!r}: only tuples of ints and strings can be saved")
    return int(key) if isinstance(key, (int, np.integer)) else key


def _decode_key(obj):
    if isinstance(obj, dict):
        return tuple(_decode_key(k) for k in obj["tuple"])
    return obj


def net_backend(net):
    """The Backend of the first layer that has one (NumPy for a network without parameters)."""
    for layer in net.layers:
        if getattr(layer, "backend", None) is not None:
            return layer.backend
    from dlrt_ref.backend import get_backend

    return get_backend("numpy")


def save_checkpoint(path, trainer, position: dict, history: dict, config: dict) -> Path:
    """Write a checkpoint of ``trainer`` (its ``net``, ``opt`` and ``steps``) atomically to ``path``.

    Parameters
    ----------
    path : str or Path
        Target file (``.npz``); its folder must exist.
    trainer : DLRT or a baseline trainer
    position : dict
        Where the loop stands, e.g. ``{"epoch": 1, "batch": 0, "step": 40}`` (JSON-able).
    history : dict
        JSON-able history so far.
    config : dict
        JSON-able run configuration.
    """
    path = Path(path)
    arrays, layers = {}, []
    for k, layer in enumerate(trainer.net.layers):
        entry = {"type": type(layer).__name__, "params": sorted(layer.params)}
        for name in entry["params"]:
            arrays[f"layer{k}/param/{name}"] = to_numpy(layer.params[name])
        if getattr(layer, "lowrank", False):
            entry["rank"] = layer.rank
            for name in ("U", "S", "V"):
                arrays[f"layer{k}/factor/{name}"] = to_numpy(getattr(layer, name))
        layers.append(entry)
    sd = trainer.opt.state_dict()
    opt_entries = []
    for j, (key, st) in enumerate(sd["state"].items()):
        entry = {"key": _encode_key(key), "t": int(st.get("t", 0)), "arrays": [], "frame": 0}
        for name, value in st.items():
            if name == "t":
                continue
            if name == "frame":
                entry["frame"] = len(value)
                for i, a in enumerate(value):
                    arrays[f"opt{j}/frame/{i}"] = a
            else:
                entry["arrays"].append(name)
                arrays[f"opt{j}/{name}"] = value
        opt_entries.append(entry)
    manifest = {
        "format": FORMAT,
        "trainer": {"type": type(trainer).__name__, "steps": int(getattr(trainer, "steps", 0)),
                    "method": getattr(trainer, "method", None)},
        "layers": layers,
        "optimizer": {k: sd[k] for k in ("name", "lr", "state_policy", "transports", "resets")},
        "optimizer_state": opt_entries,
        "position": position,
        "history": history,
        "config": config,
    }
    arrays["__manifest__"] = np.frombuffer(json.dumps(manifest).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def _open(path):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        z = np.load(path, allow_pickle=False)
        manifest = json.loads(bytes(z["__manifest__"]).decode("utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a readable dlrt_ref checkpoint: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} has format {manifest.get('format')!r}, expected {FORMAT!r}")
    return z, manifest


def read_manifest(path) -> dict:
    """The JSON manifest of a checkpoint (config, position, history, structure) without loading weights."""
    z, manifest = _open(path)
    z.close()
    return manifest


def load_checkpoint(path, trainer) -> dict:
    """Restore a checkpoint into ``trainer`` (same architecture); return its manifest.

    Parameters and factors are moved to the network's backend; the optimiser
    state (frames included) is restored with ``opt.load_state_dict``; the
    trainer's ``steps`` is set. Raises :class:`CheckpointError` if the file
    does not fit the network or trainer.
    """
    z, manifest = _open(path)
    with z:
        net, be = trainer.net, net_backend(trainer.net)
        if len(manifest["layers"]) != len(net.layers):
            raise CheckpointError(f"checkpoint has {len(manifest['layers'])} layers, the network {len(net.layers)}")
        kind = manifest["trainer"]["type"]
        if kind != type(trainer).__name__ or manifest["trainer"].get("method") != getattr(trainer, "method", None):
            raise CheckpointError(f"checkpoint was written by {kind} ({manifest['trainer'].get('method')}), "
                                  f"this run uses {type(trainer).__name__} ({getattr(trainer, 'method', None)})")
        for k, (entry, layer) in enumerate(zip(manifest["layers"], net.layers)):
            if entry["type"] != type(layer).__name__ or entry["params"] != sorted(layer.params):
                raise CheckpointError(f"layer {k}: checkpoint has {entry['type']} {entry['params']}, "
                                      f"network has {type(layer).__name__} {sorted(layer.params)}")
            for name in entry["params"]:
                a = z[f"layer{k}/param/{name}"]
                if a.shape != layer.params[name].shape:
                    raise CheckpointError(f"layer {k} param {name}: shape {a.shape} != {layer.params[name].shape}")
                layer.params[name] = be.asarray(a)
            if getattr(layer, "lowrank", False):
                U, S, V = (be.asarray(z[f"layer{k}/factor/{n}"]) for n in ("U", "S", "V"))
                layer.set_factors(U, S, V)
        state = {}
        for j, entry in enumerate(manifest["optimizer_state"]):
            st = {name: z[f"opt{j}/{name}"] for name in entry["arrays"]}
            st["t"] = entry["t"]
            st["frame"] = tuple(z[f"opt{j}/frame/{i}"] for i in range(entry["frame"]))
            state[_decode_key(entry["key"])] = st
        sd = dict(manifest["optimizer"], state=state)
        if sd["lr"] != trainer.opt.lr or sd["state_policy"] != trainer.opt.state_policy:
            raise CheckpointError(f"checkpoint optimiser {sd['name']} lr={sd['lr']} ({sd['state_policy']}) differs from "
                                  f"this run's {trainer.opt!r}")
        try:
            trainer.opt.load_state_dict(sd, be)
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
        trainer.steps = int(manifest["trainer"]["steps"])
    return manifest
