"""State of the art "2D spatiotemporal": R(2+1)D (Tran et al. 2018), 2D in-plane kernels then 1D temporal kernels.

The authors' Keras model (``Architectures/SOTA/Architecture_Spatio_Temporal_2D.py``) is the TF video tutorial's
R(2+1)D called on a (64, 64, 200, 1) array: its "temporal" kernel runs along image x and its "spatial" kernels over
(y, slice-major slice x phase stack). Here the axes are what they claim to be:

* (2+1)D unit = Conv(1, k, k) over (row, column) of every image (slices and phases in the batch) -> BN -> ReLU ->
  Conv(kt, 1, 1) over the phases (circular padding, as the rest of the zoo: a cine is one RR cycle), with
  Tran et al.'s intermediate width M = floor(kt k^2 Cin Cout / (k^2 Cin + kt Cout)) (``mid_channels='tran'``;
  ``'equal'`` = the authors' M = Cout and no nonlinearity in between);
* skeleton as the ST family: the lossless space-to-depth stem (4 x 4 pixel patches -> 16 channels, 64 -> 16 px)
  then a (2+1)D unit (k = 3, kt = 3) -> BN -> ReLU (the authors' stem is k = 7 at full resolution: measured 4x
  the cost of the rest of the network in backward on this CPU), four residual stages 16/32/64/128 at 16/8/4/2 px
  (two units each), slices and phases never downsampled;
* every slice is processed independently (no kernel spans two slices): "2D + time" per slice;
* heads and ``attention`` as the ST family without attention: study and per-slice Linear heads, class activation map
  sigmoid(w . f + b) of the last stage as the (gradient-free) attention map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import (
    BatchNorm6d,
    Pointwise,
    SliceStudyHeads,
    check_input,
    map_to_input,
    output_dict,
    plane_unview,
    plane_view,
    pool_hw,
    space_to_depth,
)
from .factorized import TemporalConv


class InPlaneConv(nn.Module):
    """k x k kernel over (row, column) of every image of the cine (slices and phases folded into the batch)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride_hw: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride_hw, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, s, t, _, _ = x.shape
        # a 1-channel input makes the layout ambiguous and oneDNN answers contiguous: restore channels-last
        return plane_unview(self.conv(plane_view(x)).contiguous(memory_format=torch.channels_last), b, s, t)


class Conv2Plus1D(nn.Module):
    def __init__(
        self, cin: int, cout: int, kernel: int, temporal_kernel: int, mid: str = "tran", stride_hw: int = 1
    ) -> None:
        super().__init__()
        if mid == "tran":
            m = (temporal_kernel * kernel * kernel * cin * cout) // (kernel * kernel * cin + temporal_kernel * cout)
            m = max(m, 1)
        else:
            m = cout
        self.spatial = InPlaneConv(cin, m, kernel, stride_hw)
        self.mid_norm: nn.Module = BatchNorm6d(m) if mid == "tran" else nn.Identity()
        self.nonlinear = mid == "tran"
        self.temporal = TemporalConv(m, cout, temporal_kernel, mode="full")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mid_norm(self.spatial(x))
        if self.nonlinear:
            y = F.relu(y)
        return self.temporal(y)


class R2Plus1DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, temporal_kernel: int, mid: str) -> None:
        super().__init__()
        self.unit1 = Conv2Plus1D(cin, cout, kernel, temporal_kernel, mid)
        self.bn1 = BatchNorm6d(cout)
        self.unit2 = Conv2Plus1D(cout, cout, kernel, temporal_kernel, mid)
        self.bn2 = BatchNorm6d(cout)
        self.shortcut = nn.Sequential(Pointwise(cin, cout), BatchNorm6d(cout)) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = F.relu(self.bn1(self.unit1(x)))
        r = self.bn2(self.unit2(r))
        return F.relu(r + self.shortcut(x))


class R2Plus1D(nn.Module):
    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        stem_kernel: int = 3,
        spatial_kernel: int = 3,
        temporal_kernel: int = 3,
        mid_channels: str = "tran",
        stem_stride: int = 4,
        downsample: tuple[int, ...] = (1, 2, 2, 2),
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        self.name = "r2plus1d"
        self.temporal_kernel = temporal_kernel
        self.stem_stride = stem_stride
        self.stem = Conv2Plus1D(stem_stride * stem_stride, widths[0], stem_kernel, temporal_kernel, mid_channels)
        self.stem_norm = BatchNorm6d(widths[0])
        self.downsample = tuple(downsample)
        blocks = []
        prev = widths[0]
        for w in widths:
            blocks.append(R2Plus1DBlock(prev, w, spatial_kernel, temporal_kernel, mid_channels))
            prev = w
        self.blocks = nn.ModuleList(blocks)
        self.heads = SliceStudyHeads(prev, dropout)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, self.name, min_phases=self.temporal_kernel // 2)
        _, _, _, _, h, w = x.shape
        y = F.relu(self.stem_norm(self.stem(space_to_depth(x, self.stem_stride))))
        for block, d in zip(self.blocks, self.downsample, strict=True):
            y = block(pool_hw(y, d))
        study, slices = self.heads(y)
        with torch.no_grad():
            att = map_to_input(self.heads.cam(y.detach()), (h, w), self.stem_stride)
        return output_dict(study, slices, att)
