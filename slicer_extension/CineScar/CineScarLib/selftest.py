"""The bodies of the module's self-test (``CineScarTest`` in CineScar.py: "Reload and Test" in Slicer).

``case`` is the running test: a ``unittest.TestCase`` with Slicer's ``delayDisplay``. :func:`scene_test` needs
nothing but Slicer (or slicer-core); :func:`server_test` runs the review loop against a running ST-RAN Scar
server named by ``CINESCAR_TEST_SERVER_URL``, writes to it only with ``CINESCAR_TEST_ALLOW_WRITES=1`` and
retrains only with ``CINESCAR_TEST_RETRAIN=1`` (docs/slicer-module.md, "Self-test"). The synthetic study and
the settings are plain functions (numpy only), tested without Slicer; ``slicer`` and :mod:`.scores` are imported
by the tests that use them.
"""

from __future__ import annotations

import tempfile

import numpy as np

from .records import Detection
from .volume import Volume4D

SERVER_URL_ENV = "CINESCAR_TEST_SERVER_URL"
ALLOW_WRITES_ENV = "CINESCAR_TEST_ALLOW_WRITES"
RETRAIN_ENV = "CINESCAR_TEST_RETRAIN"


def synthetic_detection() -> tuple[Detection, np.ndarray]:
    """A beating ring cine and a detection of it: the attention map is 0.8 on the ring's right half (read back
    through the NIfTI writer and reader, as from the server), the slice probabilities have one unscored slice.
    Returns the detection and the map as written (``[t, k, j, i]``)."""
    from .volumefile import readVolume4D, volume4DBytes

    affine = np.array([[1.4, 0, 0, -60], [0, 1.4, 0, -50], [0, 0, 8, -20], [0, 0, 0, 1.0]])
    t, k, j, i = 10, 5, 48, 48
    yy, xx = np.mgrid[0:j, 0:i]
    cine = np.zeros((t, k, j, i), np.int16)
    att = np.zeros((t, k, j, i), np.float32)
    for p in range(t):
        radius = 10 + 4 * np.cos(2 * np.pi * p / t)
        ring = np.abs(np.hypot(yy - 24, xx - 24) - radius - 4) < 3
        cine[p][:, ring] = 600
        att[p][:, ring & (xx > 24)] = 0.8
    volume = Volume4D(cine, affine, 40.0)
    attention = readVolume4D(volume4DBytes(Volume4D(att, affine, 40.0)))
    result = {"detection_id": "selftest", "image_id": "selftest", "study": {"study_uid": "2.25.1", "slices": k},
              "study_probability": 0.7, "threshold": 0.5, "prediction": 1, "prediction_label": "scar",
              "slice_probabilities": [0.2, 0.6, 0.9, None, 0.4],
              "model": {"name": "stran", "version": "test", "sha256": "0" * 64}}
    return Detection(result, "selftest", attention, volume), att


def server_test_settings(environ) -> tuple[str, bool]:
    """(server URL or "", whether the server test may write) from the environment."""
    return str(environ.get(SERVER_URL_ENV, "")).strip(), environ.get(ALLOW_WRITES_ENV) == "1"


def scene_test(case, logic) -> None:
    """A synthetic detection shown in the scene: sequences, synchronised overlay, table, slice jump, reviewer
    labels, chart, playback."""
    import slicer

    from . import scores

    case.delayDisplay("Building a synthetic cine and detection")
    detection, att = synthetic_detection()
    t, k = att.shape[:2]
    nodes = logic.showDetection(detection)
    case.assertEqual(nodes.cineSequence.GetNumberOfDataNodes(), t)
    case.assertEqual(nodes.attentionSequence.GetNumberOfDataNodes(), t)
    nodes.browser.SetSelectedItemNumber(3)
    case.assertTrue(np.array_equal(slicer.util.arrayFromVolume(nodes.attentionProxy), att[3]))
    case.assertEqual(nodes.table.GetNumberOfRows(), k)
    case.assertIsNotNone(logic.jumpToSlice(2))
    logic.copyPredictedLabels()
    case.assertEqual(scores.readReviewerLabels(nodes.table), [0, 1, 1, None, 0])
    logic.showChart()
    case.delayDisplay("Playing the cine with the overlay")
    nodes.browser.SetPlaybackActive(True)
    case.delayDisplay("(playing)", 1500)
    nodes.browser.SetPlaybackActive(False)
    case.delayDisplay("Scene test passed")


