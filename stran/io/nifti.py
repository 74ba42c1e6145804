"""4-D NIfTI: our datastore format (NIfTI + ``.cine.json`` sidecar) and plain ACDC / M&Ms-style files.

Voxel layout (x, y, z, t) = (column, row, slice, phase); the NIfTI affine is
the study's LPS affine through ``geometry.lps_to_ras``; ``pixdim[4]`` is the
median phase interval in ms with ``xyzt_units`` = mm + msec.

The datastore sidecar carries what NIfTI cannot: UIDs, per-slice trigger
times and RR, acquisition, provenance. It is written after the image, both
atomically, so a sidecar on disk means a complete study.

Maps on a study's grid (the detection's scar or attention map, values in
[0, 1]) are written by ``write_map``: the study's geometry, uint8 voxels with
``scl_slope`` 1/255 (docs/io.md, "Maps").
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from stran.atomic import atomic_write_with
from stran.io.errors import (
    CineLoadError,
    InconsistentGeometryError,
    SinglePhaseError,
    SingleSliceError,
    StudyNotFoundError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from stran.io.geometry import lps_to_ras, ras_to_lps
from stran.io.limits import check_size
from stran.io.study import Acquisition, CineStudy

SIDECAR_FORMAT = "stran-cine"
SIDECAR_VERSION = 1
SIDECAR_SUFFIX = ".cine.json"
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# a map value is its stored uint8 count x MAP_SCALE (NIfTI scl_slope, float32): 1/255 rounded down, so that
# count 255 reads as 1 - 6e-8 and never above 1 in float64 readers
MAP_SCALE = float(np.nextafter(np.float32(1.0 / 255.0), np.float32(0.0)))


def nifti_stem(path: str | Path) -> str:
    name = Path(path).name
    for ext in NIFTI_SUFFIXES:
        if name.endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def study_id_of(path: str | Path) -> str:
    """A study's id from its path: a NIfTI file's name without ``.nii``/``.nii.gz``, else the file's or folder's
    name (a DICOM study folder)."""
    name = Path(path).name
    return nifti_stem(name) if name.endswith(NIFTI_SUFFIXES) else name


def sidecar_path(nifti_path: str | Path) -> Path:
    """``<stem>.cine.json`` beside ``<stem>.nii.gz``."""
    p = Path(nifti_path)
    return p.with_name(nifti_stem(p) + SIDECAR_SUFFIX)


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def phase_interval_ms(study: CineStudy) -> float:
    if study.n_phases < 2:
        return float(study.rr_interval)
    return float(np.median(np.diff(study.trigger_times, axis=1)))


def _storage_array(pixels: np.ndarray) -> np.ndarray:
    """(S, T, H, W) float32 -> (W, H, S, T), as int16/uint16 when that is exact."""
    data = pixels.transpose(3, 2, 0, 1)
    lo, hi = float(pixels.min()), float(pixels.max())
    if np.array_equal(pixels, np.rint(pixels)):
        if lo >= -32768 and hi <= 32767:
            return data.astype(np.int16)
        if lo >= 0 and hi <= 65535:
            return data.astype(np.uint16)
    return data.astype(np.float32)


def map_storage_array(values: np.ndarray) -> np.ndarray:
    """(S, T, H, W) map in [0, 1] -> (W, H, S, T) uint8 counts of ``MAP_SCALE`` (nearest), one slice at a time."""
    n_s, n_t, n_h, n_w = values.shape
    counts = np.empty((n_t, n_s, n_h, n_w), dtype=np.uint8)  # C order of (t, z, y, x): NIfTI's (x, y, z, t)
    scratch = np.empty((n_t, n_h, n_w), dtype=np.float32)
    for s in range(n_s):
        np.multiply(values[s], np.float32(255.0), out=scratch)
        np.clip(scratch, 0.0, 255.0, out=scratch)
        counts[:, s] = np.rint(scratch, out=scratch)
    return counts.transpose(3, 2, 1, 0)


def _nifti_bytes(
    study: CineStudy, gz: bool, data: np.ndarray | None = None, *, slope: float | None = None, what: str = "cine"
) -> bytes:
    """The study's geometry and timing with its pixels, or with ``data`` (W, H, S, T) stored as ``data * slope``."""
    import nibabel as nib

    affine = lps_to_ras(study.affine)
    img = nib.Nifti1Image(_storage_array(study.pixels) if data is None else data, affine)
    hdr = img.header
    hdr.set_xyzt_units("mm", "msec")
    zooms = list(hdr.get_zooms())
    zooms[3] = phase_interval_ms(study)
    hdr.set_zooms(zooms)
    if slope is not None:
        hdr.set_slope_inter(slope, 0.0)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    hdr["descrip"] = f"ST-RAN {what} (x,y,z,t)=(col,row,slice,phase)".encode()
    data = img.to_bytes()
    return gzip.compress(data, compresslevel=1, mtime=0) if gz else data


