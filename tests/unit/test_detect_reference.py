"""The shipped model's answers on two sample studies (fixed MC-dropout seed) are today's: tests/data/
detect_reference.json, written by training/make_detect_reference.py with the detector as it was before the speed
work (MC passes re-running the whole network), so any faster path must give the same numbers. Slice and segment
probabilities sum ~10^5 float32 products per AHA unit, and the order of those sums moves them by a few 1e-5 (the
stored answers are 3.4e-5 from the float64 answer): they are held to the network in float64 instead."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
REFERENCE = json.loads((REPO / "tests" / "data" / "detect_reference.json").read_text())


def _answers(exact: bool) -> dict:
    import sys

    sys.path.insert(0, str(REPO / "training"))
    from make_detect_reference import answers

    threads = torch.get_num_threads()
    try:
        return answers(exact)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def now() -> dict:
    return _answers(exact=False)


@pytest.fixture(scope="module")
def exact() -> dict:
    return _answers(exact=True)


@pytest.mark.slow
def test_the_detector_answers_as_before(now, exact) -> None:
    if now["model_sha256"] != REFERENCE["model_sha256"]:
        pytest.fail("the shipped model changed: run training/make_detect_reference.py with the old detector first")
    for study_id, ref in REFERENCE["studies"].items():
        got = now["studies"][study_id]
        assert got["study_probability"] == pytest.approx(ref["study_probability"], abs=1e-5)
        for key in ("slice_probabilities", "segment_probabilities"):
            assert [v is None for v in got[key]] == [v is None for v in ref[key]]
            known = [[v for v in answer[key] if v is not None] for answer in (got, ref, exact["studies"][study_id])]
            np.testing.assert_allclose(known[0], known[2], atol=1e-5, rtol=0)  # today's float32 vs float64
            np.testing.assert_allclose(known[1], known[2], atol=5e-5, rtol=0)  # the stored float32 vs float64
        for key, value in ref["uncertainty"].items():  # the MC-dropout samples themselves (same seed)
            assert got["uncertainty"][key] == pytest.approx(value, abs=1e-5), key
        assert got["map_sum"] == pytest.approx(ref["map_sum"], rel=1e-5)
        assert got["map_max"] == pytest.approx(ref["map_max"], abs=1e-5) and got["map_argmax"] == ref["map_argmax"]
        assert got["segment_map"] == ref["segment_map"]
