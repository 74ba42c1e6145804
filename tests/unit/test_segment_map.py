"""The detection's segment map: its JSON encoding (stran/report/aha.py, shared with the Slicer module) and its
mapping from the network's grid back to the study's (stran/transforms/inverse.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stran.report.aha import decode_segment_map, encode_segment_map
from stran.transforms.inverse import attention_to_study, segments_to_study
from stran.transforms.preprocess import PrepInfo


def test_encoding_round_trips_and_is_small() -> None:
    rng = np.random.default_rng(3)
    ids = np.zeros((5, 40, 48), np.uint8)
    yy, xx = np.mgrid[0:40, 0:48]
    ring = np.abs(np.hypot(yy - 20, xx - 24) - 12) < 3
    angle = (np.degrees(np.arctan2(yy - 20, xx - 24)) % 360 // 60).astype(np.uint8) + 1
    ids[1][ring] = angle[ring]  # basal 1-6
    ids[2][ring] = angle[ring] + 6  # mid 7-12
    ids[3][ring] = (angle[ring] - 1) % 4 + 13  # apical 13-16
    ids[4, rng.integers(0, 40, 30), rng.integers(0, 48, 30)] = 17
    encoded = json.loads(json.dumps(encode_segment_map(ids)))
    assert np.array_equal(decode_segment_map(encoded), ids)
    assert encoded["shape"] == [5, 40, 48] and all(run[3] > 0 for run in encoded["runs"])
    assert len(json.dumps(encoded)) < ids.size  # smaller than one byte per pixel
    assert encode_segment_map(np.zeros((2, 3, 3), np.uint8))["runs"] == []


@pytest.mark.parametrize("bad,match", [
    ({"encoding": "other", "shape": [1, 2, 2], "runs": []}, "not a segment map"),
    ({"encoding": "runs-v1", "shape": [2, 2], "runs": []}, "shape"),
    ({"encoding": "runs-v1", "shape": [1, 2, 2], "runs": [[0, 3, 2, 1]]}, "does not fit"),
    ({"encoding": "runs-v1", "shape": [1, 2, 2], "runs": [[1, 0, 1, 1]]}, "does not fit"),
    ({"encoding": "runs-v1", "shape": [1, 2, 2], "runs": [[0, 0, 1, 18]]}, "does not fit"),
    ("runs", "not a segment map"),
])
def test_a_broken_map_is_refused(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        decode_segment_map(bad)


def test_segments_land_where_the_attention_does() -> None:
    """The same crop, zoom and slice mapping as the attention map: a segment's pixels on the study grid are where a
    map that is 1 on that segment comes back above one half."""
    size, n_out = 16, 3
    prep = PrepInfo(study_shape=(5, 4, 30, 34), slice_coords=np.array([1.0, 2.0, 3.0]),
                    centers=np.array([[14.0, 17.0], [15.0, 16.0], [14.5, 18.0]]), lv_slices=np.ones(5, bool),
                    source_spacing=(1.0, 1.0), spacing_mm=1.5, size=size)
    ids = np.zeros((n_out, size, size), np.uint8)
    ids[:, 4:8, 3:9] = 7
    ids[:, 9:13, 8:14] = 10
    study_ids = segments_to_study(ids, prep)
    assert study_ids.shape == (5, 30, 34) and study_ids.dtype == np.uint8
    assert not study_ids[0].any() and not study_ids[4].any()  # slices outside the network's input
    for number in (7, 10):
        att = np.repeat((ids == number).astype(np.float32)[:, None], 2, axis=1)
        back = attention_to_study(att, prep, np.tile(np.linspace(0, 0.75, 4), (5, 1)))[:, 0] > 0.5
        mine = study_ids == number
        assert mine.any()
        assert (mine & back).sum() / (mine | back).sum() > 0.8