def server_test(case, make_logic, environ) -> None:
    """The whole review loop against a running server (``CINESCAR_TEST_SERVER_URL``), as a reader does it:
    connect, detect and show, the bullseye (select the most likely segment: its slice, its outline), the report and
    the results database (in a temporary folder), cancel; with ``CINESCAR_TEST_ALLOW_WRITES=1`` also a correction
    (study, slices, the segment) and the next study; with ``CINESCAR_TEST_RETRAIN=1`` a one-epoch retraining until
    the new model is live or kept aside. Without the URL it says how to run and returns."""
    url, allow_writes = server_test_settings(environ)
    if not url:
        case.delayDisplay(f"Server test not run: set {SERVER_URL_ENV} to a running ST-RAN Scar server "
                          "(e.g. http://127.0.0.1:8000) and start Slicer again.")
        return
    logic = make_logic()
    logic.setServer(url)
    try:
        detection, nodes = _detect_and_show(case, logic, url)
        _review_segments(case, logic)
        with tempfile.TemporaryDirectory(prefix="cinescar-selftest-") as folder:
            _report_and_database(case, logic, folder)
            _cancel(case, logic, detection.image_id)
            if allow_writes:
                _correct_and_next(case, logic, nodes, detection)
                if environ.get(RETRAIN_ENV) == "1":
                    _retrain(case, logic)
    finally:
        logic.close()
    case.delayDisplay("Server test passed")


def _detect_and_show(case, logic, url):
    case.delayDisplay(f"Connecting to {url}")
    status, studies = logic.connect()
    case.assertTrue(studies, "the server's datastore has no studies")
    case.delayDisplay(f"{status.summary()}: detecting on {studies[0].image_id}")
    detection = logic.detect(imageId=studies[0].image_id, mcSamples=2)
    case.assertIsNotNone(detection.attention)
    nodes = logic.showDetection(detection)
    case.assertEqual(nodes.cineSequence.GetNumberOfDataNodes(), detection.result["study"]["phases"])
    case.assertEqual(nodes.table.GetNumberOfRows(), len(detection.slice_probabilities))
    return detection, nodes


def _review_segments(case, logic) -> None:
    import slicer

    bullseye = logic.bullseye
    if not bullseye.has_probabilities:
        case.delayDisplay("This model gives no AHA segments: segment review not checked")
        return
    k = max(range(1, 17), key=lambda n: bullseye.probability(n) or -1.0)
    case.delayDisplay(f"Segment {k} (the most likely): its slice and its outline")
    row = logic.selectSegment(k)
    case.assertIsNotNone(row)
    case.assertIsNotNone(logic.jumpToSlice(row))
    if bullseye.segment_map is not None and (bullseye.segment_map == k).any():
        outline = slicer.util.arrayFromVolume(logic.highlightNode) > 0
        case.assertTrue(outline[row].any() and not np.delete(outline, row, axis=0).any())
    case.assertIsNotNone(logic.bullseyePng(220))


def _report_and_database(case, logic, folder) -> None:
    from . import packages

    if packages.available("matplotlib"):
        paths = logic.writeReport(folder)
        case.assertEqual(len(paths), 2)
        case.assertTrue(all(p.stat().st_size > 0 for p in paths))
    else:
        case.delayDisplay("Report not checked: matplotlib is not installed (Save report offers to install it)")
    if logic.sqlalchemyAvailable():
        logic.setDatabaseLocation(f"{folder}/selftest.sqlite")
        case.assertTrue(logic.ensureDatabase(ask=False))
        logic.exportDetection()
        case.assertIn("1 detections", logic.databaseSummary())
        logic.setDatabaseLocation(None)  # the temporary folder goes; nothing else is written there
    else:
        case.delayDisplay("Results database not checked: SQLAlchemy is not installed")


def _cancel(case, logic, image_id) -> None:
    from .cancel import CancelToken
    from .errors import Cancelled

    with case.assertRaises(Cancelled):
        token = CancelToken()
        token.cancel()
        logic.detect(imageId=image_id, cancel=token)


def _correct_and_next(case, logic, nodes, detection) -> None:
    from . import scores

    logic.copyPredictedLabels()
    labels = scores.readReviewerLabels(nodes.table)
    studyLabel = 1 if 1 in labels else int(detection.result["prediction"])
    if logic.bullseye.selected is not None:
        logic.bullseye.set_correction(logic.bullseye.selected, studyLabel)
    correction = logic.makeCorrection(studyLabel, reviewer="CineScar self-test")
    outcome = logic.submitCorrection(correction)
    case.assertEqual(outcome.status, "sent")
    case.delayDisplay("Asking for the next study")
    nextId = logic.nextStudy()
    if nextId is not None:
        case.assertTrue((logic.lastPick() or {}).get("reason"))


def _retrain(case, logic) -> None:
    from .errors import RequestRejected

    case.delayDisplay("Retraining (one epoch) until the new model is live")
    try:
        final = logic.retrain({"epochs": 1})
    except RequestRejected as exc:  # e.g. too few reviewed studies yet: the server says why
        case.delayDisplay(f"Retraining not run: {exc}")
        return
    case.assertIn(final.state, ("live", "kept_aside"), final.message)
