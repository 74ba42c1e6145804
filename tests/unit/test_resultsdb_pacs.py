"""Schema v4: ``pacs_exports``, what a detection was written to a PACS as (DICOM SR + Segmentation, by UID).

Real SQLite files and, where the PostgreSQL server binaries are installed, a throwaway PostgreSQL cluster
(conftest_postgres.py); the v3 database is hand-written, like the v1 one of test_resultsdb.py."""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from stran.resultsdb import (
    SCHEMA_VERSION,
    ConflictError,
    InvalidRecordError,
    ResultsDB,
    ResultsDBError,
    database_url,
    now_utc,
    pacs_base_url,
    parse_pacs_export,
)
from stran.resultsdb import schema as S
from stran.resultsdb.pacs import put_pacs_export

try:
    from conftest_postgres import backend_url, postgres_server, postgres_url  # noqa: F401  (fixtures)
    from test_resultsdb import (
        PACS_URL,
        SHA_A,
        SHA_B,
        TIMESTAMP,
        UID_ROOT,
        V1_DDL,
        V1_ROWS,
        correction,
        detection,
        fill,
        pacs_export,
        raw_rows,
        run_sql,
        training_run,
    )
except ImportError:  # tests/ made a package
    from tests.unit.conftest_postgres import backend_url, postgres_server, postgres_url  # noqa: F401
    from tests.unit.test_resultsdb import (
        PACS_URL,
        SHA_A,
        SHA_B,
        TIMESTAMP,
        UID_ROOT,
        V1_DDL,
        V1_ROWS,
        correction,
        detection,
        fill,
        pacs_export,
        raw_rows,
        run_sql,
        training_run,
    )

STUDY = "1.2.826.0.1.3680043.8.498.1"
PASSWORD = "s3cret-Pa55"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.tok3n"


# ----------------------------------------------------------------------------- recording and reading back


