"""The local results database (stran.resultsdb): real SQLite files in tmp_path and, where Debian's
PostgreSQL server binaries are installed, a throwaway PostgreSQL cluster (conftest_postgres.py).
No mocks: failures are provoked with invalid input, conflicting records and a real database trigger."""

from __future__ import annotations

import copy
import csv
import hashlib
import hmac
import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from stran.resultsdb import (
    SCHEMA_VERSION,
    ConflictError,
    InvalidRecordError,
    ResultsDB,
    ResultsDBError,
    SchemaVersionError,
    database_url,
    new_id,
    now_utc,
    parse_correction,
    parse_detection,
    parse_training_run,
)
from stran.resultsdb import schema as S

try:
    from conftest_postgres import backend_url, postgres_server, postgres_url  # noqa: F401  (fixtures)
except ImportError:  # tests/ made a package
    from tests.unit.conftest_postgres import backend_url, postgres_server, postgres_url  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
SHA_A = "a" * 64
SHA_B = "b" * 64
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


# ----------------------------------------------------------------------------- sample records


def detection(detection_id: str | None = None, *, study_uid: str = "1.2.826.0.1.3680043.8.498.1", patient_id: str = "PAT-0001",
              slices: int = 4, probability: float = 0.83, model_sha: str = SHA_A, created: str = "2026-11-25T10:00:00Z",
              **overrides: Any) -> dict[str, Any]:
    """A detection result shaped like the server's infer JSON."""
    result = {
        "detection_id": detection_id or new_id(),
        "image_id": "case_0001",
        "study": {
            "study_uid": study_uid,
            "patient_id": patient_id,
            "series_uids": [study_uid + ".1"],
            "vendor": "SIEMENS",
            "field_strength_t": 1.5,
            "slices": slices,
            "phases": 25,
            "pixel_spacing_mm": [1.8, 1.8],
            "slice_spacing_mm": 8.0,
            "rr_interval_ms": 923.5,
        },
        "study_probability": probability,
        "threshold": 0.5,
        "prediction": int(probability >= 0.5),
        "prediction_label": "scar" if probability >= 0.5 else "no scar",
        "slice_probabilities": [0.12, 0.91, None, 0.44][:slices] + [0.5] * max(0, slices - 4),
        "uncertainty": {"method": "mc_dropout", "samples": 20, "std": 0.041, "entropy": 0.52, "mutual_information": 0.013},
        "model": {"name": "stran", "version": "0.1.0", "sha256": model_sha, "trained_on": "phantom-cohort-v1"},
        "input": {"slices": slices, "phases": 25, "resampled_phases": 25, "crop_mm": 128},
        "timings": {"preprocess_ms": 412.0, "inference_ms": 1333.5, "total_ms": 1801.25},
        "created_utc": created,
    }
    result.update(overrides)
    return result


def correction(correction_id: str | None = None, *, study_uid: str = "1.2.826.0.1.3680043.8.498.1",
               slice_labels: list[int | None] | None = None, **overrides: Any) -> dict[str, Any]:
    """A `.scar.json` label plus correction_id, image_id, study_uid."""
    label = {
        "study_label": 1,
        "slice_labels": [0, 1, None, 1] if slice_labels is None else slice_labels,
        "source": "LGE",
        "reviewer": "reader-1",
        "comment": "inferolateral scar on LGE",
        "correction_id": correction_id or new_id(),
        "image_id": "case_0001",
        "study_uid": study_uid,
    }
    label.update(overrides)
    return label


def training_run(run_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    run = {
        "run_id": run_id or new_id(),
        "model_name": "stran",
        "status": "running",
        "started_utc": "2026-11-25T09:00:00Z",
        "options": {"max_epochs": 50, "lr": 0.0003, "val_split": 0.2},
        "metrics": {"epoch": 3, "val_auc": 0.71},
    }
    run.update(overrides)
    return run


PACS_URL = "http://127.0.0.1:8042/dicom-web"
UID_ROOT = "1.2.826.0.1.3680043.8.498."


def pacs_export(detection_id: str = "d-0001", *, n: int = 1, with_map: bool = True, **overrides: Any) -> dict[str, Any]:
    """The ``pacs`` record of a detection written back to a PACS (SR + SEG), as ``record_pacs_export`` takes it."""
    export: dict[str, Any] = {
        "detection_id": detection_id,
        "pacs_url": PACS_URL,
        "sr_series_uid": f"{UID_ROOT}{n}01",
        "sr_sop_uid": f"{UID_ROOT}{n}01.1",
        "stored_utc": "2026-11-25T10:05:00Z",
    }
    if with_map:
        export.update(map_series_uid=f"{UID_ROOT}{n}02", map_sop_uid=f"{UID_ROOT}{n}02.1", map_kind="SEG")
    export.update(overrides)
    return export


def fill(db: ResultsDB) -> None:
    """Some content in every table."""
    db.record_detection(detection("d-0001"))
    db.record_detection(detection("d-0002", study_uid="1.2.3.2", patient_id="PAT-0002", probability=0.2))
    db.record_correction(correction("c-0001"), detection_id="d-0001")
    db.record_training_run(training_run("r-0001"))
    db.record_pacs_export(pacs_export("d-0001"), export_id="e-0001")


def data_tables(db: ResultsDB) -> dict[str, list[dict[str, Any]]]:
    return db.snapshot()


def run_sql(url: str, *statements: str, params: dict[str, Any] | None = None) -> None:
    engine = create_engine(database_url(url))
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement), params or {})
    finally:
        engine.dispose()



