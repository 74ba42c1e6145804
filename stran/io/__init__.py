"""Cine study input/output: DICOM and NIfTI into one ``CineStudy``."""

from stran.io.study import Acquisition, CineStudy, LeftOutFile

__all__ = ["Acquisition", "CineStudy", "LeftOutFile"]
