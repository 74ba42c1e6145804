"""Schema v5: the 17 AHA segments, ``detections.segment_probabilities`` and ``corrections.segment_labels``.

Real SQLite files and, where the PostgreSQL server binaries are installed, a throwaway PostgreSQL cluster
(conftest_postgres.py); the v4 database is hand-written, like the v1 and v3 ones, and holds a detection and a
correction recorded by the v4 code (their ``payload_sha256`` values are what v4 computed), so that sending them
again after the upgrade must be recognised as the same records."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from stran.resultsdb import (
    N_SEGMENTS,
    SCHEMA_VERSION,
    ConflictError,
    InvalidRecordError,
    ResultsDB,
    ResultsDBError,
    database_url,
    parse_correction,
    parse_detection,
)
from stran.resultsdb import schema as S

try:
    from conftest_postgres import backend_url, postgres_server, postgres_url  # noqa: F401  (fixtures)
    from test_resultsdb import SHA_B, TIMESTAMP, correction, detection, raw_rows, run_sql
    from test_resultsdb_pacs import V3_DATABASE
except ImportError:  # tests/ made a package
    from tests.unit.conftest_postgres import backend_url, postgres_server, postgres_url  # noqa: F401
    from tests.unit.test_resultsdb import SHA_B, TIMESTAMP, correction, detection, raw_rows, run_sql
    from tests.unit.test_resultsdb_pacs import V3_DATABASE

REPO = Path(__file__).resolve().parents[2]
#: 17 probabilities in AHA order; segment 17 (the apex) not scored.
SEGMENTS = [round(0.05 * k, 2) for k in range(1, 17)] + [None]
#: 17 labels in AHA order: an LAD-territory scar (1, 7, 13, 14), segment 17 not assessed.
SEGMENT_LABELS = [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, None]


def per_segment(rows: list[tuple[Any, ...]]) -> dict[tuple[str, int], float | None]:
    return {(str(r[0]), int(r[1])): (None if r[2] is None else float(r[2])) for r in rows}


# ----------------------------------------------------------------------------- recording


def test_segment_values_are_recorded_and_read_back(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        db.record_detection(detection("d-seg", segment_probabilities=SEGMENTS))
        db.record_detection(detection("d-none", study_uid="1.2.3.2", patient_id="P2", segment_probabilities=None))
        db.record_detection(detection("d-absent", study_uid="1.2.3.3", patient_id="P3"))  # an older server: no field
        db.record_correction(correction("c-seg", segment_labels=[bool(v) if v is not None else None for v in SEGMENT_LABELS]))
        db.record_correction(correction("c-none"))
        rows = {d["detection_id"]: d for d in db.detections()}
        assert rows["d-seg"]["segment_probabilities"] == SEGMENTS
        assert rows["d-none"]["segment_probabilities"] is None and rows["d-absent"]["segment_probabilities"] is None
        labels = {c["correction_id"]: c["segment_labels"] for c in db.corrections()}
        assert labels == {"c-seg": SEGMENT_LABELS, "c-none": None}  # JSON true/false stored as 1/0
        assert all(type(v) is int for v in labels["c-seg"] if v is not None)
    engine = create_engine(database_url(backend_url))
    try:
        with engine.connect() as conn:  # SQL NULL, not the JSON text 'null', for an absent list
            nulls = conn.execute(text("SELECT detection_id FROM detections WHERE segment_probabilities IS NULL "
                                      "ORDER BY 1")).scalars().all()
            assert nulls == ["d-absent", "d-none"]
    finally:
        engine.dispose()


def test_recording_again_is_a_no_op_and_other_segment_values_conflict(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        first = detection("d-1", segment_probabilities=SEGMENTS)
        db.record_detection(first)
        db.record_detection(json.loads(json.dumps(first)))  # the same result, sent again
        changed = dict(first, segment_probabilities=[0.5] * N_SEGMENTS)
        with pytest.raises(ConflictError, match=r"detection 'd-1' .*differs in segment_probabilities"):
            db.record_detection(changed)
        with pytest.raises(ConflictError, match="differs in segment_probabilities"):
            db.record_detection(dict(first, segment_probabilities=None))
        label = correction("c-1", segment_labels=SEGMENT_LABELS)
        db.record_correction(label)
        db.record_correction(label)
        with pytest.raises(ConflictError, match=r"correction 'c-1' .*differs in segment_labels"):
            db.record_correction(dict(label, segment_labels=[0] * N_SEGMENTS))
        with pytest.raises(ConflictError, match="differs in segment_labels"):
            db.record_correction(dict(label, segment_labels=None))
        ids = db.record_many(detections=[detection("d-2", study_uid="1.2.3.2", patient_id="P2", segment_probabilities=SEGMENTS)],
                             corrections=[correction("c-2", study_uid="1.2.3.2", segment_labels=SEGMENT_LABELS)])
        assert ids["detections"] == ["d-2"] and ids["corrections"] == ["c-2"]
        assert db.counts()["detections"] == 2 and db.counts()["corrections"] == 2
        assert db.detections(study_uid="1.2.3.2")[0]["segment_probabilities"] == SEGMENTS


def test_records_without_segments_hash_as_before_v5() -> None:
    """A detection or correction without segment values gives the same normalised record as v4 (plus the new field
    as None), so the hash the database keeps for it does not change with the upgrade (see the v4 database below)."""
    parsed = parse_detection(detection("d-1"))
    assert parsed["detection"]["segment_probabilities"] is None
    assert parse_detection(detection("d-1", segment_probabilities=[]))["detection"]["segment_probabilities"] is None
    assert parse_correction(correction("c-1"))["segment_labels"] is None
    assert parse_correction(correction("c-1", segment_labels=[]))["segment_labels"] is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([0.5] * 16, r"'segment_probabilities' has 16 entries; it needs 17 \(AHA segments 1-17 in order"),
        ([0.5] * 18, "has 18 entries; it needs 17"),
        ("0.5", r"'segment_probabilities' must be a list of 17 entries .*got '0.5'"),
        ({"1": 0.5}, "'segment_probabilities' must be a list of 17 entries"),
        ([0.5] * 3 + [1.5] + [0.5] * 13, r"'segment_probabilities\[3\]' must lie in \[0.0, 1.0\], got 1.5"),
        ([0.5] * 16 + ["high"], r"'segment_probabilities\[16\]' must be a number"),
        ([0.5] * 16 + [float("nan")], r"'segment_probabilities\[16\]' must be finite"),
    ],
)
def test_bad_segment_probabilities_are_refused_naming_the_field(value: Any, message: str) -> None:
    with pytest.raises(InvalidRecordError, match=message) as caught:
        parse_detection(detection("d-bad", segment_probabilities=value))
    assert str(caught.value).startswith("detection 'd-bad': ")
    assert caught.value.field.startswith("segment_probabilities")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1] * 16, r"'segment_labels' has 16 entries; it needs 17"),
        ([0] * 16 + [2], r"'segment_labels\[16\]' must be one of \[0, 1\], got 2"),
        ([0.5] + [0] * 16, r"'segment_labels\[0\]' must be an integer"),
        ("1" * 17, "'segment_labels' must be a list of 17 entries"),
    ],
)
def test_bad_segment_labels_are_refused_naming_the_field(value: Any, message: str) -> None:
    with pytest.raises(InvalidRecordError, match=message) as caught:
        parse_correction(correction("c-bad", segment_labels=value))
    assert str(caught.value).startswith("correction 'c-bad': ")


def test_a_bad_segment_list_in_a_batch_stores_nothing(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        with pytest.raises(InvalidRecordError, match=r"^detections\[1\]: .*segment_probabilities"):
            db.record_many(detections=[detection("d-1"), detection("d-2", segment_probabilities=[0.1] * 5)])
        assert db.counts()["detections"] == 0


# ----------------------------------------------------------------------------- CSV export and SQL


def test_csv_export_has_the_segment_columns(backend_url: str, tmp_path: Path) -> None:
    with ResultsDB(backend_url) as db:
        db.record_detection(detection("d-seg", segment_probabilities=SEGMENTS))
        db.record_detection(detection("d-none", study_uid="1.2.3.2", patient_id="P2"))
        db.record_correction(correction("c-seg", detection_id="d-seg", segment_labels=SEGMENT_LABELS))
        db.record_correction(correction("c-none"))
        db.export_csv(tmp_path)
    with open(tmp_path / "detections.csv", newline="", encoding="utf-8") as handle:
        detections = {r["detection_id"]: r for r in csv.DictReader(handle)}
    with open(tmp_path / "corrections.csv", newline="", encoding="utf-8") as handle:
        corrections = {r["correction_id"]: r for r in csv.DictReader(handle)}
    assert detections["d-seg"]["segment_probabilities"] == json.dumps(SEGMENTS, separators=(",", ":"))
    assert json.loads(detections["d-seg"]["segment_probabilities"]) == SEGMENTS
    assert detections["d-none"]["segment_probabilities"] == ""  # NULL: the model had no segment output
    assert json.loads(corrections["c-seg"]["segment_labels"]) == SEGMENT_LABELS and corrections["c-none"]["segment_labels"] == ""
    header = list(detections["d-seg"])
    assert header == [c.name for c in S.detections.columns] and header[-1] == "segment_probabilities"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION == 5


#: The per-segment queries of docs/results-database.md (one row per detection and segment, segment numbered 1-17).
SQLITE_SEGMENTS = """SELECT d.detection_id, s.key + 1 AS segment, s.value AS probability
FROM detections AS d, json_each(d.segment_probabilities) AS s
ORDER BY d.detection_id, segment"""
POSTGRES_SEGMENTS = """SELECT d.detection_id, s.segment, (s.value #>> '{}')::float AS probability
FROM detections AS d CROSS JOIN LATERAL json_array_elements(d.segment_probabilities) WITH ORDINALITY AS s(value, segment)
ORDER BY d.detection_id, s.segment"""
SQLITE_AGREEMENT = """SELECT p.key + 1 AS segment, p.value AS probability, l.value AS label
FROM corrections AS c JOIN detections AS d ON d.detection_id = c.detection_id,
     json_each(d.segment_probabilities) AS p, json_each(c.segment_labels) AS l
WHERE p.key = l.key AND l.value IS NOT NULL"""
POSTGRES_AGREEMENT = """SELECT p.segment, (p.value #>> '{}')::float AS probability, (l.value #>> '{}')::int AS label
FROM corrections AS c JOIN detections AS d ON d.detection_id = c.detection_id
CROSS JOIN LATERAL json_array_elements(d.segment_probabilities) WITH ORDINALITY AS p(value, segment)
CROSS JOIN LATERAL json_array_elements(c.segment_labels) WITH ORDINALITY AS l(value, segment)
WHERE p.segment = l.segment AND l.value::text <> 'null'"""


def test_the_documented_per_segment_queries_work(backend_url: str) -> None:
    docs = re.sub(r"\s+", " ", (REPO / "docs" / "results-database.md").read_text(encoding="utf-8"))
    for query in (SQLITE_SEGMENTS, POSTGRES_SEGMENTS, SQLITE_AGREEMENT, POSTGRES_AGREEMENT):
        assert re.sub(r"\s+", " ", query) in docs, query[:60]
    with ResultsDB(backend_url) as db:
        db.record_detection(detection("d-seg", segment_probabilities=SEGMENTS))
        db.record_detection(detection("d-none", study_uid="1.2.3.2", patient_id="P2"))
        db.record_correction(correction("c-seg", detection_id="d-seg", segment_labels=SEGMENT_LABELS))
        postgres = db.dialect == "postgresql"
    engine = create_engine(database_url(backend_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(POSTGRES_SEGMENTS if postgres else SQLITE_SEGMENTS)).all()
            agreement = conn.execute(text(POSTGRES_AGREEMENT if postgres else SQLITE_AGREEMENT)).all()
    finally:
        engine.dispose()
    assert per_segment(rows) == {("d-seg", k + 1): SEGMENTS[k] for k in range(N_SEGMENTS)}  # none for d-none
    assert sorted((int(s), float(p), int(lab)) for s, p, lab in agreement) == [
        (k + 1, SEGMENTS[k], SEGMENT_LABELS[k]) for k in range(16)]  # segment 17: not assessed


# ----------------------------------------------------------------------------- migration v4 -> v5

V4_DETECTION = detection("v4-d-1", study_uid="1.2.4", patient_id="PAT-4", slices=4, model_sha=SHA_B)
V4_CORRECTION = correction("v4-c-1", study_uid="1.2.4", detection_id="v4-d-1", created_utc="2026-04-02T08:00:00Z")
#: A version 4 database: the v3 one, the v4 table, and a detection and a correction as the v4 code stored them
#: (``record_detection(V4_DETECTION)``, ``record_correction(V4_CORRECTION, sent_utc=...)`` with ST-RAN Scar at v4).
V4_DATABASE = [
    *V3_DATABASE,
    """CREATE TABLE pacs_exports (
        export_id VARCHAR(64) NOT NULL PRIMARY KEY, detection_id VARCHAR(64) NOT NULL REFERENCES detections (detection_id),
        study_uid VARCHAR(128) NOT NULL, pacs_url VARCHAR(1024) NOT NULL, model_sha256 VARCHAR(128) NOT NULL,
        sr_series_uid VARCHAR(64) NOT NULL, sr_sop_uid VARCHAR(64) NOT NULL, map_series_uid VARCHAR(64),
        map_sop_uid VARCHAR(64), map_kind VARCHAR(16), stored_utc VARCHAR(32) NOT NULL, recorded_utc VARCHAR(32) NOT NULL,
        CONSTRAINT uq_pacs_exports_detection_id UNIQUE (detection_id, pacs_url, sr_sop_uid))""",
    "UPDATE meta SET value = '4' WHERE key = 'schema_version'",
    "INSERT INTO schema_history VALUES (4, '2026-04-01T08:00:00.000000Z', 'migrated from 3: add pacs_exports')",
    "INSERT INTO models VALUES ('" + SHA_B + "', 'stran', '0.1.0', '\"phantom-cohort-v1\"', '2026-04-02T07:00:00.000000Z')",
    "INSERT INTO studies VALUES ('1.2.4', 'anon-3f9ce9cfbcffb531ab6bdc2e', NULL, '[\"1.2.4.1\"]', 'SIEMENS', 1.5, 4, 25, "
    "1.8, 1.8, 8.0, 923.5, '2026-04-02T07:00:00.000000Z', '2026-04-02T07:00:00.000000Z')",
    "INSERT INTO detections (detection_id, study_uid, image_id, model_sha256, study_probability, threshold, prediction, "
    "prediction_label, slice_probabilities, uncertainty, uncertainty_std, uncertainty_entropy, "
    "uncertainty_mutual_information, input_summary, timings, total_ms, created_utc, recorded_utc, payload_sha256) "
    "VALUES ('v4-d-1', '1.2.4', 'case_0001', '" + SHA_B + "', 0.83, 0.5, 1, 'scar', '[0.12,0.91,null,0.44]', "
    "'{\"entropy\": 0.52,\"method\":\"mc_dropout\",\"mutual_information\": 0.013,\"samples\": 20,\"std\": 0.041}', 0.041, "
    "0.52, 0.013, '{\"crop_mm\": 128,\"phases\": 25,\"resampled_phases\": 25,\"slices\": 4}', "
    "'{\"inference_ms\": 1333.5,\"preprocess_ms\": 412.0,\"total_ms\": 1801.25}', 1801.25, '2026-11-25T10:00:00.000000Z', "
    "'2026-04-02T07:00:00.000000Z', '62f6181d51c50f29a85218c53208552fe1128b29635f0b6774e8bc1c5fc86e3c')",
    "INSERT INTO corrections VALUES ('v4-c-1', '1.2.4', 'case_0001', 'v4-d-1', 1, '[0,1,null,1]', 'LGE', 'reader-1', "
    "'inferolateral scar on LGE', '2026-04-02T08:00:00.000000Z', '2026-04-02T08:00:01.000000Z', "
    "'b5159809acd35d0f740d35ef3cf127add181f000cbd05018fd0c64a18b63f487', '2026-04-02T09:00:00.000000Z', NULL)",
]
OLD_TABLES = ("meta", "schema_history", "studies", "models", "detections", "corrections", "training_runs", "pacs_exports")


def _columns(url: str, table: str) -> list[str]:
    engine = create_engine(database_url(url))
    try:
        with engine.connect() as conn:
            return [c["name"] for c in inspect(conn).get_columns(table)]
    finally:
        engine.dispose()


def test_a_version_4_database_is_migrated_keeping_its_data(backend_url: str, tmp_path: Path) -> None:
    run_sql(backend_url, *V4_DATABASE)
    before = raw_rows(backend_url, OLD_TABLES)
    with ResultsDB(backend_url) as db:
        assert db.migrated_from == 4 and db.schema_version == SCHEMA_VERSION == 5
        history = db.rows("schema_history")
        assert [h["version"] for h in history] == [1, 2, 3, 4, 5]
        assert history[4]["description"] == ("migrated from 4: add detections.segment_probabilities; "
                                             "add corrections.segment_labels")
        assert TIMESTAMP.match(history[4]["applied_utc"])
        assert all(d["segment_probabilities"] is None for d in db.detections())
        assert all(c["segment_labels"] is None for c in db.corrections())
        # what the Slicer module's queue or `stran export --import-json` may send again after the upgrade: the same
        # records, recognised by their v4 hashes (no conflict, nothing new)
        assert db.record_detection(V4_DETECTION) == "v4-d-1"
        assert db.record_correction(V4_CORRECTION, sent_utc="2026-04-02T09:00:00Z") == "v4-c-1"
        assert db.counts()["detections"] == 2 and db.counts()["corrections"] == 3
        # ... while adding segment values to them is a change, refused like any other
        with pytest.raises(ConflictError, match="differs in segment_probabilities"):
            db.record_detection(dict(V4_DETECTION, segment_probabilities=SEGMENTS))
        # the new columns work beside the old rows
        db.record_detection(detection("v5-d-1", study_uid="1.2.4", patient_id="PAT-4", slices=4, model_sha=SHA_B,
                                      segment_probabilities=SEGMENTS))
        db.record_correction(correction("v5-c-1", study_uid="1.2.4", detection_id="v5-d-1", segment_labels=SEGMENT_LABELS))
        assert db.detections(study_uid="1.2.4")[-1]["segment_probabilities"] == SEGMENTS
        db.export_csv(tmp_path / "csv")
    after = raw_rows(backend_url, OLD_TABLES)
    assert after["meta"] == [r if r[0] != "schema_version" else ("schema_version", "5") for r in before["meta"]]
    assert after["schema_history"][:4] == before["schema_history"]
    added = {"detections": (None,), "corrections": (None,)}  # the v5 columns, at the end, NULL for every old row
    for table in OLD_TABLES[2:]:
        old = [r + added.get(table, ()) for r in before[table]]
        assert [r for r in after[table] if r in old] == old, table  # every old row as it was
    with open(tmp_path / "csv" / "detections.csv", newline="", encoding="utf-8") as handle:
        cells = {r["detection_id"]: r["segment_probabilities"] for r in csv.DictReader(handle)}
    assert cells == {"old-1": "", "v4-d-1": "", "v5-d-1": json.dumps(SEGMENTS, separators=(",", ":"))}
    with ResultsDB(backend_url) as db:
        assert db.migrated_from is None and db.schema_version == 5


def test_a_migrated_database_has_the_columns_of_a_new_one(backend_url: str, tmp_path: Path) -> None:
    """The v5 columns go at the end of their tables in both, so ``SELECT *`` gives the same columns either way."""
    run_sql(backend_url, *V4_DATABASE)
    ResultsDB(backend_url).close()
    fresh = str(tmp_path / "fresh.sqlite")
    ResultsDB(fresh).close()
    for table in ("detections", "corrections"):
        assert _columns(backend_url, table) == _columns(fresh, table) == [c.name for c in getattr(S, table).columns]


def test_a_failed_migration_to_version_5_leaves_the_version_4_database_as_it_was(backend_url: str) -> None:
    """All or nothing: a column corrections.segment_labels that is not ours makes the second half of step 5 fail;
    the first half (detections.segment_probabilities) is undone with it, and nothing else changes."""
    run_sql(backend_url, *V4_DATABASE, "ALTER TABLE corrections ADD COLUMN segment_labels TEXT",
            "UPDATE corrections SET segment_labels = 'someone else''s' WHERE correction_id = 'v4-c-1'")
    before = raw_rows(backend_url, OLD_TABLES)
    with pytest.raises(ResultsDBError, match="refused the write"):
        ResultsDB(backend_url)
    assert raw_rows(backend_url, OLD_TABLES) == before  # schema_version still 4, history 1-4
    assert "segment_probabilities" not in _columns(backend_url, "detections")
    assert [r[0] for r in before["schema_history"]] == [1, 2, 3, 4]