def raw_rows(url: str, tables: tuple[str, ...]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``tables``, read with plain SQL (not through ResultsDB): what a migration must keep."""
    engine = create_engine(database_url(url))
    try:
        with engine.connect() as conn:
            return {t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))] for t in tables}
    finally:
        engine.dispose()

# ----------------------------------------------------------------------------- recording, idempotency


def test_detection_is_recorded_with_every_field(backend_url: str) -> None:
    result = detection("d-0001")
    with ResultsDB(backend_url) as db:
        assert db.record_detection(result) == "d-0001"
        (row,) = db.detections()
    assert row["study_uid"] == result["study"]["study_uid"]
    assert row["image_id"] == "case_0001"
    assert row["study_probability"] == 0.83 and row["threshold"] == 0.5
    assert row["prediction"] == 1 and row["prediction_label"] == "scar"
    assert row["slice_probabilities"] == [0.12, 0.91, None, 0.44]
    assert row["uncertainty"] == result["uncertainty"]
    assert row["uncertainty_entropy"] == 0.52 and row["uncertainty_mutual_information"] == 0.013
    assert row["timings"] == result["timings"] and row["total_ms"] == 1801.25
    assert row["input_summary"] == result["input"]
    assert row["model_name"] == "stran" and row["model_version"] == "0.1.0" and row["model_sha256"] == SHA_A
    assert row["created_utc"] == "2026-11-25T10:00:00.000000Z"
    assert TIMESTAMP.match(row["recorded_utc"])
    assert row["patient_pseudonym"].startswith("anon-")
    with ResultsDB(backend_url) as db:
        (study,) = db.studies()
        (model,) = db.models()
    assert study["slices"] == 4 and study["phases"] == 25 and study["vendor"] == "SIEMENS"
    assert study["pixel_spacing_row_mm"] == 1.8 and study["slice_spacing_mm"] == 8.0 and study["rr_interval_ms"] == 923.5
    assert study["series_uids"] == [result["study"]["study_uid"] + ".1"]
    assert study["patient_id"] is None
    assert model == {"sha256": SHA_A, "name": "stran", "version": "0.1.0", "trained_on": "phantom-cohort-v1",
                     "first_seen_utc": model["first_seen_utc"]}


def test_recording_the_same_detection_twice_stores_it_once(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        db.record_detection(detection("d-0001"))
        before = data_tables(db)
        assert db.record_detection(detection("d-0001")) == "d-0001"
        assert db.record_many(detections=[detection("d-0001"), detection("d-0001")]) == {
            "detections": ["d-0001", "d-0001"], "corrections": [], "training_runs": []}
        assert data_tables(db) == before
        assert db.counts()["detections"] == 1


def test_a_conflicting_detection_under_the_same_id_is_refused(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        db.record_detection(detection("d-0001"))
        before = data_tables(db)
        with pytest.raises(ConflictError, match=r"detection 'd-0001' is already stored .*study_probability: stored 0.83, new 0.4") as info:
            db.record_detection(detection("d-0001", probability=0.4))
        assert info.value.record_id == "d-0001" and "study_probability" in info.value.differences
        assert data_tables(db) == before


def test_recording_the_same_correction_twice_stores_it_once(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        db.record_detection(detection("d-0001"))
        label = {k: v for k, v in correction().items() if k not in ("correction_id", "image_id", "study_uid")}
        keys = {"correction_id": "c-0001", "image_id": "case_0001", "study_uid": "1.2.826.0.1.3680043.8.498.1"}
        assert db.record_correction(label, **keys) == "c-0001"
        before = data_tables(db)
        assert db.record_correction({**label, **keys}) == "c-0001"  # an offline queue resends
        assert data_tables(db) == before
        with pytest.raises(ConflictError, match=r"correction 'c-0001' .*study_label: stored 1, new 0"):
            db.record_correction({**label, "study_label": 0}, **keys)
        assert data_tables(db) == before
        # a resend after the queue got the server's answer records when it was sent, nothing else
        db.record_correction(label, **keys, sent_utc="2026-11-25T11:00:00+01:00")
        (row,) = db.corrections()
        assert row["sent_utc"] == "2026-11-25T10:00:00.000000Z"
        assert {k: v for k, v in row.items() if k != "sent_utc"} == {k: v for k, v in before["corrections"][0].items() if k != "sent_utc"}


def test_corrections_queue_and_queries(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        fill(db)
        db.record_correction(correction("c-0002", study_uid="1.2.3.2", study_label=0, slice_labels=[0, 0, 0, None],
                                        source="visual", reviewer="reader-2", created_utc="2099-01-01T00:00:00Z"))
        assert [c["correction_id"] for c in db.corrections(unsent_only=True)] == ["c-0001", "c-0002"]
        assert db.mark_corrections_sent(["c-0001"]) == 1
        assert db.mark_corrections_sent(["c-0001"]) == 0  # first time only
        assert [c["correction_id"] for c in db.corrections(unsent_only=True)] == ["c-0002"]
        assert [c["correction_id"] for c in db.corrections(reviewer="reader-2")] == ["c-0002"]
        assert [c["correction_id"] for c in db.corrections(detection_id="d-0001")] == ["c-0001"]
        with pytest.raises(ResultsDBError, match="unknown correction id"):
            db.mark_corrections_sent(["nope"])
        db.record_detection(detection("d-0003", model_sha=SHA_B, created="2026-11-26T08:00:00+02:00",
                                      model={"name": "spatiotemporal", "version": "0.1.0", "sha256": SHA_B, "trained_on": None}))
        assert [d["detection_id"] for d in db.detections()] == ["d-0001", "d-0002", "d-0003"]
        assert [d["detection_id"] for d in db.detections(model_name="spatiotemporal")] == ["d-0003"]
        assert [d["detection_id"] for d in db.detections(model_sha256=SHA_B.upper())] == ["d-0003"]
        assert [d["detection_id"] for d in db.detections(since="2026-11-26T00:00:00Z")] == ["d-0003"]
        assert [d["detection_id"] for d in db.detections(until="2026-11-26T00:00:00Z", study_uid="1.2.3.2")] == ["d-0002"]


def test_a_correction_must_label_every_slice_of_a_known_study(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        db.record_detection(detection("d-0001", slices=4))
        with pytest.raises(InvalidRecordError, match=r"slice_labels' has 3 entries but study .* has 4 slices"):
            db.record_correction(correction("c-0001", slice_labels=[0, 1, 1]))
        # a study never detected here gets a stub row (no metadata) so the correction is kept
        db.record_correction(correction("c-0002", study_uid="9.9.9", slice_labels=[1, 1, 0]))
        assert [s["study_uid"] for s in db.studies()] == ["1.2.826.0.1.3680043.8.498.1", "9.9.9"]
        # ... and a later detection of that study must agree with the labels' slice count
        with pytest.raises(ConflictError, match=r"study '9.9.9' .*slices: stored '3 \(labels of correction c-0002\)', new 4"):
            db.record_detection(detection("d-0002", study_uid="9.9.9", slices=4))
        db.record_detection(detection("d-0003", study_uid="9.9.9", slices=3, patient_id="PAT-9"))
        assert db.studies()[1]["slices"] == 3 and db.studies()[1]["patient_pseudonym"] == db.pseudonym("PAT-9")


def test_study_and_model_metadata_must_agree(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        db.record_detection(detection("d-0001"))
        before = data_tables(db)
        with pytest.raises(ConflictError, match=r"study '1.2.826.0.1.3680043.8.498.1' .*slices: stored 4, new 5"):
            db.record_detection(detection("d-0002", slices=5))
        other_patient = detection("d-0003", patient_id="PAT-0999")
        with pytest.raises(ConflictError, match="patient_pseudonym") as info:
            db.record_detection(other_patient)
        assert "PAT-0999" not in str(info.value)  # error messages never show a raw patient id
        renamed = detection("d-0004")
        renamed["model"] = {**renamed["model"], "version": "0.2.0"}
        with pytest.raises(ConflictError, match=r"model 'a{64}' .*version: stored '0.1.0', new '0.2.0'"):
            db.record_detection(renamed)
        assert data_tables(db) == before
        # float metadata within FLOAT_RTOL, and missing values, are no conflict; missing ones get filled in
        close = detection("d-0005")
        close["study"] = {**close["study"], "rr_interval_ms": 923.5 * (1 + 1e-5), "vendor": None}
        db.record_detection(close)
        (study,) = db.studies()
        assert study["rr_interval_ms"] == 923.5 and study["vendor"] == "SIEMENS"


def test_training_run_progress_then_final(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        db.record_training_run(training_run("r-0001"))
        db.record_training_run(training_run("r-0001", metrics={"epoch": 9, "val_auc": 0.80}))
        db.record_training_run(training_run("r-0001", status="FINISHED", finished_utc="2026-11-25T10:30:00Z",
                                            metrics={"epoch": 50, "val_auc": 0.88}, model_sha256=SHA_B.upper()))
        (run,) = db.training_runs()
        assert run["status"] == "finished" and run["metrics"] == {"epoch": 50, "val_auc": 0.88}
        assert run["model_sha256"] == SHA_B and run["finished_utc"] == "2026-11-25T10:30:00.000000Z"
        assert run["options"] == {"max_epochs": 50, "lr": 0.0003, "val_split": 0.2}
        before = data_tables(db)
        db.record_training_run(training_run("r-0001", status="finished", finished_utc="2026-11-25T10:30:00Z",
                                            metrics={"epoch": 50, "val_auc": 0.88}, model_sha256=SHA_B))  # same: no-op
        with pytest.raises(ConflictError, match=r"already ended \(finished\)"):
            db.record_training_run(training_run("r-0001", status="failed"))
        with pytest.raises(ConflictError, match="options"):
            db.record_training_run(training_run("r-0001", options={"max_epochs": 5}))
        assert data_tables(db) == before
        assert db.training_runs(status="finished")[0]["run_id"] == "r-0001"
        assert db.training_runs(model_name="other") == []


# ----------------------------------------------------------------------------- atomicity


def test_an_invalid_item_in_a_batch_leaves_the_database_as_it_was(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        fill(db)
        before = data_tables(db)
        batch = [detection(f"b-{i}", study_uid=f"7.7.{i}", patient_id=f"P{i}") for i in range(5)]
        del batch[2]["study_probability"]
        with pytest.raises(InvalidRecordError, match=r"^detections\[2\]: detection 'b-2': missing field 'study_probability'"):
            db.record_many(detections=batch, corrections=[correction("c-0009")], training_runs=[training_run("r-0009")])
        assert data_tables(db) == before


def test_a_conflict_mid_batch_leaves_the_database_as_it_was(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        fill(db)
        before = data_tables(db)
        batch = [detection(f"b-{i}", study_uid=f"7.7.{i}", patient_id=f"P{i}") for i in range(5)]
        batch[2] = detection("d-0001", probability=0.1)  # valid on its own, conflicts with what is stored
        with pytest.raises(ConflictError, match=r"^detections\[2\]: detection 'd-0001'"):
            db.record_many(detections=batch, corrections=[correction("c-0009")])
        assert data_tables(db) == before
        bad_labels = [correction("c-0010"), correction("c-0011", slice_labels=[1, 0])]  # study has 4 slices
        with pytest.raises(InvalidRecordError, match=r"^corrections\[1\]: correction 'c-0011'"):
            db.record_many(detections=batch[:2], corrections=bad_labels)
        assert data_tables(db) == before


def _install_failing_trigger(url: str) -> None:
    """A real database trigger that raises when detection 'boom' is inserted."""
    if "://" not in url:
        run_sql(url, "CREATE TRIGGER stran_test_fail BEFORE INSERT ON detections WHEN NEW.detection_id = 'boom' "
                     "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    else:
        run_sql(url,
                "CREATE FUNCTION stran_test_fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.detection_id = 'boom' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$",
                "CREATE TRIGGER stran_test_fail BEFORE INSERT ON detections FOR EACH ROW EXECUTE FUNCTION stran_test_fail()")


def test_a_database_error_mid_transaction_leaves_the_database_as_it_was(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        fill(db)
    _install_failing_trigger(backend_url)
    with ResultsDB(backend_url) as db:
        before = data_tables(db)
        batch = [detection(f"b-{i}", study_uid=f"7.7.{i}", patient_id=f"P{i}") for i in range(5)]
        batch[2]["detection_id"] = "boom"
        with pytest.raises(ResultsDBError, match="injected failure"):
            db.record_many(detections=batch, corrections=[correction("c-0009")], training_runs=[training_run("r-0009")])
        assert data_tables(db) == before
        with pytest.raises(ResultsDBError, match="injected failure"):
            db.record_detection(detection("boom", study_uid="7.7.7", patient_id="P7"))
        assert data_tables(db) == before
        db.record_many(detections=batch[:2])  # the database is still usable
        assert db.counts()["detections"] == 4


# ----------------------------------------------------------------------------- schema versions


V1_DDL = [
    "CREATE TABLE meta (key VARCHAR(64) NOT NULL PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE schema_history (version INTEGER NOT NULL PRIMARY KEY, applied_utc VARCHAR(32) NOT NULL, "
    "description TEXT NOT NULL)",
    """CREATE TABLE studies (
        study_uid VARCHAR(128) NOT NULL PRIMARY KEY, patient_pseudonym VARCHAR(64), patient_id TEXT, series_uids JSON,
        vendor TEXT, field_strength_t FLOAT, slices INTEGER, phases INTEGER, pixel_spacing_row_mm FLOAT,
        pixel_spacing_col_mm FLOAT, slice_spacing_mm FLOAT, rr_interval_ms FLOAT,
        first_seen_utc VARCHAR(32) NOT NULL, updated_utc VARCHAR(32) NOT NULL)""",
    """CREATE TABLE models (sha256 VARCHAR(128) NOT NULL PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,
        trained_on JSON, first_seen_utc VARCHAR(32) NOT NULL)""",
    """CREATE TABLE detections (
        detection_id VARCHAR(64) NOT NULL PRIMARY KEY,
        study_uid VARCHAR(128) NOT NULL REFERENCES studies (study_uid),
        image_id TEXT, model_sha256 VARCHAR(128) NOT NULL REFERENCES models (sha256),
        study_probability FLOAT NOT NULL, threshold FLOAT NOT NULL, prediction SMALLINT NOT NULL,
        prediction_label VARCHAR(16) NOT NULL, slice_probabilities JSON NOT NULL, uncertainty JSON,
        uncertainty_std FLOAT, uncertainty_entropy FLOAT, uncertainty_mutual_information FLOAT, input_summary JSON,
        timings JSON, total_ms FLOAT, created_utc VARCHAR(32) NOT NULL, recorded_utc VARCHAR(32) NOT NULL,
        payload_sha256 VARCHAR(64) NOT NULL)""",
    """CREATE TABLE corrections (
        correction_id VARCHAR(64) NOT NULL PRIMARY KEY,
        study_uid VARCHAR(128) NOT NULL REFERENCES studies (study_uid),
        image_id TEXT, detection_id VARCHAR(64), study_label SMALLINT NOT NULL, slice_labels JSON NOT NULL,
        source VARCHAR(16) NOT NULL, reviewer TEXT NOT NULL, comment TEXT NOT NULL, created_utc VARCHAR(32) NOT NULL,
        recorded_utc VARCHAR(32) NOT NULL, payload_sha256 VARCHAR(64) NOT NULL)""",
    "CREATE INDEX ix_detections_study_uid_created_utc ON detections (study_uid, created_utc)",
    "CREATE INDEX ix_corrections_study_uid_created_utc ON corrections (study_uid, created_utc)",
]

V1_ROWS = [
    "INSERT INTO meta (key, value) VALUES ('schema_version', '1'), ('pseudonym_secret', '" + "ab" * 32 + "'), "
    "('created_utc', '2026-01-05T08:00:00.000000Z')",
    "INSERT INTO schema_history VALUES (1, '2026-01-05T08:00:00.000000Z', 'created at schema version 1')",
    "INSERT INTO studies (study_uid, patient_pseudonym, series_uids, vendor, slices, phases, first_seen_utc, updated_utc) "
    "VALUES ('1.2.3', 'anon-old', '[\"1.2.3.1\"]', 'GE', 3, 30, '2026-01-05T08:00:00.000000Z', '2026-01-05T08:00:00.000000Z')",
    "INSERT INTO models VALUES ('" + SHA_A + "', 'stran', '0.0.9', '\"pilot\"', '2026-01-05T08:00:00.000000Z')",
    "INSERT INTO detections (detection_id, study_uid, model_sha256, study_probability, threshold, prediction, "
    "prediction_label, slice_probabilities, created_utc, recorded_utc, payload_sha256) VALUES ('old-1', '1.2.3', '"
    + SHA_A + "', 0.7, 0.5, 1, 'scar', '[0.2,null,0.9]', '2026-01-05T08:00:00.000000Z', "
    "'2026-01-05T08:00:01.000000Z', '" + "0" * 64 + "')",
    "INSERT INTO corrections VALUES ('oldc-1', '1.2.3', 'img-3', 'old-1', 1, '[0,null,1]', 'visual', 'r1', '', "
    "'2026-01-06T08:00:00.000000Z', '2026-01-06T08:00:00.000000Z', '" + "1" * 64 + "')",
]


def test_a_version_1_database_is_migrated_keeping_its_data(backend_url: str) -> None:
    run_sql(backend_url, *V1_DDL, *V1_ROWS)
    with ResultsDB(backend_url) as db:
        assert db.migrated_from == 1 and db.schema_version == SCHEMA_VERSION == 5
        (old,) = db.detections()
        assert old["detection_id"] == "old-1" and old["slice_probabilities"] == [0.2, None, 0.9]
        assert old["model_version"] == "0.0.9" and old["patient_pseudonym"] == "anon-old"
        (corr,) = db.corrections()
        assert corr["slice_labels"] == [0, None, 1] and corr["sent_utc"] is None and corr["picked_by"] is None
        assert corr["segment_labels"] is None and old["segment_probabilities"] is None
        history = db.rows("schema_history")
        assert [h["version"] for h in history] == [1, 2, 3, 4, 5]
        assert history[1]["description"].startswith("migrated from 1")
        # the new parts work, and the old data take part in the usual rules
        db.record_training_run(training_run("r-0001"))
        assert db.mark_corrections_sent(["oldc-1"]) == 1
        picked = {"strategy": "most_uncertain", "score_name": "entropy", "score": 0.61, "model_sha256": "ab" * 32}
        db.record_correction(correction("c-0003", study_uid="1.2.9", picked_by=picked))
        assert {c["correction_id"]: c["picked_by"] for c in db.corrections()}["c-0003"] == picked
        with pytest.raises(InvalidRecordError, match="has 3 slices"):
            db.record_correction(correction("c-0002", study_uid="1.2.3"))
        key = bytes.fromhex("ab" * 32)  # the stored key is kept
        assert db.pseudonym("X") == "anon-" + hmac.new(key, b"X", hashlib.sha256).hexdigest()[:24]
    with ResultsDB(backend_url) as db:
        assert db.migrated_from is None and db.schema_version == 5
        assert db.counts() == {"schema_history": 5, "studies": 2, "models": 1, "detections": 1, "corrections": 2,
                               "training_runs": 1, "pacs_exports": 0}


def test_a_database_from_a_newer_version_is_refused_and_left_alone(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        fill(db)
    run_sql(backend_url, "UPDATE meta SET value = '6' WHERE key = 'schema_version'",
            "CREATE TABLE future_things (id INTEGER PRIMARY KEY)")
    with pytest.raises(SchemaVersionError, match=r"schema version 6, written by a newer version of ST-RAN Scar; "
                                                 r"this version reads schema versions 1 to 5"):
        ResultsDB(backend_url)
    engine = create_engine(database_url(backend_url))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar_one() == "6"
        assert conn.execute(text("SELECT COUNT(*) FROM detections")).scalar_one() == 2
    engine.dispose()


def test_a_damaged_or_foreign_database_is_refused(tmp_path: Path, backend_url: str) -> None:
    run_sql(backend_url, "CREATE TABLE detections (x INTEGER)")
    with pytest.raises(SchemaVersionError, match="is not an ST-RAN results database"):
        ResultsDB(backend_url)
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("this is not a database\n" * 100)
    with pytest.raises(ResultsDBError, match="not a database"):
        ResultsDB(not_sqlite)
    assert not_sqlite.read_text() == "this is not a database\n" * 100


def test_a_new_database_matches_the_schema_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "results.sqlite"
    with ResultsDB(path) as db:
        assert db.created and db.schema_version == SCHEMA_VERSION
        fill(db)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {t.name for t in S.TABLES}
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'ix_%'")}
        assert {"ix_detections_study_uid_created_utc", "ix_corrections_sent_utc", "ix_studies_patient_pseudonym"} <= indexes
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


# ----------------------------------------------------------------------------- CSV export


def test_csv_export_writes_every_table(backend_url: str, tmp_path: Path) -> None:
    out = tmp_path / "export"
    with ResultsDB(backend_url) as db:
        fill(db)
        db.record_training_run(training_run("r-0001", status="finished", finished_utc="2026-11-25T11:00:00Z",
                                            model_sha256=SHA_B, metrics={"val_auc": 0.9}))
        stored = db.snapshot()
        secret = stored["meta"][[r["key"] for r in stored["meta"]].index("pseudonym_secret")]["value"]
        paths = db.export_csv(out)
    assert [p.name for p in paths] == [f"{t.name}.csv" for t in S.EXPORTED] + ["manifest.json"]
    for table in S.EXPORTED:
        with open(out / f"{table.name}.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == [c.name for c in table.columns]
        assert len(rows) - 1 == len(stored[table.name])
        for line, row in zip(rows[1:], stored[table.name], strict=True):
            for name, cell in zip(rows[0], line, strict=True):
                value = row[name]
                if name in S.JSON_COLUMNS[table.name]:
                    assert (json.loads(cell) if cell else None) == value, (table.name, name)
                elif value is None:
                    assert cell == ""
                elif isinstance(value, float):
                    assert float(cell) == value
                else:
                    assert cell == str(value)
    detections_csv = (out / "detections.csv").read_text(encoding="utf-8")
    assert '"[0.12,0.91,null,0.44]"' in detections_csv  # JSON columns are JSON text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION and manifest["rows"]["detections"] == 2
    assert manifest["pseudonymised_patient_ids"] is True
    everything = "".join(p.read_text(encoding="utf-8") for p in out.iterdir())
    assert secret not in everything and "PAT-0001" not in everything
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    with ResultsDB(backend_url) as db:  # a second export replaces the files
        db.record_detection(detection("d-0003", study_uid="5.5.5", patient_id="X"))
        db.export_csv(out)
    assert len((out / "detections.csv").read_text().strip().splitlines()) == 4


# ----------------------------------------------------------------------------- pseudonymisation


def test_pseudonyms_are_stable_within_a_database_and_differ_between_databases(backend_url: str, tmp_path: Path) -> None:
    with ResultsDB(backend_url) as db:
        db.record_detection(detection("d-1", study_uid="1.1", patient_id="PAT-0001"))
        db.record_detection(detection("d-2", study_uid="1.2", patient_id=" PAT-0001 "))
        db.record_detection(detection("d-3", study_uid="1.3", patient_id="PAT-0002"))
        pseudonyms = {s["study_uid"]: s["patient_pseudonym"] for s in db.studies()}
        assert pseudonyms["1.1"] == pseudonyms["1.2"] == db.pseudonym("PAT-0001") != pseudonyms["1.3"]
        assert re.fullmatch(r"anon-[0-9a-f]{24}", pseudonyms["1.1"])
        assert all(s["patient_id"] is None for s in db.studies())
        snapshot = db.snapshot()
    dumped = json.dumps(snapshot)
    assert "PAT-0001" not in dumped and "PAT-0002" not in dumped
    if "://" not in backend_url:  # not in the file either (nothing deleted, nothing in free pages)
        raw = Path(backend_url).read_bytes()
        assert b"PAT-0001" not in raw and b"PAT-0002" not in raw
    with ResultsDB(tmp_path / "other.sqlite") as other:
        other.record_detection(detection("d-1", study_uid="1.1", patient_id="PAT-0001"))
        assert other.studies()[0]["patient_pseudonym"] != pseudonyms["1.1"]


def test_raw_patient_ids_are_kept_only_when_asked(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "raw.sqlite", pseudonymise=False) as db:
        db.record_detection(detection("d-1", patient_id="PAT-0001"))
        (study,) = db.studies()
    assert study["patient_id"] == "PAT-0001" and study["patient_pseudonym"] == db.pseudonym("PAT-0001")


# ----------------------------------------------------------------------------- concurrency

_WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from stran.resultsdb import ResultsDB
    url, worker, go = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    template = json.loads(Path(sys.argv[5]).read_text())
    while not go.exists():
        time.sleep(0.005)
    with ResultsDB(url) as db:
        for i in range(25):
            mine = dict(template, detection_id=f"w{worker}-{i:03d}")
            shared = dict(template, detection_id=f"shared-{i % 10:03d}")
            db.record_detection(mine)
            db.record_detection(shared)
            db.record_correction({"study_label": 1, "slice_labels": [0, 1, None, 1], "source": "LGE",
                                  "reviewer": f"w{worker}", "comment": "", "correction_id": f"c{worker}-{i:03d}",
                                  "image_id": "case_0001", "study_uid": template["study"]["study_uid"]})
            if i % 5 == 0:
                db.corrections(unsent_only=True)
                db.mark_corrections_sent([f"c{worker}-{i:03d}"])
    print("done", worker)
    """
)


