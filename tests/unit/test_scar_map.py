"""The map the user sees means something: the shipped model's scar map lies on the myocardium, on the input's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from stran.engine.detect import Detector
from stran.phantom import generate_study, sample_config

MODEL = Path(__file__).resolve().parents[2] / "apps" / "stran" / "model" / "pretrained_scar.pt"


@pytest.fixture(scope="module")
def detector():
    return Detector(MODEL, mc_samples=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed,scenario", [(7101, "A"), (7102, "B"), (7103, "C")])
def test_the_hottest_map_pixels_lie_on_the_myocardium(detector, seed, scenario):
    phantom = generate_study(sample_config(seed, scenario=scenario))  # a seed no cohort of the project uses
    detection = detector.detect(phantom.cine, image_id=f"test-{seed}")
    result, heat = detection.result, detection.attention
    assert result["map"] == "scar" and len(result["segment_probabilities"]) == 17
    assert heat.shape == phantom.cine.pixels.shape  # on the input's grid, after the inverse preprocessing
    masks = phantom.truth.masks
    wall = (masks == 2) | (masks == 4)
    near_wall = ndimage.binary_dilation(wall, structure=np.ones((1, 1, 3, 3), bool))  # one pixel of slack
    hottest = heat >= np.quantile(heat, 1 - 2e-4)  # the 0.02 % hottest pixels of the study (~100-200)
    on_wall = float((hottest & near_wall).sum() / hottest.sum())
    assert on_wall >= 0.8, f"only {on_wall:.0%} of the hottest map pixels lie on the myocardium"
    if scenario in "AB":
        scar = masks == 4
        assert float(heat[scar].mean()) > 2 * float(heat[wall & ~scar].mean())  # hotter on scar than on remote wall


@pytest.mark.slow
@pytest.mark.parametrize("seed,scenario", [(7104, "A"), (7105, "B")])
def test_the_segment_map_lies_on_the_myocardium_and_names_the_scarred_segments(detector, seed, scenario):
    """result["segment_map"] (the AHA segment of each myocardial pixel on the input grid, what the Slicer module
    highlights when a segment is clicked): on the truth wall, and the segment holding the most truth scar is one
    the phantom scarred."""
    from stran.report.aha import decode_segment_map

    phantom = generate_study(sample_config(seed, scenario=scenario))
    result = detector.detect(phantom.cine, image_id=f"test-{seed}").result
    ids = decode_segment_map(result["segment_map"])
    masks = phantom.truth.masks
    assert ids.shape == (masks.shape[0],) + masks.shape[2:]
    wall = ((masks == 2) | (masks == 4)).any(axis=1)
    on_wall = float((wall & (ids > 0)).sum() / (ids > 0).sum())
    assert on_wall >= 0.9, f"only {on_wall:.0%} of the segment map lies on the myocardium"
    levels = {1: range(1, 7), 7: range(7, 13), 13: range(13, 17)}
    for k in range(ids.shape[0]):  # one ring per slice
        present = set(np.unique(ids[k])) - {0}
        assert not present or any(present <= set(r) for r in levels.values()), (k, present)
    scar = (masks == 4).any(axis=1)
    share = {n: float(scar[ids == n].mean()) for n in range(1, 17) if (ids == n).sum() >= 20}
    worst = max(share, key=share.get)
    extent = {s["segment"]: s["scar_extent_pct"] for s in phantom.truth.segments}
    assert extent[worst] > 0, f"segment {worst} holds the most truth scar on the map, but the phantom has none there"
