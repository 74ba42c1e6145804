"""Scan DICOM files: one header read per file, turned into image frames or left-out files.

Pixel data are not read here: pydicom defers every element larger than
``DEFER_BYTES`` and we keep the file offset and length of PixelData, so the
reader later reads exactly those bytes (one seek and one read per image).
Each Enhanced MR multi-frame file becomes one ``Frame`` per frame, with the
geometry and timing of its per-frame (or shared) functional groups, so the
grouping code treats classic and enhanced images alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from stran.io.dicom_values import (
    first_item,
    get_float,
    get_floats,
    get_int,
    get_str,
    get_value,
    parse_time,
    valid_iop,
)
from stran.io.study import LeftOutFile

DEFER_BYTES = 1024
PIXEL_DATA = Tag(0x7FE00010)
NATIVE_SYNTAXES = {str(ImplicitVRLittleEndian), str(ExplicitVRLittleEndian), str(ExplicitVRBigEndian)}
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
MULTIFRAME_MR_CLASSES = {"1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4"}  # Enhanced, Legacy Converted
MR_IMAGE_CLASSES = {"1.2.840.10008.5.1.4.1.1.4", *MULTIFRAME_MR_CLASSES}


@dataclass
class PixelRef:
    """Where one file's pixel data are, and how they are encoded."""

    path: str
    transfer_syntax: str
    rows: int
    cols: int
    bits_allocated: int
    pixel_representation: int
    n_frames: int
    offset: int | None = None  # file offset of the native pixel bytes (deferred element)
    inline: bytes | None = None  # small native pixel data read with the header
    problem: str | None = None  # None, "missing", "truncated" or "undecodable"
    detail: str = ""

    @property
    def native(self) -> bool:
        return self.transfer_syntax in NATIVE_SYNTAXES

    @property
    def big_endian(self) -> bool:
        return self.transfer_syntax == str(ExplicitVRBigEndian)

    @property
    def frame_bytes(self) -> int:
        return self.rows * self.cols * max(self.bits_allocated // 8, 1)


@dataclass
class Frame:
    """One 2-D image: a classic single-frame file or one frame of a multi-frame file."""

    path: str
    frame: int  # 0-based frame index in the file (0 for single-frame files)
    multiframe: bool
    pixel: PixelRef
    sop_uid: str
    study_uid: str
    series_uid: str
    series_number: int | None
    series_description: str
    acquisition_date: str
    acquisition_time: float | None  # seconds after midnight
    acquisition_number: int | None
    frame_of_reference: str
    patient_id: str
    rows: int
    cols: int
    pixel_spacing: tuple[float, float] | None
    iop: np.ndarray
    ipp: np.ndarray
    slice_thickness: float | None
    trigger_time: float | None
    nominal_interval: float | None
    cardiac_images: int | None
    heart_rate: float | None
    temporal_index: int | None
    instance_number: int | None
    image_type: tuple[str, ...]
    slope: float
    intercept: float
    manufacturer: str = ""
    model: str = ""
    field_strength: float | None = None
    sequence: str = ""

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.iop[:3], self.iop[3:])
        norm = float(np.linalg.norm(n))
        return n / norm if norm > 0 else n

    @property
    def label(self) -> str:
        return f"{self.path}#frame{self.frame + 1}" if self.multiframe else self.path


@dataclass
class BrokenFile:
    """A DICOM file whose header could not be read to the end."""

    path: str
    detail: str
    series_uid: str | None = None


@dataclass
class ScanResult:
    frames: list[Frame] = field(default_factory=list)
    left_out: list[LeftOutFile] = field(default_factory=list)
    broken: list[BrokenFile] = field(default_factory=list)
    n_files: int = 0