def test_two_concurrent_writers_do_not_corrupt_the_database(backend_url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    template = tmp_path / "template.json"
    template.write_text(json.dumps(detection("template")))
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(REPO), backend_url, str(w), str(go), str(template)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in (1, 2)
    ]
    time.sleep(1.0)
    go.touch()  # both start together, on a database that does not exist yet
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    with ResultsDB(backend_url) as db:
        counts = db.counts()
        assert counts["detections"] == 2 * 25 + 10 and counts["corrections"] == 50 and counts["studies"] == 1
        assert counts["schema_history"] == 1
        assert len(db.corrections(unsent_only=True)) == 50 - 10
    if "://" not in backend_url:
        conn = sqlite3.connect(backend_url)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()


def test_a_racing_writer_of_the_same_record_is_not_an_error(backend_url: str) -> None:
    """Two writers store the same new detection at once: the second waits (SQLite: write lock; PostgreSQL:
    unique index), then finds the first one's row and treats the record as already stored."""
    result = detection("d-race")
    inserted, release = threading.Event(), threading.Event()
    outcome: list[Any] = []
    with ResultsDB(backend_url) as first, ResultsDB(backend_url) as second:

        def slow_first(conn: Any) -> None:  # the first writer's transaction stays open until released
            first._put_detection(conn, parse_detection(result), now_utc())
            inserted.set()
            release.wait(30)

        def run_second() -> None:
            try:
                outcome.append(second.record_detection(copy.deepcopy(result)))
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                outcome.append(exc)

        t1 = threading.Thread(target=first._write, args=(slow_first,))
        t1.start()
        assert inserted.wait(30)
        t2 = threading.Thread(target=run_second)
        t2.start()
        time.sleep(0.5)
        assert not outcome  # the second writer is waiting for the first
        release.set()
        t1.join(30)
        t2.join(30)
        assert outcome == ["d-race"]
        assert second.counts()["detections"] == 1


