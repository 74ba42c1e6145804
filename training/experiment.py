"""What every experiment of training/ shares: the synthetic cohorts, the split, the training budget.

Cohorts are made by the phantom generator from fixed seeds, so every figure in
training/results and the model card can be reproduced exactly. The training
cohort (seed 1) is split into training and validation; the test cohort (seed
2) is never seen during training or model selection.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stran.engine.dataset import StudyRecord, find_studies, split_records  # noqa: E402
from stran.phantom import GENERATOR_VERSION, generate_cohort  # noqa: E402

WORK = REPO / "work"


@dataclass(frozen=True)
class CohortSpec:
    name: str
    n: int
    seed: int

    @property
    def path(self) -> Path:
        return WORK / "cohorts" / f"{self.name}-s{self.seed}"

    def describe(self) -> str:
        return f"{self.n} synthetic phantom studies (generator {GENERATOR_VERSION}, cohort seed {self.seed})"


TRAIN_COHORT = CohortSpec("train", 960, 1)
TEST_COHORT = CohortSpec("test", 200, 2)
VAL_FRACTION = 0.2
SPLIT_SEED = 0
CACHE = WORK / "cache"


def ensure_cohort(spec: CohortSpec) -> Path:
    """Generate the cohort unless a complete one with the same generator version is already there."""
    manifest = spec.path / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if m.get("n") == spec.n and m.get("generator_version") == GENERATOR_VERSION:
            return spec.path
    print(f"generating {spec.describe()} in {spec.path} ...", flush=True)
    generate_cohort(spec.path, spec.n, spec.seed, workers=2, progress=True)
    return spec.path


def train_val_records() -> tuple[list[StudyRecord], list[StudyRecord]]:
    records = find_studies(ensure_cohort(TRAIN_COHORT), require_labels=True)
    train, val = split_records(records, [1 - VAL_FRACTION, VAL_FRACTION], seed=SPLIT_SEED)
    return train, val


def test_records() -> list[StudyRecord]:
    return find_studies(ensure_cohort(TEST_COHORT), require_labels=True)