# --- files ---
def iter_files(path: Path) -> Iterator[Path]:
    """Every file under ``path`` (recursive, sorted), or ``path`` itself."""
    if path.is_file():
        yield path
        return
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def _truncation(ds: pydicom.Dataset, size: int) -> str | None:
    """Why the file looks cut short, or None. Checks every top-level element's declared end against the file size."""
    last_tag, last_end = None, None
    for tag in sorted(ds._dict):
        el = ds._dict[tag]
        if not isinstance(el, RawDataElement) or el.length == 0xFFFFFFFF:
            last_tag, last_end = tag, None
            continue
        end = el.value_tell + el.length
        if el.value is not None and len(el.value) < el.length:
            return f"element {tag} declares {el.length} bytes but the file ends after {len(el.value)}"
        if end > size:
            return f"the file has {size} bytes but element {tag} ends at byte {end}"
        last_tag, last_end = tag, end
    if last_end is not None and 0 < size - last_end < 8:
        return f"the file ends {size - last_end} bytes into an element header after {last_tag}"
    return None


def _pixel_ref(ds: pydicom.Dataset, path: str, size: int, n_frames: int, truncated: str | None) -> PixelRef:
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or ImplicitVRLittleEndian)
    rows, cols = get_int(ds, "Rows") or 0, get_int(ds, "Columns") or 0
    ref = PixelRef(
        path, ts, rows, cols, get_int(ds, "BitsAllocated") or 16, get_int(ds, "PixelRepresentation") or 0, n_frames
    )
    el = ds._dict.get(PIXEL_DATA)
    if truncated:
        ref.problem, ref.detail = "truncated", truncated
    elif el is None:
        ref.problem, ref.detail = "missing", "no PixelData element (the file may have been cut at an element boundary)"
    elif ref.native:
        if isinstance(el, RawDataElement):
            length, value = el.length, el.value
            if value is None:
                ref.offset = el.value_tell
            else:
                ref.inline = bytes(value)
        else:  # already converted by pydicom (e.g. accessed)
            value = el.value or b""
            length, ref.inline = len(value), bytes(value)
        expected = ref.frame_bytes * n_frames
        if ref.bits_allocated not in (8, 16, 32):
            ref.problem, ref.detail = "undecodable", f"BitsAllocated {ref.bits_allocated} is not supported"
        elif length < expected:
            ref.problem = "undecodable"
            ref.detail = (
                f"PixelData holds {length} bytes but {n_frames} frame(s) of {rows}x{cols} at "
                f"{ref.bits_allocated} bits need {expected}"
            )
        elif ref.offset is not None and ref.offset + expected > size:
            ref.problem, ref.detail = "truncated", f"the file has {size} bytes, pixel data need {ref.offset + expected}"
    return ref


def _common(ds: pydicom.Dataset) -> dict[str, Any]:
    return {
        "sop_uid": get_str(ds, "SOPInstanceUID"),
        "study_uid": get_str(ds, "StudyInstanceUID"),
        "series_uid": get_str(ds, "SeriesInstanceUID"),
        "series_number": get_int(ds, "SeriesNumber"),
        "series_description": get_str(ds, "SeriesDescription"),
        "acquisition_date": get_str(ds, "AcquisitionDate") or get_str(ds, "SeriesDate"),
        "acquisition_time": parse_time(
            get_str(ds, "AcquisitionTime") or get_str(ds, "AcquisitionDateTime")[8:] or get_str(ds, "SeriesTime")
        ),
        "acquisition_number": get_int(ds, "AcquisitionNumber"),
        "frame_of_reference": get_str(ds, "FrameOfReferenceUID"),
        "patient_id": get_str(ds, "PatientID"),
        "manufacturer": get_str(ds, "Manufacturer"),
        "model": get_str(ds, "ManufacturerModelName"),
        "field_strength": get_float(ds, "MagneticFieldStrength"),
        "sequence": get_str(ds, "SequenceName") or get_str(ds, "PulseSequenceName") or get_str(ds, "ScanningSequence"),
        "instance_number": get_int(ds, "InstanceNumber"),
    }


