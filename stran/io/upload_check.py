"""Check an uploaded 4-D NIfTI (plain or gzip) before it is stored, with memory bounded by one chunk.

The header must describe a cine (4-D, two or more slices and phases, a numeric voxel type) within the study size
limit; the voxel data are then streamed once: a file that ends early is truncated, one that goes on past what its
header declares is refused as soon as it does (a decompression bomb stops there), and float voxels must be finite.
Nothing is kept in memory but the chunk being read.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import numpy as np

from stran.io.errors import (
    SinglePhaseError,
    SingleSliceError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from stran.io.limits import check_size

CHUNK = 1 << 20


def check_nifti_upload(path: str | Path, shown: str, max_bytes: int | None = None) -> tuple[int, ...]:
    """The (x, y, z, t) shape of the valid cine NIfTI at ``path``; raises a ``CineLoadError`` whose message names
    ``shown`` (what the user sent), never ``path``. ``StudyTooLargeError`` when it exceeds the study size limit."""
    import nibabel as nib

    p = Path(path)
    with p.open("rb") as raw:
        magic = raw.read(2)
    try:
        with (gzip.open(p, "rb") if magic == b"\x1f\x8b" else p.open("rb")) as stream:
            head = stream.read(352)
            try:
                header = nib.Nifti1Header.from_fileobj(io.BytesIO(head), check=True)
            except Exception as exc:
                raise UnsupportedFormatError(f"{shown} is not a NIfTI-1 image ({type(exc).__name__})") from None
            shape = _cine_shape(header, shown)
            dtype = header.get_data_dtype()
            check_size((shape[2], shape[3], shape[1], shape[0]), shown, max_bytes)
            offset = int(header.get_data_offset())
            stream.read(max(offset - len(head), 0))
            expected = int(np.prod(shape)) * dtype.itemsize
            _stream_voxels(stream, dtype, expected, shown)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise TruncatedFileError(f"{shown} is truncated or its compression is corrupt ({type(exc).__name__})") from None
    return shape


def _cine_shape(header, shown: str) -> tuple[int, ...]:
    shape = tuple(int(n) for n in header.get_data_shape())
    if len(shape) == 5 and shape[3] == 1:
        shape = shape[:3] + shape[4:]
    if len(shape) == 3 or (len(shape) == 4 and shape[3] == 1):
        raise SinglePhaseError(f"{shown} is a 3-D volume {shape}: no time axis, so not a cine")
    if len(shape) != 4 or min(shape) < 1:
        raise UnsupportedFormatError(f"{shown} has shape {shape}; a cine is 4-D (column, row, slice, phase)")
    if shape[2] < 2:
        raise SingleSliceError(f"{shown} has one slice: a short-axis stack needs two or more")
    if header.get_data_dtype().kind not in "iuf":
        raise UnsupportedFormatError(f"{shown} has voxel type {header.get_data_dtype()}; expected numbers")
    return shape


def _stream_voxels(stream, dtype: np.dtype, expected: int, shown: str) -> None:
    """Read exactly ``expected`` voxel bytes (finite when float), then make sure nothing follows."""
    seen, carry = 0, b""
    while seen < expected:
        chunk = stream.read(min(CHUNK, expected - seen))
        if not chunk:
            raise TruncatedFileError(f"{shown} ends after {seen} of its {expected} voxel bytes: it is truncated")
        seen += len(chunk)
        if dtype.kind == "f":
            data = carry + chunk
            whole = len(data) - len(data) % dtype.itemsize
            if not np.isfinite(np.frombuffer(data[:whole], dtype=dtype)).all():
                raise UnsupportedFormatError(f"{shown} holds NaN or infinite voxel values")
            carry = data[whole:]
    if stream.read(1):
        raise UnsupportedFormatError(f"{shown} holds more data than its header declares ({expected} voxel bytes)")
