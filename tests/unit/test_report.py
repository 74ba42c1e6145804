"""The study report (stran.report): the AHA bullseye's geometry, the page drawn for a real detection of a phantom
study with the shipped model, its colours read back from the PNG, determinism, and ``stran detect --report``."""

from __future__ import annotations

import copy
import io
import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stran.report import N_SEGMENTS, RING_RADII, aha_segments, segment_at, segment_ids

REPO = Path(__file__).resolve().parents[2]
WARNING = "Research use only. Not for clinical use. Model trained on synthetic phantoms."


# ----------------------------------------------------------------------------- the bullseye's geometry


@pytest.mark.parametrize(
    ("x", "y", "segment"),
    [
        (0.0, 0.0, 17), (0.1, -0.1, 17),  # the centre: the apex
        (0.0, 0.9, 1), (0.0, 1.0, 1),  # top of the outer ring (the rim itself is inside): basal anterior
        (-0.8, 0.45, 2), (-0.8, -0.45, 3), (0.0, -0.9, 4), (0.8, -0.45, 5), (0.8, 0.45, 6),  # counterclockwise
        (0.0, 0.6, 7), (-0.55, 0.2, 8), (-0.55, -0.2, 9), (0.0, -0.6, 10), (0.55, -0.2, 11), (0.55, 0.2, 12),
        (0.0, 0.4, 13), (-0.4, 0.0, 14), (0.0, -0.4, 15), (0.4, 0.0, 16),
        (-0.9, 0.0, 3), (0.0, 0.75, 1), (0.0, 0.5, 7), (0.0, 0.25, 13),  # boundaries: the segment starting there, outer ring
    ],
)
def test_segment_at_maps_known_points_to_their_segments(x: float, y: float, segment: int) -> None:
    assert segment_at(x, y) == segment


def test_points_outside_the_rim_have_no_segment() -> None:
    assert segment_at(0.0, 1.0001) is None and segment_at(0.8, 0.8) is None and segment_at(-3.0, 0.0) is None
    assert segment_ids(np.array([0.0, 2.0]), np.array([0.0, 0.0])).tolist() == [17, 0]


