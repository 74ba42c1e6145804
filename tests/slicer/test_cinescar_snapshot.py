"""CineScarLib.snapshot: what a slice view shows, drawn by Slicer's own slice logic (slicer-core, offscreen).

Fast part: a synthetic ring phantom put in the scene by ``mrml.loadDetection`` (cine + synchronised map, display
node, colour table, composite nodes): grey background where the cine is bright, the overlay only where the map is
at or above the display threshold and in the colour the colour table gives, the browser's item choosing the frame,
opacity 0 showing no overlay, the picture's pixels on the volume's own grid (also for an oblique plane), the PNG.

Slow part: a REAL detection by the MONAI Label server (tests/server_fixture.py), shown by the module's logic
(``ScarLogic.showDetection``) and rendered as the red slice view shows it; the overlay's pixels must fall on the
phantom's true myocardium.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLSliceLogic"):
    pytest.skip("the 'slicer' package here is not slicer-core", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "slicer_extension" / "CineScar"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from CineScarLib import mrml, snapshot  # noqa: E402
from CineScarLib.volume import Volume4D  # noqa: E402
from test_cinescar_mrml import oblique_affine  # noqa: E402

T, S, H, W = 4, 3, 48, 56
RESULT = {"image_id": "ring", "slice_probabilities": [0.2, 0.7, 0.4], "threshold": 0.5}
MYOCARDIUM, SCAR = 2, 4  # truth mask labels (truth/<id>.truth.json "mask_labels": 2 LV myocardium, 4 scar in it)



def ring_phantom() -> tuple[Volume4D, Volume4D]:
    """A bright ring (radius growing with the phase) on black, and a map: 0.9 on the ring's right-hand part,
    0.1 (below the display threshold) on its left-hand part, 0 elsewhere."""
    rows, cols = np.mgrid[:H, :W]
    cine = np.zeros((T, S, H, W), np.int16)
    att = np.zeros((T, S, H, W), np.float32)
    for t in range(T):
        ring = np.abs(np.hypot(rows - 24, cols - 28) - (10 + 2 * t)) < 3
        cine[t, :, ring] = 1000
        att[t, :, ring & (cols >= 34)] = 0.9
        att[t, :, ring & (cols <= 22)] = 0.1
    cine[:, :, 2:6, 2:10] = 400  # a dim marker at the top left: the picture is not flipped
    affine = oblique_affine(spacing=(1.4, 1.4, 8.0))
    return Volume4D(cine, affine, 40.0), Volume4D(att, affine, 40.0)


@pytest.fixture
def ring(scene) -> types.SimpleNamespace:
    cine, att = ring_phantom()
    nodes = mrml.loadDetection(RESULT, att, cine=cine, scene=scene, opacity=0.5, threshold=0.2)
    mrml.showInSliceViews(nodes.cineProxy, nodes.attentionProxy, 0.5, scene)
    return types.SimpleNamespace(nodes=nodes, cine=cine, att=att, scene=scene)


def slice_node(scene, layout: str = "Red"):
    nodes = scene.GetNodesByClass("vtkMRMLSliceNode")
    return next(nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())
                if nodes.GetItemAsObject(i).GetLayoutName() == layout)


def chroma(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[..., :3].astype(int)
    return rgb.max(axis=-1) - rgb.min(axis=-1)


def lut_rgb(display, value: float) -> np.ndarray:
    """The colour the display node's colour table gives ``value`` (window 0..1), 0..255."""
    lut = display.GetColorNode().GetLookupTable()
    lo, hi = lut.GetTableRange()
    rgb = [0.0, 0.0, 0.0]
    lut.GetColor(lo + value * (hi - lo), rgb)
    return np.array(rgb) * 255


def test_background_grey_where_the_cine_is_bright(ring) -> None:
    rgba = snapshot.renderSlice(ring.scene, ring.nodes.cineProxy, sliceIndex=1)
    assert rgba.shape == (H, W, 4) and rgba.dtype == np.uint8
    frame = ring.cine.array[0, 1]
    assert (chroma(rgba) == 0).all() and (rgba[..., 3] == 255).all()  # greyscale table, opaque
    grey = rgba[..., 0].astype(int)
    assert grey[frame == 1000].min() > 200 and grey[frame == 0].max() < 30
    assert 80 < grey[3, 4] < 180 and grey[H - 4, 4] < 30  # the marker at the top left, not the bottom left


