"""Second stage of the recipe: fit the wall reader on the measures of the trained maps (the maps frozen).

During the first stage the maps are decoded for a few phases per step and change every step, so the reader learns
from moving, partial measures. Once the maps are trained, this stage measures every training and validation study
once, with the maps in evaluation mode (all phases), and fits the reader further on those fixed measures: unit truth
(scar pixels in the sector of the slice) where a label map exists, and the slice, AHA segment and study labels
through the reader's soft maxima. Seconds of CPU on cached measures; the reader with the best validation loss is
kept, and the decision threshold is chosen on the validation studies (Youden).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from stran.engine.dataset import UNKNOWN, StudyRecord, build_dataset
from stran.engine.loss import bce_known, positive_weight
from stran.engine.metrics import roc_auc, youden_threshold
from stran.models.wall_reader import WallReader, unit_targets
from stran.transforms.preprocess import PreprocessConfig


@dataclass
class Measured:
    """The reader's inputs and targets for a set of studies (first axis: study)."""

    features: torch.Tensor  # (N, S*18, F)
    mass: torch.Tensor  # (N, S*18)
    apex_last: torch.Tensor  # (N,)
    unit: torch.Tensor  # (N, S, 18), -1 unknown
    study: torch.Tensor  # (N,)
    slices: torch.Tensor  # (N, S)
    segments: torch.Tensor  # (N, 17)


@torch.no_grad()
def measure(model: torch.nn.Module, records: Sequence[StudyRecord], config: PreprocessConfig, cache_dir, *,
            batch_size: int = 4, progress: Callable[[int, int], None] | None = None) -> Measured:
    """Run the frozen network (evaluation mode) on every study and keep the wall reader's measures."""
    model.eval()
    ds = build_dataset(records, config, cache_dir=cache_dir)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in Measured.__dataclass_fields__}
    done = 0
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0):
        out = model(batch["image"], batch["geometry"])
        features, mass = model.reader.measures(batch["image"], out["maps"], out["aha_ids"])
        unit = unit_targets(batch["labels"], out["aha_ids"])
        unit = torch.where(batch["has_labels"].view(-1, 1, 1), unit, torch.full_like(unit, UNKNOWN))
        for key, value in (("features", features), ("mass", mass), ("apex_last", batch["geometry"][:, 2]),
                           ("unit", unit), ("study", batch["study_target"]), ("slices", batch["slice_target"]),
                           ("segments", batch["segment_target"])):
            parts[key].append(value)
        done += len(batch["id"])
        if progress:
            progress(done, len(ds))
    return Measured(**{k: torch.cat(v) for k, v in parts.items()})


def _loss(reader: WallReader, m: Measured, idx: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    out = reader.decide(m.features[idx], m.mass[idx], m.apex_last[idx])
    unit = torch.where(out["unit_valid"], m.unit[idx], torch.full_like(m.unit[idx], UNKNOWN))
    total = out["study_logit"].new_zeros(())
    for name, logits, target in (("unit", out["unit_logits"], unit), ("study", out["study_logit"], m.study[idx]),
                                 ("slice", out["slice_logits"], m.slices[idx]),
                                 ("segment", out["segment_logits"], m.segments[idx])):
        term = bce_known(logits, target, weights[name])
        if term is not None:
            total = total + term
    return total


def fit_reader(model: torch.nn.Module, train: Measured, val: Measured, *, epochs: int = 150, lr: float = 3e-3,
               batch_size: int = 64, seed: int = 0) -> tuple[float, float]:
    """Fit ``model.reader`` further on the fixed measures (starting from its weights, keeping them if no epoch does
    better on the validation loss); returns (decision threshold, validation study AUC)."""
    torch.manual_seed(seed)
    reader = copy.deepcopy(model.reader) if isinstance(getattr(model, "reader", None), WallReader) else WallReader()
    pos = {
        "unit": positive_weight(train.unit[train.unit != UNKNOWN].tolist()),
        "study": positive_weight(train.study.tolist()),
        "slice": positive_weight(train.slices[train.slices != UNKNOWN].tolist()),
        "segment": positive_weight(train.segments[train.segments != UNKNOWN].tolist()),
    }
    weights = {k: torch.tensor(v) for k, v in pos.items()}
    opt = torch.optim.Adam(reader.parameters(), lr=lr, weight_decay=1e-4)
    n = train.study.shape[0]
    all_val = torch.arange(val.study.shape[0])
    reader.eval()
    with torch.no_grad():
        best = (float(_loss(reader, val, all_val, weights)), copy.deepcopy(reader.state_dict()))
    # batches of (nearly) equal size: a small remainder batch would move the batch-norm statistics every epoch
    # (130 studies in batches of 64, 64 and 2 cost 0.07 of held-out AUC in the active-learning simulation)
    n_batches = max(1, math.ceil(n / batch_size))
    for _ in range(epochs):
        reader.train()
        for idx in torch.randperm(n).chunk(n_batches):
            opt.zero_grad(set_to_none=True)
            _loss(reader, train, idx, weights).backward()
            opt.step()
        reader.eval()
        with torch.no_grad():
            val_loss = float(_loss(reader, val, all_val, weights))
        if val_loss < best[0]:
            best = (val_loss, copy.deepcopy(reader.state_dict()))
    reader.load_state_dict(best[1])
    reader.eval()
    with torch.no_grad():
        p = torch.sigmoid(reader.decide(val.features, val.mass, val.apex_last)["study_logit"]).numpy()
    y = val.study.numpy()
    known = y != UNKNOWN
    y, p = y[known].astype(int), p[known]
    model.reader = reader
    threshold = youden_threshold(y, p) if 0 < y.sum() < len(y) else 0.5
    return float(threshold), float(roc_auc(y, p)) if len(np.unique(y)) == 2 else float("nan")