def test_the_segments_follow_the_standard_aha_layout() -> None:
    segs = aha_segments()
    assert [s.number for s in segs] == list(range(1, 18)) and len(segs) == N_SEGMENTS
    assert [s.level for s in segs] == ["basal"] * 6 + ["mid"] * 6 + ["apical"] * 4 + ["apex"]
    assert segs[0].name == "basal anterior" and segs[13].name == "apical septal" and segs[16].name == "apex"
    assert (segs[0].theta_center, segs[6].theta_center, segs[12].theta_center) == (90.0, 90.0, 90.0)  # anterior: top
    assert segs[1].theta_center == 150.0 and segs[13].theta_center == 180.0  # septum on the left
    assert [RING_RADII[k] for k in ("apex", "apical", "mid", "basal")] == [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
    for s in segs:
        x, y = s.label_point()
        assert segment_at(x, y) == s.number  # the text goes inside its own segment
        poly = s.polygon()
        assert poly.shape[1] == 2 and np.all(np.hypot(*poly.T) <= s.r_outer + 1e-9)
        area = 0.5 * abs(np.dot(poly[:, 0], np.roll(poly[:, 1], 1)) - np.dot(poly[:, 1], np.roll(poly[:, 0], 1)))
        exact = math.radians(s.theta_end - s.theta_start) / 2 * (s.r_outer ** 2 - s.r_inner ** 2)
        assert area == pytest.approx(exact, rel=2e-3)
    # a fine grid: every point of the disc is in exactly the segment whose wedge holds it, in the right share
    g = np.linspace(-1, 1, 801)
    xx, yy = np.meshgrid(g, g)
    ids = segment_ids(xx, yy)
    cell = (g[1] - g[0]) ** 2
    for s in segs:
        exact = math.radians(s.theta_end - s.theta_start) / 2 * (s.r_outer ** 2 - s.r_inner ** 2)
        assert (ids == s.number).sum() * cell == pytest.approx(exact, rel=0.02)


def test_the_geometry_module_runs_alone_with_numpy_only(tmp_path: Path) -> None:
    """What the Slicer module will do with it: a copy of the file, imported in an isolated interpreter without
    ``stran``, loads nothing but the standard library and numpy."""
    (tmp_path / "aha.py").write_text((REPO / "stran" / "report" / "aha.py").read_text(encoding="utf-8"), encoding="utf-8")
    script = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, sys.argv[1])
        before = set(sys.modules)
        import aha
        loaded = sorted({m.split(".")[0] for m in set(sys.modules) - before})
        print(json.dumps({"loaded": loaded, "seg": aha.segment_at(0.0, 0.9), "stran": "stran" in sys.modules}))
    """)
    done = subprocess.run([sys.executable, "-I", "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["seg"] == 1 and not report["stran"]
    outside_stdlib = {name for name in set(report["loaded"]) - set(sys.stdlib_module_names)
                      if not name.startswith("_cython_") and name != "cython_runtime"}  # numpy's compiled parts
    assert outside_stdlib == {"aha", "numpy"}


# ----------------------------------------------------------------------------- a real detection


@pytest.fixture(scope="module")
def detected() -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """A phantom study with a scar (scenario A), detected by the shipped model: (result, pixels, map)."""
    from stran.engine.detect import Detector
    from stran.phantom import generate_study, sample_config
    from stran.resources import resolve_model

    study = generate_study(sample_config(4243, scenario="A")).cine
    detection = Detector(resolve_model(None), mc_samples=2).detect(study, image_id="phantom_4243")
    assert detection.attention is not None and detection.result["segment_probabilities"] is not None
    return json.loads(json.dumps(detection.result)), study.pixels, detection.attention


def _texts(fig: Any) -> str:
    parts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        parts += [t.get_text() for t in ax.texts] + [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    return "\n".join(parts)


def _drawn(result: dict[str, Any], pixels: np.ndarray, map_: np.ndarray | None) -> Any:
    """The page as report_bytes draws it, laid out, for its coordinates."""
    import matplotlib.style

    from stran.report.render import build_figure

    with matplotlib.style.context("default"):
        fig = build_figure(result, pixels, map_)
        fig.canvas.draw()
    return fig


def _png_pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def _pixel_of(fig: Any, ax: Any, x: float, y: float, image: np.ndarray) -> np.ndarray:
    dx, dy = ax.transData.transform((x, y))
    return image[int(round(image.shape[0] - dy)), int(round(dx))]


def _inside(seg: Any) -> tuple[float, float]:
    """A point of a segment away from its edges and its text: 20 % into the wedge from its inner, starting corner."""
    if seg.level == "apex":
        return 0.19 * math.cos(math.radians(315)), 0.19 * math.sin(math.radians(315))
    r = seg.r_inner + 0.2 * (seg.r_outer - seg.r_inner)
    t = math.radians(seg.theta_start + 0.2 * (seg.theta_end - seg.theta_start))
    return r * math.cos(t), r * math.sin(t)


def test_the_report_of_a_real_detection_is_written(detected: tuple, tmp_path: Path) -> None:
    from PIL import Image

    from stran.report.render import write_report

    result, pixels, map_ = detected
    png, pdf = tmp_path / "s.report.png", tmp_path / "s.report.pdf"
    assert write_report(result, pixels, map_, png=png, pdf=pdf) == [png, pdf]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    with Image.open(png) as image:
        assert image.size == (1402, 992)  # A4 landscape at 120 dpi
        assert image.info["Description"] == WARNING and "Software" not in image.info
    assert 30_000 < png.stat().st_size < 3_000_000 and 10_000 < pdf.stat().st_size < 3_000_000
    created = re.sub(r"[-:T]", "", result["created_utc"])[:14]
    assert f"/CreationDate (D:{created}Z)".encode() in pdf.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.report.pdf", "s.report.png"]  # no temporary files left

    fig = _drawn(result, pixels, map_)
    text = _texts(fig)
    model = result["model"]
    for expected in (WARNING, model["name"], f"version {model['version']}", model["sha256"], "Uncertainty",
                     "MC dropout, 2 passes", result["study"]["study_uid"], result["detection_id"], "anterior", "septal"):
        assert expected in text, expected
    for k, p in enumerate(result["segment_probabilities"]):
        assert f"{p:.2f}" in text, f"segment {k + 1}"
    labels = {ax.get_label() for ax in fig.axes}
    assert {"bullseye", "slices", "summary"} <= labels


def test_a_segments_colour_on_the_page_is_its_probabilitys_colour(detected: tuple) -> None:
    from stran.report.render import report_bytes, segment_colour

    result, pixels, map_ = detected
    image = _png_pixels(report_bytes(result, pixels, map_)[0])
    fig = _drawn(result, pixels, map_)
    (ax,) = [a for a in fig.axes if a.get_label() == "bullseye"]
    for seg in aha_segments():
        p = result["segment_probabilities"][seg.number - 1]
        x, y = _inside(seg)
        assert segment_at(x, y) == seg.number
        found = _pixel_of(fig, ax, x, y, image).astype(int)
        expected = np.round(np.array(segment_colour(p)) * 255).astype(int)
        assert np.abs(found - expected).max() <= 2, (seg.number, p, found, expected)
    # and the colours differ where the probabilities do: segment 3 (lowest here) is not segment 6 (highest)
    probs = result["segment_probabilities"]
    assert max(probs) - min(probs) > 0.5


def test_absent_segments_say_no_segment_output(detected: tuple) -> None:
    from stran.report.render import report_bytes

    result, pixels, map_ = detected
    for absent in (None, []):
        plain = dict(result, segment_probabilities=absent)
        fig = _drawn(plain, pixels, map_)
        (ax,) = [a for a in fig.axes if a.get_label() == "bullseye"]
        assert "no segment output" in _texts(fig) and not ax.patches  # no wedges drawn
        assert any(a.get_label() == "slices" for a in fig.axes)  # the slices are still shown
    image = _png_pixels(report_bytes(dict(result, segment_probabilities=None), pixels, map_)[0])
    x, y = _inside(aha_segments()[0])
    assert _pixel_of(fig, ax, x, y, image).tolist() == [255, 255, 255, 255]  # white page where segment 1 would be
    # one segment without a value: grey (hatched), the others coloured
    partial = copy.deepcopy(result)
    partial["segment_probabilities"][16] = None
    fig = _drawn(partial, pixels, map_)
    assert "\u2013" in _texts(fig)
    with pytest.raises(ValueError, match="16 segment_probabilities, not 17"):
        report_bytes(dict(result, segment_probabilities=[0.5] * 16), pixels, map_)


def test_key_frames_are_the_highest_slices_at_end_diastole_with_the_map_over_them(detected: tuple) -> None:
    from stran.report.render import MAP_THRESHOLD, key_frame_slices

    assert key_frame_slices([None, 0.2, 0.9, 0.9, None, 0.95, 0.1]) == [5, 2, 3]
    assert key_frame_slices([None, 0.4]) == [1] and key_frame_slices([None, None]) == []
    result, pixels, map_ = detected
    probs = result["slice_probabilities"]
    chosen = key_frame_slices(probs)
    best = sorted((p for p in probs if p is not None), reverse=True)[:3]
    assert len(chosen) == 3 and [probs[k] for k in chosen] == best
    fig = _drawn(result, pixels, map_)
    frames = {a.get_label(): a for a in fig.axes if a.get_label().startswith("key_frame_")}
    assert set(frames) == {f"key_frame_{k}" for k in chosen}
    for k in chosen:
        cine, overlay = frames[f"key_frame_{k}"].get_images()
        shown = np.asarray(cine.get_array())
        # the cine's phase 0 (end-diastole), cropped around the map; the map masked below the threshold
        rows = [r for r in range(pixels.shape[2] - shown.shape[0] + 1)
                if any(np.array_equal(pixels[k, 0, r:r + shown.shape[0], c:c + shown.shape[1]], shown)
                       for c in range(pixels.shape[3] - shown.shape[1] + 1))]
        assert rows, f"slice {k}: the key frame is not a part of phase 0"
        values = overlay.get_array()
        assert values.shape == shown.shape
        assert np.array_equal(np.ma.getmaskarray(values), values.data < MAP_THRESHOLD)
        assert (~np.ma.getmaskarray(values)).any()  # this scar shows on the key frames
    no_map = _drawn(result, pixels, None)
    assert all(len(a.get_images()) == 1 for a in no_map.axes if a.get_label().startswith("key_frame_"))
    assert "; no map" in _texts(no_map)


def test_the_same_input_gives_the_same_bytes(detected: tuple) -> None:
    import matplotlib

    from stran.report.render import report_bytes

    result, pixels, map_ = detected
    first = report_bytes(result, pixels, map_)
    # a user's matplotlib settings change nothing on the page, and are left as they were
    with matplotlib.rc_context({"font.size": 21, "axes.facecolor": "red", "lines.linewidth": 5}):
        second = report_bytes(result, pixels, map_)
        assert matplotlib.rcParams["font.size"] == 21 and matplotlib.rcParams["axes.facecolor"] == "red"
    assert first == second
    undated = {k: v for k, v in result.items() if k != "created_utc"}
    assert b"/CreationDate" not in report_bytes(undated, pixels, map_)[1]  # no time rather than the current one
    changed = copy.deepcopy(result)
    changed["segment_probabilities"][0] = 0.01
    assert report_bytes(changed, pixels, map_)[0] != first[0]


def test_drawing_the_report_leaves_no_pyplot_state() -> None:
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from stran.report.render import report_bytes
        result = {"slice_probabilities": [0.2, None, 0.8], "segment_probabilities": None, "threshold": 0.5,
                  "study_probability": 0.7, "prediction": 1, "prediction_label": "scar",
                  "model": {"name": "m", "version": "1", "sha256": "ab" * 32}}
        png, pdf = report_bytes(result, np.zeros((3, 2, 16, 16), np.float32), None)
        assert png.startswith(b"\\x89PNG") and pdf.startswith(b"%PDF")
        print(sorted(m for m in sys.modules if m.startswith("matplotlib.pyplot") or m == "matplotlib.pylab"))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_a_failed_drawing_leaves_the_old_report_in_place(detected: tuple, tmp_path: Path) -> None:
    from stran.report.render import write_report

    result, pixels, map_ = detected
    png, pdf = tmp_path / "s.report.png", tmp_path / "s.report.pdf"
    png.write_bytes(b"old png")
    with pytest.raises(ValueError, match="not on the study's grid"):
        write_report(result, pixels, map_[:, :, :10], png=png, pdf=pdf)
    assert png.read_bytes() == b"old png" and not pdf.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.report.png"]


# ----------------------------------------------------------------------------- stran detect --report


def test_stran_detect_report_writes_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stran.cli import main
    from stran.io import write_nifti
    from stran.phantom import generate_study, sample_config

    study = write_nifti(generate_study(sample_config(4243, scenario="A")).cine, tmp_path / "phantom_4243.nii.gz")
    out = tmp_path / "out"
    assert main(["detect", str(study), "--out", str(out), "--mc-samples", "2", "--report", "--no-attention"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["phantom_4243.json", "phantom_4243.report.pdf",
                                                     "phantom_4243.report.png"]  # --no-attention: no map file
    assert f"report: {out / 'phantom_4243.report.png'}, phantom_4243.report.pdf" in printed
    result = json.loads((out / "phantom_4243.json").read_text())
    png, pdf = (out / "phantom_4243.report.png").read_bytes(), (out / "phantom_4243.report.pdf").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and pdf[:5] == b"%PDF-"
    assert f"/CreationDate (D:{re.sub(r'[-:T]', '', result['created_utc'])[:14]}Z)".encode() in pdf
    # the page is the one of the JSON beside it: its bullseye shows that result's segment probabilities
    from stran.report.render import segment_colour

    image = _png_pixels(png)
    fig = _drawn(result, np.zeros((len(result["slice_probabilities"]), 1, 8, 8), np.float32), None)
    (ax,) = [a for a in fig.axes if a.get_label() == "bullseye"]
    for seg in aha_segments():
        expected = np.round(np.array(segment_colour(result["segment_probabilities"][seg.number - 1])) * 255)
        assert np.abs(_pixel_of(fig, ax, *_inside(seg), image) - expected).max() <= 2, seg.number
