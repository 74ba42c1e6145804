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

from stran.engine.augment import AugmentConfig  # noqa: E402
from stran.engine.dataset import StudyRecord, find_studies, split_records  # noqa: E402
from stran.engine.trainer import TrainConfig  # noqa: E402
from stran.models import model_options  # noqa: E402
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
FRESH_COHORT = CohortSpec("fresh", 400, 3)  # a seed no training, selection or earlier report ever used
VAL_FRACTION = 0.2
SPLIT_SEED = 0
CACHE = WORK / "cache"
RECIPE_EPOCHS = 20  # the demo model's budget: ~2.5 min per epoch of 768 studies on 2 cores, under 60 min in all


def has_map_head(network: str) -> bool:
    return "map_head" in model_options(network)


def recipe(network: str = "stran", *, epochs: int = RECIPE_EPOCHS, **overrides) -> TrainConfig:
    """The recipe that learns (docs/training.md): every target the cohort has (study, slice, AHA segment and pixel
    labels) through the scar-map head where the network has one, Adam 1e-3 with cosine decay, batch 8, light noise
    augmentation (the scar's contrast is about one noise standard deviation: added noise would bury it)."""
    fields = {
        "model": network,
        "model_config": {"map_head": "scar"} if has_map_head(network) else {},
        "epochs": epochs,
        "batch_size": 8,
        "lr": 1e-3,
        "patience": epochs,
        "augment_config": AugmentConfig(noise_std=0.01),
        "seed": 0,
    }
    fields.update(overrides)
    return TrainConfig(**fields)


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


def fresh_records() -> list[StudyRecord]:
    return find_studies(ensure_cohort(FRESH_COHORT), require_labels=True)
