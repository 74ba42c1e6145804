"""CineScarLib against the REAL MONAI Label server (apps/stran), from the Slicer test stack.

One server for the whole module (started by tests/server_fixture.py over a fresh phantom datastore);
the tests run in file order and build on each other's server state: connect, detect (in a worker
job, with progress, cancel and automatic export), the server's own error messages, corrections and
the next study, a cine "loaded in Slicer" uploaded and detected, retraining until the new model is
live, the module's self-test, and last the offline queue across a server stop and restart.

If apps/stran/model/pretrained_scar.pt is not there, an untrained ST-RAN checkpoint is written into
the private app copy instead (the Slicer side tests transport and display, not accuracy).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import threading
import time
import types
import unittest
from pathlib import Path

import numpy as np
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "slicer_extension" / "CineScar"))
sys.path.insert(0, str(REPO / "tests"))

import server_fixture as sf  # noqa: E402
from CineScarLib import client as C  # noqa: E402
from CineScarLib import errors as E  # noqa: E402
from CineScarLib.corrections import Correction  # noqa: E402
from CineScarLib.jobs import Job  # noqa: E402
from CineScarLib.resultsdb import ResultsDB  # noqa: E402
from CineScarLib.session import ScarSession  # noqa: E402
from CineScarLib.volume import Volume4D  # noqa: E402
from CineScarLib.volumefile import readVolume4D, volume4DBytes  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

UNTRAINED_MODEL = """
import sys
import torch
from stran.models import build_model
from stran.models.checkpoint import save_checkpoint
torch.manual_seed(0)
save_checkpoint(sys.argv[1], build_model("stran"), name="stran", config={},
                extra={"threshold": 0.5, "trained_on": "untrained (CineScar Slicer-side tests)"})
"""


def prerequisites_missing() -> str:
    if not sf.SERVER_PYTHON.exists():
        return f"the server venv is missing ({sf.SERVER_PYTHON}); run make setup"
    if not (REPO / "sample_data" / "__main__.py").exists():
        return "the phantom generator (python -m sample_data) is not there yet"
    return ""


def prepare_app(app_dir: Path) -> str:
    """A private app copy with a model to serve: the shipped one, else an untrained checkpoint."""
    sf.copy_app(app_dir)
    model = app_dir / "model" / "pretrained_scar.pt"
    if model.exists():
        return "shipped model"
    model.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(sf.SERVER_PYTHON), "-c", UNTRAINED_MODEL, str(model)], cwd=REPO, check=True,
                   capture_output=True, text=True, timeout=300)
    return "untrained stand-in model"


def serve_phantom_cohort(work: Path):
    """(cohort folder, model note, running server) over a fresh 6-study phantom cohort in ``work``; skips, saying
    why, when the server's prerequisites are missing."""
    missing = prerequisites_missing()
    if missing:
        pytest.skip(missing)
    cohort = sf.make_phantom_cohort(work / "cohort", 6, 7)
    note = prepare_app(work / "app")
    return cohort, note, sf.start_server(sf.make_datastore(cohort, work / "datastore"), work)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("cinescar-server")
    cohort, note, server = serve_phantom_cohort(work)
    state = types.SimpleNamespace(server=server, cohort=cohort, work=work, db=work / "results.sqlite", model=note)
    yield state
    state.server.stop()


def session_for(env, **kwargs) -> ScarSession:
    session = ScarSession(env.server.url, db=env.db, **kwargs)
    session.connect()
    return session


def truth(env, image_id: str) -> dict:
    return sf.truth_label(env.cohort, image_id)


def test_connect_lists_the_datastore(env) -> None:
    session = ScarSession(env.server.url)
    status = session.connect()
    assert status.name == "ST-RAN Scar" and status.model == "scar" and len(status.model_sha256) == 64
    assert status.url == env.server.url and "sha256" in status.summary()
    studies = session.list_studies()
    assert len(studies) == 6 and not any(s.labeled for s in studies)
    assert all(s.image_id.startswith("PHANTOM-") for s in studies)