def test_an_export_is_recorded_and_read_back(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        db.record_detection(detection("d-0001"))
        db.record_detection(detection("d-0002", study_uid="1.2.3.2", patient_id="PAT-2", model_sha=SHA_B,
                                      model={"name": "stran", "version": "0.2.0", "sha256": SHA_B}))
        export_id = db.record_pacs_export(pacs_export("d-0001"))
        assert len(export_id) == 32  # made by the database (hex uuid4)
        # keywords win over the mapping; a detection stored without a map; the pacs record's extra keys are ignored
        assert db.record_pacs_export({"url": "ignored", "error": None, **pacs_export("d-0002", n=2, with_map=False)},
                                     export_id="e-2", stored_utc="2026-11-25T12:00:00+01:00", model_sha256=SHA_B.upper()) == "e-2"
        rows = db.pacs_exports()
        assert [r["export_id"] for r in rows] == [export_id, "e-2"]  # oldest store first
        first, second = rows
        assert first == {
            "export_id": export_id, "detection_id": "d-0001", "study_uid": STUDY, "pacs_url": PACS_URL,
            "model_sha256": SHA_A,  # taken from the detection
            "sr_series_uid": f"{UID_ROOT}101", "sr_sop_uid": f"{UID_ROOT}101.1",
            "map_series_uid": f"{UID_ROOT}102", "map_sop_uid": f"{UID_ROOT}102.1", "map_kind": "SEG",
            "stored_utc": "2026-11-25T10:05:00.000000Z", "recorded_utc": first["recorded_utc"],
        }
        assert TIMESTAMP.match(first["recorded_utc"])
        assert second["study_uid"] == "1.2.3.2" and second["model_sha256"] == SHA_B
        assert second["map_series_uid"] is second["map_sop_uid"] is second["map_kind"] is None
        assert second["stored_utc"] == "2026-11-25T11:00:00.000000Z"
        assert [r["export_id"] for r in db.pacs_exports(study_uid="1.2.3.2")] == ["e-2"]
        assert [r["export_id"] for r in db.pacs_exports(detection_id="d-0001")] == [export_id]
        assert db.pacs_exports(study_uid=STUDY, detection_id="d-0002") == []
        assert db.counts()["pacs_exports"] == 2 and db.rows("pacs_exports") == sorted(rows, key=lambda r: r["export_id"])
        assert db.snapshot(["pacs_exports"])["pacs_exports"] == db.rows("pacs_exports")
        # without stored_utc the time of recording is taken
        db.record_detection(detection("d-0003", study_uid="1.2.3.3", patient_id="PAT-3"))
        before = now_utc()
        db.record_pacs_export(pacs_export("d-0003", n=3, stored_utc=None))
        (third,) = db.pacs_exports(detection_id="d-0003")
        assert before <= third["stored_utc"] == third["recorded_utc"] <= now_utc()


def test_the_same_model_on_two_detections_and_two_pacs_gives_separate_exports(backend_url: str) -> None:
    """Running the same model again writes the same SR UIDs (a new detection), and one detection may go to two PACS."""
    with ResultsDB(backend_url) as db:
        db.record_detection(detection("d-0001"))
        db.record_detection(detection("d-0002"))
        a = db.record_pacs_export(pacs_export("d-0001"))
        b = db.record_pacs_export(pacs_export("d-0002"))
        c = db.record_pacs_export(pacs_export("d-0001", pacs_url="https://research-pacs.example.org/dicom-web"))
        assert len({a, b, c}) == 3
        assert {e["sr_sop_uid"] for e in db.pacs_exports(study_uid=STUDY)} == {f"{UID_ROOT}101.1"}


def test_a_detection_result_with_a_pacs_record_records_the_export_with_it(backend_url: str) -> None:
    """``stran detect`` and the Slicer module record a result JSON as it is: its ``pacs`` record goes in too, in the
    same transaction; a record holding an ``error`` (nothing stored) does not."""
    stored = pacs_export("d-0001")
    record = {"url": "http://reader:pw@pacs.example.org:8042/dicom-web", **{
        k: v for k, v in stored.items() if k not in ("detection_id", "pacs_url")}}
    with ResultsDB(backend_url) as db:
        db.record_detection({**detection("d-0001"), "pacs": record})
        db.record_detection({**detection("d-0002"), "pacs": {"url": PACS_URL, "error": "no answer from the PACS"}})
        (row,) = db.pacs_exports()
        assert row["detection_id"] == "d-0001" and row["sr_sop_uid"] == stored["sr_sop_uid"]
        assert row["pacs_url"] == "http://pacs.example.org:8042/dicom-web" and row["model_sha256"] == SHA_A
        db.record_detection({**detection("d-0001"), "pacs": record})  # the same result again: nothing new
        assert len(db.pacs_exports()) == 1 and db.counts()["detections"] == 2


def test_recording_the_same_export_twice_stores_it_once(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        fill(db)  # holds export e-0001 of d-0001
        before = db.snapshot()
        assert db.record_pacs_export(pacs_export("d-0001"), export_id="e-0001") == "e-0001"
        # without its id, by the identifying fields (detection, URL, SR SOP UID): the stored id comes back
        assert db.record_pacs_export(pacs_export("d-0001")) == "e-0001"
        # the same server written differently, study and model given: still the same export
        assert db.record_pacs_export(pacs_export("d-0001", pacs_url="HTTP://reader:pw@127.0.0.1:8042/dicom-web/?x=1",
                                                 study_uid=STUDY, model_sha256=SHA_A, map_kind="seg")) == "e-0001"
        # stored again later (the same instances): the first store's time is kept
        assert db.record_pacs_export(pacs_export("d-0001", stored_utc="2026-11-26T09:00:00Z")) == "e-0001"
        assert db.snapshot() == before


@pytest.mark.parametrize(
    ("change", "differing"),
    [
        ({"sr_series_uid": f"{UID_ROOT}999"}, "sr_series_uid"),
        ({"map_sop_uid": f"{UID_ROOT}102.2"}, "map_sop_uid"),
        ({"map_series_uid": None, "map_sop_uid": None, "map_kind": None}, "map_sop_uid"),
        ({"export_id": "e-other"}, "export_id"),  # the same export under another id
    ],
)
def test_a_conflicting_export_is_refused_and_nothing_changes(backend_url: str, change: dict[str, Any], differing: str) -> None:
    with ResultsDB(backend_url) as db:
        fill(db)
        before = db.snapshot()
        with pytest.raises(ConflictError, match=rf"^PACS export 'e-0001' is already stored with different content "
                                                rf"\(differs in .*{differing}: stored") as info:
            db.record_pacs_export({**pacs_export("d-0001"), **change})
        assert info.value.kind == "PACS export" and info.value.record_id == "e-0001" and differing in info.value.differences
        assert db.snapshot() == before


def test_an_export_id_is_not_reused_for_another_export(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        fill(db)
        before = db.snapshot()
        with pytest.raises(ConflictError, match=r"PACS export 'e-0001' .*detection_id: stored 'd-0001', new 'd-0002'"):
            db.record_pacs_export(pacs_export("d-0002", n=2), export_id="e-0001")
        assert db.snapshot() == before


def test_an_export_must_belong_to_a_recorded_detection(backend_url: str) -> None:
    with ResultsDB(backend_url) as db:
        fill(db)
        before = db.snapshot()
        with pytest.raises(InvalidRecordError, match=r"detection 'd-9999' is not in this database \(record the detection first\)") as info:
            db.record_pacs_export(pacs_export("d-9999"))
        assert info.value.field == "detection_id"
        with pytest.raises(InvalidRecordError, match=r"field 'study_uid' is '9.9.9' but detection 'd-0001' has") as info:
            db.record_pacs_export(pacs_export("d-0001", n=5, study_uid="9.9.9"))
        assert info.value.field == "study_uid"
        with pytest.raises(InvalidRecordError, match=r"field 'model_sha256' is 'b{64}' but detection 'd-0001' has 'a{64}'"):
            db.record_pacs_export(pacs_export("d-0001", n=5, model_sha256=SHA_B))
        assert db.snapshot() == before


def test_a_racing_writer_of_the_same_export_is_not_an_error(backend_url: str) -> None:
    """Two writers record the same new export at once: the second waits (SQLite: write lock; PostgreSQL: the unique
    key), then finds the first one's row and returns its id."""
    inserted, release = threading.Event(), threading.Event()
    outcome: list[Any] = []
    with ResultsDB(backend_url) as first, ResultsDB(backend_url) as second:
        first.record_detection(detection("d-0001"))

        def slow_first(conn: Any) -> None:
            put_pacs_export(conn, parse_pacs_export(pacs_export("d-0001", export_id="e-first")), now_utc())
            inserted.set()
            release.wait(30)

        def run_second() -> None:
            try:
                outcome.append(second.record_pacs_export(pacs_export("d-0001")))
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                outcome.append(exc)

        t1 = threading.Thread(target=first._write, args=(slow_first,))
        t1.start()
        assert inserted.wait(30)
        t2 = threading.Thread(target=run_second)
        t2.start()
        time.sleep(0.5)
        assert not outcome
        release.set()
        t1.join(30)
        t2.join(30)
        assert outcome == ["e-first"]
        assert second.counts()["pacs_exports"] == 1


# ----------------------------------------------------------------------------- the URL rule


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("http://127.0.0.1:8042/dicom-web", "http://127.0.0.1:8042/dicom-web"),
        ("  https://PACS.Example.org/DICOM-Web/  ", "https://pacs.example.org/DICOM-Web"),  # host case only
        (f"http://reader:{PASSWORD}@127.0.0.1:8042/dicom-web", "http://127.0.0.1:8042/dicom-web"),
        ("http://reader@127.0.0.1:8042/dicom-web", "http://127.0.0.1:8042/dicom-web"),
        (f"https://host/dicomweb?access_token={TOKEN}&x=1#frag", "https://host/dicomweb"),
        (f"https://u:{PASSWORD}@[::1]:8443/dicom-web/?key={TOKEN}", "https://[::1]:8443/dicom-web"),
        ("https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb",
         "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb"),
    ],
)
def test_a_pacs_url_is_stored_without_credentials_query_or_fragment(given: str, stored: str) -> None:
    assert pacs_base_url(given) == stored
    assert parse_pacs_export(pacs_export(pacs_url=given))["pacs_url"] == stored


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (f"ftp://reader:{PASSWORD}@host/dicom", r"must be an http:// or https:// DICOMweb URL, got scheme 'ftp'"),
        (f"reader:{PASSWORD}@host/dicom-web", "must be an http:// or https:// DICOMweb URL"),
        ("host:8042/dicom-web", "must be an http:// or https:// DICOMweb URL"),
        (f"http://reader:{PASSWORD}@/dicom-web", "must name a host"),
        (f"http://reader:{PASSWORD}@host:99999/dicom-web", r"not a valid URL \(bad host or port\)"),
        (f"http://host/dicom web?token={PASSWORD}", "without spaces or control characters"),
        ("", "must be a DICOMweb URL"),
        (None, "must be a DICOMweb URL"),
        ("https://host/" + "x" * 1100, "longer than 1024 characters"),
    ],
)
def test_a_bad_pacs_url_is_refused_without_showing_it(given: Any, message: str) -> None:
    with pytest.raises(InvalidRecordError, match=message) as info:
        parse_pacs_export(pacs_export(pacs_url=given))
    assert info.value.field == "pacs_url" and isinstance(info.value, ValueError)
    assert PASSWORD not in str(info.value)


