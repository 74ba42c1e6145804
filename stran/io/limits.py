"""The memory guard: refuse a study whose pixels would not fit the configured limit, before reading them."""

from __future__ import annotations

import os

from stran.io.errors import StudyTooLargeError

ENV_MAX_BYTES = "STRAN_MAX_STUDY_BYTES"
DEFAULT_MAX_BYTES = 2 * 1024**3


def max_study_bytes(max_bytes: int | None = None) -> int:
    """The limit in force: the argument, else $STRAN_MAX_STUDY_BYTES, else 2 GiB."""
    if max_bytes is not None:
        return int(max_bytes)
    env = os.environ.get(ENV_MAX_BYTES, "").strip()
    if env:
        try:
            return int(float(env))
        except ValueError as exc:
            raise ValueError(f"{ENV_MAX_BYTES}={env!r} is not a number of bytes") from exc
    return DEFAULT_MAX_BYTES


def _human(n: float) -> str:
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
            f"{source}: the study needs {_human(needed)} ({needed} bytes: {dims} (slices x phases x rows x columns) "
            f"float32) but the limit is {_human(limit)} ({limit} bytes). Raise it with load_study(..., max_bytes=N), "
            f"the --max-bytes option, or the environment variable {ENV_MAX_BYTES}=N."
        )
    return needed