def test_overlay_only_above_the_threshold_in_the_tables_colour(ring) -> None:
    display = ring.nodes.attentionProxy.GetDisplayNode()
    shown = snapshot.renderSlice(ring.scene, ring.nodes.cineProxy, ring.nodes.attentionProxy, sliceIndex=1)
    plain = snapshot.renderSlice(ring.scene, ring.nodes.cineProxy, ring.nodes.attentionProxy, sliceIndex=1, opacity=0)
    changed = np.abs(shown.astype(int) - plain).max(axis=-1) > 0
    att = ring.att.array[0, 1]
    inner = np.zeros_like(changed)  # away from the map's edges (the display interpolates)
    inner[2:-2, 2:-2] = True
    above, below = att >= 0.2, att < 0.2
    edge = np.zeros_like(above)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            edge |= np.roll(np.roll(above, dr, 0), dc, 1)
    assert changed[above & inner].mean() > 0.95
    assert not changed[below & ~edge].any(), "the overlay shows below the display threshold"
    assert (att == 0.1).sum() > 50 and not changed[(att == 0.1) & ~edge].any()
    # over the bright cine: (1 - opacity) * white + opacity * the table's colour of 0.9
    expected = 0.5 * 255 + 0.5 * lut_rgb(display, 0.9)
    core = above.copy()
    for axis in (0, 1):
        for step in (-1, 1):
            core &= np.roll(above, step, axis)
    assert core.sum() > 20
    np.testing.assert_allclose(shown[core][:, :3].mean(axis=0), expected, atol=3)
    assert ring.nodes.attentionProxy.GetDisplayNode().GetColorNodeID() in mrml.COLOR_PREFERENCE


def test_opacity_zero_shows_no_overlay_and_the_default_is_the_views(ring) -> None:
    alone = snapshot.renderSlice(ring.scene, ring.nodes.cineProxy, sliceIndex=1)
    zero = snapshot.renderSlice(ring.scene, ring.nodes.cineProxy, ring.nodes.attentionProxy, sliceIndex=1, opacity=0)
    np.testing.assert_array_equal(zero, alone)
    mrml.setOverlayOpacity(0.0, ring.scene)  # what the panel's slider does
    np.testing.assert_array_equal(snapshot.renderView(ring.scene, "Red", sliceIndex=1), alone)
    mrml.setOverlayOpacity(0.8, ring.scene)
    assert snapshot.sceneOpacity(ring.scene, ring.nodes.attentionProxy) == pytest.approx(0.8)
    np.testing.assert_array_equal(
        snapshot.renderView(ring.scene, "Red", sliceIndex=1),
        snapshot.renderSlice(ring.scene, ring.nodes.cineProxy, ring.nodes.attentionProxy, sliceIndex=1, opacity=0.8))


def test_the_browser_item_chooses_the_frame(ring) -> None:
    pictures = {}
    for item in (0, 3, 1):
        ring.nodes.browser.SetSelectedItemNumber(item)
        pictures[item] = snapshot.renderView(ring.scene, "Red", sliceIndex=1, opacity=0)
        bright = pictures[item][..., 0] > 128
        truth = ring.cine.array[item, 1] == 1000
        assert (bright == truth).mean() > 0.97, f"item {item} does not show phase {item}"
    assert not np.array_equal(pictures[0], pictures[3])
    ring.nodes.browser.SetSelectedItemNumber(3)  # the map follows the phase too
    shown = snapshot.renderView(ring.scene, "Red", sliceIndex=1)
    overlay = np.abs(shown.astype(int) - pictures[3]).max(axis=-1) > 0
    assert overlay[ring.att.array[3, 1] >= 0.2].mean() > 0.9


def test_the_picture_is_the_volumes_grid_and_the_scene_is_left_alone(ring) -> None:
    scene, cine = ring.scene, ring.nodes.cineProxy
    before = scene.GetNumberOfNodes()
    red = slice_node(scene)
    red_matrix = snapshot._matrix(red.GetSliceToRAS())
    for k in (0, 2):
        ijk = snapshot.pixelIJK(cine, k)
        rows, cols = np.mgrid[:H, :W]
        np.testing.assert_allclose(ijk, np.stack([cols, rows, np.full((H, W), k)], axis=-1), atol=1e-6)
    ijk = snapshot.pixelIJK(cine, 1, scale=3)  # pixel centres evenly inside each voxel
    assert ijk.shape == (3 * H, 3 * W, 3)
    np.testing.assert_allclose(ijk[1, 1], (0, 0, 1), atol=1e-6)
    np.testing.assert_allclose(ijk[4, 7], (2, 1, 1), atol=1e-6)
    big = snapshot.renderSlice(scene, cine, sliceIndex=1, scale=3)
    np.testing.assert_array_equal(big[1::3, 1::3], snapshot.renderSlice(scene, cine, sliceIndex=1))
    fitted = snapshot.pixelIJK(cine, 1, size=(300, 120))  # fitted: the whole slice is in the picture
    inside = (fitted[..., 0] >= -0.5) & (fitted[..., 0] <= W - 0.5) & (fitted[..., 1] >= -0.5) & (fitted[..., 1] <= H - 0.5)
    assert inside.any(axis=1).all() and np.allclose(fitted[..., 2], 1)
    assert snapshot.renderSlice(scene, cine, sliceIndex=1, size=(300, 120)).shape == (120, 300, 4)
    assert scene.GetNumberOfNodes() == before
    np.testing.assert_array_equal(snapshot._matrix(red.GetSliceToRAS()), red_matrix)
    with pytest.raises(IndexError):
        snapshot.renderSlice(scene, cine, sliceIndex=S)