def test_credentials_in_the_url_reach_no_table_export_or_file(backend_url: str, tmp_path: Path) -> None:
    url = f"https://reader:{PASSWORD}@pacs.example.org/dicom-web?access_token={TOKEN}"
    with ResultsDB(backend_url) as db:
        db.record_detection(detection("d-0001"))
        db.record_pacs_export(pacs_export("d-0001", pacs_url=url))
        (row,) = db.pacs_exports()
        assert row["pacs_url"] == "https://pacs.example.org/dicom-web"
        dumped = json.dumps(db.snapshot())
        files = db.export_csv(tmp_path / "csv")
    assert PASSWORD not in dumped and TOKEN not in dumped and "reader" not in dumped
    everything = "".join(p.read_text(encoding="utf-8") for p in files)
    assert PASSWORD not in everything and TOKEN not in everything
    if "://" not in backend_url:  # nor anywhere in the SQLite file or its write-ahead log
        for path in Path(backend_url).parent.glob(Path(backend_url).name + "*"):
            raw = path.read_bytes()
            assert PASSWORD.encode() not in raw and TOKEN.encode() not in raw, path.name


# ----------------------------------------------------------------------------- validation (no database)


@pytest.mark.parametrize("field", ["detection_id", "pacs_url", "sr_series_uid", "sr_sop_uid"])
def test_an_export_without_a_required_field_is_refused_naming_it(field: str) -> None:
    export = pacs_export()
    del export[field]
    with pytest.raises(InvalidRecordError, match=rf"missing field '{field}'") as info:
        parse_pacs_export(export)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sr_sop_uid", "1.2.3.abc", "'sr_sop_uid' is not a DICOM UID"),
        ("sr_sop_uid", "1.02.3", "'sr_sop_uid' is not a DICOM UID"),  # a leading zero
        ("sr_series_uid", "1." + "2" * 70, "'sr_series_uid' is not a DICOM UID .*at most 64 characters"),
        ("sr_series_uid", 12, "'sr_series_uid' must be a DICOM UID"),
        ("sr_sop_uid", f"{UID_ROOT}101", "'sr_sop_uid' equals sr_series_uid"),
        ("map_sop_uid", None, "'map_sop_uid' is missing: a map needs both"),
        ("map_series_uid", None, "'map_series_uid' is missing: a map needs both"),
        ("map_sop_uid", f"{UID_ROOT}101.1", "'map_sop_uid' repeats another UID"),
        ("map_kind", "segmentation map", "'map_kind' must be a short DICOM modality"),
        ("stored_utc", "after lunch", "'stored_utc' is not an ISO 8601 time"),
        ("export_id", "has space", "'export_id' may hold only"),
        ("detection_id", "", "'detection_id' must be a non-empty string id"),
        ("model_sha256", " ", "'model_sha256' must not be empty"),
        ("study_uid", "1 2 3", "'study_uid' may hold only"),
    ],
)
def test_an_export_with_a_bad_value_is_refused_naming_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidRecordError, match=message) as info:
        parse_pacs_export({**pacs_export(), field: value})
    assert info.value.field == field
    assert str(info.value).startswith("PACS export") or field == "export_id"  # the id names the record in the others