# ----------------------------------------------------------------------------- validation (no database)


def _without(data: dict[str, Any], path: str) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[key]
    del target[last]
    return data


def _with(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[key]
    target[last] = value
    return data


@pytest.mark.parametrize("field", ["detection_id", "study", "study.study_uid", "study_probability", "threshold",
                                   "prediction", "slice_probabilities", "model", "model.name", "model.version",
                                   "model.sha256", "created_utc"])
def test_a_detection_without_a_required_field_is_refused_naming_it(field: str) -> None:
    with pytest.raises(ValueError, match=rf"missing field '{re.escape(field)}'"):
        parse_detection(_without(detection("d-1"), field))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("study_probability", 1.5, r"'study_probability' must lie in \[0.0, 1.0\], got 1.5"),
        ("study_probability", float("nan"), "'study_probability' must be finite"),
        ("study_probability", "0.8", "'study_probability' must be a number, got '0.8' \\(str\\)"),
        ("threshold", None, "'threshold' must be a number"),
        ("prediction", 2, r"'prediction' must be one of \[0, 1\], got 2"),
        ("prediction", True, "'prediction' must be an integer"),
        ("prediction_label", "no scar", "'prediction_label' is 'no scar' but prediction is 1"),
        ("slice_probabilities", [0.1, 0.2], "'slice_probabilities' has 2 entries but study.slices is 4"),
        ("slice_probabilities", [0.1, 0.2, -0.1, 0.3], r"'slice_probabilities\[2\]' must lie in"),
        ("slice_probabilities", "0.1,0.2", "'slice_probabilities' must be a list"),
        ("created_utc", "yesterday", "'created_utc' is not an ISO 8601 time"),
        ("detection_id", "has space", "'detection_id' may hold only"),
        ("detection_id", "", "'detection_id' must be a non-empty string id"),
        ("study.slices", 0, "'study.slices' must be >= 1"),
        ("study.pixel_spacing_mm", [1.8], r"'study.pixel_spacing_mm' must be \[row, column\]"),
        ("study.field_strength_t", -3, "'study.field_strength_t' must be > 0"),
        ("study.series_uids", "1.2.3", "'study.series_uids' must be a list of strings"),
        ("uncertainty.entropy", -0.1, r"'uncertainty.entropy' must lie in \[0.0, None\]"),
        ("uncertainty.samples", 0, "'uncertainty.samples' must be >= 1"),
        ("timings.total_ms", "fast", "'timings.total_ms' must be a number"),
        ("model.sha256", "   ", "'model.sha256' must not be empty"),
        ("input", [1, 2], "'input' must be an object"),
    ],
)
def test_a_detection_with_a_bad_value_is_refused_naming_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidRecordError, match=message) as info:
        parse_detection(_with(detection("d-1"), field, value))
    assert isinstance(info.value, ValueError) and info.value.field.startswith(field)


