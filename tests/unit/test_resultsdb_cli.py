"""``stran export``: JSON files in, CSV out, end to end (SQLite file and, when available, PostgreSQL)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stran import cli
from stran.resultsdb import ResultsDB

try:
    from conftest_postgres import backend_url, postgres_server, postgres_url  # noqa: F401  (fixtures)
    from test_resultsdb import PACS_URL, correction, detection, pacs_export, training_run
except ImportError:  # tests/ made a package
    from tests.unit.conftest_postgres import backend_url, postgres_server, postgres_url  # noqa: F401
    from tests.unit.test_resultsdb import PACS_URL, correction, detection, pacs_export, training_run

REPO = Path(__file__).resolve().parents[2]


def export(argv: list[str]) -> int:
    """The export command exactly as ``stran export`` runs it (a user's mistake: one line on stderr, status 2)."""
    return cli.main(["export", *argv])


def write_inputs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(3):
        path = folder / f"result_{i}.json"
        path.write_text(json.dumps(detection(f"d-{i}", study_uid=f"1.2.3.{i}", patient_id=f"PAT-{i}")))
        files.append(path)
    both = folder / "batch.json"  # a list: one more detection and a correction
    both.write_text(json.dumps([detection("d-9", study_uid="1.2.3.9", patient_id="PAT-9"),
                                correction("c-1", study_uid="1.2.3.0")]))
    files.append(both)
    return files


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_import_json_then_export_csv(backend_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = write_inputs(tmp_path / "in")
    out = tmp_path / "csv"
    assert export(["--db", backend_url, "--import-json", *map(str, files), "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "detections: 4 read, 4 new, 0 already stored" in printed
    assert "corrections: 1 read, 1 new, 0 already stored" in printed
    detections = read_csv(out / "detections.csv")
    assert sorted(r["detection_id"] for r in detections) == ["d-0", "d-1", "d-2", "d-9"]
    assert json.loads(detections[0]["slice_probabilities"]) == [0.12, 0.91, None, 0.44]
    assert read_csv(out / "corrections.csv")[0]["slice_labels"] == "[0,1,null,1]"
    assert all(r["patient_id"] == "" and r["patient_pseudonym"].startswith("anon-") for r in read_csv(out / "studies.csv"))
    assert {p.name for p in out.iterdir()} == {"schema_history.csv", "studies.csv", "models.csv", "detections.csv",
                                               "corrections.csv", "training_runs.csv", "pacs_exports.csv",
                                               "manifest.json"}
    assert read_csv(out / "pacs_exports.csv") == []

    # the same files again (a folder this time): nothing new, nothing duplicated
    assert export(["--db", backend_url, "--import-json", str(tmp_path / "in"), "--csv", str(out)]) == 0
    assert "detections: 4 read, 0 new, 4 already stored" in capsys.readouterr().out
    assert len(read_csv(out / "detections.csv")) == 4

    # no action: a summary of the database
    assert export(["--db", backend_url]) == 0
    assert "detections: 4 rows" in capsys.readouterr().out


def test_a_bad_file_stops_the_import_before_anything_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path = tmp_path / "results.sqlite"
    files = write_inputs(tmp_path / "in")
    bad = tmp_path / "in" / "broken.json"
    broken = detection("d-bad")
    broken["study"]["slices"] = "ten"
    bad.write_text(json.dumps(broken))
    assert export(["--db", str(db_path), "--import-json", *map(str, files), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "stran export: error:" in err and "broken.json" in err and "'study.slices' must be an integer" in err
    with ResultsDB(db_path) as db:
        assert db.counts()["detections"] == 0

    (tmp_path / "junk.json").write_text("{not json")
    assert export(["--db", str(db_path), "--import-json", str(tmp_path / "junk.json")]) == 2
    assert "junk.json: not readable JSON" in capsys.readouterr().err
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    assert export(["--db", str(db_path), "--import-json", str(tmp_path / "other.json")]) == 2
    assert "not a detection result, correction or training run" in capsys.readouterr().err
    assert export(["--db", str(db_path), "--import-json", str(tmp_path / "missing.json")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_a_conflicting_file_names_its_origin_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path = tmp_path / "results.sqlite"
    files = write_inputs(tmp_path / "in")
    assert export(["--db", str(db_path), "--import-json", str(files[0])]) == 0
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(detection("d-0", study_uid="1.2.3.0", patient_id="PAT-0", probability=0.1)))
    assert export(["--db", str(db_path), "--import-json", str(files[1]), str(changed), "--csv", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "detection 'd-0' is already stored with different content" in err and "changed.json" in err
    with ResultsDB(db_path) as db:
        assert [d["detection_id"] for d in db.detections()] == ["d-0"]
    assert not (tmp_path / "out").exists()


def test_training_runs_and_raw_ids_on_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path = tmp_path / "results.sqlite"
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps(training_run("r-1")))
    det_file = tmp_path / "det.json"
    det_file.write_text(json.dumps(detection("d-1", patient_id="PAT-1")))
    assert export(["--db", str(db_path), "--no-pseudonymise", "--import-json", str(run_file), str(det_file)]) == 0
    assert "training_runs: 1 read, 1 new" in capsys.readouterr().out
    with ResultsDB(db_path) as db:
        assert db.studies()[0]["patient_id"] == "PAT-1"
        assert db.training_runs()[0]["status"] == "running"


def test_stran_cli_runs_export_end_to_end(tmp_path: Path) -> None:
    """Through the real entry point (``python -m stran.cli export``), in a fresh interpreter."""
    files = write_inputs(tmp_path / "in")
    db_path, out = tmp_path / "results.sqlite", tmp_path / "csv"
    done = subprocess.run(
        [sys.executable, "-m", "stran.cli", "export", "--db", str(db_path), "--import-json", *map(str, files),
         "--csv", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out / 'detections.csv'}" in done.stdout
    assert len(read_csv(out / "detections.csv")) == 4
    assert cli.COMMANDS["export"] == "stran.resultsdb.export_command"
    assert cli.main(["export", "--db", str(db_path), "--csv", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "corrections.csv").is_file()


def test_export_writes_what_was_stored_on_a_pacs(backend_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A database written by ``stran detect --dicomweb ... --db``: ``stran export`` migrates nothing, counts the
    exports and writes pacs_exports.csv, with the URL as stored (no credentials)."""
    with ResultsDB(backend_url) as db:
        db.record_detection(detection("d-1", study_uid="1.2.3.1", patient_id="PAT-1"))
        db.record_pacs_export(pacs_export("d-1", pacs_url=PACS_URL.replace("//", "//reader:hunter2@") + "?token=t0k"),
                              export_id="e-1")
    assert export(["--db", backend_url]) == 0
    assert "pacs_exports: 1 rows" in capsys.readouterr().out
    out = tmp_path / "csv"
    assert export(["--db", backend_url, "--csv", str(out)]) == 0
    assert f"wrote {out / 'pacs_exports.csv'}" in capsys.readouterr().out
    (row,) = read_csv(out / "pacs_exports.csv")
    assert row["export_id"] == "e-1" and row["detection_id"] == "d-1" and row["study_uid"] == "1.2.3.1"
    assert row["pacs_url"] == PACS_URL and row["map_kind"] == "SEG"
    assert json.loads((out / "manifest.json").read_text())["rows"]["pacs_exports"] == 1
    assert not any("hunter2" in p.read_text() or "t0k" in p.read_text() for p in out.iterdir())
