"""Attention that gates (the authors' softmax over a size-1 axis is identically 1; see docs/models.md).

* :class:`TemporalAttention`: which channels matter at which phase. Features pooled over (S, H, W) per phase,
  a circular 1D kernel over the phases (long-range temporal context, same length as the factorized conv's),
  then a per-phase channel gate sigmoid(...) of shape (B, C, 1, T, 1, 1).
* :class:`SpatialAttention`: where. A per-voxel MLP over the channels (the authors' Dense(units, ReLU) -> Dense(1))
  with a sigmoid: a gate of shape (B, 1, S, T, H, W).
* :class:`DualAttention`: both, applied in sequence (temporal then spatial): ``x * g_t * g_s``.
* :class:`SoftMaskBranch`: the residual-attention mask of Wang et al. (2017): a bottom-up top-down branch (pool
  in-plane, a factorized 4D unit, back up) producing a single-channel mask M in [0, 1] of shape (B, 1, S, T, H, W);
  the block output is ``(1 + M) * trunk``.

Every gate is computed per phase or with circular kernels over the phases, so the modules are equivariant to a
circular shift of the phases. Each module has an ``attention_enabled`` flag: off, gates are 1 and masks 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import BatchNorm6d, Pointwise, circular_pad_time, plane_unview, plane_view, pool_hw
from .factorized import FactorizedConv4d


class TemporalAttention(nn.Module):
    def __init__(self, channels: int, temporal_kernel: int = 11, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.pad = temporal_kernel // 2
        self.fc1 = nn.Conv1d(channels, hidden, temporal_kernel)
        self.fc2 = nn.Conv1d(hidden, channels, 1)
        # zero biases: the pooled input is near 0 after batch norm, so random negative biases could leave every
        # hidden unit dead at initialisation (no gradient ever reaches the gate)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)
        self.attention_enabled = True

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        z = x.mean(dim=(2, 4, 5))  # (B, C, T)
        z = F.relu(self.fc1(circular_pad_time(z, self.pad, dim=2)))
        g = torch.sigmoid(self.fc2(z))  # (B, C, T)
        return g[:, :, None, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x) if self.attention_enabled else x


class SpatialAttention(nn.Module):
    """Per-voxel gate: the authors' attention (Dense(units, ReLU) -> Dense(1) on the channels of every voxel) with a
    sigmoid where their code has a softmax over a size-1 axis (identically 1). Context comes from the features' own
    receptive field; a CBAM-style 3 x 7 x 7 conv on [channel mean, max] measured ~4x slower in forward+backward at
    stage-1 shapes on this CPU (docs/models.md)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.fc1 = Pointwise(channels, hidden, bias=True)
        self.fc2 = Pointwise(hidden, 1, bias=True)
        nn.init.zeros_(self.fc1.linear.bias)
        nn.init.zeros_(self.fc2.linear.bias)
        self.attention_enabled = True

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(x))))  # (B, 1, S, T, H, W)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.attention_enabled:
            return x, None
        g = self.gate(x)
        return x * g, g


class DualAttention(nn.Module):
    """Temporal (channel x phase) gate, then spatial (voxel) gate. Returns (gated features, spatial gate)."""

    def __init__(self, channels: int, temporal_kernel: int = 11, reduction: int = 4) -> None:
        super().__init__()
        self.temporal = TemporalAttention(channels, temporal_kernel, reduction)
        self.spatial = SpatialAttention(channels, reduction)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.spatial(self.temporal(x))


class SoftMaskBranch(nn.Module):
    """Bottom-up top-down soft mask (Wang et al. 2017), one channel, in [0, 1], at the trunk's resolution."""

    def __init__(
        self,
        cin: int,
        hidden: int,
        spatial_kernel: int = 3,
        temporal_kernel: int = 11,
        layout: str = "4d",
    ) -> None:
        super().__init__()
        self.reduce = Pointwise(cin, hidden)
        self.bn1 = BatchNorm6d(hidden)
        self.unit = FactorizedConv4d(hidden, hidden, spatial_kernel, temporal_kernel, "depthwise", layout=layout)
        self.bn2 = BatchNorm6d(hidden)
        self.out = Pointwise(hidden, 1, bias=True)
        self.attention_enabled = True

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        b, _, s, t, h, w = x.shape
        m = pool_hw(x, 2) if min(h, w) >= 2 else x  # bottom-up: a coarser scale
        m = F.relu(self.bn1(self.reduce(m)))
        m = F.relu(self.bn2(self.unit(m)))
        m = self.out(m)  # (B, 1, S, T, h/2, w/2)
        if m.shape[-2:] != (h, w):  # top-down: back to the trunk's resolution
            m = plane_unview(F.interpolate(plane_view(m), size=(h, w), mode="bilinear", align_corners=False), b, s, t)
        return torch.sigmoid(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.mask(x) if self.attention_enabled else None
