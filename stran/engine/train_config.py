"""What defines a training run (``TrainConfig``) and what it reports (``EpochStats``, ``TrainResult``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stran.engine.augment import AugmentConfig
from stran.transforms.preprocess import PreprocessConfig


@dataclass
class TrainConfig:
    """Everything that defines a training run (part of the resume key and stored in the checkpoint)."""

    model: str = "stran"
    model_config: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8
    slice_loss_weight: float = 0.5
    segment_loss_weight: float = 0.5
    pixel_loss_weight: float = 1.0
    unit_loss_weight: float = 1.0
    refit_reader: bool = True  # networks with a map head: refit the wall reader on the frozen maps at the end
    seed: int = 0
    augment: bool = True
    augment_config: AugmentConfig = field(default_factory=AugmentConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    init_checkpoint: str = ""  # start from these weights (fine-tuning) instead of a random initialisation
    num_threads: int = 2
    time_budget_s: float = 0.0  # > 0: start no epoch that would end past this many seconds (interactive retraining)

    def __post_init__(self) -> None:
        if isinstance(self.augment_config, dict):
            self.augment_config = AugmentConfig(**self.augment_config)
        if isinstance(self.preprocess, dict):
            self.preprocess = PreprocessConfig(**self.preprocess)
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if not 0 < self.lr < 1:
            problems.append(f"lr must be in (0, 1) (got {self.lr})")
        if self.patience < 1:
            problems.append(f"patience must be >= 1 (got {self.patience})")
        for name in ("slice_loss_weight", "segment_loss_weight", "pixel_loss_weight", "unit_loss_weight"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0 (got {getattr(self, name)})")
        if problems:
            raise ValueError("invalid training options: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Hash of the options that change the result (epochs excluded so a run can be extended)."""
        d = self.to_dict()
        d.pop("epochs")
        d.pop("num_threads")
        d.pop("time_budget_s")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    lr: float
    seconds: float
    val_scar_dice: float = float("nan")  # mean Dice of the scar map on validation slices with scar (map head only)


@dataclass
class TrainResult:
    best_checkpoint: Path
    best_epoch: int
    best_val_loss: float
    best_val_auc: float
    threshold: float
    history: list[EpochStats]
    stopped_early: bool
    resumed_from_epoch: int
    initial_val_loss: float | None = None  # the starting weights' validation loss (fine-tuning), before any step
    initial_val_auc: float | None = None
    stopped_by_budget: bool = False
