"""A reader with perfect contours: wall measurements per (slice, AHA sector) from the truth masks and the pixels.

This is the "bound" of issue 11: what a careful reader could measure on cine if someone handed them exact
endocardial and epicardial contours (but not the scar). For every short-axis slice of the LV (basal, mid and
apical levels; the apex cap as one unit, segment 17) and every AHA sector of that slice, it measures:

* the myocardial signal (mean over all phases of the sector's wall pixels) relative to the slice's and the study's
  median sector, its 10th percentile, the signal of the wall's core (1 pixel eroded), and the wall / blood ratio;
* the end-diastolic wall thickness (equivalent annulus over the sector) and its systolic thickening.

Scar pixels (mask label 4) count as myocardium: the contour is known, what is inside is not. A unit's truth is
"scar pixels in this sector of this slice in any phase". ``training/bound.py`` fits a simple classifier on these
features and reports per-scenario AUCs: the practical ceiling of any method on this generator's cues.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.ndimage import binary_erosion

from stran.phantom.anatomy import segment_at
from stran.phantom.config import PhantomConfig
from stran.phantom.generator import pixel_heart_frame
from stran.phantom.measure import es_phase_from_masks, sector_thickness
from stran.phantom.render import LABEL_LV, LABEL_MYO, LABEL_SCAR

FEATURES = (
    "signal_rel_slice",
    "signal_rel_study",
    "signal_p10_rel",
    "core_rel_slice",
    "wall_blood_ratio",
    "ed_thickness_mm",
    "ed_thickness_rel",
    "thickening_pct",
)
LEVELS = ("basal", "mid", "apical", "apex")


@dataclass
class ReaderUnits:
    """The measured units of one study and its truth at every level."""

    study_id: str
    scenario: str
    features: np.ndarray  # (n, len(FEATURES)), NaN where a measure does not apply
    slice_index: np.ndarray  # (n,) source slice of each unit
    segment: np.ndarray  # (n,) AHA segment 1-17
    scar: np.ndarray  # (n,) bool: scar pixels in the unit
    study_label: int
    slice_labels: list[int]
    segment_labels: list[int]  # 17, from the generator's segment table (scar extent > 0)
    meta: dict[str, Any] = field(default_factory=dict)


def _slice_units(
    px: np.ndarray, masks: np.ndarray, lat: np.ndarray, inf: np.ndarray, level: str, es: int, px_area: float
) -> dict[int, dict[str, Any]]:
    """Per segment of one slice: pixel values of the wall over all phases, core values, scar flag, thicknesses."""
    acc: dict[int, dict[str, Any]] = {}
    blood_levels = []
    for t in range(px.shape[0]):
        m = masks[t]
        blood = m == LABEL_LV
        wall = (m == LABEL_MYO) | (m == LABEL_SCAR)
        if blood.sum() < 5 or wall.sum() < 5:
            continue
        core_blood = binary_erosion(blood, iterations=2)
        blood_levels.append(float(np.median(px[t][core_blood if core_blood.any() else blood])))
        if level == "apex":
            seg = np.full(m.shape, 17)
        else:
            cl, ci = lat[blood].mean(), inf[blood].mean()
            seg = segment_at(np.degrees(np.arctan2(-(lat - cl), -(inf - ci))), level)
        core = binary_erosion(wall, iterations=1)
        for k in np.unique(seg[wall]):
            sel = wall & (seg == k)
            d = acc.setdefault(int(k), {"values": [], "core": [], "scar": False})
            d["values"].append(px[t][sel])
            d["core"].append(px[t][core & (seg == k)])
            d["scar"] |= bool((m[sel] == LABEL_SCAR).any())
    if not acc:
        return {}
    blood_ref = float(np.mean(blood_levels))
    ed_t = {} if level == "apex" else sector_thickness(masks[0], lat, inf, level, px_area)
    es_t = {} if level == "apex" else sector_thickness(masks[es], lat, inf, level, px_area)
    for k, d in acc.items():
        v = np.concatenate(d["values"])
        c = np.concatenate(d["core"])
        d["mean"] = float(v.mean())
        d["p10"] = float(np.percentile(v, 10))
        d["core_mean"] = float(c.mean()) if c.size else np.nan
        d["blood"] = blood_ref
        ed, esv = ed_t.get(k, np.nan), es_t.get(k, np.nan)
        d["ed"] = ed
        d["thickening"] = 100.0 * (esv - ed) / ed if ed and np.isfinite(ed) and ed > 0 else np.nan
    return acc


def measure_units(study_id: str, pixels: np.ndarray, masks: np.ndarray, truth: dict[str, Any]) -> ReaderUnits:
    """All (slice, sector) units of one phantom study (``pixels`` and ``masks`` (S, T, H, W), ``truth`` its JSON)."""
    cfg = PhantomConfig.from_dict(truth["config"])
    lat, inf = pixel_heart_frame(cfg)
    sp = cfg.acquisition.pixel_spacing
    es = es_phase_from_masks(masks)
    rows: list[tuple[int, int, dict[str, Any]]] = []
    for s, info in enumerate(truth["slices"]):
        if info["level"] not in LEVELS:
            continue
        units = _slice_units(pixels[s].astype(np.float64), masks[s], lat, inf, info["level"], es, sp * sp)
        rows += [(s, k, d) for k, d in sorted(units.items())]
    feats = np.full((len(rows), len(FEATURES)), np.nan)
    if rows:
        study_ref = float(np.median([d["mean"] for _, _, d in rows]))
        ed_ref = float(np.nanmedian([d["ed"] for _, _, d in rows])) if any(np.isfinite(d["ed"]) for _, _, d in rows) else np.nan
        for i, (s, _, d) in enumerate(rows):
            slice_ref = float(np.median([e["mean"] for t, _, e in rows if t == s]))
            feats[i] = (
                d["mean"] / slice_ref,
                d["mean"] / study_ref,
                d["p10"] / slice_ref,
                d["core_mean"] / slice_ref,
                d["mean"] / d["blood"],
                d["ed"],
                d["ed"] / ed_ref,
                d["thickening"],
            )
    segments = {int(r["segment"]): r for r in truth["segments"]}
    return ReaderUnits(
        study_id=study_id,
        scenario=str(truth.get("scenario", "")),
        features=feats,
        slice_index=np.array([s for s, _, _ in rows], dtype=int),
        segment=np.array([k for _, k, _ in rows], dtype=int),
        scar=np.array([d["scar"] for _, _, d in rows], dtype=bool),
        study_label=int(truth["study_label"]),
        slice_labels=[int(v) for v in truth["slice_labels"]],
        segment_labels=[int(float(segments[k]["scar_extent_pct"]) > 0) for k in range(1, 18)],
        meta={"profile": truth.get("profile", ""), "subtype": truth.get("subtype", "")},
    )
