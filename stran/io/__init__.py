"""Cine study input/output: DICOM and NIfTI into one ``CineStudy``.

``import stran.io`` stays light: the readers and writers (pydicom, nibabel)
are imported on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

from stran.io.errors import (
    AmbiguousStackError,
    CineLoadError,
    InconsistentGeometryError,
    MissingPhaseError,
    MixedFrameOfReferenceError,
    NoCineSeriesError,
    SinglePhaseError,
    SingleSliceError,
    StudyNotFoundError,
    StudyTooLargeError,
    TruncatedFileError,
    UnreadablePixelDataError,
    UnsupportedFormatError,
)
from stran.io.study import Acquisition, CineStudy, LeftOutFile

_LAZY = {
    "load_study": "stran.io.load",
    "is_dicom_file": "stran.io.load",
    "DicomLayout": "stran.io.dicom_writer",
    "write_dicom": "stran.io.dicom_writer",
    "write_series": "stran.io.dicom_writer",
    "write_enhanced": "stran.io.dicom_writer",
    "read_dicom_study": "stran.io.dicom_reader",
    "write_datastore_study": "stran.io.nifti",
    "read_datastore_study": "stran.io.nifti",
    "write_nifti": "stran.io.nifti",
    "write_map": "stran.io.nifti",
    "read_nifti": "stran.io.nifti",
    "sidecar_path": "stran.io.nifti",
    "max_study_bytes": "stran.io.limits",
}

__all__ = [
    "is_dicom_file",
    "Acquisition",
    "CineStudy",
    "LeftOutFile",
    "AmbiguousStackError",
    "CineLoadError",
    "InconsistentGeometryError",
    "MissingPhaseError",
    "MixedFrameOfReferenceError",
    "NoCineSeriesError",
    "SinglePhaseError",
    "SingleSliceError",
    "StudyNotFoundError",
    "StudyTooLargeError",
    "TruncatedFileError",
    "UnreadablePixelDataError",
    "UnsupportedFormatError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stran.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
