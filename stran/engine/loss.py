"""One loss over every target a study has: study, slices, AHA segments and pixels, each ignored where unknown.

``study``: BCE on the study label. ``slice``: BCE on the slices a reviewer (or the phantom) labelled.
``segment``: BCE on the labelled AHA segments (networks with a map head). ``pixel`` (networks with a map head,
studies with a label map): per-pixel BCE on the four maps (LV blood, myocardium incl. scar, RV blood, scar; scar
pixels weighted 10x) plus a soft Dice on the myocardium and on the scar map within the true myocardium. The Dice is
computed over the whole batch, so scar-free studies (with or without wall-motion abnormality) weigh in: every scar
pixel the map shows in their wall is a false positive. A study with study labels only trains the study (and slice) heads only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stran.engine.dataset import IGNORE, UNKNOWN
from stran.models.wall_reader import unit_targets

LABEL_LV, LABEL_MYO, LABEL_RV, LABEL_SCAR = 1, 2, 3, 4
SCAR_POS_WEIGHT = 10.0


@dataclass(frozen=True)
class LossWeights:
    study: float = 1.0
    slice: float = 0.5
    segment: float = 0.5
    pixel: float = 1.0
    unit: float = 1.0


def bce_known(logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor | None:
    known = target != UNKNOWN
    if not known.any():
        return None
    return F.binary_cross_entropy_with_logits(logits[known], target[known].float(), pos_weight=pos_weight)


def _soft_dice(p: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    p, y = p * valid, y * valid
    return 1.0 - (2.0 * (p * y).sum() + 1.0) / (p.sum() + y.sum() + 1.0)


def pixel_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, T, H, W) label map -> targets (B, 4, S, T, H, W) in the map order (LV, myocardium, RV, scar) and the
    valid-pixel mask (B, 1, S, T, H, W)."""
    lab = labels.long()
    targets = torch.stack(
        [lab == LABEL_LV, (lab == LABEL_MYO) | (lab == LABEL_SCAR), lab == LABEL_RV, lab == LABEL_SCAR], dim=1
    ).float()
    return targets, (lab != IGNORE).unsqueeze(1).float()


def pixel_loss(maps: torch.Tensor, labels: torch.Tensor, *, scar_pos_weight: float = SCAR_POS_WEIGHT) -> torch.Tensor:
    """Per-pixel BCE on the four maps (scar positives weighted ``scar_pos_weight``: scar is ~0.2 % of the pixels) +
    soft Dice on the myocardium + soft Dice on the scar map within the true myocardium (outside it, the myocardium
    gate of the displayed map does the work), over valid pixels."""
    targets, valid = pixel_targets(labels)
    weight = valid.expand_as(maps).clone()
    weight[:, 3] *= 1.0 + (scar_pos_weight - 1.0) * targets[:, 3]
    bce = F.binary_cross_entropy_with_logits(maps, targets, weight=weight, reduction="sum")
    bce = bce / valid.sum().clamp_min(1.0) / maps.shape[1]
    p = torch.sigmoid(maps)
    dice_myo = _soft_dice(p[:, 1], targets[:, 1], valid[:, 0])
    dice_scar = _soft_dice(p[:, 3], targets[:, 3], valid[:, 0] * targets[:, 1])
    return bce + dice_myo + dice_scar


class ScarLoss(torch.nn.Module):
    """Weighted sum of the study, slice, segment and pixel terms (each with a positive-class weight where it is a
    BCE on labels); returns the total and the parts (for logging)."""

    def __init__(
        self,
        *,
        study_pos_weight: float = 1.0,
        slice_pos_weight: float = 1.0,
        segment_pos_weight: float = 1.0,
        weights: LossWeights | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("study_pos_weight", torch.tensor(float(study_pos_weight)))
        self.register_buffer("slice_pos_weight", torch.tensor(float(slice_pos_weight)))
        self.register_buffer("segment_pos_weight", torch.tensor(float(segment_pos_weight)))
        self.weights = weights or LossWeights()

    def parts(self, output: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        study = bce_known(output["study_logit"], batch["study_target"], self.study_pos_weight)
        if study is not None:
            parts["study"] = study
        if self.weights.slice > 0:
            sl = bce_known(output["slice_logits"], batch["slice_target"], self.slice_pos_weight)
            if sl is not None:
                parts["slice"] = sl
        if self.weights.segment > 0 and "segment_logits" in output and "segment_target" in batch:
            seg = bce_known(output["segment_logits"], batch["segment_target"], self.segment_pos_weight)
            if seg is not None:
                parts["segment"] = seg
        has = batch.get("has_labels")
        if "maps" in output and has is not None and bool(has.any()):
            labels = batch["labels"][has]
            if "map_phases" in output:  # maps decoded for some phases only (training)
                labels = labels.index_select(2, output["map_phases"])
            if self.weights.pixel > 0:
                parts["pixel"] = pixel_loss(output["maps"][has], labels)
            if self.weights.unit > 0 and "unit_logits" in output:
                target = unit_targets(labels, output["aha_ids"][has])
                target = torch.where(output["unit_valid"][has], target, torch.full_like(target, UNKNOWN))
                unit = bce_known(output["unit_logits"][has], target, self.segment_pos_weight)
                if unit is not None:
                    parts["unit"] = unit
        return parts

    def forward(self, output: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = self.parts(output, batch)
        total = output["study_logit"].new_zeros(())
        for name, value in parts.items():
            total = total + getattr(self.weights, name) * value
        return total


def positive_weight(targets: list[float]) -> float:
    """n_negative / n_positive over known targets (1.0 when a class is missing)."""
    pos = sum(1 for t in targets if t == 1.0)
    neg = sum(1 for t in targets if t == 0.0)
    return float(neg / pos) if pos and neg else 1.0
