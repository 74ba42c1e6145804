"""Tolerant DICOM value access: a missing or malformed optional value reads as None (or "")."""

from __future__ import annotations

from typing import Any

import numpy as np
import pydicom


def get_value(ds: Any, keyword: str) -> Any:
    """``ds.<keyword>`` or None when absent, empty or unparsable (``ds`` may be None)."""
    if ds is None:
        return None
    try:
        value = ds.get(keyword, None)
    except Exception:  # malformed value
        return None
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return None
    return value


def get_float(ds: Any, keyword: str) -> float | None:
    value = get_value(ds, keyword)
    if value is None:
        return None
    try:
        if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def get_int(ds: Any, keyword: str) -> int | None:
    value = get_float(ds, keyword)
    return None if value is None else int(value)


def get_str(ds: Any, keyword: str) -> str:
    value = get_value(ds, keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def get_floats(ds: Any, keyword: str, n: int) -> np.ndarray | None:
    """Exactly ``n`` finite numbers, else None."""
    value = get_value(ds, keyword)
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def first_item(seq_owner: Any, keyword: str) -> Any:
    """The first item of sequence ``keyword`` of ``seq_owner``, or None."""
    seq = get_value(seq_owner, keyword)
    try:
        return seq[0] if seq is not None and len(seq) else None
    except Exception:
        return None


def parse_time(value: str) -> float | None:
    """DICOM TM (HHMMSS.FFFFFF, also HH:MM:SS) -> seconds after midnight."""
    v = (value or "").strip().replace(":", "")
    if len(v) < 2 or not v[:2].isdigit():
        return None
    try:
        h = int(v[0:2])
        m = int(v[2:4]) if len(v) >= 4 else 0
        s = float(v[4:]) if len(v) > 4 else 0.0
    except ValueError:
        return None
    return h * 3600.0 + m * 60.0 + s


def valid_iop(iop: np.ndarray) -> bool:
    """Two unit-length, orthogonal direction cosines (to DICOM's few-digit precision)."""
    row, col = iop[:3], iop[3:]
    return (
        abs(np.linalg.norm(row) - 1) < 0.01
        and abs(np.linalg.norm(col) - 1) < 0.01
        and abs(float(np.dot(row, col))) < 0.01
    )
