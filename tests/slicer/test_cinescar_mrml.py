"""CineScarLib.mrml on slicer-core (Slicer's real MRML classes, no Qt).

Two parts: synthetic cines with oblique geometry (always run), and a REAL
detection made by the MONAI Label server (apps/stran) once for this module:
its result JSON, its attention NIfTI (read with nibabel as the reference) and
the study's cine from the datastore.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLSequenceBrowserNode"):
    pytest.skip("the 'slicer' package here is not slicer-core", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "slicer_extension" / "CineScar"))
sys.path.insert(0, str(REPO / "tests"))

from CineScarLib import mrml, scores, sequences  # noqa: E402
from CineScarLib.volume import Volume4D  # noqa: E402
from CineScarLib.volumefile import readVolume4D, volume4DBytes  # noqa: E402


def oblique_affine(spacing=(1.5, 1.5, 8.0), origin=(-60.0, 40.0, 75.0)) -> np.ndarray:
    a, b = 0.5, -0.7
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = (ry @ rx) * np.asarray(spacing)
    aff[:3, 3] = origin
    return aff


def matrix_of(node) -> np.ndarray:
    return sequences.affineFromVolumeNode(node)


@pytest.fixture
def cine() -> Volume4D:
    rng = np.random.default_rng(3)
    return Volume4D(rng.integers(0, 1500, size=(6, 4, 20, 24)).astype(np.int16), oblique_affine(), 42.5)


@pytest.fixture
def attention(cine) -> Volume4D:
    t, k, j, i = cine.array.shape
    att = np.zeros((t, k, j, i), np.float32)
    for p in range(t):
        att[p, :, 5:12, 6:14] = 0.1 + 0.15 * p  # a block whose value encodes the phase
    att[:, 0] = 0.0
    return Volume4D(att, cine.affine, cine.phase_interval_ms)


RESULT = {
    "detection_id": "d" * 32, "image_id": "case_x",
    "study": {"study_uid": "1.2.3", "slices": 4, "phases": 6},
    "study_probability": 0.81, "threshold": 0.5, "prediction": 1, "prediction_label": "scar",
    "slice_probabilities": [0.1, 0.62, None, 0.5],
}


def test_cine_and_attention_sequences(scene, cine, attention) -> None:
    nodes = mrml.loadDetection(RESULT, attention, cine=cine, scene=scene)
    seq, att = nodes.cineSequence, nodes.attentionSequence
    assert seq.GetNumberOfDataNodes() == 6 and att.GetNumberOfDataNodes() == 6
    assert seq.GetIndexName() == "time" and seq.GetIndexUnit() == "ms" and seq.GetIndexType() == seq.NumericIndex
    values = [seq.GetNthIndexValue(i) for i in range(6)]
    assert values == ["0", "42.5", "85", "127.5", "170", "212.5"]
    assert [att.GetNthIndexValue(i) for i in range(6)] == values
    for i in range(6):
        item = seq.GetNthDataNode(i)
        np.testing.assert_allclose(matrix_of(item), cine.affine, atol=1e-9)
        np.testing.assert_allclose(item.GetSpacing(), (1.5, 1.5, 8.0), atol=1e-9)
        np.testing.assert_allclose(item.GetOrigin(), cine.affine[:3, 3], atol=1e-9)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(item), cine.array[i])
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(att.GetNthDataNode(i)), attention.array[i])
    assert nodes.browser.GetNumberOfItems() == 6
    assert nodes.browser.IsSynchronizedSequenceNode(att.GetID()) and not nodes.browser.GetSaveChanges(att)
    for item in (3, 0, 5):
        nodes.browser.SetSelectedItemNumber(item)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(nodes.cineProxy), cine.array[item])
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(nodes.attentionProxy), attention.array[item])
        np.testing.assert_allclose(matrix_of(nodes.attentionProxy), attention.affine, atol=1e-9)
    assert nodes.browser.GetPlaybackLooped() and nodes.browser.GetPlaybackRateFps() > 0


def test_attention_follows_a_slicer_cine_with_more_items(scene, cine, attention) -> None:
    """A cine loaded in Slicer with 12 frames (other index values): the overlay picks the same cycle fraction."""
    doubled = Volume4D(np.repeat(cine.array, 2, axis=0), cine.affine, cine.phase_interval_ms / 2)
    seq = sequences.createVolumeSequence(doubled, "DICOM cine", scene, indexValues=[str(17 + 21.25 * i) for i in range(12)])
    browser = sequences.createBrowser(seq, "DICOM browser", scene)
    nodes = mrml.loadDetection(RESULT, attention, cineSequence=seq, browser=browser, scene=scene)
    assert nodes.attentionSequence.GetNumberOfDataNodes() == 12
    assert sequences.phaseMapping(12, 6) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert sequences.phaseMapping(4, 6) == [0, 1, 3, 4]
    for item in range(12):
        browser.SetSelectedItemNumber(item)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(nodes.attentionProxy), attention.array[item // 2])


def test_overlay_display(scene, cine, attention) -> None:
    nodes = mrml.loadDetection(RESULT, attention, cine=cine, scene=scene, opacity=0.35, threshold=0.25)
    display = nodes.attentionProxy.GetDisplayNode()
    color_id = display.GetColorNodeID()
    assert color_id in mrml.COLOR_PREFERENCE and scene.GetNodeByID(color_id) is not None
    assert not display.GetAutoWindowLevel()
    assert display.GetWindow() == pytest.approx(1.0) and display.GetLevel() == pytest.approx(0.5)
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.25)
    assert display.GetUpperThreshold() == pytest.approx(1.0) and display.GetOpacity() == pytest.approx(0.35)
    nodes.browser.SetSelectedItemNumber(4)  # the proxy keeps its display settings when the phase changes
    assert nodes.attentionProxy.GetDisplayNode() is display and display.GetLowerThreshold() == pytest.approx(0.25)

    assert mrml.showInSliceViews(nodes.cineProxy, nodes.attentionProxy, 0.35, scene) == 3
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        c = composites.GetItemAsObject(i)
        assert c.GetBackgroundVolumeID() == nodes.cineProxy.GetID()
        assert c.GetForegroundVolumeID() == nodes.attentionProxy.GetID()
        assert c.GetForegroundOpacity() == pytest.approx(0.35)
    mrml.setOverlayOpacity(0.8, scene)
    assert composites.GetItemAsObject(0).GetForegroundOpacity() == pytest.approx(0.8)


def test_score_table_and_chart(scene, cine, attention) -> None:
    nodes = mrml.loadDetection(RESULT, attention, cine=cine, scene=scene, reviewerLabels=[0, 1, None, 1])
    rows = scores.tableRows(nodes.table)
    assert [r["slice"] for r in rows] == [0, 1, 2, 3]
    assert [r["probability"] for r in rows] == [0.1, 0.62, None, 0.5]
    assert [r["predicted"] for r in rows] == ["no scar", "scar", "", "scar"]
    assert [r["reviewer"] for r in rows] == ["no scar", "scar", "", "scar"]
    positions = [r["position_mm"] for r in rows]
    assert np.diff(positions) == pytest.approx([8.0, 8.0, 8.0], abs=0.02)  # along the slice normal
    assert nodes.table.GetColumnTitle("probability") == "Scar probability"
    assert scores.readReviewerLabels(nodes.table) == [0, 1, None, 1]
    # the reviewer edits the table (qMRMLTableView writes the cell text)
    column = nodes.table.GetTable().GetColumnByName("reviewer")
    column.SetValue(0, "Scar")
    column.SetValue(2, " no scar ")
    assert scores.readReviewerLabels(nodes.table) == [1, 1, 0, 1]
    column.SetValue(3, "maybe")
    with pytest.raises(ValueError, match="'maybe' in row 3 is not a slice label"):
        scores.readReviewerLabels(nodes.table)
    scores.setReviewerLabels(nodes.table, [None, None, 0, 1])
    assert scores.readReviewerLabels(nodes.table) == [None, None, 0, 1]

    chart = nodes.chart
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    bars, line = chart.GetNthPlotSeriesNode(0), chart.GetNthPlotSeriesNode(1)
    assert bars.GetTableNodeID() == nodes.table.GetID()
    assert (bars.GetXColumnName(), bars.GetYColumnName(), bars.GetPlotType()) == ("slice", "probability", bars.PlotTypeBar)
    assert line.GetPlotType() == line.PlotTypeLine
    assert slicer.util.arrayFromTableColumn(nodes.thresholdTable, "threshold").tolist() == [0.5, 0.5]
    assert not chart.GetYAxisRangeAuto() and list(chart.GetYAxisRange()) == [0.0, 1.0]


def test_jump_to_slice_through_the_slice_centre(scene, cine, attention) -> None:
    nodes = mrml.loadDetection(RESULT, attention, cine=cine, scene=scene)
    assert mrml.alignSliceViewToVolume(nodes.cineProxy, "Red", scene)
    slice_nodes = scene.GetNodesByClass("vtkMRMLSliceNode")
    red = next(n for n in (slice_nodes.GetItemAsObject(i) for i in range(slice_nodes.GetNumberOfItems()))
               if n.GetLayoutName() == "Red")
    for row in (0, 3, 1):
        centre = scores.sliceCenterFromTable(nodes.table, row)
        np.testing.assert_allclose(centre, cine.slice_center_ras(row))
        scores.jumpToSlice(centre, scene)
        m = red.GetSliceToRAS()
        normal = np.array([m.GetElement(r, 2) for r in range(3)])
        origin = np.array([m.GetElement(r, 3) for r in range(3)])
        assert abs(np.dot(np.asarray(centre) - origin, normal)) < 1e-6  # the red plane passes through the centre
        assert abs(abs(np.dot(normal, cine.slice_normal())) - 1) < 1e-6  # and is the short-axis plane
    assert scores.sliceCenterFromTable(nodes.table, 99) is None


def node_census(scene) -> dict:
    counts = {}
    for i in range(scene.GetNumberOfNodes()):
        name = scene.GetNthNode(i).GetClassName()
        counts[name] = counts.get(name, 0) + 1
    return counts


def test_removing_a_result_leaves_the_scene_as_it_was(scene, cine, attention) -> None:
    before = node_census(scene)
    nodes = mrml.loadDetection(RESULT, attention, cine=cine, scene=scene)
    mrml.removeScarNodes(nodes, scene)
    assert node_census(scene) == before

    # a cine of the user's (e.g. from the DICOM browser): only the overlay, table and chart go
    seq = sequences.createVolumeSequence(cine, "user cine", scene)
    browser = sequences.createBrowser(seq, "user browser", scene)
    with_user_cine = node_census(scene)
    nodes = mrml.loadDetection(RESULT, attention, cineSequence=seq, browser=browser, scene=scene)
    assert browser.GetNumberOfSynchronizedSequenceNodes() == 1
    mrml.removeScarNodes(nodes, scene)
    assert node_census(scene) == with_user_cine
    assert seq.GetScene() is scene and browser.GetProxyNode(seq) is not None
    assert browser.GetNumberOfSynchronizedSequenceNodes() == 0


def test_slicer_sequence_to_nifti_for_upload(scene, cine, tmp_path) -> None:
    seq = sequences.createVolumeSequence(cine, "from DICOM", scene)
    vol = sequences.volume4DFromSequence(seq)
    np.testing.assert_array_equal(vol.array, cine.array)
    np.testing.assert_allclose(vol.affine, cine.affine, atol=1e-9)
    assert vol.phase_interval_ms == pytest.approx(42.5) and not vol.notes
    path = tmp_path / "upload.nii.gz"
    path.write_bytes(volume4DBytes(vol))
    img = nib.load(str(path))  # what the server (nibabel) will see; Slicer's writer gives the time step in seconds
    assert img.shape == (24, 20, 4, 6) and img.header.get_xyzt_units() == ("mm", "sec")
    assert img.header.get_zooms()[3] == pytest.approx(0.0425)
    np.testing.assert_allclose(img.affine, cine.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj).transpose(3, 2, 1, 0), cine.array)

    seconds = sequences.createVolumeSequence(cine, "seconds", scene, indexValues=[str(0.0425 * i) for i in range(6)])
    seconds.SetIndexUnit("s")
    assert sequences.volume4DFromSequence(seconds).phase_interval_ms == pytest.approx(42.5)
    frames = sequences.createVolumeSequence(cine, "frames", scene, indexValues=[str(i) for i in range(6)])
    frames.SetIndexName("frame")
    frames.SetIndexUnit("")
    unknown = sequences.volume4DFromSequence(frames)
    assert unknown.phase_interval_ms == 0 and "phase interval unknown" in unknown.notes[0]

    # a linear transform on the proxy moves the geometry that is uploaded
    browser = sequences.createBrowser(seq, "b", scene)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = (5.0, -3.0, 2.0)
    transform.SetMatrixTransformToParent(sequences.ijkToRasMatrix(shift))
    browser.GetProxyNode(seq).SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(sequences.volume4DFromSequence(seq, browser).affine, shift @ cine.affine, atol=1e-9)
    assert [s.GetName() for s, _ in sequences.findCineSequences(scene)] == ["from DICOM"]


def test_sequence_that_is_not_a_cine(scene, cine) -> None:
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "mixed")
    a = slicer.vtkMRMLScalarVolumeNode()
    slicer.util.updateVolumeFromArray(a, cine.array[0])
    seq.SetDataNodeAtValue(a, "0")
    with pytest.raises(ValueError, match="a cine needs two or more phases"):
        sequences.volume4DFromSequence(seq)
    b = slicer.vtkMRMLScalarVolumeNode()
    slicer.util.updateVolumeFromArray(b, cine.array[1, :3])
    seq.SetDataNodeAtValue(b, "40")
    with pytest.raises(ValueError, match="differ in size"):
        sequences.volume4DFromSequence(seq)


# ----------------------------------------------------------------------------- a real detection


UNTRAINED_MODEL = """
import sys
import torch
from stran.models import build_model
from stran.models.checkpoint import save_checkpoint
torch.manual_seed(0)
save_checkpoint(sys.argv[1], build_model("stran"), name="stran", config={},
                extra={"threshold": 0.5, "trained_on": "untrained (CineScar Slicer-side tests)"})
