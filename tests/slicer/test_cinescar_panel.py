"""The widget's decisions without Qt: CineScarLib.panel (signals, enabled buttons, texts), CineScarLib.jobs' JobSlots
and ProgressView, CineScarLib.database's set-up helpers and CineScarLib.selftest's GUI-free parts.

The widget class itself needs the Slicer application (see docs/slicer-module.md); these are what it calls."""

from __future__ import annotations

import ast
import re
import sys
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "slicer_extension" / "CineScar"
sys.path.insert(0, str(MODULE_DIR))

from CineScarLib import database, panel, selftest  # noqa: E402
from CineScarLib.corrections import FlushOutcome, SubmitOutcome  # noqa: E402
from CineScarLib.jobs import Job, JobSlots, ProgressView  # noqa: E402
from CineScarLib.records import Detection, ServerStatus, StudyEntry  # noqa: E402
from CineScarLib.training import TrainingProgress  # noqa: E402

UI = MODULE_DIR / "Resources" / "UI" / "CineScar.ui"


def ui_widget_names() -> set[str]:
    return {w.get("name") for w in ET.parse(UI).getroot().iter("widget")}


def widget_methods() -> set[str]:
    tree = ast.parse((MODULE_DIR / "CineScar.py").read_text())
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CineScarWidget")
    return {n.name for n in widget.body if isinstance(n, ast.FunctionDef)}


def states(**overrides) -> dict[str, bool]:
    args = {"busy": False, "connected": True, "shown": True, "training": False, "scene_source": False,
            "source_ready": True, "from_dicom": False, **overrides}
    return panel.enabled_buttons(**args)


# ----------------------------------------------------------------------------- panel


def test_signals_name_widgets_of_the_ui_and_methods_of_the_widget() -> None:
    names, methods = ui_widget_names(), widget_methods()
    assert {w for w, _s, _m in panel.SIGNALS} <= names
    assert {m for _w, _s, m in panel.SIGNALS} <= methods
    assert all(re.fullmatch(r"\w+\([\w*]*\)", s) for _w, s, _m in panel.SIGNALS)  # Qt signal signatures
    assert set(states()) <= names and {"probabilityLabel", "verdictLabel", "uncertaintyLabel", "modelLabel"} <= names


def test_enabled_buttons() -> None:
    idle = states()
    assert idle["detectButton"] and idle["submitButton"] and idle["nextStudyButton"] and idle["retrainButton"]
    assert not idle["cancelButton"] and not idle["stopTrainingButton"] and not idle["sequenceSelector"]
    busy = states(busy=True)
    assert busy["cancelButton"] and not busy["detectButton"] and not busy["submitButton"]
    assert not busy["checkConnectionButton"] and not busy["openDicomFolderButton"] and busy["copyPredictionButton"]
    offline = states(connected=False, shown=False)
    assert not offline["detectButton"] and not offline["nextStudyButton"] and not offline["retrainButton"]
    assert offline["checkConnectionButton"] and not offline["exportButton"] and not offline["showChartButton"]
    assert not states(source_ready=False)["detectButton"]
    training = states(training=True)
    assert training["stopTrainingButton"] and not training["retrainButton"] and training["detectButton"]
    assert not states(scene_source=True)["detectDicomStudyButton"]  # a sequence not loaded from DICOM
    dicom = states(scene_source=True, from_dicom=True)
    assert dicom["detectDicomStudyButton"] and dicom["sequenceSelector"]
    assert not states(scene_source=True, from_dicom=True, busy=True)["detectDicomStudyButton"]
    assert not states(from_dicom=True)["detectDicomStudyButton"]  # the study list is the source


def detection(**result) -> Detection:
    base = {"study_probability": 0.734, "threshold": 0.5, "prediction": 1, "prediction_label": "scar",
            "model": {"name": "stran", "version": "0.2", "sha256": "abcdef0123456789" * 4}}
    return Detection({**base, **result}, "case_1")


