"""The scar-map head of the ST family: per-pixel maps from the stage features, and the AHA segments on them.

:class:`MapDecoder` turns the four stage outputs (B, C_i, S, T, h_i, w_i) into four logit maps on the input grid
(B, 4, S, T, H, W): LV blood pool, LV myocardium (scar included), RV blood pool and scar. Top-down: a 1x1x1
projection of every stage to ``channels``, nearest upsampling and sum (a feature pyramid), one 3x3 in-plane
convolution per level, then, at the stem's resolution, the raw space-to-depth patch of the input joins the
features and per-patch MLPs predict every pixel of its f x f patch (depth-to-space); the scar MLP also reads each
pixel against the wall's own signal in its slice and phase. Slices and phases keep their own maps: scar moves with
the tissue.

The map shown over the cine is ``p_scar * p_myocardium`` (:func:`scar_probability`: the gate keeps it on the
wall). :func:`aha_segment_ids` places the AHA segments on every slice from the LV and RV maps; the decisions are
made by the wall reader (``stran.models.wall_reader``) on measures of these maps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import BatchNorm6d, MCDropout, Pointwise, cat_channels, plane_unview, plane_view, space_to_depth

MAP_CHANNELS = ("lv", "myocardium", "rv", "scar")
BASAL_ORDER = (2, 1, 6, 5, 4, 3)  # 60-degree sectors counted from the RV centre towards anterior
APICAL_ORDER = (14, 13, 16, 15)  # 90-degree sectors, the septal one centred on the RV


def _conv_plane(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    b, _, s, t, _, _ = x.shape
    return plane_unview(conv(plane_view(x)), b, s, t)


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    b, _, s, t, h, w = x.shape
    if (h, w) == tuple(size):
        return x
    return plane_unview(F.interpolate(plane_view(x), size=size, mode="nearest"), b, s, t)


class MapDecoder(nn.Module):
    """Feature pyramid over the stage outputs + per-patch pixel heads (see the module docstring)."""

    def __init__(self, widths: tuple[int, ...], stem_stride: int, channels: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = MCDropout(dropout)
        self.stem_stride = stem_stride
        self.lateral = nn.ModuleList(Pointwise(w, channels) for w in widths)
        self.smooth = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in widths)
        self.norms = nn.ModuleList(BatchNorm6d(channels) for _ in widths)
        patch = stem_stride * stem_stride
        self.pixel_hidden = Pointwise(channels + patch, channels, bias=True)
        self.tissue_out = Pointwise(channels, 3 * patch, bias=True)  # LV blood, myocardium, RV blood
        self.scar_hidden = Pointwise(channels + 2 * patch, channels, bias=True)
        self.scar_out = Pointwise(channels, patch, bias=True)
        with torch.no_grad():  # start with maps that say "nothing here" (scar: rarely); the losses lift them
            self.tissue_out.linear.bias.fill_(-2.0)
            self.scar_out.linear.bias.fill_(-4.0)

    def forward(self, x: torch.Tensor, stages: list[torch.Tensor]) -> torch.Tensor:
        return self.heads(x, self.pyramid(stages))

    def pyramid(self, stages: list[torch.Tensor]) -> torch.Tensor:
        """The feature pyramid, top-down over the stage outputs (no dropout: the part MC passes can share)."""
        y = None
        for i in range(len(stages) - 1, -1, -1):
            lat = self.lateral[i](stages[i])
            y = lat if y is None else lat + _upsample(y, tuple(lat.shape[-2:]))
            y = F.relu(self.norms[i](_conv_plane(self.smooth[i], y)))
        return y

    def heads(self, x: torch.Tensor, y: torch.Tensor, samples: int = 0) -> torch.Tensor:
        """The per-pixel tissue and scar logits from the pyramid's output ``y`` and the input ``x``. ``samples`` > 0:
        ``x`` and ``y`` are one study's and the output holds that many Monte-Carlo dropout samples, the part before
        the first dropout computed once (the same samples as ``samples`` copies of the study would give).

        Everything runs on the patch grid (a pixel's f x f patch as f*f channels) and goes to full resolution once,
        at the end: the wall signal is summed over the patches' myocardium channels, and the scar head's linear
        layer on [hidden, raw, raw / wall - 1] is taken apart into its three blocks, so that the two that only read
        the image are computed once for every dropout sample and no concatenation is built."""
        f = self.stem_stride
        patch = f * f
        h, w = x.shape[-2:]
        raw = space_to_depth(x, f)  # (B, f*f, S, T, h', w'), zero padded
        y = _upsample(y, tuple(raw.shape[-2:]))
        hidden = F.relu(self.pixel_hidden(cat_channels([y, raw])))
        if samples:
            hidden = hidden.expand(samples, *hidden.shape[1:])
        hidden = self.drop(hidden)
        tissue = self.tissue_out(hidden)  # (B, 3*f*f, ...): LV blood, myocardium, RV blood, f*f channels each
        # the scar head reads every pixel against the wall's own signal in that slice and phase, as a reader does
        # (scar is darker than remote myocardium; the global intensity scale differs between scanners)
        p_myo = torch.sigmoid(tissue[:, patch:2 * patch]).detach()
        wall = (p_myo * raw).sum(dim=(1, -2, -1), keepdim=True) / p_myo.sum(dim=(1, -2, -1), keepdim=True).clamp_min(1.0)
        w_hidden, w_raw, w_relative = self.scar_hidden.linear.weight.split([hidden.shape[1], patch, patch], dim=1)
        raw_cl = _channels_last(raw)
        from_image = F.linear(raw_cl, w_raw, self.scar_hidden.linear.bias) - w_relative.sum(dim=1)
        from_relative = F.linear(raw_cl, w_relative)  # relative = raw / wall - 1 is linear in raw, wall per plane
        pre = (F.linear(_channels_last(hidden), w_hidden) + from_image
               + from_relative / _channels_last(wall.clamp_min(1e-3)))
        scar_hidden = self.drop(F.relu(pre.permute(0, 5, 2, 1, 3, 4)))
        b, _, s, t, hp, wp = tissue.shape
        out = tissue.new_empty((b, 4, s, t, hp * f, wp * f))  # each head's patches written straight to their pixels
        pixels = out.view(b, 4, s, t, hp, f, wp, f)
        for first, logits in ((0, tissue), (3, self.scar_out(scar_hidden))):
            c = logits.shape[1] // patch
            pixels[:, first:first + c] = logits.reshape(b, c, f, f, s, t, hp, wp).permute(0, 1, 4, 5, 6, 2, 7, 3)
        return out[..., :h, :w]


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """Logical (B, C, S, T, H, W) -> (B, T, S, H, W, C), the memory order of a canonical tensor (as ``Pointwise``)."""
    return x.permute(0, 3, 2, 4, 5, 1)


def scar_probability(maps: torch.Tensor) -> torch.Tensor:
    """(B, 4, S, T, H, W) logits -> (B, S, T, H, W) probability of scar in the myocardium."""
    return torch.sigmoid(maps[:, 3]) * torch.sigmoid(maps[:, 1])


def _centroids(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability-weighted centre (rows, cols) of (..., H, W) maps and their mass."""
    h, w = p.shape[-2:]
    rows = torch.arange(h, dtype=p.dtype, device=p.device)
    cols = torch.arange(w, dtype=p.dtype, device=p.device)
    mass = p.sum(dim=(-2, -1))
    safe = mass.clamp_min(1e-6)
    r = (p.sum(dim=-1) * rows).sum(dim=-1) / safe
    c = (p.sum(dim=-2) * cols).sum(dim=-1) / safe
    return torch.stack([r, c], dim=-1), mass


@torch.no_grad()
def aha_segment_ids(maps: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """AHA segment (1-16) of every pixel of every slice, (B, S, H, W), placed as a reader places them.

    The LV centre of each slice is the centre of its LV blood-pool map (mean over phases); the septum is centred on
    the direction from the LV to the RV (one direction per study, from every slice's RV map); the patient's
    anterior direction in the image (``geometry[:, :2]``, from the DICOM orientation) fixes the sense of rotation
    (anterior lies 90 degrees from the septum). Levels: the slices from the base to the apex (``geometry[:, 2]`` is
    1 when the last slice is the most apical) in thirds: basal (segments 1-6), mid (7-12), apical (13-16).
    Segment 17 (apex cap) is read on the most apical slice (``stran.models.wall_reader``).
    """
    b, _, s, _, h, w = maps.shape
    p_lv = torch.sigmoid(maps[:, 0]).mean(dim=2)  # (B, S, H, W)
    p_rv = torch.sigmoid(maps[:, 2]).mean(dim=2)
    lv_c, lv_mass = _centroids(p_lv)  # (B, S, 2)
    default = torch.tensor([(h - 1) / 2.0, (w - 1) / 2.0], dtype=maps.dtype, device=maps.device)
    lv_c = torch.where((lv_mass > 5.0)[..., None], lv_c, default)
    rv_c, rv_mass = _centroids(p_rv)
    rv_vec = ((rv_c - lv_c) * rv_mass[..., None]).sum(dim=1)  # (B, 2) in (row, col)
    anterior = geometry[:, :2].to(maps.dtype)
    rv_vec = torch.where(rv_vec.norm(dim=-1, keepdim=True) > 1e-3, rv_vec, anterior)
    theta_rv = torch.atan2(rv_vec[:, 0], rv_vec[:, 1])  # angle in the (col, row) plane
    theta_ant = torch.atan2(anterior[:, 0], anterior[:, 1])
    sense = torch.where(torch.remainder(theta_ant - theta_rv, 2 * math.pi) < math.pi, 1.0, -1.0)  # (B,)
    rows = torch.arange(h, dtype=maps.dtype, device=maps.device).view(1, 1, h, 1)
    cols = torch.arange(w, dtype=maps.dtype, device=maps.device).view(1, 1, 1, w)
    ang = torch.atan2(rows - lv_c[..., 0, None, None], cols - lv_c[..., 1, None, None])  # (B, S, H, W)
    psi = torch.remainder((ang - theta_rv.view(b, 1, 1, 1)) * sense.view(b, 1, 1, 1), 2 * math.pi)
    basal = torch.tensor(BASAL_ORDER, device=maps.device)[(psi / (math.pi / 3)).long().clamp(0, 5)]
    apical = torch.tensor(APICAL_ORDER, device=maps.device)[
        (torch.remainder(psi + math.pi / 4, 2 * math.pi) / (math.pi / 2)).long().clamp(0, 3)
    ]
    j = torch.arange(s, device=maps.device, dtype=maps.dtype)
    from_base = torch.where(geometry[:, 2:3] > 0.5, j, s - 1 - j)  # (B, S)
    frac = (from_base + 0.5) / s
    level = (frac >= 1 / 3).long() + (frac >= 2 / 3).long()  # 0 basal, 1 mid, 2 apical
    lvl = level[..., None, None]
    return torch.where(lvl == 0, basal, torch.where(lvl == 1, basal + 6, apical))


@torch.no_grad()
def myocardial_segments(maps: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The AHA segment (1-16) of every myocardial pixel, 0 elsewhere, ``(B, S, H, W)`` uint8: where the
    myocardium map (mean over phases) is above one half, ``ids`` (:func:`aha_segment_ids`, the forward pass's
    ``aha_ids``: as the wall reader places them)."""
    myocardium = torch.sigmoid(maps[:, 1]).mean(dim=2) > 0.5
    return torch.where(myocardium, ids, torch.zeros_like(ids)).to(torch.uint8)
