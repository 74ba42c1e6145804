"""The guards: refuse a study whose pixels would not fit the configured limit before reading them, and an uploaded
archive larger than its limits before extracting it."""

from __future__ import annotations

import os

from stran.io.errors import StudyTooLargeError

ENV_MAX_BYTES = "STRAN_MAX_STUDY_BYTES"
DEFAULT_MAX_BYTES = 2 * 1024**3
ENV_MAX_UPLOAD_BYTES = "STRAN_MAX_UPLOAD_BYTES"  # uncompressed size of an uploaded study archive
DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024**3
ENV_MAX_UPLOAD_FILES = "STRAN_MAX_UPLOAD_FILES"  # members of an uploaded study archive
DEFAULT_MAX_UPLOAD_FILES = 20000


def _limit(given: int | None, env_name: str, default: int, what: str) -> int:
    """The argument, else the environment variable ``env_name``, else ``default``."""
    if given is not None:
        return int(given)
    env = os.environ.get(env_name, "").strip()
    if env:
        try:
            return int(float(env))
        except ValueError as exc:
            raise ValueError(f"{env_name}={env!r} is not a number of {what}") from exc
    return default


def max_study_bytes(max_bytes: int | None = None) -> int:
    """The limit in force: the argument, else $STRAN_MAX_STUDY_BYTES, else 2 GiB."""
    return _limit(max_bytes, ENV_MAX_BYTES, DEFAULT_MAX_BYTES, "bytes")


def max_upload_bytes(max_bytes: int | None = None) -> int:
    """Largest total uncompressed size of an uploaded study archive: the argument, else $STRAN_MAX_UPLOAD_BYTES,
    else 2 GiB."""
    return _limit(max_bytes, ENV_MAX_UPLOAD_BYTES, DEFAULT_MAX_UPLOAD_BYTES, "bytes")


def max_upload_files(max_files: int | None = None) -> int:
    """Most members of an uploaded study archive: the argument, else $STRAN_MAX_UPLOAD_FILES, else 20000."""
    return _limit(max_files, ENV_MAX_UPLOAD_FILES, DEFAULT_MAX_UPLOAD_FILES, "files")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024.0
    return f"{n:.1f} TiB"


def check_size(shape: tuple[int, ...], source: str, max_bytes: int | None = None) -> int:
    """Bytes the float32 pixels of ``shape`` (S, T, H, W) need; raises ``StudyTooLargeError`` above the limit."""
    needed = 4
    for n in shape:
        needed *= int(n)
    limit = max_study_bytes(max_bytes)
    if needed > limit:
        dims = " x ".join(str(int(n)) for n in shape)
        raise StudyTooLargeError(
            f"{source}: the study needs {human_bytes(needed)} ({needed} bytes: {dims} (slices x phases x rows x columns) "
            f"float32) but the limit is {human_bytes(limit)} ({limit} bytes). Raise it with load_study(..., max_bytes=N), "
            f"the --max-bytes option, or the environment variable {ENV_MAX_BYTES}=N."
        )
    return needed