"""


@pytest.fixture(scope="module")
def real_detection(tmp_path_factory):
    """One detection by the real server: result JSON, attention NIfTI bytes and the cine (server stopped after).

    The shipped model is used when apps/stran/model/pretrained_scar.pt exists, else an untrained ST-RAN
    checkpoint (the geometry and the values of the maps are what is checked here, not accuracy)."""
    import subprocess

    import server_fixture as sf

    if not sf.SERVER_PYTHON.exists():
        pytest.skip(f"the server venv is missing ({sf.SERVER_PYTHON}); run make setup")
    if not (REPO / "sample_data" / "__main__.py").exists():
        pytest.skip("the phantom generator (python -m sample_data) is not there yet")
    from CineScarLib.session import ScarSession

    work = tmp_path_factory.mktemp("cinescar-mrml-server")
    cohort = sf.make_phantom_cohort(work / "cohort", 2, 11)
    sf.copy_app(work / "app")
    model = work / "app" / "model" / "pretrained_scar.pt"
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(sf.SERVER_PYTHON), "-c", UNTRAINED_MODEL, str(model)], cwd=REPO, check=True,
                       capture_output=True, text=True, timeout=300)
    server = sf.start_server(sf.make_datastore(cohort, work / "datastore"), work)
    try:
        session = ScarSession(server.url)
        session.connect()
        image_id = session.list_studies()[0].image_id
        raw = {}
        original_infer = session.client.infer

        def keep_raw(*args, **kwargs):
            response = original_infer(*args, **kwargs)
            raw["attention"] = response.image
            return response

        session.client.infer = keep_raw
        detection = session.detect(image_id, mc_samples=2)
        cine_bytes = session.client.download_image(image_id)
    finally:
        server.stop()
    (work / "attention.nii.gz").write_bytes(raw["attention"])
    (work / "cine.nii.gz").write_bytes(cine_bytes)
    (work / "result.json").write_text(json.dumps(detection.result))
    return {"detection": detection, "attention_path": work / "attention.nii.gz", "cine_path": work / "cine.nii.gz"}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_detection_in_the_scene(scene, real_detection) -> None:
    det = real_detection["detection"]
    ref_att = nib.load(str(real_detection["attention_path"]))  # nibabel is the reference reader
    ref_cine = nib.load(str(real_detection["cine_path"]))
    att_data = np.asanyarray(ref_att.dataobj).transpose(3, 2, 1, 0)
    cine_data = np.asanyarray(ref_cine.dataobj).transpose(3, 2, 1, 0)
    n_t, n_k = cine_data.shape[:2]
    assert att_data.shape == cine_data.shape  # the attention map is on the study's grid
    assert det.attention.array.dtype == np.float32 and 0 <= det.attention.array.min() <= det.attention.array.max() <= 1

    nodes = mrml.loadDetection(det.result, det.attention, cine=det.cine, scene=scene)
    assert nodes.cineSequence.GetNumberOfDataNodes() == n_t == det.result["study"]["phases"]
    assert nodes.attentionSequence.GetNumberOfDataNodes() == n_t
    dt = float(ref_cine.header.get_zooms()[3])
    assert float(nodes.cineSequence.GetNthIndexValue(1)) == pytest.approx(dt, abs=1e-3)
    for i in (0, n_t // 2, n_t - 1):
        np.testing.assert_allclose(matrix_of(nodes.cineSequence.GetNthDataNode(i)), ref_cine.affine, atol=1e-3)
        np.testing.assert_allclose(matrix_of(nodes.attentionSequence.GetNthDataNode(i)), ref_att.affine, atol=1e-3)
        nodes.browser.SetSelectedItemNumber(i)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(nodes.cineProxy), cine_data[i])
        np.testing.assert_allclose(slicer.util.arrayFromVolume(nodes.attentionProxy), att_data[i], atol=1e-7)
    np.testing.assert_allclose(nodes.cineProxy.GetSpacing(), ref_cine.header.get_zooms()[:3], atol=1e-3)

    rows = scores.tableRows(nodes.table)
    assert len(rows) == n_k == len(det.slice_probabilities)
    for row, p in zip(rows, det.slice_probabilities, strict=True):
        assert (row["probability"] is None) == (p is None)
        if p is not None:
            assert row["probability"] == pytest.approx(p)
            assert row["predicted"] == ("scar" if p >= det.threshold else "no scar")
    centre = scores.sliceCenterFromTable(nodes.table, n_k - 1)
    ijk = np.array([(cine_data.shape[3] - 1) / 2, (cine_data.shape[2] - 1) / 2, n_k - 1, 1.0])
    np.testing.assert_allclose(centre, (ref_att.affine @ ijk)[:3], atol=1e-3)
    assert nodes.attentionProxy.GetDisplayNode().GetApplyThreshold()
    assert nodes.chart.GetNthPlotSeriesNode(0).GetTableNodeID() == nodes.table.GetID()
    # the module's own reader agrees with nibabel on the server's file
    mine = readVolume4D(real_detection["attention_path"])
    np.testing.assert_allclose(mine.array, att_data, atol=0)
    np.testing.assert_allclose(mine.affine, ref_att.affine, atol=1e-5)
