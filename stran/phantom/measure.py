"""Measurements on a generated study's masks and pixels, like a reader would make them.

Used by the tests (so they check what the images show, not what the config
asked for) and handy for docs and sanity checks: per-AHA-segment wall
thickness at ED and ES from the label masks, and blood / myocardium
contrast from the pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stran.phantom.anatomy import segment_at
from stran.phantom.generator import PhantomStudy, pixel_heart_frame
from stran.phantom.render import LABEL_LV, LABEL_MYO, LABEL_RV, LABEL_SCAR


def es_phase_from_masks(masks: np.ndarray) -> int:
    """Phase with the smallest LV blood pool (summed over slices)."""
    return int(np.argmin((masks == LABEL_LV).sum(axis=(0, 2, 3))))


def sector_thickness(
    mask: np.ndarray, lat: np.ndarray, inf: np.ndarray, level: str, px_area: float
) -> dict[int, float]:
    blood = mask == LABEL_LV
    myo = (mask == LABEL_MYO) | (mask == LABEL_SCAR)
    if blood.sum() < 5 or myo.sum() < 5:
        return {}
    cl, ci = lat[blood].mean(), inf[blood].mean()
    phi = np.degrees(np.arctan2(-(lat - cl), -(inf - ci)))
    seg = segment_at(phi, level)
    out = {}
    n_sectors = 4 if level == "apical" else 6
    dphi = 2.0 * np.pi / n_sectors
    for s in np.unique(seg[myo]):
        a_b = float((blood & (seg == s)).sum()) * px_area
        a_m = float((myo & (seg == s)).sum()) * px_area
        r_endo = np.sqrt(2.0 * a_b / dphi)
        r_epi = np.sqrt(2.0 * (a_b + a_m) / dphi)
        out[int(s)] = r_epi - r_endo
    return out


def segment_wall_from_masks(
    study: PhantomStudy, es_phase: int | None = None, *, same_level: bool = True, margin_mm: float = 4.0
) -> dict[int, dict[str, float]]:
    """Per AHA segment (1-16): ED and ES wall thickness (mm) and thickening (%) measured on the masks.

    Thickness per sector = equivalent-annulus thickness from the sector's
    blood and myocardium areas around the LV blood centroid; slices are
    assigned to levels by their ED depth; values are averaged over slices.
    Slices with a blood pool smaller than 5 pixels are skipped. The base
    descends in systole, so a fixed slice near a level border shows another
    level's tissue at ES; with ``same_level`` slices whose tissue at ED or
    ES lies within ``margin_mm`` of a level border are skipped (the tissue in
    the plane at ES is located with the motion model).
    """
    from stran.phantom.anatomy import level_of_depth
    from stran.phantom.motion import material_depth

    masks = study.truth.masks
    cfg = study.config
    lat, inf = pixel_heart_frame(cfg)
    sp = cfg.acquisition.pixel_spacing
    es = es_phase_from_masks(masks) if es_phase is None else es_phase
    lc, lt = cfg.anatomy.cavity_length, cfg.anatomy.total_length
    acc: dict[int, dict[str, list[float]]] = {}
    for s, info in enumerate(study.truth.slices):
        level = info["level"]
        if level not in ("basal", "mid", "apical"):
            continue
        if same_level:
            z_es = float(material_depth(info["depth_mm"], 1.0, cfg.motion.base_descent, lt))
            depths = (info["depth_mm"] - margin_mm, info["depth_mm"] + margin_mm, z_es - margin_mm, z_es + margin_mm)
            if any(level_of_depth(z, lc, lt) != level for z in depths):
                continue
        ed_t = sector_thickness(masks[s, 0], lat, inf, level, sp * sp)
        es_t = sector_thickness(masks[s, es], lat, inf, level, sp * sp)
        for seg in set(ed_t) & set(es_t):
            d = acc.setdefault(seg, {"ed": [], "es": []})
            d["ed"].append(ed_t[seg])
            d["es"].append(es_t[seg])
    out = {}
    for seg, d in sorted(acc.items()):
        ed, esv = float(np.mean(d["ed"])), float(np.mean(d["es"]))
        out[seg] = {"ed_mm": ed, "es_mm": esv, "thickening_pct": 100.0 * (esv - ed) / max(ed, 1e-6), "n": len(d["ed"])}
    return out


def _erode(mask: np.ndarray, it: int) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return binary_erosion(mask, iterations=it) if it > 0 else mask


def blood_myo_contrast(study: PhantomStudy, phase: int = 0) -> float:
    """Median LV blood / median remote LV myocardium signal at ``phase`` over basal/mid slices.

    Masks are eroded (blood 2 px, myocardium 1 px in-plane) to keep partial
    volume out; scar pixels are excluded.
    """
    masks, px = study.truth.masks, study.cine.pixels
    blood_v, myo_v = [], []
    for s, info in enumerate(study.truth.slices):
        if info["level"] not in ("basal", "mid"):
            continue
        m = masks[s, phase]
        b = _erode(m == LABEL_LV, 2)
        y = _erode(m == LABEL_MYO, 1)
        blood_v.append(px[s, phase][b])
        myo_v.append(px[s, phase][y])
    b = np.concatenate(blood_v)
    y = np.concatenate(myo_v)
    return float(np.median(b) / max(np.median(y), 1e-6))


def summary(study: PhantomStudy) -> dict[str, Any]:
    m = study.truth.masks
    return {
        "lv_blood_px": int((m == LABEL_LV).sum()),
        "rv_blood_px": int((m == LABEL_RV).sum()),
        "myo_px": int((m == LABEL_MYO).sum()),
        "scar_px": int((m == LABEL_SCAR).sum()),
    }
