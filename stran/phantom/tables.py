"""Material-coordinate (depth x angle) tables of one phantom heart.

Every regional property (ED radii, motion fraction and timing, RV crescent,
epicardial fat, scar extent, texture) is tabulated on a 1 mm x 1 degree grid
of ED depth and AHA angle; the renderer interpolates the rows a slice plane
cuts at each phase. Segment-wise values are smoothed across segment borders
(motion over ~10 degrees, the notes' 15-30 degree border zones; scar over
~6 degrees) so neighbouring segments blend like real tissue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stran.phantom.anatomy import (
    ANGLES_DEG,
    N_ANGLES,
    depth_grid,
    per_segment_table,
    segment_map,
    smooth_circular,
    smooth_depth,
    superellipse_profile,
)
from stran.phantom.config import PhantomConfig

NO_SCAR_LO, NO_SCAR_HI = 2.0, -1.0


@dataclass
class HeartTables:
    depths: np.ndarray  # (Z,) mm
    segments: np.ndarray  # (Z, A) AHA segment (0 outside the LV)
    r_endo: np.ndarray  # ED endocardial radius (0 where the cavity has closed)
    r_epi: np.ndarray  # ED epicardial radius
    f: np.ndarray  # fraction of normal radial motion
    delay: np.ndarray  # contraction delay (fraction of RR)
    flash: np.ndarray  # septal-flash amplitude
    rv_depth: np.ndarray  # RV crescent depth at ED (mm, 0 outside the crescent)
    fat: np.ndarray  # epicardial fat thickness (mm)
    scar_lo: np.ndarray  # scar inner edge, fraction of the wall from the endocardium (NO_SCAR_LO = none)
    scar_hi: np.ndarray  # scar outer edge (>= 1 reaches the epicardium)
    texture: np.ndarray  # relative myocardial texture
    atrium: np.ndarray  # (Z,) bool, rows above the base (left atrium)
    cavity_length: float
    total_length: float

    def row_weights(self, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lower row index, upper row index and weight of the upper row for each depth."""
        pos = (np.asarray(depth, dtype=np.float64) - self.depths[0]) / (self.depths[1] - self.depths[0])
        pos = np.clip(pos, 0.0, self.depths.size - 1.000001)
        i0 = np.floor(pos).astype(int)
        return i0, i0 + 1, pos - i0

    def rows(self, name: str, depth: np.ndarray) -> np.ndarray:
        """Table ``name`` interpolated at each depth: (len(depth), A)."""
        i0, i1, w = self.row_weights(depth)
        t = getattr(self, name)
        return t[i0] * (1.0 - w)[:, None] + t[i1] * w[:, None]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_z: float, sigma_a: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random table (periodic in angle)."""
    from scipy.ndimage import gaussian_filter

    n = rng.standard_normal(shape)
    n = gaussian_filter(n, (sigma_z, sigma_a), mode=("nearest", "wrap"))
    return (n - n.mean()) / max(float(n.std()), 1e-9)


def build_tables(cfg: PhantomConfig, rng: np.random.Generator) -> HeartTables:
    an, pat = cfg.anatomy, cfg.pathology
    lc = an.cavity_length
    lt = an.total_length
    z = depth_grid(lt)
    zz = z[:, None]
    a = np.deg2rad(ANGLES_DEG)[None, :]
    smap = segment_map(z, lc, lt)
    smap_c = segment_map(z, lc, lt, clamp=True)

    r0 = an.r_endo * pat.dilation
    endo0 = r0 * superellipse_profile(z, lc, an.shape_power)
    epi0 = (r0 + an.wall) * superellipse_profile(z, lt, an.shape_power)
    wall0 = np.maximum(epi0 - endo0, 0.0)

    ell = 1.0 + an.ellipticity * np.cos(2.0 * (a - np.deg2rad(an.ellipticity_angle)))
    septal = 1.0 + (an.septal_wall_factor - 1.0) * 0.5 * (1.0 + np.cos(a - np.pi / 2.0))
    r_epi = epi0[:, None] * ell
    natural_wall = wall0[:, None] * septal * pat.wall_factor

    # regional thinning: ED wall factor per segment, and transmural scar thinned to a target thickness
    thin = per_segment_table(pat.thinning, smap_c, 1.0)
    target = per_segment_table(pat.thin_to_mm, smap_c, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        to_target = np.where(target > 0, np.minimum(1.0, target / np.maximum(natural_wall, 1e-6)), 1.0)
    thin = np.minimum(thin, to_target)
    thin = smooth_depth(smooth_circular(thin, 7.0), 3.0)
    wall = natural_wall * thin

    r_endo = np.where(endo0[:, None] > 0, np.maximum(r_epi - wall, 0.0), 0.0)
    rough = _smooth_noise(rng, r_endo.shape, 2.0, 2.5) * an.trabeculation * 0.6
    r_endo = np.where(r_endo > 0, np.maximum(r_endo + rough * np.clip(r_endo / 6.0, 0.0, 1.0), 0.0), 0.0)

    atrium = z < 0
    la = an.la_radius * r0 * ell[0]
    r_endo[atrium] = la
    r_epi[atrium] = la + 2.0

    f = smooth_depth(smooth_circular(per_segment_table(pat.segment_f, smap_c, 1.0), 10.0), 5.0)
    delay = smooth_depth(smooth_circular(per_segment_table(pat.segment_delay, smap_c, 0.0), 10.0), 5.0)
    flash = smooth_depth(smooth_circular(per_segment_table(pat.segment_flash, smap_c, 0.0), 10.0), 5.0)
    f[atrium] = 0.0
    flash[atrium] = 0.0

    # RV crescent between the insertion points at 90 -/+ half span
    hs = an.rv_half_span
    s = (ANGLES_DEG - (90.0 - hs)) / (2.0 * hs)
    inside = (s > 0) & (s < 1)
    prof = np.where(
        inside, np.sin(np.pi * np.clip(s, 0, 1)) ** an.rv_fullness * (1.0 + an.rv_skew * (1.0 - 2.0 * s)), 0.0
    )
    h = an.rv_depth * np.clip(1.0 - (np.maximum(z, 0.0) / (an.rv_length * lc)) ** 2, 0.0, 1.0)
    rv_depth = h[:, None] * prof[None, :]

    # epicardial fat: patchy, thickest in the AV groove (base) and over the RV
    fat_noise = _smooth_noise(rng, r_endo.shape, 5.0, 15.0)
    over_rv = np.clip(rv_depth / max(an.rv_depth, 1e-6), 0.0, 1.0) ** 0.3
    fat = an.epicardial_fat * np.clip(0.3 + 0.7 * fat_noise, 0.0, None)
    fat *= (0.5 + 0.8 * over_rv) * (1.0 + 1.5 * np.exp(-np.maximum(zz, 0.0) / 12.0))

    scar_lo = np.full(r_endo.shape, NO_SCAR_LO)
    scar_hi = np.full(r_endo.shape, NO_SCAR_HI)
    if any(t > 0 for t in pat.transmurality):
        t = per_segment_table(pat.transmurality, smap_c, 0.0)
        t = smooth_depth(smooth_circular(t, 6.0), 3.0)
        jag = np.clip(_smooth_noise(rng, t.shape, 3.0, 4.0), -1.5, 1.5)
        t = np.clip(t * (1.0 + pat.border_irregularity * jag), 0.0, 1.0)
        t[t < 0.05] = 0.0
        t[atrium] = 0.0
        has = t > 0
        scar_lo = np.where(has, -1.0, scar_lo)
        scar_hi = np.where(has, np.where(t > 0.97, 1.5, t), scar_hi)
    for band in pat.bands:
        lo_a, hi_a = band.angle_lo, band.angle_hi
        rel = np.mod(ANGLES_DEG - lo_a, 360.0)
        in_a = (rel <= np.mod(hi_a - lo_a, 360.0)).astype(np.float64)
        in_z = ((z >= band.depth_lo * lc) & (z <= band.depth_hi * lc)).astype(np.float64)
        presence = smooth_depth(smooth_circular(in_z[:, None] * in_a[None, :], band.edge_deg), 3.0)
        presence[atrium] = 0.0
        half = 0.5 * band.width_mm * presence / np.maximum(wall, 1.0)
        has = presence > 0.15
        if band.layer == "epicardial":
            lo = 1.0 - 2.0 * half
            hi = np.full_like(lo, 1.5)
        else:
            lo = band.centre - half
            hi = band.centre + half
        scar_lo = np.where(has, np.minimum(scar_lo, lo), scar_lo)
        scar_hi = np.where(has, np.maximum(scar_hi, hi), scar_hi)

    # myocardium in bSSFP is homogeneous apart from noise and partial volume: half the thorax texture
    texture = _smooth_noise(rng, r_endo.shape, 3.0, 6.0) * (0.5 * cfg.texture)

    return HeartTables(
        depths=z,
        segments=smap,
        r_endo=r_endo,
        r_epi=r_epi,
        f=f,
        delay=delay,
        flash=flash,
        rv_depth=rv_depth,
        fat=fat,
        scar_lo=scar_lo,
        scar_hi=scar_hi,
        texture=texture,
        atrium=atrium,
        cavity_length=lc,
        total_length=lt,
    )


__all__ = ["HeartTables", "build_tables", "NO_SCAR_LO", "NO_SCAR_HI", "N_ANGLES"]
