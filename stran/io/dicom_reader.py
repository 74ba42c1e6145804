"""Read a DICOM folder or Enhanced MR file into a ``CineStudy``.

Headers are scanned once (``dicom_scan``), the stack is planned without
touching pixels (``dicom_group``), the memory guard is checked against the
planned size, and only then are the pixel bytes of the chosen images read,
each with one seek and one read.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from stran.io.dicom_group import StackPlan, plan_stack
from stran.io.dicom_scan import Frame, PixelRef, scan_dicom
from stran.io.errors import MissingPhaseError, TruncatedFileError, UnreadablePixelDataError
from stran.io.limits import check_size
from stran.io.study import Acquisition, CineStudy


def _dtype(ref: PixelRef) -> np.dtype:
    kind = "i" if ref.pixel_representation == 1 else "u"
    size = ref.bits_allocated // 8
    order = ">" if ref.big_endian else "<"
    return np.dtype(f"{order if size > 1 else '|'}{kind}{size}")


def _decode_with_pydicom(path: str, ts: str) -> np.ndarray:
    import pydicom

    try:
        arr = pydicom.dcmread(path).pixel_array
    except Exception as exc:
        name = pydicom.uid.UID(ts).name
        raise UnreadablePixelDataError(
            f"Pixel data cannot be decoded ({name}: {type(exc).__name__}: {exc}). Export the series uncompressed, "
            "or install a decoder for this transfer syntax (e.g. pylibjpeg); nothing was loaded.",
            [path],
        ) from exc
    return arr.reshape((-1,) + arr.shape[-2:])


def _read_file_frames(ref: PixelRef, indices: list[int]) -> np.ndarray:
    """Stored values of some frames of one file, (len(indices), rows, cols)."""
    if not ref.native:
        return _decode_with_pydicom(ref.path, ref.transfer_syntax)[indices]
    dtype, nbytes = _dtype(ref), ref.frame_bytes
    if ref.inline is not None:
        data = np.frombuffer(ref.inline, dtype=dtype, count=ref.rows * ref.cols * ref.n_frames)
        return data.reshape(ref.n_frames, ref.rows, ref.cols)[indices]
    out = np.empty((len(indices), ref.rows, ref.cols), dtype=dtype)
    with open(ref.path, "rb") as fh:
        if len(indices) > 1 and len(indices) * 2 >= ref.n_frames:  # most of the file: one read
            fh.seek(ref.offset)
            buf = fh.read(nbytes * ref.n_frames)
            if len(buf) < nbytes * ref.n_frames:
                raise TruncatedFileError(
                    f"The file ended while reading its pixel data ({len(buf)} bytes read).", [ref.path]
                )
            out[:] = np.frombuffer(buf, dtype=dtype).reshape(ref.n_frames, ref.rows, ref.cols)[indices]
            return out
        for k, i in enumerate(indices):
            fh.seek(ref.offset + i * nbytes)
            buf = fh.read(nbytes)
            if len(buf) < nbytes:
                raise TruncatedFileError(
                    f"The file ended while reading frame {i + 1} ({len(buf)} of {nbytes} bytes).", [ref.path]
                )
            out[k] = np.frombuffer(buf, dtype=dtype).reshape(ref.rows, ref.cols)
    return out


def read_frames(frames: list[Frame]) -> np.ndarray:
    """Rescaled pixel values (float32) of ``frames``, in their order, (n, rows, cols)."""
    out = np.empty((len(frames), frames[0].rows, frames[0].cols), dtype=np.float32)
    by_file: dict[str, list[int]] = defaultdict(list)
    for k, f in enumerate(frames):
        by_file[f.path].append(k)
    for _, ks in by_file.items():
        ref = frames[ks[0]].pixel
        stored = _read_file_frames(ref, [frames[k].frame for k in ks])
        for j, k in enumerate(ks):
            f = frames[k]
            if f.slope == 1.0 and f.intercept == 0.0:
                out[k] = stored[j]
            else:
                out[k] = stored[j].astype(np.float64) * f.slope + f.intercept
    return out


def resample_circular(images: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Linear interpolation in time on the cardiac cycle (period 1) from phase fractions ``src`` to ``dst``."""
    src = np.mod(np.asarray(src, dtype=np.float64), 1.0)
    order = np.argsort(src, kind="stable")
    src, images = src[order], images[order]
    n = len(src)
    ext = np.concatenate([[src[-1] - 1.0], src, [src[0] + 1.0]])
    idx = np.concatenate([[n - 1], np.arange(n), [0]])
    out = np.empty((len(dst),) + images.shape[1:], dtype=np.float32)
    for j, g in enumerate(np.mod(np.asarray(dst, dtype=np.float64), 1.0)):
        k = int(np.clip(np.searchsorted(ext, g, side="right") - 1, 0, len(ext) - 2))
        span = ext[k + 1] - ext[k]
        w = (g - ext[k]) / span if span > 0 else 0.0
        out[j] = (1.0 - w) * images[idx[k]] + w * images[idx[k + 1]]
    return out