def _checked_path(path: str | Path) -> Path:
    p = Path(path)
    if not (p.name.endswith(".nii") or p.name.endswith(".nii.gz")):
        raise ValueError(f"NIfTI path must end in .nii or .nii.gz: {p}")
    return p


def write_nifti(study: CineStudy, path: str | Path) -> Path:
    """Plain 4-D NIfTI (no sidecar); ``.nii`` or ``.nii.gz`` by name. Atomic."""
    p = _checked_path(path)
    _atomic_write(p, _nifti_bytes(study, p.name.endswith(".gz")))
    return p


def write_map(study: CineStudy, values: np.ndarray, path: str | Path) -> Path:
    """A map in [0, 1] on ``study``'s grid (``values`` (S, T, H, W)) as a 4-D NIfTI with the study's geometry and
    phase interval: uint8 with ``scl_slope`` = ``MAP_SCALE`` (1/255), which nibabel, ITK (Slicer) and the Slicer
    module's reader apply, so readers see values k/255, within 1/510 of the map (docs/io.md, "Maps"). Atomic."""
    if tuple(values.shape) != tuple(study.pixels.shape):
        raise ValueError(f"map shape {tuple(values.shape)} differs from the study's {tuple(study.pixels.shape)}")
    p = _checked_path(path)
    _atomic_write(p, _nifti_bytes(study, p.name.endswith(".gz"), map_storage_array(values), slope=MAP_SCALE, what="map"))
    return p


def _sidecar(study: CineStudy, image_name: str) -> dict[str, Any]:
    sop = study.sop_uids.tolist() if study.sop_uids is not None else None
    return {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "image": image_name,
        "shape": list(study.pixels.shape),
        "study_uid": study.study_uid,
        "patient_id": study.patient_id,
        "series_uids": list(study.series_uids),
        "sop_uids": sop,
        "trigger_times": study.trigger_times.tolist(),
        "rr_interval": float(study.rr_interval),
        "rr_intervals": [float(v) for v in study.rr_intervals],
        "slice_thickness": study.slice_thickness,
        "affine_lps": study.affine.tolist(),
        "slice_positions": [float(v) for v in study.slice_positions],
        "acquisition": {
            "vendor": study.acquisition.vendor,
            "field_strength": study.acquisition.field_strength,
            "sequence": study.acquisition.sequence,
            "model": study.acquisition.model,
        },
        "source": study.source,
        "notes": list(study.notes),
        "left_out": [{"path": f.path, "reason": f.reason} for f in study.left_out],
    }


def write_datastore_study(study: CineStudy, images_dir: str | Path, image_id: str) -> Path:
    """``<images_dir>/<image_id>.nii.gz`` + ``<image_id>.cine.json``; returns the NIfTI path."""
    if not image_id or any(c in image_id for c in "/\\") or image_id.startswith("."):
        raise ValueError(f"image_id must be a plain file stem, got {image_id!r}")
    folder = Path(images_dir)
    nii = folder / f"{image_id}.nii.gz"
    _atomic_write(nii, _nifti_bytes(study, gz=True))
    side = json.dumps(_sidecar(study, nii.name), indent=1).encode("utf-8")
    _atomic_write(sidecar_path(nii), side)
    return nii