def test_png_is_written_atomically_and_reads_back(ring, tmp_path) -> None:
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    rgba = snapshot.renderView(ring.scene, "Red", sliceIndex=1, scale=2)
    path = snapshot.writePng(rgba, tmp_path / "figs" / "view.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and sorted(p.name for p in path.parent.iterdir()) == ["view.png"]
    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    width, height, _ = image.GetDimensions()
    back = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[::-1]
    np.testing.assert_array_equal(back, rgba)
    with pytest.raises(ValueError):
        snapshot.writePng(rgba[..., :3], tmp_path / "bad.png")


# ----------------------------------------------------------------------------- a real detection


@pytest.fixture(scope="module")
def detected(tmp_path_factory):
    """One server over a fresh phantom cohort; the scar study with the most scar detected through ScarSession."""
    from CineScarLib.session import ScarSession
    from test_cinescar_server import serve_phantom_cohort

    cohort, note, server = serve_phantom_cohort(tmp_path_factory.mktemp("cinescar-snapshot"))
    try:
        scarred = {}
        for truth_file in sorted((cohort / "truth").glob("*.truth.json")):
            image_id = truth_file.name[: -len(".truth.json")]
            labels = json.loads(truth_file.read_text())["mask_labels"]
            assert labels[str(MYOCARDIUM)] == "LV myocardium" and labels[str(SCAR)].startswith("scar")
            masks = np.load(cohort / "truth" / f"{image_id}.masks.npz")["masks"]
            scarred[image_id] = masks
        image_id = max(scarred, key=lambda i: int((scarred[i] == SCAR).sum()))
        session = ScarSession(server.url)
        session.connect()
        detection = session.detect(image_id, mc_samples=0)
        yield types.SimpleNamespace(detection=detection, masks=scarred[image_id], image_id=image_id, model=note)
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_real_detection_overlay_falls_on_the_myocardium(detected, scene) -> None:
    from CineScarLib.logic import ScarLogic

    detection, masks = detected.detection, detected.masks  # masks (S, T, H, W) in the study's slice order
    assert masks.shape == (detection.cine.slices, detection.cine.phases, detection.cine.rows, detection.cine.columns)
    logic = ScarLogic()
    nodes = logic.showDetection(detection)  # the module's own scene building and slice-view set-up
    k = int(np.argmax((masks == SCAR).sum(axis=(1, 2, 3))))
    phases = sorted({0, detection.cine.phases // 3, 2 * detection.cine.phases // 3})
    report = []
    for t in phases:
        nodes.browser.SetSelectedItemNumber(t)
        truth = masks[k, t]
        myocardium = (truth == MYOCARDIUM) | (truth == SCAR)
        plain = snapshot.renderView(scene, "Red", sliceIndex=k, opacity=0)
        # orientation check: the picture is the study's slice k, phase t (bright blood inside dark myocardium)
        grey = plain[..., 0].astype(float)
        assert grey[truth == 1].mean() > grey[myocardium].mean() + 20
        shown = snapshot.renderView(scene, "Red", sliceIndex=k)
        overlay = (np.abs(shown.astype(int) - plain).max(axis=-1) > 0) & (chroma(shown) > 0)
        att = detection.attention.array[t, k]
        assert overlay.sum() > 20, f"no overlay shown at phase {t} (map max {att.max():.2f})"
        on = float(myocardium[overlay].mean())
        share = float(myocardium.mean())
        scar_hit = float((truth == SCAR)[overlay].mean())
        report.append((t, int(overlay.sum()), on, share, scar_hit))
    print(f"\n{detected.image_id} slice {k} ({detected.model}): phase, overlay pixels, on myocardium, "
          f"myocardium's share of the picture, on scar: {report}")
    # measured (shipped model, PHANTOM-700004 slice 9, phases 0/8/16): 0.80-0.82 of ~155 overlay pixels on the
    # myocardium, which covers 2.4-2.6 % of the picture; 0.41-0.44 on the scar itself
    for t, n, on, share, _ in report:
        assert on >= 0.6 and on >= 10 * share, f"phase {t}: {on:.2f} of {n} overlay pixels on the myocardium"