def _single_frame(ds: pydicom.Dataset, path: str, pixel: PixelRef) -> Frame | str:
    iop, ipp = get_floats(ds, "ImageOrientationPatient", 6), get_floats(ds, "ImagePositionPatient", 3)
    if iop is None or ipp is None:
        return "no image geometry (ImageOrientationPatient / ImagePositionPatient missing)"
    if not valid_iop(iop):
        return f"invalid ImageOrientationPatient {iop.round(4).tolist()} (not two orthogonal unit vectors)"
    spacing = get_floats(ds, "PixelSpacing", 2)
    return Frame(
        path=path,
        frame=0,
        multiframe=False,
        pixel=pixel,
        rows=pixel.rows,
        cols=pixel.cols,
        pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        iop=iop,
        ipp=ipp,
        slice_thickness=get_float(ds, "SliceThickness"),
        trigger_time=get_float(ds, "TriggerTime"),
        nominal_interval=get_float(ds, "NominalInterval"),
        cardiac_images=get_int(ds, "CardiacNumberOfImages"),
        heart_rate=get_float(ds, "HeartRate"),
        temporal_index=get_int(ds, "TemporalPositionIdentifier"),
        image_type=tuple(s.upper() for s in get_str(ds, "ImageType").split("\\") if s),
        slope=get_float(ds, "RescaleSlope") or 1.0,
        intercept=get_float(ds, "RescaleIntercept") or 0.0,
        **_common(ds),
    )


def _multi_frame(ds: pydicom.Dataset, path: str, pixel: PixelRef, n_frames: int) -> list[Frame] | str:
    per_frame = get_value(ds, "PerFrameFunctionalGroupsSequence")
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != n_frames:
        return (
            f"multi-frame image without per-frame functional groups for its {n_frames} frames (no per-frame geometry)"
        )
    common = _common(ds)
    top_type = tuple(s.upper() for s in get_str(ds, "ImageType").split("\\") if s)
    frames: list[Frame] = []
    for i, pf in enumerate(per_frame):

        def group(keyword: str, pf: Any = pf) -> Any:
            return first_item(pf, keyword) or first_item(shared, keyword)

        pos, ori, meas = (
            group("PlanePositionSequence"),
            group("PlaneOrientationSequence"),
            group("PixelMeasuresSequence"),
        )
        iop, ipp = get_floats(ori, "ImageOrientationPatient", 6), get_floats(pos, "ImagePositionPatient", 3)
        if iop is None or ipp is None:
            return f"frame {i + 1} has no PlanePositionSequence / PlaneOrientationSequence"
        if not valid_iop(iop):
            return f"frame {i + 1} has an invalid ImageOrientationPatient {iop.round(4).tolist()}"
        spacing = get_floats(meas, "PixelSpacing", 2)
        sync, content = group("CardiacSynchronizationSequence"), group("FrameContentSequence")
        pvt, ftype = group("PixelValueTransformationSequence"), group("MRImageFrameTypeSequence")
        trigger = get_float(sync, "NominalCardiacTriggerDelayTime")
        if trigger is None:
            trigger = get_float(sync, "ActualCardiacTriggerDelayTime")
        rr = get_float(sync, "RRIntervalTimeNominal") or get_float(ds, "NominalInterval")
        hr = get_float(sync, "HeartRate") or get_float(ds, "HeartRate")
        frame_type = tuple(s.upper() for s in get_str(ftype, "FrameType").split("\\") if s) or top_type
        frames.append(
            Frame(
                path=path,
                frame=i,
                multiframe=True,
                pixel=pixel,
                rows=pixel.rows,
                cols=pixel.cols,
                pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
                iop=iop,
                ipp=ipp,
                slice_thickness=get_float(meas, "SliceThickness"),
                trigger_time=trigger,
                nominal_interval=rr,
                cardiac_images=get_int(ds, "CardiacNumberOfImages"),
                heart_rate=hr,
                temporal_index=get_int(content, "TemporalPositionIndex"),
                image_type=frame_type,
                slope=get_float(pvt, "RescaleSlope") or get_float(ds, "RescaleSlope") or 1.0,
                intercept=get_float(pvt, "RescaleIntercept") or get_float(ds, "RescaleIntercept") or 0.0,
                **common,
            )
        )
    return frames