def test_a_map_kind_needs_a_map_and_is_upper_cased() -> None:
    with pytest.raises(InvalidRecordError, match="'map_kind' is 'SEG' but no map_sop_uid is given"):
        parse_pacs_export(pacs_export(with_map=False, map_kind="SEG"))
    row = parse_pacs_export(pacs_export(map_kind=" seg ", model_sha256=SHA_A.upper(), export_id="e-1"))
    assert row["map_kind"] == "SEG" and row["model_sha256"] == SHA_A and row["export_id"] == "e-1"
    assert parse_pacs_export(pacs_export(with_map=False))["map_kind"] is None


# ----------------------------------------------------------------------------- migration v3 -> v4

#: A version 3 database as the v3 code left it after migrating the hand-written v1 one: its rows, then v2 and v3
#: tables and columns, then rows that use them.
V3_DATABASE = [
    *V1_DDL,
    *V1_ROWS,
    "ALTER TABLE corrections ADD COLUMN sent_utc VARCHAR(32)",
    "ALTER TABLE corrections ADD COLUMN picked_by JSON",
    """CREATE TABLE training_runs (
        run_id VARCHAR(64) NOT NULL PRIMARY KEY, model_name TEXT NOT NULL, status VARCHAR(16) NOT NULL,
        started_utc VARCHAR(32) NOT NULL, finished_utc VARCHAR(32), options JSON, metrics JSON, model_sha256 VARCHAR(128),
        recorded_utc VARCHAR(32) NOT NULL, updated_utc VARCHAR(32) NOT NULL,
        CONSTRAINT ck_training_runs_status CHECK (status IN ('queued', 'running', 'finished', 'failed', 'stopped')))""",
    "CREATE INDEX ix_corrections_sent_utc ON corrections (sent_utc)",
    "CREATE INDEX ix_training_runs_status ON training_runs (status)",
    "UPDATE meta SET value = '3' WHERE key = 'schema_version'",
    "INSERT INTO schema_history VALUES (2, '2026-02-01T08:00:00.000000Z', 'migrated from 1: add training_runs; "
    "add corrections.sent_utc'), (3, '2026-03-01T08:00:00.000000Z', 'migrated from 2: add corrections.picked_by')",
    "UPDATE corrections SET sent_utc = '2026-01-06T09:00:00.000000Z' WHERE correction_id = 'oldc-1'",
    "INSERT INTO corrections VALUES ('oldc-2', '1.2.3', 'img-3', 'old-1', 0, '[0,0,null]', 'LGE', 'r2', 'v3 row', "
    "'2026-03-02T08:00:00.000000Z', '2026-03-02T08:00:00.000000Z', '" + "2" * 64 + "', NULL, "
    "'{\"model_sha256\":\"" + SHA_A + "\",\"score\": 0.61,\"strategy\":\"most_uncertain\"}')",
    "INSERT INTO training_runs VALUES ('oldr-1', 'stran', 'finished', '2026-02-02T08:00:00.000000Z', "
    "'2026-02-02T09:00:00.000000Z', '{\"max_epochs\": 5}', '{\"val_auc\": 0.8}', '" + SHA_A + "', "
    "'2026-02-02T08:00:00.000000Z', '2026-02-02T09:00:00.000000Z')",
]
OLD_TABLES = ("meta", "studies", "models", "detections", "corrections", "training_runs")


