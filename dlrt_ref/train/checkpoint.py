"""Training checkpoints: one ``.npz`` file, written atomically, loaded without pickle.

A checkpoint holds everything a run needs to continue exactly where it
stopped (so that a resumed run reproduces the uninterrupted one bit for bit on
CPU):

* every layer's ordinary parameters (``layer.params``), its non-trainable
  state (``layer.state``: BatchNorm's running statistics) and, for low-rank
  layers, the factors U, S, V — whose rank may differ from layer to layer and
  from the rank the network was built with. Layers are the network's leaves
  (``net.flat_layers()``: the layers inside residual blocks count one by one);
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
folder and moved over the target with :func:`os.replace`
(:func:`dlrt_ref.train.files.atomic_write`), so a crash while writing leaves
the previous checkpoint intact.
"""
from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from dlrt_ref.backend import to_numpy
from dlrt_ref.nn.network import net_backend
from dlrt_ref.train.files import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "trainer_config", "read_manifest", "CheckpointError", "FORMAT"]

FORMAT = "dlrt_ref-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed or does not fit the network/trainer."""


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
    for k, layer in enumerate(trainer.net.flat_layers()):
        entry = {"type": type(layer).__name__, "params": sorted(layer.params)}
        for name in entry["params"]:
            arrays[f"layer{k}/param/{name}"] = to_numpy(layer.params[name])
        if getattr(layer, "state", None):
            entry["state"] = sorted(layer.state)
            for name in entry["state"]:
                arrays[f"layer{k}/state/{name}"] = to_numpy(layer.state[name])
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
                    "method": getattr(trainer, "method", None), "config": trainer_config(trainer)},
        "layers": layers,
        "optimizer": {k: sd[k] for k in ("name", "lr", "state_policy", "hyper", "transports", "resets")},
        "optimizer_state": opt_entries,
        "position": position,
        "history": history,
        "config": config,
    }
    arrays["__manifest__"] = np.frombuffer(json.dumps(manifest).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


# what a damaged file raises while numpy/zipfile/zlib/json read it
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile, zlib.error)


