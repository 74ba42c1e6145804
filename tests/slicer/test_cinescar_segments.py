"""CineScarLib.segments: the AHA bullseye review (levels, slice <-> segment, corrections, rendering) and the
correction's ``segment_labels``; numpy only."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "slicer_extension" / "CineScar"))

from CineScarLib import aha  # noqa: E402
from CineScarLib.corrections import Correction, validate_correction  # noqa: E402
from CineScarLib.segments import (  # noqa: E402
    BullseyeState,
    SegmentReviewError,
    apex_last_from_affine,
    png_bytes,
    probability_rgba,
    render_bullseye,
)

RESULT = {
    "segment_probabilities": [k / 16 for k in range(17)],
    # slice 0 and 8 are outside the LV (no score)
    "slice_probabilities": [None, 0.1, 0.5, 0.3, 0.2, 0.8, 0.4, 0.9, None],
    "input": {"lv_slices": [1, 2, 3, 4, 5, 6, 7]},
}


def test_levels_and_slices_follow_the_documented_rule() -> None:
    b = BullseyeState.from_result(RESULT)
    # 7 LV slices, base first: thirds by (i + 0.5) / 7 -> basal 1-2, mid 3-5, apical 6-7
    assert [b.level_of_slice(s) for s in range(9)] == [None, "basal", "basal", "mid", "mid", "mid", "apical",
                                                       "apical", None]
    assert b.slice_of_segment(1) == 2 and b.slice_of_segment(6) == 2  # highest probability in the basal third
    assert b.slice_of_segment(7) == 5 and b.slice_of_segment(13) == 7 and b.slice_of_segment(17) == 7
    assert b.segments_of_slice(1) == tuple(range(1, 7)) and b.segments_of_slice(7) == (13, 14, 15, 16, 17)
    assert b.segments_of_slice(0) == () and b.segments_of_slice(6) == (13, 14, 15, 16)
    flipped = BullseyeState.from_result(RESULT, apex_last=False)  # the last slice is the most basal
    assert flipped.slice_of_segment(17) == 1 and flipped.level_of_slice(7) == "basal"
    with pytest.raises(ValueError, match="1-17"):
        b.slice_of_segment(18)


def test_base_apex_order_from_the_cine_matrix_and_small_studies() -> None:
    towards_apex = np.eye(4)
    towards_apex[:3, 2] = [-0.62 * 8, 0.52 * 8, -0.58 * 8]  # RAS; the model's apex direction (LPS 0.62, -0.52, -0.58)
    assert apex_last_from_affine(towards_apex)
    towards_apex[:3, 2] *= -1
    assert not apex_last_from_affine(towards_apex)
    assert BullseyeState.from_result(RESULT, ijk_to_ras=towards_apex).slice_of_segment(17) == 1
    two = BullseyeState.from_result({"slice_probabilities": [0.2, 0.7], "segment_probabilities": None})
    assert two.lv_slices == [0, 1] and not two.has_probabilities
    assert two.slice_of_segment(7) in (0, 1) and two.slice_of_segment(13) == 1 and two.slice_of_segment(1) == 0
    assert BullseyeState.from_result({"slice_probabilities": []}).slice_of_segment(3) is None


def test_corrections_cycle_and_the_server_rule() -> None:
    b = BullseyeState.from_result(RESULT)
    assert b.segment_labels() is None
    assert [b.cycle(4), b.cycle(4), b.cycle(4)] == [1, 0, None]
    b.cycle(4)
    b.set_correction(10, 0)
    labels = b.segment_labels()
    assert len(labels) == 17 and labels[3] == 1 and labels[9] == 0 and labels.count(None) == 15
    b.check(1)
    with pytest.raises(SegmentReviewError, match=r"segment\(s\) 4 \(basal inferior\)"):
        b.check(0)
    with pytest.raises(ValueError):
        b.set_correction(3, True)
    correction = Correction("img", "1.2.3", 0, [None], "dr. X", segment_labels=labels)
    with pytest.raises(ValueError, match="cannot have an AHA segment labelled scar"):
        validate_correction(correction)
    correction.study_label = 1
    validate_correction(correction)
    assert correction.label()["segment_labels"] == labels
    assert "segment_labels" not in Correction("img", "1.2.3", 1, [None], "dr. X", segment_labels=[None] * 17).label()
    with pytest.raises(ValueError, match="17 entries"):
        validate_correction(Correction("img", "1.2.3", 1, [None], "dr. X", segment_labels=[1, 0]))


def test_render_colours_outline_and_click_mapping() -> None:
    b = BullseyeState.from_result(RESULT)
    size = 220
    image = render_bullseye(b, size)
    assert image.shape == (size, size, 4) and image.dtype == np.uint8
    assert image[0, 0, 3] == 0  # outside the disc: transparent
    # every pixel maps back to the segment the geometry puts there, and carries that segment's colour
    for k, seg in enumerate(aha.aha_segments(), start=1):
        px, py = seg.label_point() if k != 17 else (0.1, 0.0)
        c, r = size / 2, size / 2 - 3
        col, row = int(c + px * r), int(c - py * r)
        assert b.segment_at_pixel(col + 0.5, row + 0.5, size) == k
        assert tuple(int(v) for v in image[row, col]) == probability_rgba((k - 1) / 16)
    assert b.segment_at_pixel(size / 2, 4, size) == 1 and b.segment_at_pixel(1, 1, size) is None
    assert probability_rgba(0.0) == (255, 255, 0, 255) and probability_rgba(1.0) == (255, 0, 0, 255)
    b.selected = 5
    outlined = render_bullseye(b, size)
    changed = np.any(outlined != image, axis=2)
    blue = np.all(outlined == (0, 110, 255, 255), axis=2)
    assert changed.sum() > 50 and blue[changed].all()
    b.cycle(5)
    assert np.any(np.all(render_bullseye(b, size) == (0, 0, 0, 255), axis=2))  # the scar dot


def test_png_bytes_decode_to_the_image() -> None:
    import struct
    import zlib

    image = render_bullseye(BullseyeState.from_result(RESULT), 64)
    png = png_bytes(image)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (64, 64)
    idat = png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(64, 1 + 64 * 4)
    assert (rows[:, 0] == 0).all() and np.array_equal(rows[:, 1:].reshape(64, 64, 4), image)
