"""State of the art "3D CNN": a 3D ResNet with [2, 5, 5, 2] basic blocks, run over (phase, row, column) per slice.

The authors' Keras model (``Architectures/SOTA/Architecture_3DCNN.py``) convolves a 64 x 64 x 200 stack in which the
10 slices x 20 phases are concatenated slice-major along one depth axis, so its kernels straddle slice boundaries
(phase 19 of slice k next to phase 0 of slice k+1) and its stride-2 stages mix slices; 64/128/256/512 filters,
46 M parameters, ReLU-then-BN. What the architecture is meant to be is a video ResNet; here:

* every slice is one (T, H, W) video, slices folded into the batch, weights shared across slices;
* stem: the zoo's lossless space-to-depth (4 x 4 pixel patches -> 16 channels, 64 -> 16 px) then conv 3 x 3 x 3,
  BN, ReLU (the ResNet stem, conv (3, 7, 7) stride 2 + max-pool, reaches the same 16 px but its 1-channel
  conv's weight gradient alone measured ~45 ms per study on this CPU);
* stages of [2, 5, 5, 2] basic blocks (conv3-BN-ReLU-conv3-BN + shortcut, ReLU), widths 16/32/64/128 (not
  64..512: ~3 M parameters and ~4 GMAC per study, trainable on a 2-core CPU), first block of stages 2-4 strided 2
  in T, H and W as the authors' (``temporal_stride=1`` keeps the phases);
* zero padding in time, as any video ResNet (not invariant to a circular phase shift);
* heads: per slice, average over (T', h, w) -> ``slice_logits`` via Linear(128, 1); study: average of the slice
  features -> Linear(128, 1);
* ``attention``: no attention in this network, so the class activation map sigmoid(w . f + b) of the last stage
  (gradient-free), upsampled trilinearly to (T, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MCDropout, check_input, output_dict, space_to_depth_slices


class ChannelsLast3d(nn.Module):
    """Switch to channels_last_3d (1-channel inputs leave oneDNN's output contiguous; channels-last is faster here)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d)


class BasicBlock3d(nn.Module):
    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if cin != cout or stride != (1, 1, 1):
            self.shortcut = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = F.relu(self.bn1(self.conv1(x)))
        r = self.bn2(self.conv2(r))
        return F.relu(r + self.shortcut(x))


class ResNet3D(nn.Module):
    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        blocks: tuple[int, ...] = (2, 5, 5, 2),
        temporal_stride: int = 2,
        stem_stride: int = 4,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        self.name = "cnn3d"
        self.stem_stride = stem_stride
        self.stem = nn.Sequential(
            nn.Conv3d(stem_stride * stem_stride, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm3d(widths[0]),
            nn.ReLU(inplace=True),
        )
        layers = []
        prev = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                stride = (temporal_stride, 2, 2) if (i > 0 and j == 0) else (1, 1, 1)
                layers.append(BasicBlock3d(prev, w, stride))
                prev = w
        self.layers = nn.Sequential(*layers)
        self.drop = MCDropout(dropout)
        self.study_head = nn.Linear(prev, 1)
        self.slice_head = nn.Linear(prev, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, self.name)
        b, _, s, t, h, w = x.shape
        f = self.layers(self.stem(space_to_depth_slices(x, self.stem_stride)))  # (B*S, C, T', h', w')
        per_slice = f.mean(dim=(2, 3, 4)).reshape(b, s, -1)
        study = self.study_head(self.drop(per_slice.mean(dim=1))).squeeze(-1)
        slices = self.slice_head(self.drop(per_slice)).squeeze(-1)
        with torch.no_grad():
            cam = torch.einsum("nctyx,c->ntyx", f.detach(), self.study_head.weight[0]) + self.study_head.bias[0]
            fct = self.stem_stride
            hp, wp = h + (-h) % fct, w + (-w) % fct  # padded grid of the stem, cropped below
            cam = F.interpolate(torch.sigmoid(cam)[:, None], size=(t, hp, wp), mode="trilinear", align_corners=False)
            att = cam.reshape(b, s, t, hp, wp)[..., :h, :w].clamp(0, 1).contiguous()
        return output_dict(study, slices, att)
