"""DICOM header building blocks shared by the classic and Enhanced MR writers (``dicom_writer``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from stran.atomic import atomic_write_with
from stran.io.study import CineStudy

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
FRAME_CONTENT_TAG = 0x00209111


def ds_value(value: float) -> DSfloat:
    return DSfloat(float(value), auto_format=True)


def time_str(seconds: float) -> str:
    seconds = float(seconds) % 86400.0
    h, rem = divmod(seconds, 3600.0)
    m, s = divmod(rem, 60.0)
    return f"{int(h):02d}{int(m):02d}{s:09.6f}"


def parse_time(value: str | float | None, default: float = 36000.0) -> float:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value)
    v = str(value).strip()
    h, m = int(v[0:2]), int(v[2:4]) if len(v) >= 4 else 0
    s = float(v[4:]) if len(v) > 4 else 0.0
    return h * 3600.0 + m * 60.0 + s


@dataclass(frozen=True)
class PixelEncoding:
    """stored = round((value - intercept) / slope) as uint16; the reader applies slope and intercept."""

    slope: float = 1.0
    intercept: float = 0.0

    @property
    def identity(self) -> bool:
        return self.slope == 1.0 and self.intercept == 0.0

    def encode(self, values: np.ndarray) -> np.ndarray:
        if self.identity:
            return np.asarray(values).astype(np.uint16)
        stored = np.rint((np.asarray(values, dtype=np.float64) - self.intercept) / self.slope)
        return np.clip(stored, 0, 65535).astype(np.uint16)


def pixel_encoding(pixels: np.ndarray) -> PixelEncoding:
    """Exact uint16 for integer-valued data in [0, 65535], else a linear rescale over the full range."""
    p = np.asarray(pixels)
    if not np.all(np.isfinite(p)):
        raise ValueError("pixels contain NaN or infinity: cannot be written as DICOM")
    lo, hi = float(p.min()), float(p.max())
    if lo >= 0.0 and hi <= 65535.0 and np.array_equal(p, np.rint(p)):
        return PixelEncoding()
    slope = float(ds_value((hi - lo) / 65535.0)) if hi > lo else 1.0
    return PixelEncoding(slope=slope or 1.0, intercept=float(ds_value(lo)))


def atomic_save(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` to a temporary name beside ``path`` and rename it into place (``stran.atomic``)."""
    atomic_write_with(path, lambda tmp: pydicom.dcmwrite(str(tmp), ds, write_like_original=False))
    return path


def frame_of_reference_uid(study: CineStudy) -> str:
    """A FrameOfReferenceUID stable for one study (so every layout of it agrees)."""
    return str(generate_uid(entropy_srcs=["frame-of-reference", study.study_uid or repr(study.affine.tolist())]))


def study_uid_for(study: CineStudy, opts: dict[str, Any]) -> str:
    return str(
        opts.get("study_uid") or study.study_uid or generate_uid(entropy_srcs=["study", repr(study.affine.tolist())])
    )


def base_dataset(study: CineStudy, opts: dict[str, Any], sop_class: str, sop_uid: str) -> Dataset:
    """Patient, study, equipment and frame-of-reference attributes shared by every layout."""
    acq = study.acquisition
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    implicit = bool(opts.get("implicit_vr", False))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "STRAN_0_1"
    ds.is_little_endian = True
    ds.is_implicit_VR = implicit

    date = str(opts.get("study_date", "20260115"))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = date
    ds.SeriesDate = date
    ds.AcquisitionDate = date
    ds.ContentDate = date
    ds.StudyTime = time_str(parse_time(opts.get("study_time"), 35400.0))
    ds.AccessionNumber = str(opts.get("accession_number", ""))
    ds.Modality = "MR"
    ds.Manufacturer = str(opts.get("manufacturer", acq.vendor or "SIEMENS"))
    ds.InstitutionName = str(opts.get("institution", "ST-RAN synthetic"))
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = str(opts.get("study_description", "Cardiac^Cine"))
    ds.ManufacturerModelName = str(opts.get("model", acq.model or "Aera"))
    ds.PatientName = str(opts.get("patient_name", "Synthetic^Cine"))
    ds.PatientID = str(opts.get("patient_id", study.patient_id or "ANON"))
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "HEART"
    ds.MagneticFieldStrength = ds_value(opts.get("field_strength", acq.field_strength or 1.5))
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid_for(study, opts)
    ds.StudyID = str(opts.get("study_id", "1"))
    ds.FrameOfReferenceUID = str(opts.get("frame_of_reference_uid") or frame_of_reference_uid(study))
    ds.PositionReferenceIndicator = ""
    return ds


def apply_extra(ds: Dataset, opts: dict[str, Any]) -> None:
    for keyword, value in (opts.get("extra") or {}).items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)


def set_image_pixel(ds: Dataset, rows: int, cols: int, enc: PixelEncoding, stored: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()


def sop_uid_for(study: CineStudy, s: int, t: int) -> str:
    if study.sop_uids is not None:
        uid = study.sop_uids[s, t]
        if uid:
            return str(uid)
    return str(generate_uid())


def series_uid_for(study: CineStudy, slices: Sequence[int], given: str | None) -> str:
    if given:
        return given
    uids = {study.series_uids[s] for s in slices} if len(study.series_uids) == study.n_slices else set()
    if len(uids) == 1 and "" not in uids:
        # The study's UID, unless a slice outside this selection shares it (it would merge two series).
        (uid,) = uids
        others = {study.series_uids[s] for s in range(study.n_slices) if s not in set(slices)}
        if uid not in others:
            return uid
    return str(generate_uid())
