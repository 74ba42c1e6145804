"""ST-RAN and the skeleton it shares with the ablation networks (spatial, temporal, spatiotemporal, ST + dual attention).

Skeleton (defaults; input (B, 1, S=10, T=20, 64, 64), logical (B, C, S, T, H, W) throughout)::

    stem     space-to-depth 4 (1 x 64 x 64 -> 16 x 16 x 16, lossless)
             -> unit(16 -> 16) -> BN -> ReLU                                      (16, S, T, 16, 16)
    stage 1  block(16 -> 16)                                                      (16, S, T, 16, 16)
    stage 2  pool 2 -> block(16 -> 32)                                            (32, S, T,  8,  8)
    stage 3  pool 2 -> block(32 -> 64)                                            (64, S, T,  4,  4)
    stage 4  pool 2 -> block(64 -> 128)                                           (128, S, T, 2,  2)
    heads    study: global average -> dropout -> Linear(128, 1) -> study_logit (B,)
             slices: average over (T, h, w) per slice -> dropout -> Linear(128, 1) -> slice_logits (B, S)

    block    r = BN(unit(ReLU(BN(unit(x)))))           two units, as the authors' ResidualMain
             r = DualAttention(r)                      (attention in {"dual", "residual_dual"})
             t = ReLU(r + shortcut(x))                 shortcut: Pointwise + BN when channels change
             out = (1 + M(x)) * t                      (attention == "residual_dual"; M = SoftMaskBranch)
             out = MCDropout(out)                      (stage_dropout > 0)

``unit`` is the pluggable convolution: ``spatial`` (3D kernel over (S, H, W)), ``temporal`` (1D kernel over T),
``spatiotemporal`` (:class:`~stran.models.factorized.FactorizedConv4d`). Slices and phases are never downsampled:
a circular shift of the phases shifts every feature map exactly, so the study logit is invariant to it.

``layout="paper"`` is the authors' layout: the S slices become the input channels of the stem and every 3D kernel
runs over (T, H, W) instead (:class:`~stran.models.factorized.PaperSpatialConv`); the rest is unchanged. That
layout has no slice axis after the stem: ``slice_logits`` come from a Linear(128, S) on the global features and the
attention map is the same for every slice.

``attention`` output: ST-RAN: mean over the four stages of the residual-attention masks M; ST + dual attention:
mean of the spatial gates; networks without attention (or with it switched off): the class activation map
sigmoid(w . f + b) of the last stage (see :meth:`SliceStudyHeads.cam`). All are upsampled in-plane to the input size
and returned detached (for display and export, not for a loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import DualAttention, SoftMaskBranch
from .common import (
    BatchNorm6d,
    MCDropout,
    Pointwise,
    SliceStudyHeads,
    check_input,
    map_to_input,
    output_dict,
    pool_hw,
    space_to_depth,
    upsample_map,
)
from .factorized import FactorizedConv4d, PaperSpatialConv, SpatialConv, TemporalUnit
from .maps import MapDecoder, aha_segment_ids, scar_probability
from .wall_reader import WallReader

UNITS = ("spatial", "temporal", "spatiotemporal")
ATTENTIONS = ("none", "dual", "residual_dual")
LAYOUTS = ("4d", "paper")
MAP_HEADS = ("none", "scar")
DEFAULT_GEOMETRY = torch.tensor([[-1.0, 0.0, 0.0]])  # anterior up, apex first: only the segment numbers depend on it


def make_unit(
    unit: str,
    cin: int,
    cout: int,
    *,
    layout: str,
    spatial_kernel: int,
    temporal_kernel: int,
    temporal_mode: str,
    stride_hw: int = 1,
) -> nn.Module:
    if unit == "spatial":
        cls = PaperSpatialConv if layout == "paper" else SpatialConv
        return cls(cin, cout, spatial_kernel, stride_hw=stride_hw)
    if unit == "temporal":
        return TemporalUnit(cin, cout, temporal_kernel, stride_hw=stride_hw)
    if unit == "spatiotemporal":
        return FactorizedConv4d(
            cin, cout, spatial_kernel, temporal_kernel, temporal_mode, stride_hw=stride_hw, layout=layout
        )
    raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")


class STBlock(nn.Module):
    """One stage: optional in-plane pooling, residual block of ``units`` units, optional attention."""

    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        unit: str,
        attention: str,
        layout: str,
        spatial_kernel: int,
        temporal_kernel: int,
        temporal_mode: str,
        downsample: int,
        units: int,
        stage_dropout: float,
    ) -> None:
        super().__init__()
        kw = dict(
            layout=layout, spatial_kernel=spatial_kernel, temporal_kernel=temporal_kernel, temporal_mode=temporal_mode
        )
        self.downsample = downsample
        self.units = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(units):
            self.units.append(make_unit(unit, cin if i == 0 else cout, cout, **kw))
            self.norms.append(BatchNorm6d(cout))
        self.shortcut = nn.Sequential(Pointwise(cin, cout), BatchNorm6d(cout)) if cin != cout else nn.Identity()
        self.dual = DualAttention(cout, temporal_kernel) if attention in ("dual", "residual_dual") else None
        self.mask = (
            SoftMaskBranch(cin, max(cout // 4, 8), spatial_kernel, temporal_kernel, layout=layout)
            if attention == "residual_dual"
            else None
        )
        self.drop = MCDropout(stage_dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = pool_hw(x, self.downsample)
        r = x
        for i, (u, n) in enumerate(zip(self.units, self.norms, strict=True)):
            r = n(u(r))
            if i < len(self.units) - 1:
                r = F.relu_(r)  # in place: batch norm's backward does not need its output
        amap = None
        if self.dual is not None:
            r, amap = self.dual(r)
        t = F.relu_(r.add_(self.shortcut(x)))  # r is a fresh tensor (BN or gate output): safe in place
        if self.mask is not None:
            m = self.mask(x)
            if m is not None:
                t = torch.addcmul(t, t, m)  # (1 + M) * t in one pass
                amap = m
        return self.drop(t), amap


class STNet(nn.Module):
    """The ST family skeleton (see the module docstring). Build it through :func:`stran.models.build_model`."""

    def __init__(
        self,
        unit: str = "spatiotemporal",
        attention: str = "residual_dual",
        layout: str = "4d",
        widths: tuple[int, ...] = (16, 32, 64, 128),
        spatial_kernel: int = 3,
        temporal_kernel: int = 11,
        temporal_mode: str = "depthwise",
        stem_stride: int = 4,
        downsample: tuple[int, ...] = (1, 2, 2, 2),
        units_per_block: int = 2,
        dropout: float = 0.25,
        stage_dropout: float = 0.0,
        n_slices: int = 10,
        map_head: str = "scar",
        map_channels: int = 32,
        map_train_phases: int = 5,
        name: str = "stnet",
    ) -> None:
        super().__init__()
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if map_head not in MAP_HEADS:
            raise ValueError(f"map_head must be one of {MAP_HEADS}, got {map_head!r}")
        if map_head != "none" and layout == "paper":
            raise ValueError(
                "the paper layout has no slice axis after its stem, so it cannot have a map head: "
                "set map_head='none' (or use the network 'stran_paper_layout')"
            )
        if len(downsample) != len(widths):
            raise ValueError(f"downsample needs one factor per stage ({len(widths)}), got {downsample!r}")
        self.name = name
        self.unit = unit
        self.attention = attention
        self.layout = layout
        self.n_slices = n_slices
        self.temporal_kernel = temporal_kernel
        uses_time = unit != "spatial" or attention != "none"
        self.min_phases = max(temporal_kernel // 2, 1) if uses_time else 1
        self.attention_enabled = True
        kw = dict(
            layout=layout, spatial_kernel=spatial_kernel, temporal_kernel=temporal_kernel, temporal_mode=temporal_mode
        )
        cin = n_slices if layout == "paper" else 1
        self.stem_stride = stem_stride
        self.stem = make_unit(unit, cin * stem_stride * stem_stride, widths[0], **kw)
        self.stem_norm = BatchNorm6d(widths[0])
        blocks = []
        prev = widths[0]
        for w, d in zip(widths, downsample, strict=True):
            blocks.append(
                STBlock(
                    prev,
                    w,
                    unit=unit,
                    attention=attention,
                    downsample=d,
                    units=units_per_block,
                    stage_dropout=stage_dropout,
                    **kw,
                )
            )
            prev = w
        self.blocks = nn.ModuleList(blocks)
        self.map_head = map_head != "none"
        if self.map_head:  # the decisions are read off the scar map (stran.models.maps)
            self.decoder = MapDecoder(tuple(widths), stem_stride, map_channels, dropout)
            self.reader = WallReader()
            self.map_train_phases = map_train_phases
        else:
            # the paper layout has no slice axis after the stem: its slice head is a Linear(C, S) on global features
            self.heads = SliceStudyHeads(prev, dropout, global_slices=n_slices if layout == "paper" else None)

    def _map_phases(self, t: int, device: torch.device) -> torch.Tensor | None:
        """In training, the phases whose maps are decoded (and supervised); None = all (evaluation)."""
        if not self.training or self.map_train_phases <= 0 or self.map_train_phases >= t:
            return None
        step = t / self.map_train_phases
        start = float(torch.rand(()) * step)
        return (torch.arange(self.map_train_phases, dtype=torch.float64) * step + start).long().clamp(max=t - 1).to(device)

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every stage's output (B, C_i, S or 1, T, h_i, w_i), last stage last, and the per-stage attention maps
        (B, 1, S or 1, T, h_i, w_i)."""
        if self.layout == "paper":
            x = x.transpose(1, 2)  # (B, S, 1, T, H, W): slices are channels
        y = F.relu_(self.stem_norm(self.stem(space_to_depth(x, self.stem_stride))))
        stages, maps = [], []
        for block in self.blocks:
            y, amap = block(y)
            stages.append(y)
            if amap is not None:
                maps.append(amap)
        return stages, maps

    @torch.no_grad()
    def mc_study_logits(self, x: torch.Tensor, geometry: torch.Tensor, samples: int) -> torch.Tensor | None:
        """``samples`` Monte-Carlo dropout study logits of one study ``x`` (1, 1, S, T, H, W), as the forward pass of
        ``samples`` copies gives them (MC dropout on), computing once what dropout does not touch: with a map head
        and no stage dropout, the trunk and the decoder's feature pyramid are the same for every sample, so only the
        pixel heads and the wall reader run on the batch. None when that does not hold (call the model instead)."""
        if not self.map_head or self.layout == "paper" or any(
                getattr(block.drop, "p", 0.0) > 0 for block in self.blocks) or x.shape[0] != 1:
            return None
        stages, _ = self.features(x)
        y = self.decoder.pyramid(stages)
        xs = x.expand(samples, *x.shape[1:])
        logits = self.decoder.heads(x, y, samples)
        g = geometry.expand(samples, 3)
        return self.reader(xs, logits, aha_segment_ids(logits, g), g[:, 2])["study_logit"]

    def forward(self, x: torch.Tensor, geometry: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``geometry`` (B, 3): the anterior direction and slice order of each study (``stran.engine.tensor_cache.
        study_geometry``); with a map head it places the AHA segments and adds ``segment_logits``."""
        check_input(
            x,
            self.name,
            min_phases=self.min_phases,
            n_slices=self.n_slices if self.layout == "paper" else None,
        )
        b, _, s, t, h, w = x.shape
        stages, maps = self.features(x)
        if self.map_head:
            phases = self._map_phases(t, x.device)
            if phases is not None:  # training: decode evenly spaced phases from a random start (cost / T')
                x = x.index_select(3, phases)
                stages = [f.index_select(3, phases) for f in stages]
            logits = self.decoder(x, stages)
            g = geometry if geometry is not None else DEFAULT_GEOMETRY.to(x).expand(b, 3)
            ids = aha_segment_ids(logits, g)
            out = self.reader(x, logits, ids, g[:, 2])
            if geometry is None:
                del out["segment_logits"]  # the AHA numbering needs the study's orientation
            if phases is not None:
                out["map_phases"] = phases
            out["aha_ids"] = ids
            out["maps"] = logits
            out["scar_logits"] = logits[:, 3]
            out["attention"] = scar_probability(logits.detach())
            return out
        feats = stages[-1]
        study, slices = self.heads(feats)
        with torch.no_grad():
            if maps:  # average the stage maps on the finest stage grid, then one upsampling to the input grid
                fine = maps[0].shape[-2:]
                att = sum(upsample_map(m.detach()[:, 0], fine) for m in maps) / len(maps)
            else:
                att = self.heads.cam(feats.detach())
            att = map_to_input(att, (h, w), self.stem_stride)
            if att.shape[1] != s:
                att = att.expand(b, s, t, h, w).contiguous()
        return output_dict(study, slices, att)