def test_detect_in_a_worker_with_progress_and_auto_export(env) -> None:
    session = session_for(env, auto_export=True)
    image_id = session.list_studies()[0].image_id
    events: list = []
    main = threading.get_ident()
    job = Job(session.detect, image_id, mc_samples=2).start(
        on_progress=lambda f, m: events.append((threading.get_ident(), f, m)))
    detection = job.wait(timeout=300)
    assert all(e[0] == main for e in events)  # callbacks ran on the polling thread, like Slicer's QTimer
    fractions = [e[1] for e in events if e[1] is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    messages = " | ".join(e[2] for e in events)
    assert f"downloading study '{image_id}'" in messages and "detecting scar" in messages

    result = detection.result
    study = result["study"]
    assert detection.image_id == image_id and study["study_uid"].startswith("1.2.")
    assert len(detection.slice_probabilities) == study["slices"] == detection.cine.slices
    assert detection.cine.phases == study["phases"] and detection.cine.phase_interval_ms > 0
    assert detection.attention.array.shape == detection.cine.array.shape  # the attention is on the study's grid
    np.testing.assert_allclose(detection.attention.affine, detection.cine.affine, atol=1e-4)
    assert 0.0 <= float(detection.attention.array.min()) <= float(detection.attention.array.max()) <= 1.0
    assert result["uncertainty"]["samples"] == 2 and result["uncertainty"]["std"] is not None
    assert detection.model_sha256 == session.status.model_sha256
    assert detection.exported and detection.export_error is None
    session.export_detection(detection)  # idempotent
    rows = session.db.detections(study_uid=study["study_uid"])
    assert [r["detection_id"] for r in rows] == [detection.detection_id]
    assert rows[0]["slice_probabilities"] == result["slice_probabilities"]


def test_cancel_a_detection(env) -> None:
    session = session_for(env)
    image_id = session.list_studies()[1].image_id
    job = Job(session.detect, image_id, mc_samples=4)
    cancelled = []

    def on_progress(fraction, message):
        if "detecting scar" in message and not job.cancel_token.cancelled:
            job.cancel()

    job.start(on_progress=on_progress, on_cancelled=lambda: cancelled.append(time.monotonic()))
    start = time.monotonic()
    with pytest.raises(E.Cancelled):
        job.wait(timeout=120)
    assert cancelled and job.cancelled and cancelled[0] - start < 60
    assert session.client.info()["name"] == "ST-RAN Scar"  # the server is fine afterwards


def test_server_errors_in_plain_words(env) -> None:
    session = session_for(env)
    with pytest.raises(E.NotFound) as info:
        session.detect("no-such-study", fetch_cine=False)
    assert info.value.status == 404 and "'no-such-study' is not in the datastore" in str(info.value)

    image_id = session.list_studies()[0].image_id
    n = len(truth(env, image_id)["slice_labels"])
    bad = {"study_label": 1, "slice_labels": [1] * (n + 2), "source": "LGE", "reviewer": "x", "comment": ""}
    with pytest.raises(E.RequestRejected) as info:
        session.client.save_label(image_id, bad)
    assert info.value.status == 422 and "nothing was saved" in info.value.detail and f"{n} slices" in str(info.value)
    with pytest.raises(E.NotFound, match="not in the datastore"):
        session.client.save_label("no-such-study", {"study_label": 0, "slice_labels": []})
    not_json = requests.put(f"{env.server.url}/datastore/label", params={"image": image_id, "tag": "final"},
                            files={"label": (f"{image_id}.txt", b"1", "text/plain")}, timeout=30)
    assert E.status_error(not_json, env.server.url, "saving").status == 415

    with pytest.raises(E.RequestRejected) as info:
        session.start_training({"epochs": 1})
    assert info.value.status == 422 and "at least 4 reviewed studies" in str(info.value)
    with pytest.raises(E.RequestRejected, match="epochs must be between 1 and 1000"):
        session.start_training({"epochs": 0})
    with pytest.raises(E.ModelNotAvailable, match="has no 'scar_nope' model"):
        ScarSession(env.server.url, model="scar_nope").connect()
    assert not any(s.labeled for s in session.list_studies())  # nothing was stored by the refused requests


def test_submit_corrections_and_next_study(env) -> None:
    session = session_for(env)
    studies = session.list_studies()
    sent = []
    for entry in studies[:2]:
        detection = session.detect(entry.image_id, fetch_cine=False, with_attention=False, mc_samples=0)
        label = truth(env, entry.image_id)
        correction = session.make_correction(detection, study_label=label["study_label"],
                                             slice_labels=label["slice_labels"], reviewer="dr. Test",
                                             source="LGE", comment="from the phantom truth")
        outcome = session.submit_correction(correction, n_slices=detection.n_slices)
        assert outcome.status == "sent" and outcome.pending == 0 and outcome.database_warning is None
        sent.append(correction)
    listing = {s.image_id: s for s in session.list_studies()}
    for correction in sent:
        assert listing[correction.image_id].labeled
    store = session.client.datastore()["objects"]
    info = store[sent[0].image_id]["labels"]["final"]["info"]
    assert info["correction_id"] == sent[0].correction_id and info["scar_label"]["reviewer"] == "dr. Test"
    rows = {r["correction_id"]: r for r in session.db.corrections()}
    assert all(rows[c.correction_id]["sent_utc"] for c in sent)
    assert rows[sent[0].correction_id]["study_uid"] == sent[0].study_uid and sent[0].study_uid.startswith("1.2.")

    nxt = session.next_study()  # the default: random (docs/active-learning.md)
    assert nxt in listing and nxt not in {c.image_id for c in sent}
    assert session.last_pick["strategy"] == "random" and "at random" in session.last_pick["reason"]
    nxt = session.next_study("most_uncertain")
    assert nxt in listing and nxt not in {c.image_id for c in sent}
    assert session.last_pick["id"] == nxt and "least sure" in session.last_pick["reason"]
    ranked = session.list_studies()  # the strategy scored the unreviewed studies: most uncertain first
    assert ranked[0].image_id == nxt and ranked[0].score is not None and "uncertainty" in ranked[0].describe()
    assert [s.labeled for s in ranked] == sorted(s.labeled for s in ranked)


def test_correction_with_segment_labels_is_stored(env) -> None:
    """A correction made in the bullseye (CineScarLib.segments) reaches the server's datastore with its 17 AHA
    segment labels, and the results database keeps them; a 'no scar' study with a scar segment is refused first."""
    from CineScarLib.segments import BullseyeState, SegmentReviewError

    session = session_for(env)
    image_id = sorted(s.image_id for s in session.list_studies())[0]
    detection = session.detect(image_id, fetch_cine=False, with_attention=False, mc_samples=0)
    bullseye = BullseyeState.from_result(detection.result)
    for k in (1, 7, 7, 17, 17, 17):  # 1 -> scar; 7 -> scar -> no scar; 17 -> scar -> no scar -> not assessed
        bullseye.cycle(k)
    expected = [1, None, None, None, None, None, 0] + [None] * 10
    assert bullseye.segment_labels() == expected
    with pytest.raises(SegmentReviewError, match="segment.s. 1 .basal anterior"):
        bullseye.check(0)
    refused = session.make_correction(detection, study_label=0, slice_labels=[None] * detection.n_slices,
                                      reviewer="dr. Test", segment_labels=bullseye.segment_labels())
    with pytest.raises(ValueError, match="cannot have an AHA segment labelled scar"):
        session.submit_correction(refused, n_slices=detection.n_slices)
    bullseye.check(1)
    correction = session.make_correction(detection, study_label=1, slice_labels=[None] * detection.n_slices,
                                         reviewer="dr. Segments", source="LGE",
                                         segment_labels=bullseye.segment_labels())
    outcome = session.submit_correction(correction, n_slices=detection.n_slices)
    assert outcome.status == "sent", outcome.message
    info = session.client.datastore()["objects"][image_id]["labels"]["final"]["info"]
    assert info["correction_id"] == correction.correction_id
    assert info["scar_label"]["segment_labels"] == expected and info["scar_label"]["reviewer"] == "dr. Segments"
    stored = requests.get(f"{env.server.url}/datastore/label", params={"label": image_id, "tag": "final"}, timeout=30)
    assert stored.status_code == 200, stored.text[:500]
    assert stored.json()["segment_labels"] == expected
    rows = {r["correction_id"]: r for r in session.db.corrections()}
    assert rows[correction.correction_id]["segment_labels"] == expected
    assert Correction.from_record(rows[correction.correction_id]).segment_labels == expected


def test_cine_from_slicer_is_uploaded_and_detected(env) -> None:
    """The "Cine loaded in Slicer" path: a cine whose slice axis points the other way is normalised, uploaded, detected."""
    session = session_for(env)
    image_id = session.list_studies()[-1].image_id
    cine = session.download_cine(image_id)
    affine = cine.affine.copy()
    affine[:3, 3] += (cine.slices - 1) * affine[:3, 2]
    affine[:3, 2] *= -1
    reversed_cine = Volume4D(np.ascontiguousarray(cine.array[:, ::-1]), affine, cine.phase_interval_ms)
    detection = session.detect(volume=reversed_cine, mc_samples=0)
    assert detection.image_id != image_id and detection.image_id in {s.image_id for s in session.list_studies()}
    assert detection.study_uid == f"image:{detection.image_id}"  # a plain NIfTI has no study UID
    assert len(detection.slice_probabilities) == cine.slices
    np.testing.assert_allclose(detection.attention.affine, cine.affine, atol=1e-3)  # back in the loader's order
    np.testing.assert_array_equal(detection.cine.array, cine.array)
    assert detection.result["study"]["phases"] == cine.phases
    # inference on an uploaded file without adding it to the datastore (POST /infer with a `file` part)
    response = session.client.infer(file=volume4DBytes(cine), params={"mc_samples": 0})
    assert response.result["image_id"] == "" and len(response.result["slice_probabilities"]) == cine.slices
    assert readVolume4D(response.image).array.shape == cine.array.shape


def test_retrain_until_the_new_model_is_live(env) -> None:
    session = session_for(env)
    for entry in session.list_studies():
        if entry.image_id.startswith("PHANTOM-"):
            label = truth(env, entry.image_id)
            correction = Correction(entry.image_id, f"image:{entry.image_id}", label["study_label"],
                                    label["slice_labels"], reviewer="truth", source="LGE")
            assert session.submit_correction(correction).status == "sent"
    before = session.status.model_sha256
    # fine-tunes the served model (its architecture, old or new); a generous margin: this test is about going live
    run = session.start_training({"epochs": 1, "max_loss_increase": 10})
    with pytest.raises(E.TrainingAlreadyRunning) as info:
        session.start_training({"epochs": 1})
    assert info.value.status == 429
    updates = []
    final = session.wait_for_training(run, poll_s=1.0, timeout_s=600, on_update=updates.append)
    assert final.state == "live", final.message
    assert final.model_sha256 != before and session.status.model_sha256 == final.model_sha256
    assert {"train_loss", "val_loss", "val_auc"} <= set(final.metrics)
    assert updates[0].state == "running" and any(u.epoch == 1 for u in updates)
    detection = session.detect(session.list_studies()[0].image_id, fetch_cine=False, mc_samples=0)
    assert detection.model_sha256 == final.model_sha256
    runs = [r for r in session.db.training_runs() if r["run_id"] == run.run_id]
    assert runs[0]["status"] == "finished" and runs[0]["model_sha256"] == final.model_sha256


def load_cinescar_with_stubs(monkeypatch):
    """CineScar.py with the Qt-only base classes stubbed (see test_cinescar_module.py)."""
    base = types.ModuleType("slicer.ScriptedLoadableModule")

    class Logic:
        def __init__(self, parent=None):
            pass

    class Test(unittest.TestCase):
        messages: list = []

        def delayDisplay(self, message, msec=None):  # noqa: N802
            self.messages.append(message)

    base.ScriptedLoadableModule = base.ScriptedLoadableModuleWidget = Logic
    base.ScriptedLoadableModuleLogic, base.ScriptedLoadableModuleTest = Logic, Test
    import slicer

    monkeypatch.setitem(sys.modules, "qt", types.ModuleType("qt"))
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", base)
    monkeypatch.setattr(slicer, "ScriptedLoadableModule", base, raising=False)
    monkeypatch.delitem(sys.modules, "CineScar", raising=False)
    return importlib.import_module("CineScar")


def test_module_self_test_against_the_server(env, monkeypatch) -> None:
    """CineScarTest.test_CineScarServer (what "Reload and Test" runs in Slicer) on slicer-core."""
    slicer = pytest.importorskip("slicer")
    module = load_cinescar_with_stubs(monkeypatch)
    scene = slicer.vtkMRMLScene()
    logics = [slicer.vtkSlicerSequencesLogic(), slicer.vtkSlicerColorLogic()]
    for logic in logics:
        logic.SetMRMLScene(scene)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setenv("CINESCAR_TEST_SERVER_URL", env.server.url)
    monkeypatch.setenv("CINESCAR_TEST_ALLOW_WRITES", "1")
    monkeypatch.setenv("CINESCAR_TEST_RETRAIN", "1")
    test = module.CineScarTest()
    test.messages = []
    test.test_CineScarServer()
    assert test.messages[-1] == "Server test passed"
    steps = " | ".join(test.messages)
    for step in ("the most likely): its slice and its outline", "Asking for the next study",
                 "Retraining (one epoch) until the new model is live"):
        assert step in steps, steps
    assert "not run" not in steps and "not checked" not in steps, steps  # the whole loop ran
    sys.modules.pop("CineScar", None)


def test_offline_corrections_are_delivered_once_after_a_restart(env) -> None:
    session = session_for(env)
    studies = [s.image_id for s in session.list_studies() if s.image_id.startswith("PHANTOM-")][:2]
    a, b = studies
    detections = {i: session.detect(i, fetch_cine=False, with_attention=False, mc_samples=0) for i in (a, b)}
    n_before = len(session.db.corrections())
    env.server.stop()  # the server goes away

    def correction(image_id, study_label, reviewer):
        det = detections[image_id]
        labels = [0 if study_label == 0 else v for v in truth(env, image_id)["slice_labels"]]
        return session.make_correction(det, study_label=study_label, slice_labels=labels, reviewer=reviewer,
                                       source="visual")

    queued = [correction(a, 0, "first look"), correction(b, truth(env, b)["study_label"], "dr. B"),
              correction(a, truth(env, a)["study_label"], "second look")]
    for item in queued:
        outcome = session.submit_correction(item, n_slices=detections[item.image_id].n_slices)
        assert outcome.status == "queued" and "kept in the results database" in outcome.message
    assert [c.correction_id for c in session.pending_corrections()] == [c.correction_id for c in queued]
    session.close()

    # the same datastore served again (on a new port): the module, opened again on the same database, delivers them
    env.server = sf.start_server(env.server.studies, env.work)
    again = ScarSession(env.server.url, db=env.db)
    again.connect()
    delivered = again.flush_queue()
    assert delivered.sent == [c.correction_id for c in queued] and delivered.pending == 0 and not delivered.rejected
    assert again.flush_queue().sent == []  # delivered once
    store = again.client.datastore()["objects"]
    assert store[a]["labels"]["final"]["info"]["correction_id"] == queued[2].correction_id  # the newest label wins
    assert store[b]["labels"]["final"]["info"]["correction_id"] == queued[1].correction_id
    label_a = requests.get(f"{env.server.url}/datastore/label", params={"label": a, "tag": "final"}, timeout=30).json()
    assert label_a == queued[2].label()
    # a resend (an answer lost on the way back) changes nothing on the server
    again.client.save_label(a, queued[2].label(), params=queued[2].params())
    assert again.client.datastore()["objects"][a]["labels"]["final"]["info"]["correction_id"] == queued[2].correction_id
    again.close()
    with ResultsDB(env.db) as db:
        rows = db.corrections()
        assert len(rows) == n_before + 3 and all(r["sent_utc"] for r in rows)


def test_client_sends_the_servers_token(tmp_path_factory):
    """Against a server started with STRAN_API_TOKEN: without the token the client's error says what to set; with it
    (argument or environment) every call works."""
    work = tmp_path_factory.mktemp("token")
    cohort = sf.make_phantom_cohort(work / "cohort", 2, 31)
    server = sf.start_server(sf.make_datastore(cohort, work / "datastore"), work, env={"STRAN_API_TOKEN": "t0ken"},
                             ready_headers={"Authorization": "Bearer t0ken"})
    try:
        with pytest.raises(E.RequestRejected) as refused:
            C.MonaiLabelClient(server.url, token="").info()
        assert refused.value.status == 401 and "STRAN_API_TOKEN" in str(refused.value)
        assert "models" in C.MonaiLabelClient(server.url, token="t0ken").info()
        assert C.MonaiLabelClient(server.url, token="t0ken").datastore() is not None
    finally:
        server.stop()
