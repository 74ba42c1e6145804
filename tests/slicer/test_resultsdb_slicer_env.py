"""The results database in the Slicer test stack (numpy 2, slicer-core): exposed the way the Slicer
module exposes it, as ``CineScarLib.resultsdb``, imported in a fresh isolated interpreter without the
``stran`` package, and used end to end; both from a checkout (CineScarLib loads stran/resultsdb in place)
and in the built extension (a real CineScarLib/resultsdb folder, the files CineScar/CMakeLists.txt copies)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "slicer_extension" / "CineScar"
RESULTSDB = REPO / "stran" / "resultsdb"

SCRIPT = textwrap.dedent(
    """
    import json, sys
    modules_dir, db_path, out_dir = sys.argv[1:4]
    sys.path.insert(0, modules_dir)
    before = set(sys.modules)
    from CineScarLib.resultsdb import SCHEMA_VERSION, ConflictError, ResultsDB, new_id
    from CineScarLib.resultsdb import export_command  # the CLI module imports cleanly too
    loaded = sorted({name.split(".")[0] for name in set(sys.modules) - before})
    import CineScarLib.resultsdb

    result = {
        "detection_id": new_id(), "image_id": "case_0001",
        "study": {"study_uid": "1.2.3", "patient_id": "PAT-1", "series_uids": ["1.2.3.1"], "vendor": "Philips",
                  "field_strength_t": 3.0, "slices": 3, "phases": 30, "pixel_spacing_mm": [1.5, 1.5],
                  "slice_spacing_mm": 10.0, "rr_interval_ms": 850.0},
        "study_probability": 0.31, "threshold": 0.5, "prediction": 0, "prediction_label": "no scar",
        "slice_probabilities": [0.2, 0.4, None],
        "uncertainty": {"method": "mc_dropout", "samples": 10, "std": 0.02, "entropy": 0.6, "mutual_information": 0.01},
        "model": {"name": "stran", "version": "0.1.0", "sha256": "c" * 64, "trained_on": "phantom-cohort-v1"},
        "input": {"slices": 3}, "timings": {"preprocess_ms": 5.0, "inference_ms": 9.0, "total_ms": 15.0},
        "created_utc": "2026-11-25T10:00:00Z",
    }
    label = {"study_label": 1, "slice_labels": [0, 1, None], "source": "visual", "reviewer": "me", "comment": ""}
    with ResultsDB(db_path) as db:
        db.record_detection(result)
        db.record_detection(result)  # a resend: stored once
        cid = db.record_correction(label, correction_id=new_id(), study_uid="1.2.3", image_id="case_0001",
                                   detection_id=result["detection_id"])
        db.record_correction(label, correction_id=cid, study_uid="1.2.3", image_id="case_0001",
                             detection_id=result["detection_id"])
        pending = [c["correction_id"] for c in db.corrections(unsent_only=True)]
        db.mark_corrections_sent(pending)
        try:
            db.record_detection(dict(result, study_probability=0.9))
            conflict = None
        except ConflictError as exc:
            conflict = str(exc)
        files = [p.name for p in db.export_csv(out_dir)]
        counts = db.counts()
    print(json.dumps({"loaded": loaded, "stran_loaded": "stran" in sys.modules, "schema_version": SCHEMA_VERSION,
                      "file": CineScarLib.resultsdb.__file__,
                      "pending": pending, "conflict": conflict, "files": files, "counts": counts,
                      "numpy_loaded": "numpy" in sys.modules}))
    """
)


def built_extension(modules: Path) -> Path:
    """CineScarLib as the extension's build lays it out: its own files plus, in a real resultsdb folder, the
    stran/resultsdb files that ``set(RESULTSDB_PYTHON_FILES ...)`` in CineScar/CMakeLists.txt names."""
    names = re.search(r"set\(RESULTSDB_PYTHON_FILES\s+([^)]*)\)", (MODULE_DIR / "CMakeLists.txt").read_text())
    assert names, "set(RESULTSDB_PYTHON_FILES ...) is missing from CineScar/CMakeLists.txt"
    shutil.copytree(MODULE_DIR / "CineScarLib", modules / "CineScarLib", ignore=shutil.ignore_patterns("__pycache__"))
    (modules / "CineScarLib" / "resultsdb").mkdir()
    for name in names.group(1).split():
        shutil.copy2(RESULTSDB / name, modules / "CineScarLib" / "resultsdb" / name)
    return modules / "CineScarLib" / "resultsdb" / "__init__.py"


@pytest.mark.parametrize("layout", ["source tree", "built extension"])
def test_resultsdb_runs_from_a_slicer_module_lib_folder(tmp_path: Path, layout: str) -> None:
    if layout == "source tree":
        modules, expected_file = MODULE_DIR, RESULTSDB / "__init__.py"
    else:
        modules = tmp_path / "lib" / "Slicer" / "qt-scripted-modules"
        expected_file = built_extension(modules)
    db_path, out = tmp_path / "results.sqlite", tmp_path / "csv"

    # -I: isolated (no PYTHONPATH, no current folder on sys.path), so `stran` cannot be found
    done = subprocess.run([sys.executable, "-I", "-c", SCRIPT, str(modules), str(db_path), str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    outside_stdlib = {
        name for name in set(report["loaded"]) - set(sys.stdlib_module_names) - {"CineScarLib"}
        if not name.startswith(("_sysconfigdata", "_cython_")) and name != "cython_runtime"  # interpreter / compiled SQLAlchemy
    }
    assert outside_stdlib <= {"sqlalchemy", "typing_extensions"}, outside_stdlib
    assert not report["stran_loaded"] and not report["numpy_loaded"]
    assert report["file"] == str(expected_file)
    assert report["counts"]["detections"] == 1 and report["counts"]["corrections"] == 1
    assert len(report["pending"]) == 1
    assert report["conflict"] and "is already stored with different content" in report["conflict"]
    assert "detections.csv" in report["files"] and "manifest.json" in report["files"]
    with open(out / "detections.csv", newline="", encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["slice_probabilities"] == "[0.2,0.4,null]" and row["prediction_label"] == "no scar"

    # Slicer's own sqlite3 reads the file without SQLAlchemy (e.g. a quick look from the Python console)
    conn = sqlite3.connect(db_path)
    try:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        sent = conn.execute("SELECT sent_utc FROM corrections").fetchone()[0]
        pseudonym, raw = conn.execute("SELECT patient_pseudonym, patient_id FROM studies").fetchone()
    finally:
        conn.close()
    assert int(version) == report["schema_version"] and sent is not None
    assert pseudonym.startswith("anon-") and raw is None