def _load_image(path: Path, max_bytes: int | None):
    """(nibabel image, data (x, y, z, t) ndarray) after checking size from the header."""
    import nibabel as nib

    if not path.exists():
        raise StudyNotFoundError(f"No such file: {path}", [str(path)])
    try:
        img = nib.load(str(path))
    except Exception as exc:
        cls = TruncatedFileError if isinstance(exc, (EOFError, zlib.error)) else UnsupportedFormatError
        raise cls(f"Cannot read the NIfTI header of {path} ({type(exc).__name__}: {exc}).", [str(path)]) from exc
    shape = img.shape
    if len(shape) == 5 and shape[3] == 1:
        shape = shape[:3] + shape[4:]
    if len(shape) == 3 or (len(shape) == 4 and shape[3] == 1):
        raise SinglePhaseError(f"{path} is a 3-D volume {tuple(img.shape)}: no time axis, so not a cine.", [str(path)])
    if len(shape) != 4:
        raise UnsupportedFormatError(
            f"{path} has shape {tuple(img.shape)}; expected 4-D (x, y, z, t) = (column, row, slice, phase).",
            [str(path)],
        )
    if shape[2] < 2:
        raise SingleSliceError(
            f"{path} has one slice (shape {tuple(img.shape)}): a short-axis stack needs two or more.", [str(path)]
        )
    check_size((shape[2], shape[3], shape[1], shape[0]), str(path), max_bytes)
    try:
        data = np.asanyarray(img.dataobj).reshape(shape)
    except Exception as exc:
        raise TruncatedFileError(
            f"Cannot read the voxel data of {path} ({type(exc).__name__}: {exc}); the file is truncated or corrupt.",
            [str(path)],
        ) from exc
    return img, data