def test_a_detection_result_is_normalised() -> None:
    result = detection("d-1", created="2026-11-25T12:00:00+02:00")
    result["study"]["pixel_spacing_mm"] = 1.25
    result["model"]["version"] = 3
    result["extra_field_from_a_newer_server"] = {"ignored": True}
    parsed = parse_detection(result)
    assert parsed["detection"]["created_utc"] == "2026-11-25T10:00:00.000000Z"
    assert parsed["study"]["pixel_spacing_row_mm"] == parsed["study"]["pixel_spacing_col_mm"] == 1.25
    assert parsed["model"]["version"] == "3"
    naive = parse_detection(detection("d-1", created="2026-11-25T12:00:00"))
    assert naive["detection"]["created_utc"] == "2026-11-25T12:00:00.000000Z"  # no offset: taken as UTC
    assert parse_detection(detection("d-1", uncertainty=None, timings=None))["detection"]["uncertainty_std"] is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("correction_id", None, "'correction_id' must be a non-empty string id"),
        ("study_label", 2, r"'study_label' must be one of \[0, 1\]"),
        ("slice_labels", [0, 3], r"'slice_labels\[1\]' must be one of \[0, 1\]"),
        ("slice_labels", None, "'slice_labels' must be a list"),
        ("source", "CT", r"'source' must be one of \['LGE', 'visual'\]"),
        ("reviewer", 7, "'reviewer' must be a string"),
        ("study_uid", "", "'study_uid' must be a non-empty string id"),
        ("created_utc", "2026-13-45", "'created_utc' is not an ISO 8601 time"),
    ],
)
def test_a_bad_correction_is_refused_naming_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidRecordError, match=message):
        parse_correction(_with(correction("c-1"), field, value))


