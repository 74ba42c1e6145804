"""Segment highlight: the clicked AHA segment's pixels from the detection's segment map (BullseyeState.segment_mask)
outlined as the label layer of the slice views (CineScarLib.highlight), on slicer-core's real MRML classes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "slicer_extension" / "CineScar"))

slicer = pytest.importorskip("slicer")

from CineScarLib import aha, highlight, mrml, sequences  # noqa: E402
from CineScarLib.segments import BullseyeState  # noqa: E402
from CineScarLib.volume import Volume4D  # noqa: E402

T, S, H, W = 4, 6, 32, 36


def ring_segments() -> np.ndarray:
    """Basal slices 1-2 (1-6), mid 3 (7-12), apical 4 (13-16) on a ring; slices 0 and 5 without myocardium."""
    yy, xx = np.mgrid[0:H, 0:W]
    ring = np.abs(np.hypot(yy - 16, xx - 18) - 9) < 2.5
    sector = (np.degrees(np.arctan2(yy - 16, xx - 18)) % 360 // 60).astype(np.uint8)
    ids = np.zeros((S, H, W), np.uint8)
    ids[1][ring] = ids[2][ring] = sector[ring] + 1
    ids[3][ring] = sector[ring] + 7
    ids[4][ring] = sector[ring] % 4 + 13
    return ids


def result_with_map(ids: np.ndarray) -> dict:
    return {"segment_probabilities": [0.2] * 17, "slice_probabilities": [None, 0.3, 0.7, 0.4, 0.5, None],
            "input": {"lv_slices": [1, 2, 3, 4]}, "segment_map": aha.encode_segment_map(ids), "threshold": 0.5,
            "study_probability": 0.6, "image_id": "hl"}


def test_segment_mask_follows_the_map() -> None:
    ids = ring_segments()
    b = BullseyeState.from_result(result_with_map(ids))
    mask = b.segment_mask(3)
    assert b.slice_of_segment(3) == 2  # basal, the basal slice with the higher probability
    assert mask.shape == (S, H, W) and mask[2].any() and not mask[[0, 1, 3, 4, 5]].any()
    assert np.array_equal(mask[2], ids[2] == 3)
    assert np.array_equal(b.segment_mask(17)[4], ids[4] > 0)  # the apex: the most apical slice's myocardium
    assert b.slice_of_segment(9) == 3 and b.segment_mask(9)[3].sum() == (ids[3] == 9).sum()


def test_without_a_map_there_is_nothing_to_outline() -> None:
    r = result_with_map(ring_segments())
    assert BullseyeState.from_result(dict(r, segment_map=None)).segment_mask(3) is None
    broken = dict(r, segment_map={"encoding": "runs-v1", "shape": [1, 1], "runs": []})
    assert BullseyeState.from_result(broken).segment_mask(3) is None  # unreadable: review without the outline


def test_highlight_is_the_label_layer_on_the_maps_grid(scene) -> None:
    ids = ring_segments()
    affine = np.array([[1.4, 0, 0, -20], [0, 1.4, 0, -30], [0, 0, 8, 10], [0, 0, 0, 1.0]])
    cine = Volume4D(np.full((T, S, H, W), 100, np.int16), affine, 40.0)
    att = Volume4D(np.zeros((T, S, H, W), np.float32), affine, 40.0)
    result = result_with_map(ids)
    nodes = mrml.loadDetection(result, att, cine=cine, scene=scene)
    b = BullseyeState.from_result(result)
    node = highlight.showSegmentHighlight(b.segment_mask(3), nodes.attentionProxy)
    assert np.array_equal(slicer.util.arrayFromVolume(node) > 0, b.segment_mask(3))
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    assert np.allclose(m, sequences.affineFromVolumeNode(nodes.attentionProxy))
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    assert all(composites.GetItemAsObject(i).GetLabelVolumeID() == node.GetID()
               for i in range(composites.GetNumberOfItems()))
    views = scene.GetNodesByClass("vtkMRMLSliceNode")
    assert views.GetNumberOfItems() == 3
    assert all(views.GetItemAsObject(i).GetUseLabelOutline() for i in range(views.GetNumberOfItems()))
    again = highlight.showSegmentHighlight(b.segment_mask(9), nodes.attentionProxy, node)  # another click
    assert again is node and np.array_equal(slicer.util.arrayFromVolume(node) > 0, b.segment_mask(9))
    with pytest.raises(ValueError, match="not on the grid"):
        highlight.showSegmentHighlight(np.zeros((S, H, W + 1), bool), nodes.attentionProxy)
    highlight.clearSegmentHighlight(node)
    assert node.GetScene() is None
    assert all(not composites.GetItemAsObject(i).GetLabelVolumeID() for i in range(composites.GetNumberOfItems()))
    highlight.clearSegmentHighlight(None)


def test_the_logic_outlines_a_clicked_segment_and_writes_the_report(scene, tmp_path) -> None:
    """ScarLogic (what the widget calls): selecting a segment jumps to its slice and outlines it; a new detection
    removes the outline; "Report" writes the page into the chosen folder."""
    from CineScarLib.logic import ScarLogic
    from CineScarLib.records import Detection

    ids = ring_segments()
    affine = np.array([[1.4, 0, 0, -20], [0, 1.4, 0, -30], [0, 0, 8, 10], [0, 0, 0, 1.0]])
    cine = Volume4D(np.full((T, S, H, W), 100, np.int16), affine, 40.0)
    att = Volume4D(np.zeros((T, S, H, W), np.float32), affine, 40.0)
    result = dict(result_with_map(ids), prediction=1, prediction_label="scar",
                  model={"name": "stran", "version": "t", "sha256": "b" * 64}, study={"study_uid": "2.25.9"})
    logic = ScarLogic()
    logic.showDetection(Detection(result, "hl", att, cine))
    assert logic.selectSegment(9) == 3
    assert np.array_equal(slicer.util.arrayFromVolume(logic.highlightNode) > 0, ids == 9)
    first = logic.highlightNode
    logic.selectSegment(14)
    assert logic.highlightNode is first and (slicer.util.arrayFromVolume(first) > 0).sum() == (ids == 14).sum()
    paths = logic.writeReport(str(tmp_path), confirm=lambda q: pytest.fail("matplotlib is installed: no question"))
    assert [p.name for p in paths] == ["hl.report.png", "hl.report.pdf"] and all(p.stat().st_size for p in paths)
    logic.showDetection(Detection(result, "hl", att, cine))  # a new detection: the old outline goes
    assert first.GetScene() is None and logic.highlightNode is None


def test_the_report_asks_before_installing_matplotlib(monkeypatch, tmp_path) -> None:
    from CineScarLib import packages
    from CineScarLib.logic import ScarLogic
    from CineScarLib.records import Detection

    monkeypatch.setattr(packages, "available", lambda module: False)
    logic = ScarLogic()
    with pytest.raises(RuntimeError, match="run a detection first"):
        logic.writeReport(str(tmp_path))
    logic.detection = Detection({"study_probability": 0.5}, "x")
    asked = []
    assert logic.writeReport(str(tmp_path), confirm=lambda q: asked.append(q) or False) is None
    assert "matplotlib" in asked[0] and list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="restart Slicer"):  # installed, still not importable
        logic.writeReport(str(tmp_path), confirm=lambda q: True, install=lambda: None)


def test_the_outline_is_drawn_on_the_segments_border(scene) -> None:
    """Rendered by Slicer's own slice logic (CineScarLib.snapshot): the outline changes only pixels on the clicked
    segment or next to it, on its slice, and there are some."""
    from CineScarLib import snapshot

    ids = ring_segments()
    affine = np.array([[1.4, 0, 0, -20], [0, 1.4, 0, -30], [0, 0, 8, 10], [0, 0, 0, 1.0]])
    cine = Volume4D((np.full((T, S, H, W), 300) * (np.arange(W) % 2)).astype(np.int16), affine, 40.0)
    result = result_with_map(ids)
    nodes = mrml.loadDetection(result, Volume4D(np.zeros((T, S, H, W), np.float32), affine, 40.0), cine=cine,
                               scene=scene)
    mask = BullseyeState.from_result(result).segment_mask(2)
    label = highlight.showSegmentHighlight(mask, nodes.attentionProxy)
    k = int(np.nonzero(mask.any(axis=(1, 2)))[0][0])
    plain = snapshot.renderSlice(scene, nodes.cineProxy, sliceIndex=k)
    outlined = snapshot.renderSlice(scene, nodes.cineProxy, sliceIndex=k, label=label)
    changed = (plain != outlined).any(axis=2)
    near = np.zeros_like(mask[k])
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            near |= np.roll(np.roll(mask[k], dr, axis=0), dc, axis=1)
    assert changed.sum() >= 10 and not (changed & ~near).any()
    other = snapshot.renderSlice(scene, nodes.cineProxy, sliceIndex=(k + 2) % S, label=label)
    assert np.array_equal(other, snapshot.renderSlice(scene, nodes.cineProxy, sliceIndex=(k + 2) % S))
