"""Loss on the study label and, where reviewers gave them, on slice labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stran.engine.dataset import UNKNOWN


class ScarLoss(torch.nn.Module):
    """``BCE(study) + slice_weight * BCE(known slices)``, each with a positive-class weight for imbalance.

    A study without slice labels (all targets unknown) trains the study head
    only; unknown study labels are ignored too.
    """

    def __init__(self, *, study_pos_weight: float = 1.0, slice_pos_weight: float = 1.0, slice_weight: float = 0.5) -> None:
        super().__init__()
        self.register_buffer("study_pos_weight", torch.tensor(float(study_pos_weight)))
        self.register_buffer("slice_pos_weight", torch.tensor(float(slice_pos_weight)))
        self.slice_weight = float(slice_weight)

    def forward(self, output: dict[str, torch.Tensor], study_target: torch.Tensor, slice_target: torch.Tensor) -> torch.Tensor:
        total = output["study_logit"].new_zeros(())
        known = study_target != UNKNOWN
        if known.any():
            total = total + F.binary_cross_entropy_with_logits(
                output["study_logit"][known], study_target[known].float(), pos_weight=self.study_pos_weight
            )
        known_slices = slice_target != UNKNOWN
        if self.slice_weight > 0 and known_slices.any():
            total = total + self.slice_weight * F.binary_cross_entropy_with_logits(
                output["slice_logits"][known_slices], slice_target[known_slices].float(), pos_weight=self.slice_pos_weight
            )
        return total


def positive_weight(targets: list[float]) -> float:
    """n_negative / n_positive over known targets (1.0 when a class is missing)."""
    pos = sum(1 for t in targets if t == 1.0)
    neg = sum(1 for t in targets if t == 0.0)
    return float(neg / pos) if pos and neg else 1.0
