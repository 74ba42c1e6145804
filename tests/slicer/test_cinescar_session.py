"""CineScarLib.session (with .corrections, .training, .records) without a server: offline queue on a refused port, validation, export, training state machine.

The same workflow against the real MONAI Label server is in test_cinescar_server.py.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "slicer_extension" / "CineScar"))

from CineScarLib import corrections as K  # noqa: E402
from CineScarLib import errors as E  # noqa: E402
from CineScarLib import records as R  # noqa: E402
from CineScarLib import session as S  # noqa: E402
from CineScarLib.errors import ServerUnreachable  # noqa: E402
from CineScarLib.resultsdb import ResultsDB  # noqa: E402  (stran/resultsdb, loaded in place)


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


RESULT = {
    "detection_id": "a" * 32, "image_id": "case_0001",
    "study": {"study_uid": "1.2.840.1", "patient_id": "P1", "series_uids": ["1.2.840.1.1"], "vendor": "Siemens",
              "field_strength_t": 1.5, "slices": 3, "phases": 20, "pixel_spacing_mm": [1.5, 1.5],
              "slice_spacing_mm": 8.0, "rr_interval_ms": 900.0},
    "study_probability": 0.7, "threshold": 0.5, "prediction": 1, "prediction_label": "scar",
    "slice_probabilities": [0.2, 0.8, None],
    "uncertainty": {"method": "mc_dropout", "samples": 4, "std": 0.05, "entropy": 0.6, "mutual_information": 0.01},
    "model": {"name": "stran", "version": "0.1.0", "sha256": "b" * 64, "trained_on": "phantoms"},
    "input": {"slices": 3}, "timings": {"total_ms": 12.0}, "created_utc": "2026-11-25T10:00:00Z",
}


def detection() -> R.Detection:
    return R.Detection(dict(RESULT), "case_0001")


def test_offline_corrections_are_kept_in_the_database(tmp_path: Path) -> None:
    db_path = tmp_path / "results.sqlite"
    session = S.ScarSession(refused_url(), db=db_path)
    det = detection()
    first = session.make_correction(det, study_label=1, slice_labels=[0, 1, None], reviewer="dr a", source="LGE")
    outcome = session.submit_correction(first, n_slices=3)
    assert outcome.status == "queued" and outcome.pending == 1
    assert "kept in the results database" in outcome.message
    second = session.make_correction(det, study_label=0, reviewer="dr b")  # slice labels default to the prediction...
    with pytest.raises(ValueError, match="'no scar' study cannot have a slice labelled scar"):
        session.submit_correction(second, n_slices=3)  # ...which says scar on slice 1: refused before anything is stored
    second.slice_labels = [0, 0, None]
    assert session.submit_correction(second, n_slices=3).pending == 2
    pending = session.pending_corrections()
    assert [c.correction_id for c in pending] == [first.correction_id, second.correction_id]
    assert pending[0].label() == first.label() and pending[0].study_uid == "1.2.840.1"
    flushed = session.flush_queue()
    assert flushed.sent == [] and flushed.pending == 2 and "connection refused" in flushed.offline_error
    session.close()
    with ResultsDB(db_path) as db:  # another program (stran export) sees them, unsent
        rows = db.corrections()
        assert [r["sent_utc"] for r in rows] == [None, None]
        assert rows[0]["detection_id"] == "a" * 32 and rows[0]["slice_labels"] == [0, 1, None]


def test_offline_without_database_says_not_saved() -> None:
    session = S.ScarSession(refused_url())
    correction = session.make_correction(detection(), study_label=1, reviewer="dr a")
    with pytest.raises(E.CorrectionNotSaved) as info:
        session.submit_correction(correction, n_slices=3)
    assert "connection refused" in str(info.value) and "NOT saved" in str(info.value)


def test_validation_messages() -> None:
    ok = K.Correction("case", "1.2", 1, [1, None, 0], reviewer="me")
    K.validate_correction(ok, 3)
    K.validate_correction(K.Correction("case", "1.2", 1, [], reviewer="me"), 3)  # empty = not assessed
    cases = [
        (K.Correction("case", "1.2", 2, [0], reviewer="me"), "choose the study label"),
        (K.Correction("case", "1.2", 1, [0, 1], reviewer="me"), "2 slice labels given, the study has 3"),
        (K.Correction("case", "1.2", 1, [0, 2, 1], reviewer="me"), "slice label(s) [1]"),
        (K.Correction("case", "1.2", 1, [0, 0, 1], reviewer=" "), "enter the reviewer's name"),
        (K.Correction("case", "1.2", 1, [0, 0, 1], reviewer="me", source="MRI"), "source must be one of LGE, visual"),
        (K.Correction("", "1.2", 1, [0, 0, 1], reviewer="me"), "no study"),
    ]
    for correction, words in cases:
        with pytest.raises(ValueError, match="cannot be submitted") as info:
            K.validate_correction(correction, 3)
        assert words in str(info.value)


def test_empty_slice_labels_become_not_assessed(tmp_path: Path) -> None:
    session = S.ScarSession(refused_url(), db=tmp_path / "r.sqlite")
    correction = K.Correction("case_0001", "1.2.840.1", 1, [], reviewer="me")
    session.submit_correction(correction, n_slices=3)
    assert session.pending_corrections()[0].slice_labels == [None, None, None]


def test_export_detection_is_idempotent(tmp_path: Path) -> None:
    session = S.ScarSession(refused_url(), db=tmp_path / "r.sqlite")
    det = detection()
    assert session.export_detection(det) == "a" * 32 and det.exported
    session.export_detection(det)
    files = session.export_csv(tmp_path / "csv")
    assert {p.name for p in files} >= {"detections.csv", "corrections.csv", "manifest.json"}
    assert session.db.counts()["detections"] == 1


def test_database_unavailable_message() -> None:
    session = S.ScarSession(refused_url())
    with pytest.raises(E.DatabaseUnavailable, match="No results database is set"):
        session.export_detection(detection())
    session.set_database("/proc/definitely/not/writable/results.sqlite")
    with pytest.raises(E.DatabaseUnavailable, match="Could not open the results database"):
        _ = session.db


def test_helpers() -> None:
    assert R.study_score({"scar_uncertainty": {"model_sha256": "x", "entropy": 0.41, "std": 0.1}}) == 0.41
    assert R.study_score({"scar_uncertainty": {"model_sha256": "x", "error": "unreadable"}}) is None
    assert R.study_score({}) is None
    result = {"detection_id": "x1", "study": {"study_uid": ""}}
    R.fill_study_uid(result, "upload-1")
    assert result["study"]["study_uid"] == "image:upload-1"
    kept = {"study": {"study_uid": "1.2.3"}}
    R.fill_study_uid(kept, "x")
    assert kept["study"]["study_uid"] == "1.2.3"
    image_id = S.make_image_id("Cine: SAX 4D (DICOM) #2")
    assert image_id.startswith("Cine_SAX_4D_DICOM_2-") and len(image_id.split("-")[-1]) == 6
    det = detection()
    assert det.predicted_slice_labels() == [0, 1, None] and det.verdict == "scar" and det.n_slices == 3
    assert "p = 0.700" in det.summary() and "uncertainty (std) 0.050" in det.summary()


class StubClient:
    """Canned /info and /train answers for the training state machine (no HTTP)."""

    url = "stub://server"

    def __init__(self, answers):
        self.answers = list(answers)
        self.info_value = None

    def info(self):
        self.info_value, task = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        self.task = task
        return self.info_value

    def train_status(self):
        return self.task

    def check(self, model):
        return self.info()

    def train_start(self, model, options):
        return {"id": "task-2", "status": "SUBMITTED"}

    def close(self):
        pass


def info(sha, stats):
    return {"name": "x", "models": {"scar": {"model": {"sha256": sha}}}, "train_stats": {"scar": stats}}


def test_training_state_machine(tmp_path: Path) -> None:
    old = {"status": "DONE", "started": "2026-11-25T09:00:00", "model_sha256": "old", "epoch": 5, "epochs": 5}
    running = {"status": "RUNNING", "started": "2026-11-25T10:00:00", "epoch": 1, "epochs": 2, "step": 1, "steps": 4,
               "loss": 0.7}
    epoch_done = dict(running, epoch=1, step=4, steps=4, train_loss=0.6, val_loss=0.65, val_auc=0.75, best_epoch=1)
    done = dict(epoch_done, status="DONE", epoch=2, model_sha256="new")
    client = StubClient([
        (info("old", old), {"id": "task-1", "status": "DONE"}),  # check() before the start
        (info("old", old), {"id": "task-2", "status": "RUNNING"}),  # stale stats: still "starting"
        (info("old", running), {"id": "task-2", "status": "RUNNING"}),
        (info("old", epoch_done), {"id": "task-2", "status": "RUNNING"}),
        (info("old", done), {"id": "task-2", "status": "DONE"}),  # done, old model still served
        (info("new", done), {"id": "task-2", "status": "DONE"}),
    ])
    session = S.ScarSession("http://unused", client=client, db=tmp_path / "r.sqlite")
    run = session.start_training({"epochs": 2})
    states = []
    final = session.wait_for_training(run, poll_s=0.01, on_update=lambda p: states.append((p.state, p.fraction, p.message)))
    assert [s[0] for s in states] == ["running", "running", "running", "publishing", "live"]
    assert states[0][2] == "Training starting"
    assert states[1][1] == pytest.approx(0.125) and states[1][2].startswith("Training epoch 1/2")
    assert states[2][1] == pytest.approx(0.5) and "val_auc 0.750" in states[2][2]
    assert final.state == "live" and final.model_sha256 == "new" and final.metrics["val_auc"] == 0.75
    (row,) = session.db.training_runs()
    assert row["status"] == "finished" and row["model_sha256"] == "new" and row["options"] == {"epochs": 2}

    failed = dict(running, status="FAILED", error="training needs at least 4 reviewed studies")
    client = StubClient([(info("old", old), {}), (info("old", failed), {"id": "task-2", "status": "ERROR"})])
    session = S.ScarSession("http://unused", client=client)
    final = session.wait_for_training(session.start_training({}), poll_s=0.01)
    assert final.state == "failed" and "needs at least 4 reviewed studies" in final.message

    crashed = StubClient([(info("old", old), {}), (info("old", old), {"id": "task-2", "status": "ERROR",
                                                                       "details": ["...", "Killed"]})])
    session = S.ScarSession("http://unused", client=crashed)
    final = session.wait_for_training(session.start_training({}), poll_s=0.01)
    assert final.state == "failed" and final.message == "Training error on the server. Killed"

    stuck = StubClient([(info("old", old), {}), (info("old", done), {"id": "task-2", "status": "DONE"})])
    session = S.ScarSession("http://unused", client=stuck)
    final = session.wait_for_training(session.start_training({}), poll_s=0.01, publish_grace_s=0.05)
    assert final.state == "failed" and "still serves the old model" in final.message

    kept = {"status": "KEPT_ASIDE", "started": "b", "reason": "the new model is worse on the held-out reviewed studies"}
    client = StubClient([(info("old", old), {}), (info("old", kept), {"id": "task-2", "status": "DONE"})])
    session = S.ScarSession("http://unused", client=client, db=tmp_path / "kept.sqlite")
    final = session.wait_for_training(session.start_training({}), poll_s=0.01)
    assert final.state == "kept_aside" and final.finished and "worse on the held-out" in final.message
    assert session.db.training_runs()[0]["status"] == "failed"  # not published: the old model serves


def test_training_waits_out_a_short_outage() -> None:
    class Flaky(StubClient):
        calls = 0

        def info(self):
            Flaky.calls += 1
            if Flaky.calls == 2:
                raise ServerUnreachable("connection refused")
            return super().info()

    old = {"status": "DONE", "started": "a"}
    done = {"status": "DONE", "started": "b", "model_sha256": "new"}
    client = Flaky([(info("old", old), {}), (info("new", done), {"status": "DONE"})])
    session = S.ScarSession("http://unused", client=client)
    messages = []
    final = session.wait_for_training(session.start_training({}), poll_s=0.01,
                                      progress=lambda f, m: messages.append(m))
    assert final.state == "live" and messages[0].startswith("Server not answering, still waiting")
