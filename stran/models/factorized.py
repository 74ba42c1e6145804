"""The factorized 4D convolution of ST-RAN and its parts, plus an explicit full 4D convolution as a reference.

A 4D convolution over (slice S, phase T, row H, column W) with kernel ``K[o, i, dS, dT, dH, dW]`` is factorized as

1. a 3D kernel over (S, H, W) applied to every phase (:class:`SpatialConv`, phases folded into the batch), then
2. a 1D kernel over T with **circular** padding, the cine covering one whole RR cycle (:class:`TemporalConv`).

The two steps are linear with nothing in between, so the pair *is* a 4D convolution (circular in T, zero padded in
S, H, W) whose kernel is ``K[o, i] = sum_m Wt[o, m] (outer) Ws[m, i]``; with a depthwise temporal step this is the
plain per-output-channel outer product ``K[o, i] = Wt[o] (outer) Ws[o, i]`` (:meth:`FactorizedConv4d.full_kernel`).
The unit test checks the equality against an explicit 4D convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import circular_pad_phases, conv3d, phase_fold, phase_unfold, pool_hw, time_unview

TEMPORAL_MODES = ("depthwise", "full")


def _odd(k: int, what: str) -> int:
    if not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ValueError(f"{what} must be a positive odd integer, got {k!r}")
    return k


class SpatialConv(nn.Module):
    """3D kernel over (slice, row, column), the same for every phase; zero padding; optional in-plane stride."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride_hw: int = 1, bias: bool = False) -> None:
        super().__init__()
        k = _odd(kernel, "spatial kernel")
        self.conv = nn.Conv3d(cin, cout, (k, k, k), stride=(1, stride_hw, stride_hw), padding=k // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return phase_unfold(self.conv(phase_fold(x)).contiguous(memory_format=torch.channels_last_3d), x.shape[0])


class TemporalConv(nn.Module):
    """1D kernel over the phases, circular padding; ``depthwise`` (one kernel per channel) or ``full`` (mixes channels).

    Runs as a ``(k, 1)`` conv2d on the channels-last (B, C, T, S*H*W) view: measured 1.7x faster than a
    ``(k, 1, 1)`` conv3d and 2x faster than a conv1d with (S, H, W) folded into the batch (docs/models.md).
    """

    def __init__(self, cin: int, cout: int, kernel: int = 11, mode: str = "full", bias: bool = False) -> None:
        super().__init__()
        self.kernel = _odd(kernel, "temporal kernel")
        if mode not in TEMPORAL_MODES:
            raise ValueError(f"temporal mode must be one of {TEMPORAL_MODES}, got {mode!r}")
        if mode == "depthwise" and cin != cout:
            raise ValueError(f"a depthwise temporal kernel keeps the channel count, got {cin} -> {cout}")
        self.mode = mode
        self.conv = nn.Conv2d(cin, cout, (self.kernel, 1), groups=cin if mode == "depthwise" else 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, s, _, h, w = x.shape
        # padded memory (B, T + 2p, S*H*W, C) viewed as the channels-last (B, C, T + 2p, S*H*W) a (k, 1) conv2d wants
        v = circular_pad_phases(x, self.kernel // 2).permute(0, 3, 1, 2)
        y = self.conv(v).contiguous(memory_format=torch.channels_last)
        return time_unview(y, s, h, w)


class PaperSpatialConv(nn.Module):
    """The authors' "3D spatial" kernel in their layout (slices as channels): 3 x k x k over (phase, row, column),
    circular in T, zero padded in-plane. Works on a canonical tensor whose slice axis has size 1."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride_hw: int = 1, bias: bool = False) -> None:
        super().__init__()
        k = _odd(kernel, "spatial kernel")
        self.pad_t = k // 2
        self.conv = nn.Conv3d(
            cin, cout, (k, k, k), stride=(1, stride_hw, stride_hw), padding=(0, k // 2, k // 2), bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != 1:
            raise ValueError(f"paper layout expects the slice axis folded into channels (S=1), got S={x.shape[2]}")
        b, c, _, t, h, w = x.shape
        # padded memory (B, T + 2p, H*W, C) viewed as the channels_last_3d (B, C, T + 2p, H, W) conv3d wants
        v = circular_pad_phases(x, self.pad_t).view(b, t + 2 * self.pad_t, h, w, c).permute(0, 4, 1, 2, 3)
        # with a batch of 1 oneDNN may hand back a contiguous tensor: keep the channels-last layout the next layers use
        return conv3d(self.conv, v).contiguous(memory_format=torch.channels_last_3d).unsqueeze(2)


class FactorizedConv4d(nn.Module):
    """Factorized 4D convolution on (B, C, S, T, H, W): :class:`SpatialConv` then :class:`TemporalConv`, linear.

    ``stride_hw`` strides the spatial step in-plane; slices and phases are never strided (a circular shift of the
    phases shifts the output exactly). ``layout="paper"`` swaps the spatial step for :class:`PaperSpatialConv`.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        spatial_kernel: int = 3,
        temporal_kernel: int = 11,
        temporal_mode: str = "depthwise",
        stride_hw: int = 1,
        bias: bool = False,
        layout: str = "4d",
    ) -> None:
        super().__init__()
        spatial_cls = PaperSpatialConv if layout == "paper" else SpatialConv
        self.spatial = spatial_cls(cin, cout, spatial_kernel, stride_hw=stride_hw, bias=False)
        self.temporal = TemporalConv(cout, cout, temporal_kernel, mode=temporal_mode, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.spatial(x))

    @torch.no_grad()
    def full_kernel(self) -> torch.Tensor:
        """The equivalent 4D kernel (Cout, Cin, kS, kT, kH, kW) (4d layout)."""
        ws = self.spatial.conv.weight  # (M, Cin, kS, kH, kW)
        wt = self.temporal.conv.weight[..., 0]  # (Cout, M or 1, kT)
        if self.temporal.mode == "depthwise":
            return torch.einsum("ot,oiabc->oiatbc", wt[:, 0], ws)
        return torch.einsum("omt,miabc->oiatbc", wt, ws)


class TemporalUnit(nn.Module):
    """The "temporal" ablation unit: a 1D kernel only (mixing channels), after in-plane pooling when strided."""

    def __init__(self, cin: int, cout: int, temporal_kernel: int = 11, stride_hw: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.stride_hw = stride_hw
        self.temporal = TemporalConv(cin, cout, temporal_kernel, mode="full", bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(pool_hw(x, self.stride_hw))


def full_conv4d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride_hw: int = 1
) -> torch.Tensor:
    """Explicit (unfactorized) 4D convolution on (B, Cin, S, T, H, W) with kernel (Cout, Cin, kS, kT, kH, kW).

    Zero padding in S, H, W; circular padding in T. Written as a sum over the kT temporal taps of a 3D convolution
    over (S, H, W) of the phase-rolled input. Used as the reference the factorized layer replaces (benchmark).
    """
    b, _, s, t, h, w = x.shape
    cout, _, ks, kt, kh, kw = weight.shape
    pt = kt // 2
    out = None
    for dt in range(kt):
        # output phase t reads input phase (t + dt - pt) mod T
        xr = torch.roll(x, shifts=pt - dt, dims=3)
        y = F.conv3d(
            phase_fold(xr), weight[:, :, :, dt], stride=(1, stride_hw, stride_hw), padding=(ks // 2, kh // 2, kw // 2)
        )
        out = y if out is None else out + y
    out = phase_unfold(out, b)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1, 1, 1)
    return out