@pytest.mark.parametrize("field", ["correction_id", "study_uid", "study_label", "slice_labels", "source", "reviewer"])
def test_a_correction_without_a_required_field_is_refused_naming_it(field: str) -> None:
    with pytest.raises(InvalidRecordError, match=f"missing field '{field}'"):
        parse_correction(_without(correction("c-1"), field))


def test_a_correction_accepts_json_booleans_and_a_missing_comment() -> None:
    row = parse_correction(_without(correction("c-1", slice_labels=[True, False, None]), "comment"))
    assert row["slice_labels"] == [1, 0, None] and row["comment"] == "" and row["created_utc"] is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("status", "done", r"'status' must be one of \['queued', 'running', 'finished', 'failed', 'stopped'\]"),
        ("started_utc", None, "'started_utc' must be an ISO 8601 time"),
        ("finished_utc", "2026-11-25T08:00:00Z", "'finished_utc' .* is before started_utc"),
        ("metrics", [0.9], "'metrics' must be an object"),
        ("options", {"bad": float("inf")}, "'options' must be JSON-encodable"),
        ("model_name", "", "'model_name' must not be empty"),
    ],
)
def test_a_bad_training_run_is_refused_naming_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidRecordError, match=message):
        parse_training_run(_with(training_run("r-1"), field, value))