def scan_file(path: Path, result: ScanResult) -> None:
    """Read one file's header and add its frames, or a left-out or broken entry, to ``result``."""
    p = str(path)
    result.n_files += 1
    if path.name.startswith(".") and path.name.endswith((".partial", ".tmp")):
        result.left_out.append(LeftOutFile(p, "unfinished temporary file of an interrupted write"))
        return
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as exc:
        result.left_out.append(LeftOutFile(p, f"cannot be opened ({exc.strerror or exc})"))
        return
    if len(head) >= 132 and head[128:132] == b"DICM":
        force = False
    elif len(head) >= 8 and head[:2] in (b"\x08\x00", b"\x02\x00"):
        force = True  # a DICOM data set without the 128-byte preamble
    else:
        result.left_out.append(LeftOutFile(p, "not a DICOM file"))
        return
    try:
        ds = pydicom.dcmread(p, defer_size=DEFER_BYTES, force=force)
    except InvalidDicomError as exc:
        result.left_out.append(LeftOutFile(p, f"not a DICOM file ({exc})"))
        return
    except Exception as exc:  # pydicom raises many kinds on corrupt input
        result.broken.append(BrokenFile(p, f"the header cannot be parsed ({type(exc).__name__}: {exc})"))
        return

    truncated = _truncation(ds, size)
    if not ds._dict:
        result.broken.append(BrokenFile(p, f"the file ({size} bytes) ends before its data set begins"))
        return
    sop_class = get_str(ds, "SOPClassUID") or get_str(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID")
    if sop_class == DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        result.left_out.append(LeftOutFile(p, "DICOMDIR (index of a DICOM medium, not an image)"))
        return
    rows = get_int(ds, "Rows")
    if not rows and PIXEL_DATA not in ds._dict:
        if not truncated and sop_class in MR_IMAGE_CLASSES:
            truncated = f"an MR image ({size} bytes) without image attributes or pixel data: probably cut short"
        if truncated:
            result.broken.append(BrokenFile(p, truncated, get_str(ds, "SeriesInstanceUID") or None))
        else:
            name = UID(sop_class).name if sop_class else "unknown SOP class"
            result.left_out.append(LeftOutFile(p, f"no image data ({name})"))
        return
    modality = get_str(ds, "Modality")
    if modality and modality != "MR":
        result.left_out.append(LeftOutFile(p, f"modality {modality}, not MR"))
        return
    if (get_int(ds, "SamplesPerPixel") or 1) != 1:
        result.left_out.append(LeftOutFile(p, "colour image (SamplesPerPixel > 1), not an MR magnitude image"))
        return
    n_frames = get_int(ds, "NumberOfFrames") or 1
    pixel = _pixel_ref(ds, p, size, n_frames, truncated)
    if n_frames > 1 or sop_class in MULTIFRAME_MR_CLASSES:
        frames = _multi_frame(ds, p, pixel, n_frames)
    else:
        frames = _single_frame(ds, p, pixel)
    if isinstance(frames, str):
        if truncated:
            result.broken.append(BrokenFile(p, truncated, get_str(ds, "SeriesInstanceUID") or None))
        else:
            result.left_out.append(LeftOutFile(p, frames))
        return
    result.frames.extend(frames if isinstance(frames, list) else [frames])


def scan_dicom(path: str | Path) -> ScanResult:
    """Scan a file or a folder (recursively)."""
    result = ScanResult()
    for file in iter_files(Path(path)):
        scan_file(file, result)
    return result
