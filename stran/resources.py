"""Where the packaged resources are: the project tree, the MONAI Label app, the default model, the sample studies.

Every path is found from this package's own location (the project is installed editable), never from the current
folder, so that every command works from any folder. Standard library only: building the command line's help
must not import torch.

The default model is ``$STRAN_MODEL`` when set, else ``apps/stran/model/pretrained_scar.pt`` of this project.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import stran
from stran.errors import UserError

REPO = Path(stran.__file__).resolve().parents[1]
APP_DIR = REPO / "apps" / "stran"
PRETRAINED_FILE = "pretrained_scar.pt"  # the shipped ST-RAN demo model (training/train_demo_model.py)
SHIPPED_MODEL = APP_DIR / "model" / PRETRAINED_FILE
SAMPLES = REPO / "sample_data" / "studies"
MODEL_ENV = "STRAN_MODEL"
#: In a command's help text, replaced by :func:`describe_model` when the help is printed (``stran.cli``).
DEFAULT_MODEL = "{default_model}"


class ModelNotFoundError(UserError, FileNotFoundError):
    """The checkpoint to use (given, from ``$STRAN_MODEL`` or the shipped one) is not a file."""


def default_model() -> tuple[Path, str]:
    """The default checkpoint and where that choice comes from (``"$STRAN_MODEL"`` or ``"shipped"``)."""
    env = os.environ.get(MODEL_ENV, "").strip()
    if env:
        return Path(env).expanduser().absolute(), f"${MODEL_ENV}"
    return SHIPPED_MODEL, "shipped"


def resolve_model(given: str | os.PathLike[str] | None = None, option: str = "--model") -> Path:
    """The checkpoint to load: ``given`` (the command's ``option``) if any, else :func:`default_model`; it must be
    a file."""
    if given:
        path, origin = Path(given).expanduser().absolute(), option
    else:
        path, origin = default_model()
    if path.is_file():
        return path
    if origin == "shipped":
        hint = (f"pass --model CHECKPOINT or set {MODEL_ENV}; the shipped model comes with the project's source "
                f"tree (training/train_demo_model.py writes it)")
    elif origin.startswith("$"):
        hint = f"point {MODEL_ENV} at an existing checkpoint, or unset it to use the shipped model"
    else:
        hint = "give an existing checkpoint written by `stran train`"
        hint += ", or leave --model out to use the default model" if option == "--model" else ""
    what = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
    raise ModelNotFoundError(f"model checkpoint {path} (from {origin}) {what}", hint)


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of the file's bytes (cached while its size and modification time stay the same)."""
    st = os.stat(path)
    return _file_sha256(os.fspath(path), st.st_size, st.st_mtime_ns)


class _MetadataUnpickler(pickle.Unpickler):
    """Reads a torch checkpoint's plain-typed metadata without torch: tensors and storages come back as None."""

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "torch":
            return lambda *args, **kwargs: None
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint")

    def persistent_load(self, pid: Any) -> None:
        return None


def checkpoint_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Model name, weights sha256, writer version and what it was trained on, read from the file without torch;
    an empty dict when the file is not a readable stran checkpoint (loading it says why)."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            with archive.open(member) as fh:
                payload = _MetadataUnpickler(fh).load()
    except (OSError, StopIteration, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError):
        return {}
    if not isinstance(payload, dict) or payload.get("format") != "stran-checkpoint":
        return {}
    extra = payload.get("extra") if isinstance(payload.get("extra"), dict) else {}
    return {
        "name": payload.get("model_name"),
        "sha256": payload.get("sha256"),
        "stran_version": payload.get("stran_version"),
        "created_utc": payload.get("created_utc"),
        "trained_on": extra.get("trained_on", ""),
    }


def describe_model(path: Path | None = None) -> str:
    """One line about a checkpoint (default: the default model): path, file sha256 prefix, model name and the
    weights sha256 prefix that detection results report."""
    origin = ""
    if path is None:
        path, where = default_model()
        origin = f" (from {where})" if where != "shipped" else ""
    if not path.is_file():
        return f"{path}{origin}: missing"
    meta = checkpoint_metadata(path)
    about = f"{path}{origin}, file sha256 {file_sha256(path)[:12]}"
    if meta:
        about += f", model {meta['name']} (weights sha256 {str(meta['sha256'])[:12]}, stran {meta['stran_version']})"
    return about