def _pixels(data: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(data.transpose(2, 3, 1, 0), dtype=np.float32)


def read_nifti(path: str | Path, *, max_bytes: int | None = None) -> CineStudy:
    """A 4-D NIfTI without sidecar (ACDC / M&Ms layout, or ``write_nifti`` output).

    Slices are reordered when needed so they run along row x column (as the
    DICOM loader orders them). Trigger times are nominal: phase k at k * dt,
    dt from ``pixdim[4]`` and its unit.
    """
    p = Path(path)
    img, data = _load_image(p, max_bytes)
    notes: list[str] = []
    affine = ras_to_lps(img.affine)
    pixels = _pixels(data)
    n_s, n_t = pixels.shape[:2]
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    if float(np.dot(normal, affine[:3, 2])) < 0:
        pixels = np.ascontiguousarray(pixels[::-1])
        affine = affine.copy()
        affine[:3, 3] = affine[:3, 3] + (n_s - 1) * affine[:3, 2]
        affine[:3, 2] = -affine[:3, 2]
        notes.append("Slice order reversed so that slices run along the slice normal (row x column).")
    _, time_unit = img.header.get_xyzt_units()
    dt = float(img.header.get_zooms()[3]) if len(img.header.get_zooms()) > 3 else 0.0
    scale = {"msec": 1.0, "sec": 1000.0, "usec": 0.001}.get(time_unit)
    if scale is None:  # unknown unit: guess from the magnitude
        scale = 1000.0 if 0.005 <= dt <= 0.2 else (1.0 if 5.0 <= dt <= 200.0 else None)
    if scale is None or dt <= 0:
        dt_ms = 1000.0 / n_t
        notes.append(
            f"No usable phase interval in the NIfTI header (pixdim[4] = {dt:g} {time_unit}); assumed RR 1000 ms."
        )
    else:
        dt_ms = dt * scale
        notes.append(f"Trigger times are nominal (k x {dt_ms:.2f} ms from pixdim[4]); RR taken as phases x interval.")
    trigger = np.tile(np.arange(n_t, dtype=np.float64) * dt_ms, (n_s, 1))
    rr = dt_ms * n_t
    return CineStudy(
        pixels=pixels,
        affine=affine,
        trigger_times=trigger,
        rr_interval=rr,
        patient_id=nifti_stem(p),
        source=str(p),
        notes=notes,
    )


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnsupportedFormatError(f"Cannot read the sidecar {path} ({exc}).", [str(path)]) from exc
    if meta.get("format") != SIDECAR_FORMAT:
        raise UnsupportedFormatError(
            f"{path} is not a {SIDECAR_FORMAT} sidecar (format {meta.get('format')!r}).", [str(path)]
        )
    if int(meta.get("version", 0)) > SIDECAR_VERSION:
        raise UnsupportedFormatError(
            f"{path} is sidecar version {meta.get('version')}, newer than this reader ({SIDECAR_VERSION}): update stran.",
            [str(path)],
        )
    return meta


def read_datastore_study(path: str | Path, *, max_bytes: int | None = None) -> CineStudy:
    """Our datastore format: the ``.nii.gz`` (or its ``.cine.json``) path."""
    p = Path(path)
    if p.name.endswith(SIDECAR_SUFFIX):
        side = p
        meta = _read_sidecar(side)
        p = p.with_name(meta.get("image") or p.name[: -len(SIDECAR_SUFFIX)] + ".nii.gz")
    else:
        side = sidecar_path(p)
        if not side.exists():
            raise UnsupportedFormatError(f"No sidecar {side.name} beside {p}: not a datastore study.", [str(p)])
        meta = _read_sidecar(side)
    img, data = _load_image(p, max_bytes)
    pixels = _pixels(data)
    if list(pixels.shape) != list(meta.get("shape", pixels.shape)):
        raise InconsistentGeometryError(
            f"{p} holds (S, T, H, W) = {pixels.shape} but its sidecar says {tuple(meta['shape'])}: the image was "
            "replaced or the sidecar belongs to another study. Write the study again.",
            [str(p), str(side)],
        )
    affine = ras_to_lps(img.affine)
    if meta.get("affine_lps") is not None:
        exact = np.array(meta["affine_lps"], dtype=np.float64)
        if not np.allclose(exact, affine, atol=1e-3, rtol=1e-5):
            raise InconsistentGeometryError(
                f"The geometry of {p} does not match its sidecar (affine differs): one of them was edited. Write the study again.",
                [str(p), str(side)],
            )
        affine = exact  # full float64 precision (the NIfTI header keeps float32)
    try:
        sop = meta.get("sop_uids")
        acq = meta.get("acquisition") or {}
        return CineStudy(
            pixels=pixels,
            affine=affine,
            trigger_times=np.array(meta["trigger_times"], dtype=np.float64),
            rr_interval=float(meta["rr_interval"]),
            rr_intervals=np.array(meta["rr_intervals"], dtype=np.float64) if meta.get("rr_intervals") else None,
            study_uid=meta.get("study_uid", ""),
            series_uids=list(meta.get("series_uids") or []),
            patient_id=meta.get("patient_id", ""),
            sop_uids=None if sop is None else np.array(sop, dtype=object),
            acquisition=Acquisition(
                vendor=acq.get("vendor", ""),
                field_strength=acq.get("field_strength"),
                sequence=acq.get("sequence", ""),
                model=acq.get("model", ""),
            ),
            slice_thickness=meta.get("slice_thickness"),
            source=meta.get("source", "") or str(p),
            notes=list(meta.get("notes") or []),
        )
    except CineLoadError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise UnsupportedFormatError(
            f"The sidecar {side} is incomplete or malformed ({type(exc).__name__}: {exc}).", [str(side)]
        ) from exc
