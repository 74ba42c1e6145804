"""The wall reader: what a reader measures on the network's own contours, per slice and AHA sector.

Once the map head knows where the LV blood pool, the myocardium and the RV are, the decision does what a careful
reader does (and what the bound of ``stran.phantom.reader`` does with perfect contours): for every slice and every
AHA sector of it, measure the wall's signal against the rest of the wall, the share of dark wall pixels, the wall
against the blood pool, the end-diastolic wall thickness and its systolic thickening, and the scar map's own
evidence there; a small network turns these measures into a scar logit per unit (slice x sector). Slices, segments
and the study take the soft maximum (log-sum-exp) of their units, calibrated by a learned affine per level.

All measures are computed from the maps without gradient (the maps are taught by the pixel targets); the unit network
learns from the slice, segment and study labels and, where a label map exists, from each unit's own truth (scar
pixels in that sector of that slice).
"""

from __future__ import annotations

import math

import torch
from torch import nn

N_IDS = 18  # AHA ids 0-17 on a slice (0: unused)
N_FEATURES = 13
DARK = (0.7, 0.8, 0.9)  # a wall pixel is "dark" below these fractions of its slice's wall signal


def _sums(values: torch.Tensor | None, weights: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Per (batch, unit) weighted sums: ``values`` (None: ones) and ``weights`` (B, S, T, H, W), ``ids`` (B, S, H, W)
    unit ids. A pixel's unit is the same in every phase, so the phases are summed first (T times fewer scatters)."""
    b, s = weights.shape[:2]
    per_pixel = (weights if values is None else values * weights).sum(dim=2)  # (B, S, H, W)
    unit = ids + torch.arange(s, device=ids.device).view(1, s, 1, 1) * N_IDS
    out = weights.new_zeros(b, n)
    out.scatter_add_(1, unit.reshape(b, -1), per_pixel.reshape(b, -1))
    return out


def _erode(x: torch.Tensor) -> torch.Tensor:
    """The minimum over each pixel's 3 x 3 neighbourhood within the image (..., H, W): rows, then columns (exact;
    a third of the time of ``-max_pool2d(-x)``, which also computes the argmax indices on the CPU)."""
    rows = x.clone()
    rows[..., 1:, :] = torch.minimum(rows[..., 1:, :], x[..., :-1, :])
    rows[..., :-1, :] = torch.minimum(rows[..., :-1, :], x[..., 1:, :])
    out = rows.clone()
    out[..., 1:] = torch.minimum(out[..., 1:], rows[..., :-1])
    out[..., :-1] = torch.minimum(out[..., :-1], rows[..., 1:])
    return out


def _thickness(wall: torch.Tensor, blood: torch.Tensor, sectors: torch.Tensor) -> torch.Tensor:
    """Equivalent-annulus wall thickness (px) per unit from the sector's wall and blood areas (px^2)."""
    dphi = 2.0 * math.pi / sectors
    r_endo = torch.sqrt(2.0 * blood / dphi)
    r_epi = torch.sqrt(2.0 * (blood + wall) / dphi)
    return r_epi - r_endo


class WallReader(nn.Module):
    """Unit measures -> unit logits -> slice, segment and study logits (see the module docstring)."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(N_FEATURES)
        self.net = nn.Sequential(nn.Linear(N_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))
        # calibration of the soft maxima (study, slice, segment): a log-sum-exp over many units runs high
        self.scale = nn.Parameter(torch.ones(3))
        self.offset = nn.Parameter(torch.tensor([4.0, 2.0, 1.0]))

    @torch.no_grad()
    def measures(self, image: torch.Tensor, maps: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (B, S*18, 13), unit wall mass (B, S*18)) from the image (B, 1, S, T, H, W), the map logits and the
        AHA ids (B, S, H, W)."""
        x = image[:, 0]
        b, s, t = x.shape[:3]
        n = s * N_IDS
        p = torch.sigmoid(maps)
        lv, wall, scar = p[:, 0], p[:, 1], p[:, 3]
        mass = _sums(None, wall, ids, n)  # wall pixels x phases per unit
        safe = mass.clamp_min(1e-3)
        mean = _sums(x, wall, ids, n) / safe
        # references: the slice's and the study's wall, the slice's blood pool (weighted means over all phases)
        slice_wall = (wall * x).sum(dim=(2, 3, 4)) / wall.sum(dim=(2, 3, 4)).clamp_min(1e-3)  # (B, S)
        slice_blood = (lv * x).sum(dim=(2, 3, 4)) / lv.sum(dim=(2, 3, 4)).clamp_min(1e-3)
        study_wall = (wall * x).sum(dim=(1, 2, 3, 4)) / wall.sum(dim=(1, 2, 3, 4)).clamp_min(1e-3)  # (B,)
        per_unit = lambda v: v.repeat_interleave(N_IDS, dim=1)  # noqa: E731 - (B, S) -> (B, S*18)
        ref = slice_wall[:, :, None, None, None]
        # the wall's core (a pixel whose 3x3 neighbourhood is all wall): free of partial volume with the blood pool
        core = _erode(wall)
        core_mass = _sums(None, core, ids, n).clamp_min(1e-3)
        core_mean = _sums(x, core, ids, n) / core_mass
        dark_share = [_sums(torch.sigmoid((k * ref - x) / (0.05 * ref.clamp_min(1e-3))), wall, ids, n) / safe
                      for k in DARK]
        core_dark = _sums(torch.sigmoid((DARK[1] * ref - x) / (0.05 * ref.clamp_min(1e-3))), core, ids, n) / core_mass
        scar_mean = _sums(scar, wall, ids, n) / safe
        # thickness at end-diastole (largest LV blood pool) and end-systole (smallest), per unit
        lv_area = lv.sum(dim=(1, 3, 4))  # (B, T)
        ed, es = lv_area.argmax(dim=1), lv_area.argmin(dim=1)

        def areas(phase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pick = phase.view(b, 1, 1, 1, 1).expand(b, s, 1, *x.shape[3:])
            w1, l1 = wall.gather(2, pick), lv.gather(2, pick)
            return _sums(None, w1, ids, n), _sums(None, l1, ids, n)

        sectors = torch.where((ids.amax(dim=(2, 3)) >= 13), 4.0, 6.0).to(x.dtype)  # (B, S): apical slices have 4
        ed_wall, ed_blood = areas(ed)
        es_wall, es_blood = areas(es)
        ed_t = _thickness(ed_wall, ed_blood, per_unit(sectors))
        es_t = _thickness(es_wall, es_blood, per_unit(sectors))
        study_t = (ed_t * ed_wall).sum(dim=1, keepdim=True) / ed_wall.sum(dim=1, keepdim=True).clamp_min(1e-3)
        features = torch.stack(
            [
                mean / per_unit(slice_wall).clamp_min(1e-3),
                mean / study_wall[:, None].clamp_min(1e-3),
                mean / per_unit(slice_blood).clamp_min(1e-3),
                *dark_share,
                core_mean / per_unit(slice_wall).clamp_min(1e-3),
                core_dark,
                ed_t,
                ed_t / study_t.clamp_min(1e-3),
                (es_t - ed_t) / ed_t.clamp_min(0.5),
                scar_mean,
                torch.log1p(mass / t),
            ],
            dim=-1,
        )
        return torch.nan_to_num(features), mass / t

    def decide(self, features: torch.Tensor, mass: torch.Tensor, apex_last: torch.Tensor,
               min_mass: float = 4.0) -> dict[str, torch.Tensor]:
        """Unit logits from the measures (B, S*18, 13), and the slice, segment and study logits (soft maxima)."""
        b, n, _ = features.shape
        s = n // N_IDS
        valid = mass >= min_mass  # units with at least a few wall pixels per phase
        logits = self.net(self.norm(features.reshape(b * n, -1))).view(b, n)
        masked = logits.masked_fill(~valid, -30.0)
        per_slice = masked.view(b, s, N_IDS)
        slices = torch.logsumexp(per_slice, dim=2)
        segments = torch.logsumexp(per_slice.transpose(1, 2)[:, 1:17], dim=2)  # (B, 16): over the slices
        apex = torch.where(apex_last > 0.5, slices[:, -1], slices[:, 0])
        return {
            "unit_logits": logits.view(b, s, N_IDS),
            "unit_valid": valid.view(b, s, N_IDS),
            "study_logit": self.scale[0] * (torch.logsumexp(masked, dim=1) - self.offset[0]),
            "slice_logits": self.scale[1] * (slices - self.offset[1]),
            "segment_logits": self.scale[2] * (torch.cat([segments, apex[:, None]], dim=1) - self.offset[2]),
        }

    def forward(self, image: torch.Tensor, maps: torch.Tensor, ids: torch.Tensor,
                apex_last: torch.Tensor) -> dict[str, torch.Tensor]:
        features, mass = self.measures(image, maps, ids)
        return self.decide(features, mass, apex_last)


def unit_targets(labels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Truth per unit (B, S, 18): 1 where the label map has scar pixels in that sector of that slice (any phase),
    0 where it has none, -1 where the study has no label map pixels there."""
    b, s = ids.shape[:2]
    scar = (labels == 4).any(dim=2).float()  # (B, S, H, W)
    known = (labels != 255).all(dim=2).float()
    unit = ids + torch.arange(s, device=ids.device).view(1, s, 1, 1) * N_IDS
    hits = torch.zeros(b, s * N_IDS, device=ids.device).scatter_add_(1, unit.reshape(b, -1), scar.reshape(b, -1))
    seen = torch.zeros(b, s * N_IDS, device=ids.device).scatter_add_(1, unit.reshape(b, -1), known.reshape(b, -1))
    return torch.where(seen > 0, (hits > 0).float(), torch.full_like(hits, -1.0)).view(b, s, N_IDS)