def _open(path):
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder; give the checkpoint.npz file inside it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"PK\x03\x04":  # every .npz is a zip archive
            raise ValueError("empty file" if not magic else f"not a zip archive (starts with {magic!r})")
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        manifest = json.loads(bytes(z["__manifest__"]).decode("utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("the manifest is not a JSON object")
    except _READ_ERRORS as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a readable dlrt_ref checkpoint "
                              f"(truncated, damaged or another kind of file): {type(exc).__name__}: {exc}") from None
    if manifest.get("format") != FORMAT:
        z.close()
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
    trainer's ``steps`` is set. All or nothing: every array is read and checked
    (presence, shape, finiteness of the weights) before the trainer is changed.

    Raises
    ------
    CheckpointError
        If the file is missing, truncated, damaged (a flipped byte fails the
        zip CRC), lacks an array, has a wrong shape, or does not fit the network
        or trainer. The message is one line naming the file.
    """
    z, manifest = _open(path)
    with z:
        try:
            params, factors, states, sd = _read_arrays(z, manifest, trainer)
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint {str(path)!r}: {exc}") from None
        except _READ_ERRORS as exc:
            raise CheckpointError(f"checkpoint {str(path)!r} is damaged or incomplete: {type(exc).__name__}: "
                                  f"{exc}") from None
    net, be = trainer.net, net_backend(trainer.net)
    leaves = net.flat_layers()
    old = [(dict(layer.params), getattr(layer, "U", None), getattr(layer, "S", None), getattr(layer, "V", None))
           for layer in leaves]
    old_states = [dict(layer.state) if getattr(layer, "state", None) else None for layer in leaves]
    try:
        for (k, name), a in params.items():
            leaves[k].params[name] = be.asarray(a)
        for (k, name), a in states.items():
            leaves[k].state[name] = be.asarray(a)
        for k, (U, S, V) in factors.items():
            leaves[k].set_factors(be.asarray(U), be.asarray(S), be.asarray(V))
        trainer.opt.load_state_dict(sd, be)
    except (ValueError, TypeError) as exc:  # set_factors' shape/rank/dtype checks, the optimiser's: undo, one line
        for layer, (p, U, S, V), st in zip(leaves, old, old_states):
            layer.params = p
            if st is not None:
                layer.state = st
            if U is not None:
                layer.U, layer.S, layer.V = U, S, V
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this run: {exc}") from None
    trainer.steps = int(manifest["trainer"]["steps"])
    return manifest


def _read_arrays(z, manifest, trainer):
    """Every array the trainer needs, read and checked; the trainer is not touched."""
    leaves = trainer.net.flat_layers()
    if len(manifest["layers"]) != len(leaves):
        raise CheckpointError(f"checkpoint has {len(manifest['layers'])} layers, the network {len(leaves)}")
    kind = manifest["trainer"]["type"]
    if kind != type(trainer).__name__:
        raise CheckpointError(f"checkpoint was written by {kind}, this run uses {type(trainer).__name__}")
    _check_config(manifest, trainer)
    params, factors, states = {}, {}, {}
    for k, (entry, layer) in enumerate(zip(manifest["layers"], leaves)):
        if entry["type"] != type(layer).__name__ or entry["params"] != sorted(layer.params):
            raise CheckpointError(f"layer {k}: checkpoint has {entry['type']} {entry['params']}, "
                                  f"network has {type(layer).__name__} {sorted(layer.params)}")
        for name in entry["params"]:
            a = _array(z, f"layer{k}/param/{name}")
            if a.shape != layer.params[name].shape or a.dtype != layer.params[name].dtype:
                raise CheckpointError(f"layer {k} param {name}: {a.shape} {a.dtype} in the checkpoint, the network has "
                                      f"{layer.params[name].shape} {layer.params[name].dtype}")
            params[(k, name)] = a
        state = getattr(layer, "state", None) or {}
        if entry.get("state", []) != sorted(state):
            raise CheckpointError(f"layer {k}: checkpoint has state {entry.get('state', [])}, "
                                  f"network has {sorted(state)}")
        for name in sorted(state):
            a = _array(z, f"layer{k}/state/{name}")
            if a.shape != state[name].shape or a.dtype != state[name].dtype:
                raise CheckpointError(f"layer {k} state {name}: {a.shape} {a.dtype} in the checkpoint, the network "
                                      f"has {state[name].shape} {state[name].dtype}")
            states[(k, name)] = a
        if getattr(layer, "lowrank", False):
            U, S, V = (_array(z, f"layer{k}/factor/{n}") for n in ("U", "S", "V"))
            m, n = layer.shape
            r = S.shape[0] if S.ndim == 2 else -1
            if S.shape != (r, r) or U.shape != (m, r) or V.shape != (n, r) or r < 1:
                raise CheckpointError(f"layer {k} factors: shapes U {U.shape}, S {S.shape}, V {V.shape} do not "
                                      f"form a rank-r factorisation of a {m}x{n} weight")
            if not U.dtype == S.dtype == V.dtype == layer.dtype:
                raise CheckpointError(f"layer {k} factors: dtypes {U.dtype}/{S.dtype}/{V.dtype}, the layer {layer.dtype}")
            factors[k] = (U, S, V)
    state = {}
    for j, entry in enumerate(manifest["optimizer_state"]):
        st = {name: _array(z, f"opt{j}/{name}", finite=False) for name in entry["arrays"]}
        st["t"] = entry["t"]
        st["frame"] = tuple(_array(z, f"opt{j}/frame/{i}", finite=False) for i in range(entry["frame"]))
        state[_decode_key(entry["key"])] = st
    sd = dict(manifest["optimizer"], state=state)
    int(manifest["trainer"]["steps"])
    return params, factors, states, sd


def trainer_config(trainer) -> dict:
    """Every trainer setting that defines the step (DLRT: method, τ, r_min, r_max, ortho, compat flag)."""
    if hasattr(trainer, "config"):
        return trainer.config()
    names = {"method": "method", "tau": "tau", "r_min": "r_min", "r_max": "r_max", "ortho": "ortho",
             "compat_2022_truncation": "compat"}
    return {k: getattr(trainer, a) for k, a in names.items() if hasattr(trainer, a)}


def _check_config(manifest, trainer) -> None:
    """The checkpoint's optimiser and trainer settings must equal this run's, field by field.

    Compared: the optimiser's name, lr, state policy and its own settings (Adam's
    β₁, β₂, ε; momentum's μ) from :meth:`Optimizer.hyper`, and the trainer's
    :func:`trainer_config`. A mismatch is a one-line :class:`CheckpointError`
    naming the field. Checkpoints written before these were stored have no
    ``hyper``/``config``: their name, lr and state policy are compared, and
    their ``"transport"`` is the rule of that time, ``"transport-shared-t"``.
    """
    saved_opt = dict(manifest["optimizer"].get("hyper") or {})
    if not saved_opt:  # before issue 11
        saved_opt = {k: manifest["optimizer"][k] for k in ("name", "lr", "state_policy")}
        if saved_opt["state_policy"] == "transport":
            saved_opt["state_policy"] = "transport-shared-t"
    here_opt = trainer.opt.hyper()
    checks = [("method", manifest["trainer"].get("method"), getattr(trainer, "method", None))]
    checks += [("optimizer " + k, saved_opt.get(k), here_opt.get(k)) for k in dict(saved_opt, **here_opt)]
    saved_tr = manifest["trainer"].get("config")
    if saved_tr is not None:
        here_tr = trainer_config(trainer)
        checks += [(k, saved_tr.get(k), here_tr.get(k)) for k in dict(saved_tr, **here_tr)]
    for field, saved, here in checks:
        if saved != here:
            raise CheckpointError(f"{field} is {saved!r} in the checkpoint but {here!r} in this run")


def _array(z, key, finite=True):
    """One array of the archive; a clear error when it is missing or (weights) not finite."""
    if key not in z.files:
        raise CheckpointError(f"array {key!r} is missing")
    a = z[key]
    if finite and a.dtype.kind in "fc" and not np.isfinite(a).all():
        raise CheckpointError(f"array {key!r} holds NaN or infinity")
    return a