def _mode(values: list) -> object:
    values = [v for v in values if v not in (None, "")]
    return Counter(values).most_common(1)[0][0] if values else None


def _read_slice(plan: StackPlan, i: int) -> np.ndarray:
    """The images of slice ``i``; a single-frame file that fails to read here (e.g. compressed pixel data without a
    decoder, or a file cut short since it was scanned) is a missing phase of that slice."""
    frames = plan.slices[i].frames
    try:
        return read_frames(frames)
    except (TruncatedFileError, UnreadablePixelDataError) as exc:
        bad = [j for j, f in enumerate(frames) if f.path in exc.files and not f.multiframe]
        if not bad:
            raise
        s, j = plan.slices[i], bad[0]
        raise MissingPhaseError(
            f"The cine stack is incomplete: slice {i + 1} of {len(plan.slices)} (position {s.position:+.1f} mm) lacks "
            f"phase {j + 1} of {len(frames)}; its file cannot be read: {exc}",
            exc.files,
            [(i, j, frames[j].path)],
        ) from exc


def assemble(plan: StackPlan, source: str) -> CineStudy:
    """Read the planned frames and build the study."""
    n_s, n_t, rows, cols = plan.shape
    pixels = np.empty((n_s, n_t, rows, cols), dtype=np.float32)
    trigger = np.empty((n_s, n_t), dtype=np.float64)
    sop = np.full((n_s, n_t), "", dtype=object)
    notes = list(plan.notes)
    for i, s in enumerate(plan.slices):
        images = _read_slice(plan, i)
        if s.resample:
            pixels[i] = resample_circular(images, s.trigger_times / s.rr, s.target_times / s.rr)
            trigger[i] = s.target_times
        else:
            pixels[i] = images
            trigger[i] = s.trigger_times
            sop[i] = [f.sop_uid for f in s.frames]
    frames = plan.frames
    study_uids = Counter(f.study_uid for f in frames)
    if len(study_uids) > 1:
        notes.append(
            f"Images of {len(study_uids)} StudyInstanceUIDs were combined (same frame of reference); the most common is reported."
        )
    patients = Counter(f.patient_id for f in frames)
    if len(patients) > 1:
        notes.append(f"Images carry {len(patients)} different PatientIDs ({', '.join(map(str, patients))}).")
    if any(f.multiframe for f in frames):
        files = Counter(f.path for f in frames)
        notes.append(
            "Enhanced MR multi-frame source: sop_uids hold the SOPInstanceUID of the multi-frame file for every frame "
            f"({len(files)} file(s))."
        )
    acquisition = Acquisition(
        vendor=str(_mode([f.manufacturer for f in frames]) or ""),
        field_strength=_mode([f.field_strength for f in frames]),
        sequence=str(_mode([f.sequence for f in frames]) or ""),
        model=str(_mode([f.model for f in frames]) or ""),
    )
    rrs = np.array([s.rr for s in plan.slices], dtype=np.float64)
    return CineStudy(
        pixels=pixels,
        affine=plan.affine,
        trigger_times=trigger,
        rr_interval=float(np.median(rrs)),
        rr_intervals=rrs,
        study_uid=str(study_uids.most_common(1)[0][0]),
        series_uids=[s.series_uid for s in plan.slices],
        patient_id=str(patients.most_common(1)[0][0]),
        sop_uids=sop,
        acquisition=acquisition,
        slice_thickness=plan.slice_thickness,
        source=source,
        left_out=plan.left_out,
        notes=notes,
    )


def read_dicom_study(path: str | Path, *, max_bytes: int | None = None) -> CineStudy:
    """A DICOM folder (recursive) or one DICOM file as a ``CineStudy``."""
    source = str(path)
    plan = plan_stack(scan_dicom(path), source)
    check_size(plan.shape, source, max_bytes)
    return assemble(plan, source)
