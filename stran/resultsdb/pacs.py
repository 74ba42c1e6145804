"""The ``pacs_exports`` table: which DICOM objects (SR, scar map) a detection was written to a PACS as.

``ResultsDB.record_pacs_export`` and ``ResultsDB.pacs_exports`` are thin wrappers of the two functions here.
An export is identified by (detection, PACS URL, SR SOP Instance UID): recording it again, by the same
``export_id`` or without one, stores nothing and returns the stored ``export_id``; the same export with other SR
or map UIDs, or under another ``export_id``, and an ``export_id`` used for another export, raise
:class:`ConflictError`. ``study_uid`` and ``model_sha256`` come from the detection (if given, they must match it).
``stored_utc`` is the first recorded store: a later record of the same export (the same objects stored again)
keeps it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, select

from . import schema as S
from .errors import ConflictError, InvalidRecordError
from .records import new_id

#: Compared when an export is recorded again (``stored_utc`` and ``recorded_utc`` are not).
CONTENT = ("detection_id", "study_uid", "pacs_url", "model_sha256", "sr_series_uid", "sr_sop_uid",
           "map_series_uid", "map_sop_uid", "map_kind")
_WHY = ("an export is one detection's SR (and map) on one PACS: the same detection, PACS URL and SR SOP Instance UID "
        "always carry the same UIDs, and keep the export_id they were first recorded with")


def put_pacs_export(conn: Connection, row: dict[str, Any], now: str) -> str:
    """Insert one parsed export (``records.parse_pacs_export``) in the caller's transaction; returns its id."""
    d, t = S.detections.c, S.pacs_exports
    row = dict(row)
    label = f"PACS export {row['export_id']!r}" if row["export_id"] else "PACS export"
    detection = conn.execute(select(d.study_uid, d.model_sha256).where(d.detection_id == row["detection_id"])).first()
    if detection is None:
        raise InvalidRecordError(f"{label}: field 'detection_id': detection {row['detection_id']!r} is not in this "
                                 "database (record the detection first)", field="detection_id")
    for key, value in (("study_uid", detection.study_uid), ("model_sha256", detection.model_sha256)):
        if row[key] is None:
            row[key] = value
        elif row[key] != value:
            raise InvalidRecordError(f"{label}: field '{key}' is {row[key]!r} but detection {row['detection_id']!r} "
                                     f"has {value!r}", field=key)
    same = conn.execute(select(t).where(t.c.detection_id == row["detection_id"], t.c.pacs_url == row["pacs_url"],
                                        t.c.sr_sop_uid == row["sr_sop_uid"])).mappings().first()
    by_id = None
    if row["export_id"] is not None:
        by_id = conn.execute(select(t).where(t.c.export_id == row["export_id"])).mappings().first()
    stored = by_id or same
    if stored is not None:
        diffs = {k: (stored[k], row[k]) for k in CONTENT if stored[k] != row[k]}
        if row["export_id"] is not None and row["export_id"] != stored["export_id"]:
            diffs = {"export_id": (stored["export_id"], row["export_id"]), **diffs}
        if diffs:
            raise ConflictError.of("PACS export", stored["export_id"], diffs, _WHY)
        return str(stored["export_id"])
    export_id = row["export_id"] or new_id()
    conn.execute(t.insert().values(**{k: row[k] for k in CONTENT}, export_id=export_id,
                                   stored_utc=row["stored_utc"] or now, recorded_utc=now))
    return export_id


def select_pacs_exports(*, study_uid: str | None = None, detection_id: str | None = None) -> Select[Any]:
    """Exports, oldest store first."""
    c = S.pacs_exports.c
    query = select(S.pacs_exports).order_by(c.stored_utc, c.export_id)
    if study_uid is not None:
        query = query.where(c.study_uid == study_uid)
    if detection_id is not None:
        query = query.where(c.detection_id == detection_id)
    return query
