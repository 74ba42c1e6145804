"""Checkpoints: one torch file per trained network, rebuilt through the registry and verified by hash.

File content (a dict; ``torch.load(path, weights_only=True)`` reads it)::

    format          "stran-checkpoint"
    format_version  1
    model_name      registry name ("stran", "cnn3d", ...)
    config          the full config the registry resolved (JSON types only)
    model           the state_dict (key "model", as MONAI Label's BasicInferTask expects)
    sha256          hex sha256 of (model_name, config, weights), canonical (see :func:`model_sha256`)
    stran_version   stran.__version__ of the writer
    created_utc     ISO 8601 time of writing
    extra           free metadata (trained_on, metrics, threshold, ...): JSON types only

The file is written atomically (temporary file in the same folder, fsync, ``os.replace``): a reader never sees half a
checkpoint, and a crash leaves the previous file in place.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stran.atomic import atomic_path

FORMAT = "stran-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """Base class: a checkpoint could not be written or used."""


class NotAStranCheckpointError(CheckpointError, ValueError):
    """The file is not a ST-RAN Scar checkpoint (a bare state_dict, another tool's file, not a torch file)."""


class CheckpointIntegrityError(CheckpointError):
    """The weights or config no longer match the recorded hash: the file was modified or corrupted."""


class CheckpointCompatibilityError(CheckpointError):
    """A genuine checkpoint that this version of the code cannot rebuild (newer format, changed architecture)."""


# ------------------------------------------------------------------------------------------------------- hashing


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _state_dict_of(model_or_state: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state


def model_sha256(model: nn.Module | dict[str, torch.Tensor], config: dict[str, Any], name: str | None = None) -> str:
    """Canonical sha256 of a network's weights and config.

    Hashes, in order: a header (canonical JSON of ``{"model_name", "config"}``), then for every state_dict key in
    sorted order the key, dtype, shape and the raw little-endian bytes of the contiguous CPU tensor. The same
    weights and config always give the same hash, whatever the device, memory layout or dict order.
    ``name`` defaults to ``model.model_name`` (set by :func:`~stran.models.build_model`).
    """
    if name is None:
        name = getattr(model, "model_name", None)
    h = hashlib.sha256()
    h.update(_canonical_json({"model_name": name, "config": config}))
    state = _state_dict_of(model)
    for key in sorted(state):
        t = state[key]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict entry {key!r} is a {type(t).__name__}, not a tensor")
        t = t.detach().to("cpu").contiguous()
        h.update(_canonical_json([key, str(t.dtype), list(t.shape)]))
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------------- saving


def _plain(obj: Any, where: str) -> Any:
    """JSON-typed copy of ``obj`` (numpy and torch scalars become Python numbers); refuses anything else."""
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {k!r}")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(obj, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch scalars and small arrays
        return _plain(obj.tolist(), where)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{where}: {type(obj).__name__} cannot be stored in a checkpoint (use JSON types)")


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    name: str,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model`` to ``path`` atomically; returns the metadata written (everything but the weights).

    ``name`` and ``config`` are what :func:`~stran.models.build_model` was called with (``model.config`` holds the
    full resolved config); they are validated against the registry so that the file can always be rebuilt.
    """
    from .. import __version__
    from .registry import resolve_config

    config = resolve_config(name, **_plain(dict(config), "config"))
    extra = _plain(dict(extra or {}), "extra")
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_name": name,
        "config": config,
        "sha256": model_sha256(state, config, name),
        "stran_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "extra": extra,
    }
    with atomic_path(path) as tmp:
        torch.save({**meta, "model": state}, tmp)
    return meta


# ------------------------------------------------------------------------------------------------------ loading


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint file without building the model; returns the whole dict (weights under "model")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        reason = (
            "it is not a torch file" if not zipfile.is_zipfile(path)
            else f"it cannot be read as a torch file of plain types ({type(exc).__name__}: "
                 f"{str(exc).splitlines()[0] if str(exc) else ''})"
        )
        raise NotAStranCheckpointError(
            f"{path} is not a ST-RAN Scar checkpoint: {reason}. "
            f"Use a file written by stran.models.save_checkpoint (or `stran train`)."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = (
            "a bare state_dict"
            if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values())
            else f"a {type(payload).__name__} without format={FORMAT!r}"
        )
        raise NotAStranCheckpointError(
            f"{path} is not a ST-RAN Scar checkpoint (it holds {what}). Save networks with "
            f"stran.models.save_checkpoint(path, model, name=..., config=...) so that they can be rebuilt and verified."
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointCompatibilityError(
            f"{path} has checkpoint format_version {version!r}; this version of stran reads up to {FORMAT_VERSION}. "
            f"Upgrade stran (the file was written by stran {payload.get('stran_version')!r})."
        )
    missing = [k for k in ("model_name", "config", "model", "sha256") if k not in payload]
    if missing:
        raise CheckpointIntegrityError(
            f"checkpoint {path} lacks {', '.join(missing)}: the file is damaged. Do not use it; restore it from a "
            f"trusted copy or re-export it from the training run."
        )
    state = payload["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointIntegrityError(
            f"checkpoint {path}: 'model' is not a state_dict of tensors; the file is damaged."
        )
    try:
        actual = model_sha256(state, payload["config"], payload["model_name"])
    except (TypeError, ValueError) as exc:
        raise CheckpointIntegrityError(
            f"checkpoint {path}: its config cannot be hashed ({exc}); the file is damaged."
        ) from exc
    if actual != payload["sha256"]:
        raise CheckpointIntegrityError(
            f"checkpoint {path} failed its integrity check: the weights and config hash to {actual[:16]}..., but the "
            f"file records {str(payload['sha256'])[:16]}.... The file was modified or corrupted after it was saved. "
            f"Do not use it: restore it from a trusted copy or re-export it from the training run."
        )
    return payload


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network of a checkpoint through the registry, verify its hash and load its weights.

    Returns ``(model, meta)``: the model in eval mode on ``map_location``; ``meta`` is everything but the weights,
    plus ``path``. Raises :class:`NotAStranCheckpointError`, :class:`CheckpointIntegrityError` or
    :class:`CheckpointCompatibilityError` with a message naming the file and what to do.
    """
    from .registry import build_model, stored_config

    payload = read_checkpoint(path, map_location)
    name, config = payload["model_name"], payload["config"]
    try:
        model = build_model(name, **stored_config(name, config))
    except (ValueError, TypeError) as exc:
        raise CheckpointCompatibilityError(
            f"checkpoint {path} (model {name!r}, written by stran {payload.get('stran_version')!r}) cannot be rebuilt "
            f"by this version of stran: {exc}"
        ) from exc
    try:
        model.load_state_dict(payload["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointCompatibilityError(
            f"checkpoint {path} (model {name!r}, written by stran {payload.get('stran_version')!r}) does not fit the "
            f"architecture of this version of stran: {str(exc).splitlines()[0]}"
        ) from exc
    model.to(map_location).eval()
    meta = {k: v for k, v in payload.items() if k != "model"}
    meta["path"] = str(path)
    return model, meta
