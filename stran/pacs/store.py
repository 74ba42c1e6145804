"""Write a detection back to the PACS it came from: a TID 1500 Structured Report and the map as a Segmentation.

Both carry UIDs derived from the study, its series and the model's SHA-256 (``stran.pacs.report.result_uids``): the
same model run again on the same study writes the same SOP instances, so the PACS holds one copy (Orthanc keeps the
copy it has unless its ``OverwriteInstances`` option is on, in which case the new one replaces it); another model,
or a model retrained, writes a new series beside the old one. A store that fails half way is completed, never
duplicated, by running it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stran.io.study import CineStudy
from stran.pacs.client import PacsClient, PacsError
from stran.pacs.fetch import source_headers
from stran.pacs.report import detection_sr, result_uids, scar_map_seg


def store_detection(client: PacsClient, result: dict[str, Any], study: CineStudy, attention: np.ndarray | None,
                    sources: list[Any]) -> dict[str, Any]:
    """STOW-RS the SR (and the SEG when there is a map) into the study; returns what was written (the ``pacs``
    record of the result JSON and of the results database)."""
    uids = result_uids(study.study_uid, list(dict.fromkeys(study.series_uids)), result["model"]["sha256"])
    objects = [detection_sr(result, study, sources, uids=uids)]
    if attention is not None:
        objects.insert(0, scar_map_seg(result, study, attention, sources, uids=uids))
    client.store(objects, study.study_uid)
    return {
        "url": client.url,
        "study_uid": study.study_uid,
        "sr_series_uid": uids.sr_series,
        "sr_sop_uid": uids.sr_sop,
        "map_series_uid": uids.map_series if attention is not None else None,
        "map_sop_uid": uids.map_sop if attention is not None else None,
        "map_kind": "SEG" if attention is not None else None,
    }


def store_or_say_why(client: PacsClient, result: dict[str, Any], study: CineStudy, attention: np.ndarray | None,
                     cache: str | Path) -> dict[str, Any]:
    """``store_detection`` with the study's source headers from the PACS cache; when storing fails, the record
    says why (``error``) instead: the detection itself still counts."""
    try:
        return store_detection(client, result, study, attention, source_headers(cache, study.study_uid))
    except PacsError as exc:
        return {"url": client.url, "study_uid": study.study_uid, "error": f"{exc} ({exc.hint})"}
