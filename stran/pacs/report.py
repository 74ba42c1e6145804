"""Detection results as DICOM for the PACS: the SR (``stran.pacs.sr``), the map as a SEG (``stran.pacs.seg``) and
the deterministic UIDs both carry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.uid import generate_uid

from stran.pacs.seg import scar_map_seg
from stran.pacs.sr import detection_sr, read_detection_sr

__all__ = ["ResultUIDs", "detection_sr", "read_detection_sr", "result_uids", "scar_map_seg"]


@dataclass(frozen=True)
class ResultUIDs:
    """Series and SOP Instance UIDs of the SR and of the map (SEG) written for one detection."""

    sr_series: str
    sr_sop: str
    map_series: str
    map_sop: str


def result_uids(study_uid: str, series_uids: Sequence[str], model_sha256: str) -> ResultUIDs:
    """UIDs derived from the study, its cine series (in any order) and the model: the same model run again on the
    same study gives the same UIDs (the PACS keeps one copy); another model or study gives others."""
    if not study_uid or not model_sha256:
        raise ValueError("result UIDs need the study's Study Instance UID and the model's SHA-256")
    key = [study_uid, *sorted(set(map(str, series_uids))), model_sha256]

    def uid(kind: str) -> str:
        return str(generate_uid(entropy_srcs=["stran-result", kind, *key]))

    return ResultUIDs(sr_series=uid("sr-series"), sr_sop=uid("sr"), map_series=uid("map-series"), map_sop=uid("map"))