def test_texts() -> None:
    texts = panel.result_texts(detection(uncertainty={"std": 0.0512, "entropy": 0.61, "method": "mc_dropout",
                                                       "samples": 8}))
    assert texts == {"probabilityLabel": "0.734", "verdictLabel": "SCAR (threshold 0.50)",
                     "uncertaintyLabel": "std 0.051, entropy 0.61 (mc_dropout, 8 samples)",
                     "modelLabel": "stran 0.2, sha256 abcdef012345"}
    assert panel.result_texts(detection())["uncertaintyLabel"] is None  # not computed: the widget says so
    assert panel.result_texts(detection(model=None))["modelLabel"] == "? , sha256 "

    status = ServerStatus("http://h:8000", "ST-RAN Scar", "0.1", "scar", {"model": {"sha256": "f" * 64}}, {})
    studies = [StudyEntry("a", True), StudyEntry("b", False), StudyEntry("c", False)]
    assert panel.connection_text(status, studies) == f"{status.summary()}; 3 studies (2 not reviewed)"

    sent = SubmitOutcome("x", "sent", "Correction of 'a' sent to the server.", flushed=["p", "q"])
    assert panel.submitted_text(sent) == (
        "Correction of 'a' sent to the server. 2 waiting correction(s) were delivered first.", "")
    queued = SubmitOutcome("x", "queued", "The server cannot be reached; kept.")
    assert panel.submitted_text(queued) == ("The server cannot be reached; kept.", panel.WARNING_STYLE)
    assert panel.flushed_text(FlushOutcome(sent=["a"])) == ("1 queued correction(s) delivered", "")
    waiting = FlushOutcome(pending=2, offline_error="down")
    assert panel.flushed_text(waiting) == ("2 still waiting (server unreachable)", panel.WARNING_STYLE)

    live = TrainingProgress("live", "New model live (sha256 0123)", metrics={"val_auc": 0.91234, "best_epoch": 3})
    assert panel.training_text(live) == "New model live (sha256 0123) (val_auc 0.912)"
    assert panel.training_text(TrainingProgress("failed", "Training failed")) == "Training failed"


# ----------------------------------------------------------------------------- jobs: slots and progress view


class FakeBar:
    def __init__(self) -> None:
        self.visible, self.range, self.value = False, (0, 100), 0

    def setVisible(self, visible):  # noqa: N802 - Qt's names
        self.visible = visible

    def setRange(self, low, high):  # noqa: N802
        self.range = (low, high)

    def setValue(self, value):  # noqa: N802
        self.value = value


def test_progress_view() -> None:
    bar, label, after = FakeBar(), types.SimpleNamespace(text=""), []
    view = ProgressView(bar, label, after=lambda: after.append(1))
    view.progress(None, "waiting")
    assert bar.visible and bar.range == (0, 0) and label.text == "waiting"
    view.progress(0.426, "downloading")
    assert bar.range == (0, 100) and bar.value == 43 and label.text == "downloading"
    view.ended(100)
    assert bar.value == 100 and label.text == "downloading" and after == [1]
    view.ended(0, "Cancelled.")
    assert bar.value == 0 and label.text == "Cancelled." and after == [1, 1]