def test_a_version_3_database_is_migrated_keeping_its_data(backend_url: str, tmp_path: Path) -> None:
    run_sql(backend_url, *V3_DATABASE)
    before = raw_rows(backend_url, OLD_TABLES)
    with ResultsDB(backend_url) as db:
        assert db.migrated_from == 3 and db.schema_version == SCHEMA_VERSION == 5
        history = db.rows("schema_history")
        assert [h["version"] for h in history] == [1, 2, 3, 4, 5]
        assert history[3]["description"] == "migrated from 3: add pacs_exports" and TIMESTAMP.match(history[3]["applied_utc"])
        assert db.pacs_exports() == []
        (old,) = db.detections()
        assert old["detection_id"] == "old-1" and old["slice_probabilities"] == [0.2, None, 0.9]
        corrections = {c["correction_id"]: c for c in db.corrections()}
        assert corrections["oldc-1"]["sent_utc"] == "2026-01-06T09:00:00.000000Z"
        assert corrections["oldc-2"]["picked_by"] == {"model_sha256": SHA_A, "score": 0.61, "strategy": "most_uncertain"}
        assert db.training_runs()[0]["metrics"] == {"val_auc": 0.8}
        # the new table works with the old rows, and the old rules still hold
        export_id = db.record_pacs_export(pacs_export("old-1"))
        assert db.pacs_exports(study_uid="1.2.3")[0]["export_id"] == export_id
        assert db.pacs_exports()[0]["model_sha256"] == SHA_A
        with pytest.raises(InvalidRecordError, match="has 3 slices"):
            db.record_correction(correction("c-0002", study_uid="1.2.3"))
        with pytest.raises(ConflictError, match="already ended"):
            db.record_training_run(training_run("oldr-1", started_utc="2026-02-02T08:00:00Z", options={"max_epochs": 5},
                                                status="failed"))
        paths = db.export_csv(tmp_path / "csv")
    after = raw_rows(backend_url, OLD_TABLES)
    assert after["meta"] == [r if r[0] != "schema_version" else ("schema_version", "5") for r in before["meta"]]
    # every old row as it was, with NULL in the columns v5 adds at the end of detections and corrections
    added = {"detections": (None,), "corrections": (None,)}
    assert {t: after[t] for t in OLD_TABLES[1:]} == {t: [r + added.get(t, ()) for r in before[t]] for t in OLD_TABLES[1:]}
    assert (tmp_path / "csv" / "pacs_exports.csv") in paths
    with ResultsDB(backend_url) as db:
        assert db.migrated_from is None and db.schema_version == 5
        assert db.counts() == {"schema_history": 5, "studies": 1, "models": 1, "detections": 1, "corrections": 2,
                               "training_runs": 1, "pacs_exports": 1}


