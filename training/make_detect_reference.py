"""Write tests/data/detect_reference.json: what the shipped model answers on two sample studies (fixed MC-dropout
seed), so that speed work on the detector is checked against today's numbers (tests/unit/test_detect_reference.py).

    .venv/bin/python training/make_detect_reference.py     # only when the shipped model or its recipe changes
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
STUDIES = ("PHANTOM-900000", "PHANTOM-900003")
MODEL = REPO / "apps" / "stran" / "model" / "pretrained_scar.pt"
OUT = REPO / "tests" / "data" / "detect_reference.json"
SEED, MC = 1234, 8


class _Float64(torch.nn.Module):
    """The network in float64 behind the detector's float32 interface (for ``answers(exact=True)``)."""

    map_head = True

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model.double()

    def forward(self, x: torch.Tensor, geometry: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.model(x.double(), None if geometry is None else geometry.double())


def answers(exact: bool = False) -> dict:
    """The detector's answers; ``exact``: the network in float64 and no MC dropout (the reference any float32
    summation order is measured against)."""
    from stran.engine.detect import Detector
    from stran.io import load_study
    from stran.serve import ensure_samples

    torch.set_num_threads(1)
    detector = Detector(MODEL, mc_samples=0 if exact else MC)
    if exact:
        detector.model = _Float64(detector.model).eval()
    out = {"model_sha256": detector.model_info["sha256"], "seed": SEED, "mc_samples": MC, "studies": {}}
    for study_id in STUDIES:
        study = load_study(ensure_samples() / "images" / f"{study_id}.nii.gz")
        torch.manual_seed(SEED)
        detection = detector.detect(study, image_id=study_id)
        r, att = detection.result, detection.attention
        out["studies"][study_id] = {
            "study_probability": r["study_probability"],
            "slice_probabilities": r["slice_probabilities"],
            "segment_probabilities": r["segment_probabilities"],
            "uncertainty": {k: r["uncertainty"].get(k) for k in ("std", "entropy", "mutual_information")},
            "map_sum": float(att.sum()), "map_max": float(att.max()),
            "map_argmax": [int(v) for v in np.unravel_index(int(att.argmax()), att.shape)],
            "segment_map": r["segment_map"],
        }
    return out


if __name__ == "__main__":
    OUT.write_text(json.dumps(answers(), indent=1) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}")
    sys.exit(0)
