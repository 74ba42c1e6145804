"""A small NIfTI-1 reader and writer (numpy + gzip + struct) for 4-D cine studies and attention maps.

Slicer's Python has no nibabel, and the module needs only what the MONAI Label
app sends and receives: single-file NIfTI-1 (``.nii`` / ``.nii.gz``), 3-D or 4-D,
the common integer and float voxel types, ``scl_slope``/``scl_inter`` scaling,
sform or qform geometry and the time step in ``pixdim[4]``.

Conventions (the ST-RAN datastore's): voxel axes (x, y, z, t) = (column, row,
slice, phase), the affine maps (x, y, z) to RAS millimetres, ``pixdim[4]`` is
the phase interval. In memory a :class:`Volume4D` keeps the voxels as
``array[t, k, j, i]`` (phase, slice, row, column): NIfTI's Fortran order read
backwards, which is also the order Slicer's ``arrayFromVolume`` uses for each
3-D phase (k, j, i). Slicer's IJKToRAS matrix is the NIfTI RAS affine itself.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

HEADER_SIZE = 348
MAGIC_SINGLE = b"n+1\x00"
MAGIC_PAIR = b"ni1\x00"
DEFAULT_MAX_BYTES = 2 * 1024**3  # voxel data cap (uncompressed) when reading

# NIfTI datatype code -> numpy dtype (byte order applied later)
DATATYPES = {
    2: np.uint8,
    4: np.int16,
    8: np.int32,
    16: np.float32,
    64: np.float64,
    256: np.int8,
    512: np.uint16,
    768: np.uint32,
    1024: np.int64,
    1280: np.uint64,
}
CODES = {np.dtype(v).str[1:]: k for k, v in DATATYPES.items()}  # "f4" -> 16

# xyzt_units: space bits 0-2, time bits 3-5
SPACE_UNITS = {1: 1000.0, 2: 1.0, 3: 0.001}  # metre, mm, micron -> mm
TIME_UNITS = {8: 1000.0, 16: 1.0, 24: 0.001}  # sec, msec, usec -> ms
UNIT_MM, UNIT_MSEC = 2, 16

PathOrBytes = str | Path | bytes | bytearray | memoryview


class NiftiError(ValueError):
    """The file is not a NIfTI-1 image this reader understands; the message says why."""


@dataclass
class Volume4D:
    """Voxels ``array[t, k, j, i]`` (phase, slice, row, column) on a grid with a RAS affine.

    ``affine`` maps the voxel index (i, j, k) = (column, row, slice) to RAS mm; it is
    Slicer's IJKToRAS matrix. ``phase_interval_ms`` is the time between phases
    (``pixdim[4]``); 0 when unknown.
    """

    array: np.ndarray
    affine: np.ndarray
    phase_interval_ms: float = 0.0
    description: str = ""
    notes: list = field(default_factory=list)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim == 3:
            arr = arr[np.newaxis]
        if arr.ndim != 4:
            raise NiftiError(f"a Volume4D needs a 3-D or 4-D array, got shape {arr.shape}")
        self.array = arr
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise NiftiError(f"the affine must be 4x4, got shape {aff.shape}")
        self.affine = aff

    @property
    def phases(self) -> int:
        return int(self.array.shape[0])

    @property
    def slices(self) -> int:
        return int(self.array.shape[1])

    @property
    def rows(self) -> int:
        return int(self.array.shape[2])

    @property
    def columns(self) -> int:
        return int(self.array.shape[3])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (column, row, slice) in mm: the column norms of the affine."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def origin(self) -> tuple[float, float, float]:
        """RAS position of voxel (0, 0, 0)."""
        return tuple(float(v) for v in self.affine[:3, 3])

    @property
    def directions(self) -> np.ndarray:
        """3x3 unit direction columns (Slicer's IJKToRASDirections)."""
        return self.affine[:3, :3] / np.asarray(self.spacing)

    def time_values_ms(self) -> list[float]:
        """Nominal time of each phase: k x interval (k when the interval is unknown)."""
        step = self.phase_interval_ms if self.phase_interval_ms > 0 else 1.0
        return [round(k * step, 3) for k in range(self.phases)]

    def slice_center_ras(self, k: int) -> tuple[float, float, float]:
        """RAS position of the centre of slice ``k``."""
        ijk = np.array([(self.columns - 1) / 2.0, (self.rows - 1) / 2.0, float(k), 1.0])
        return tuple(float(v) for v in (self.affine @ ijk)[:3])

    def slice_normal(self) -> np.ndarray:
        """Unit vector from one slice to the next (RAS)."""
        step = self.affine[:3, 2]
        norm = float(np.linalg.norm(step))
        return step / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


# ----------------------------------------------------------------------------- reading


def read_nifti(source: PathOrBytes | BinaryIO, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Volume4D:
    """Read a ``.nii`` or ``.nii.gz`` (path, bytes or binary file object); gzip is detected by content."""
    raw = _read_source(source)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = _gunzip(raw, max_bytes + HEADER_SIZE + 65536)
        except (OSError, EOFError) as exc:
            raise NiftiError(f"the gzip stream is damaged or truncated ({exc})") from exc
    return parse_nifti(raw, max_bytes=max_bytes)


def parse_nifti(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Volume4D:
    """Decode an uncompressed single-file NIfTI-1 image."""
    if len(raw) < HEADER_SIZE:
        raise NiftiError(f"too short for a NIfTI-1 header ({len(raw)} bytes, need {HEADER_SIZE})")
    endian = "<"
    if struct.unpack("<i", raw[0:4])[0] != HEADER_SIZE:
        if struct.unpack(">i", raw[0:4])[0] != HEADER_SIZE:
            if raw[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c"):
                raise NiftiError("this is a NIfTI-2 file; only NIfTI-1 is supported")
            raise NiftiError("not a NIfTI-1 file (sizeof_hdr is not 348)")
        endian = ">"
    magic = raw[344:348]
    if magic == MAGIC_PAIR:
        raise NiftiError("this is a two-file NIfTI (.hdr/.img); save it as a single .nii or .nii.gz")
    if magic != MAGIC_SINGLE:
        raise NiftiError(f"not a NIfTI-1 file (magic {magic!r})")

    def unpack(fmt: str, offset: int) -> tuple:
        return struct.unpack_from(endian + fmt, raw, offset)

    dim = unpack("8h", 40)
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise NiftiError(f"bad dim[0] = {ndim}")
    shape = [int(d) for d in dim[1 : ndim + 1]]
    if any(d < 1 for d in shape):
        raise NiftiError(f"bad image size {shape}")
    while len(shape) > 4 and shape[-1] == 1:
        shape.pop()
    if len(shape) > 4:
        raise NiftiError(f"a {len(shape)}-D image {shape}: expected 3-D or 4-D (x, y, z, t)")
    while len(shape) < 4:
        shape.append(1)
    datatype = unpack("h", 70)[0]
    if datatype not in DATATYPES:
        raise NiftiError(f"unsupported voxel type (NIfTI datatype code {datatype})")
    dtype = np.dtype(DATATYPES[datatype]).newbyteorder(endian)
    pixdim = unpack("8f", 76)
    vox_offset = int(unpack("f", 108)[0])
    slope, inter = unpack("2f", 112)
    xyzt_units = raw[123]
    descrip = raw[148:228].split(b"\x00", 1)[0].decode("latin-1", "replace")
    qform_code, sform_code = unpack("2h", 252)

    count = shape[0] * shape[1] * shape[2] * shape[3]
    nbytes = count * dtype.itemsize
    if nbytes > max_bytes:
        raise NiftiError(f"the image {shape} needs {nbytes / 2**20:.0f} MiB, more than the {max_bytes / 2**20:.0f} MiB allowed")
    if vox_offset < HEADER_SIZE:
        vox_offset = 352
    if len(raw) < vox_offset + nbytes:
        raise NiftiError(
            f"the file is truncated: {len(raw) - vox_offset} bytes of voxel data, {nbytes} expected for {shape} {dtype.name}"
        )
    flat = np.frombuffer(raw, dtype=dtype, count=count, offset=vox_offset)
    array = flat.reshape(shape[::-1])  # Fortran (x, y, z, t) == C (t, z, y, x)
    array = array.astype(dtype.newbyteorder("="), copy=True)
    if slope not in (0.0, 1.0) or inter != 0.0:
        if math.isfinite(slope) and math.isfinite(inter) and slope != 0.0:
            array = array.astype(np.float32) * np.float32(slope) + np.float32(inter)
    space_scale = SPACE_UNITS.get(xyzt_units & 0x07, 1.0)
    affine = _affine(unpack, pixdim, qform_code, sform_code) if (qform_code or sform_code) else _fallback_affine(pixdim)
    affine[:3, :] *= space_scale
    notes = [] if (qform_code or sform_code) else ["no sform/qform: geometry from pixdim only"]
    time_scale = TIME_UNITS.get(xyzt_units & 0x38)
    dt = float(pixdim[4]) if shape[3] > 1 or pixdim[4] else 0.0
    if time_scale is None:  # unit not set: guess from the magnitude (seconds vs milliseconds)
        time_scale = 1000.0 if 0.005 <= dt <= 0.2 else 1.0
        if dt:
            notes.append(f"time unit not set in the header; pixdim[4] = {dt:g} read as {dt * time_scale:g} ms")
    return Volume4D(array=array, affine=affine, phase_interval_ms=max(dt * time_scale, 0.0), description=descrip, notes=notes)


def _affine(unpack, pixdim: tuple, qform_code: int, sform_code: int) -> np.ndarray:
    if sform_code > 0:
        rows = [unpack("4f", off) for off in (280, 296, 312)]
        aff = np.eye(4)
        aff[:3, :] = np.asarray(rows, dtype=np.float64)
        return aff
    b, c, d, qx, qy, qz = unpack("6f", 256)
    a2 = 1.0 - (b * b + c * c + d * d)
    if a2 < 1e-7:  # 180-degree rotation: renormalise (b, c, d)
        norm = math.sqrt(b * b + c * c + d * d)
        b, c, d, a = b / norm, c / norm, d / norm, 0.0
    else:
        a = math.sqrt(a2)
    rot = np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
        ]
    )
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    zooms = np.array([pixdim[1], pixdim[2], pixdim[3] * qfac], dtype=np.float64)
    aff = np.eye(4)
    aff[:3, :3] = rot * zooms
    aff[:3, 3] = (qx, qy, qz)
    return aff


def _fallback_affine(pixdim: tuple) -> np.ndarray:
    aff = np.eye(4)
    for axis in range(3):
        aff[axis, axis] = pixdim[axis + 1] if pixdim[axis + 1] > 0 else 1.0
    return aff


def _read_source(source: PathOrBytes | BinaryIO) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if hasattr(source, "read"):
        return source.read()
    path = Path(source)
    if not path.exists():
        raise NiftiError(f"no such file: {path}")
    return path.read_bytes()


def _gunzip(data: bytes, limit: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
        while True:
            chunk = handle.read(1 << 20)
            if not chunk:
                break
            out.write(chunk)
            if out.tell() > limit:
                raise NiftiError(f"the image is larger than the {limit / 2**20:.0f} MiB allowed once decompressed")
    return out.getvalue()


# ----------------------------------------------------------------------------- writing


def nifti_bytes(volume: Volume4D, *, compress: bool = True, dtype: np.dtype | str | None = None) -> bytes:
    """Encode ``volume`` as a single-file NIfTI-1 (gzip-compressed by default).

    The voxel type is kept (or ``dtype``); sform and qform both hold the affine
    (code 1, scanner); units mm + ms; ``pixdim[4]`` = the phase interval.
    """
    array = np.asarray(volume.array)
    if dtype is not None:
        array = array.astype(dtype)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    key = array.dtype.str[1:]
    if key not in CODES:
        array = array.astype(np.float32)
        key = "f4"
    array = np.ascontiguousarray(array, dtype=np.dtype(key).newbyteorder("<"))
    n_t, n_k, n_j, n_i = array.shape
    affine = np.asarray(volume.affine, dtype=np.float64)
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    quat, qfac = _quaternion(affine[:3, :3], zooms)

    header = bytearray(HEADER_SIZE)
    struct.pack_into("<i", header, 0, HEADER_SIZE)
    header[38] = ord("r")
    dims = [4 if n_t > 1 else 3, n_i, n_j, n_k, n_t, 1, 1, 1]
    struct.pack_into("<8h", header, 40, *dims)
    struct.pack_into("<2h", header, 70, CODES[key], array.dtype.itemsize * 8)
    pixdim = [qfac, *zooms.tolist(), float(volume.phase_interval_ms) if n_t > 1 else 0.0, 0.0, 0.0, 0.0]
    struct.pack_into("<8f", header, 76, *pixdim)
    struct.pack_into("<f", header, 108, 352.0)
    struct.pack_into("<2f", header, 112, 1.0, 0.0)
    header[123] = UNIT_MM | UNIT_MSEC
    if np.issubdtype(array.dtype, np.floating) and array.size:
        finite = array[np.isfinite(array)]
        if finite.size:
            struct.pack_into("<2f", header, 124, float(finite.max()), float(finite.min()))
    header[148:228] = volume.description.encode("latin-1", "replace")[:79].ljust(80, b"\x00")
    struct.pack_into("<2h", header, 252, 1, 1)
    struct.pack_into("<6f", header, 256, *quat, *affine[:3, 3].tolist())
    for row, off in zip(range(3), (280, 296, 312), strict=True):
        struct.pack_into("<4f", header, off, *affine[row, :].tolist())
    header[344:348] = MAGIC_SINGLE
    data = bytes(header) + b"\x00" * 4 + array.tobytes(order="C")
    return gzip.compress(data, compresslevel=1, mtime=0) if compress else data


def write_nifti(volume: Volume4D, path: str | Path, *, dtype: np.dtype | str | None = None) -> Path:
    """Write ``.nii`` or ``.nii.gz`` (by name), through a temporary file renamed into place."""
    p = Path(path)
    if not (p.name.endswith(".nii") or p.name.endswith(".nii.gz")):
        raise NiftiError(f"a NIfTI file name must end in .nii or .nii.gz: {p.name}")
    data = nifti_bytes(volume, compress=p.name.endswith(".gz"), dtype=dtype)
    tmp = p.with_name(p.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(p)
    return p


def _quaternion(linear: np.ndarray, zooms: np.ndarray) -> tuple[tuple[float, float, float], float]:
    """qform (b, c, d) and qfac for a 3x3 voxel->RAS matrix (the nearest rotation if it has shear)."""
    safe = np.where(zooms > 0, zooms, 1.0)
    rot = linear / safe
    qfac = 1.0
    if np.linalg.det(rot) < 0:
        qfac = -1.0
        rot = rot.copy()
        rot[:, 2] = -rot[:, 2]
    u, _, vt = np.linalg.svd(rot)  # polar decomposition: the closest proper rotation
    rot = u @ vt
    trace = rot[0, 0] + rot[1, 1] + rot[2, 2]
    if trace > 0:
        s = 0.5 / math.sqrt(trace + 1.0)
        a = 0.25 / s
        b = (rot[2, 1] - rot[1, 2]) * s
        c = (rot[0, 2] - rot[2, 0]) * s
        d = (rot[1, 0] - rot[0, 1]) * s
    elif rot[0, 0] > rot[1, 1] and rot[0, 0] > rot[2, 2]:
        s = 2.0 * math.sqrt(1.0 + rot[0, 0] - rot[1, 1] - rot[2, 2])
        a = (rot[2, 1] - rot[1, 2]) / s
        b = 0.25 * s
        c = (rot[0, 1] + rot[1, 0]) / s
        d = (rot[0, 2] + rot[2, 0]) / s
    elif rot[1, 1] > rot[2, 2]:
        s = 2.0 * math.sqrt(1.0 + rot[1, 1] - rot[0, 0] - rot[2, 2])
        a = (rot[0, 2] - rot[2, 0]) / s
        b = (rot[0, 1] + rot[1, 0]) / s
        c = 0.25 * s
        d = (rot[1, 2] + rot[2, 1]) / s
    else:
        s = 2.0 * math.sqrt(1.0 + rot[2, 2] - rot[0, 0] - rot[1, 1])
        a = (rot[1, 0] - rot[0, 1]) / s
        b = (rot[0, 2] + rot[2, 0]) / s
        c = (rot[1, 2] + rot[2, 1]) / s
        d = 0.25 * s
    if a < 0:  # NIfTI keeps a >= 0 (a is not stored)
        b, c, d = -b, -c, -d
    return (float(b), float(c), float(d)), qfac


def normalised_slice_order(volume: Volume4D) -> tuple[Volume4D, bool]:
    """The same study with slices running along row x column (the order the ST-RAN loaders use).

    A plain NIfTI whose slice axis points against the in-plane normal is
    reversed by the server's loader, so slice indices in its results would not
    match the file. Uploading the reversed copy keeps the indices identical.
    Returns (volume, reversed?).
    """
    linear = volume.affine[:3, :3]
    normal = np.cross(linear[:, 0], linear[:, 1])
    if float(np.dot(normal, linear[:, 2])) >= 0:
        return volume, False
    n_k = volume.slices
    affine = volume.affine.copy()
    affine[:3, 3] = affine[:3, 3] + (n_k - 1) * affine[:3, 2]
    affine[:3, 2] = -affine[:3, 2]
    array = np.ascontiguousarray(volume.array[:, ::-1])
    notes = [*volume.notes, "slice order reversed so that slices run along the slice normal"]
    return Volume4D(array, affine, volume.phase_interval_ms, volume.description, notes), True