def test_a_failed_migration_to_version_4_leaves_the_version_3_database_as_it_was(backend_url: str) -> None:
    """All or nothing: a table named pacs_exports that is not ours makes the step fail; nothing else changes."""
    run_sql(backend_url, *V3_DATABASE, "CREATE TABLE pacs_exports (someone_elses INTEGER)",
            "INSERT INTO pacs_exports VALUES (7)")
    before = raw_rows(backend_url, OLD_TABLES)
    with pytest.raises(ResultsDBError, match="refused the write"):
        ResultsDB(backend_url)
    assert raw_rows(backend_url, OLD_TABLES) == before  # schema_version still 3
    engine = create_engine(database_url(backend_url))
    try:
        with engine.connect() as conn:
            assert [r[0] for r in conn.execute(text("SELECT version FROM schema_history ORDER BY 1"))] == [1, 2, 3]
            assert conn.execute(text("SELECT someone_elses FROM pacs_exports")).scalar_one() == 7
    finally:
        engine.dispose()


def test_a_version_1_database_failing_at_step_4_keeps_none_of_steps_2_and_3(backend_url: str) -> None:
    """The steps v1 -> v2 -> v3 -> v4 run in one transaction: when the last fails, the first two are undone too."""
    run_sql(backend_url, *V1_DDL, *V1_ROWS, "CREATE TABLE pacs_exports (someone_elses INTEGER)")
    with pytest.raises(ResultsDBError, match="refused the write"):
        ResultsDB(backend_url)
    engine = create_engine(database_url(backend_url))
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            assert "training_runs" not in tables and "pacs_exports" in tables
            assert "sent_utc" not in {c["name"] for c in inspect(conn).get_columns("corrections")}
            assert conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar_one() == "1"
            assert conn.execute(text("SELECT COUNT(*) FROM schema_history")).scalar_one() == 1
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- CSV export


def test_csv_export_has_the_pacs_exports_file(backend_url: str, tmp_path: Path) -> None:
    out = tmp_path / "csv"
    with ResultsDB(backend_url) as db:
        fill(db)
        db.record_pacs_export(pacs_export("d-0002", n=2, with_map=False), export_id="e-0002")
        paths = db.export_csv(out)
    assert [p.name for p in paths][-2:] == ["pacs_exports.csv", "manifest.json"]
    with open(out / "pacs_exports.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
        assert list(rows[0]) == [c.name for c in S.pacs_exports.columns] == [
            "export_id", "detection_id", "study_uid", "pacs_url", "model_sha256", "sr_series_uid", "sr_sop_uid",
            "map_series_uid", "map_sop_uid", "map_kind", "stored_utc", "recorded_utc"]
    by_id = {r["export_id"]: r for r in rows}
    assert by_id["e-0001"]["map_kind"] == "SEG" and by_id["e-0001"]["pacs_url"] == PACS_URL
    assert by_id["e-0001"]["sr_sop_uid"] == f"{UID_ROOT}101.1" and by_id["e-0001"]["study_uid"] == STUDY
    assert by_id["e-0002"]["map_sop_uid"] == by_id["e-0002"]["map_kind"] == ""  # NULL: no map
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"]["pacs_exports"] == 2 and "pacs_exports.csv" in manifest["files"]
    assert manifest["schema_version"] == SCHEMA_VERSION == 5