def poll_until_idle(slots: JobSlots, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while slots.poll():
        assert time.monotonic() < deadline, "jobs still running"
        time.sleep(0.01)


def test_job_slots() -> None:
    slots = JobSlots()
    assert not slots.running() and not slots.running(True) and not slots.poll() and not slots.cancel()
    results = []

    def waits(*, progress, cancel):
        while not cancel.wait(0.01):
            pass
        return "stopped"

    operation = slots.add(Job(lambda *, progress, cancel: 7).start(on_done=results.append))
    training = slots.add(Job(waits).start(on_cancelled=lambda: results.append("cancelled")), training=True)
    assert slots.running() and slots.running(True)
    with pytest.raises(RuntimeError, match="still running"):
        slots.add(Job(lambda *, progress, cancel: 0), training=True)
    deadline = time.monotonic() + 10
    while not operation.finished:  # the training goes on
        assert slots.poll() and time.monotonic() < deadline
        time.sleep(0.01)
    assert results == [7] and not slots.running() and slots.running(True)
    assert slots.cancel(training=True)
    poll_until_idle(slots)
    assert results == [7, "cancelled"] and training.cancelled
    slots.add(Job(lambda *, progress, cancel: 8).start(on_done=results.append))  # a finished slot is free again
    slots.cancel_all()
    poll_until_idle(slots)


# ----------------------------------------------------------------------------- database set-up


def test_database_helpers(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert database.default_database_path() == str(tmp_path / "CineScar" / "results.sqlite")
    question = database.install_question("Automatic storing of results is on.")
    assert question.startswith("Automatic storing of results is on.\n\n") and database.SQLALCHEMY_REQUIREMENT in question
    assert database.install_question().startswith("The results database needs the Python package SQLAlchemy")
    assert database.database_summary({"detections": 2}) == "2 detections, 0 corrections in the database."


def test_database_mixin_without_slicer(tmp_path) -> None:
    """The mixin on a bare object: no location, nothing; a declined install changes nothing; after a yes the
    session gets the database."""
    class Session:
        has_database, location, auto_export = False, None, False

        def set_database(self, location):
            self.location, self.has_database = location, location is not None

    class Logic(database.DatabaseMixin):
        def __init__(self):
            self.session, self.detection = Session(), None
            self.databaseLocation, self.databaseEnabled, self.autoExport = None, False, False

    logic = Logic()
    assert not logic.ensureDatabase(confirm=lambda q: pytest.fail("asked without a location"))
    logic.setDatabaseLocation(f"  {tmp_path / 'r.sqlite'}  ")
    assert logic.databaseLocation == str(tmp_path / "r.sqlite") and logic.session.location is None  # not enabled
    logic.sqlalchemyAvailable = lambda: False
    assert not logic.ensureDatabase(ask=False) and not logic.ensureDatabase(confirm=lambda q: False)
    with pytest.raises(RuntimeError, match="restart Slicer"):
        logic.ensureDatabase(confirm=lambda q: True, install=lambda: None)  # installed, still not importable
    logic.sqlalchemyAvailable = lambda: True
    assert logic.ensureDatabase() and logic.databaseEnabled and logic.session.location == logic.databaseLocation
    logic.setAutoExport(1)
    assert logic.autoExport is True and logic.session.auto_export is True
    with pytest.raises(RuntimeError, match="run a detection first"):
        logic.exportDetection()


# ----------------------------------------------------------------------------- self-test, GUI-free parts


def test_selftest_synthetic_detection_and_settings() -> None:
    detection, att = selftest.synthetic_detection()
    assert att.shape == (10, 5, 48, 48) and detection.cine.array.shape == att.shape
    np.testing.assert_allclose(detection.attention.array, att, atol=1 / 255)  # uint8 on the wire
    assert att.max() == pytest.approx(0.8) and not att[..., :24].any()  # the ring's right half only
    assert detection.n_slices == 5 and detection.predicted_slice_labels() == [0, 1, 1, None, 0]
    assert detection.study_uid == "2.25.1" and detection.verdict == "scar"
    assert selftest.server_test_settings({}) == ("", False)
    env = {selftest.SERVER_URL_ENV: " http://h:1 ", selftest.ALLOW_WRITES_ENV: "1"}
    assert selftest.server_test_settings(env) == ("http://h:1", True)


def test_selftest_server_test_without_a_server_says_how() -> None:
    shown = []
    case = types.SimpleNamespace(delayDisplay=lambda message, *a: shown.append(message))
    selftest.server_test(case, lambda: pytest.fail("no logic without a server"), {})
    assert len(shown) == 1 and selftest.SERVER_URL_ENV in shown[0]
