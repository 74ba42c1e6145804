"""Ground truth of a phantom study: labels, per-segment table, masks, volumes; JSON and ``.scar.json`` forms."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stran.phantom.anatomy import SEGMENT_NAMES, TERRITORY_OF, segment_level
from stran.phantom.config import PhantomConfig
from stran.phantom.motion import CycleShape, contraction, septal_flash, wall_radii
from stran.phantom.scenarios import SCENARIO_NAMES, wma_class
from stran.phantom.tables import HeartTables

MASK_LABELS = {
    0: "background",
    1: "LV blood pool (incl. papillary muscles)",
    2: "LV myocardium",
    3: "RV blood pool",
    4: "scar (LV myocardium)",
}


@dataclass
class GroundTruth:
    """What the phantom knows about itself.

    ``masks`` is uint8 (S, T, H, W) on the study's pixel grid (labels in
    ``MASK_LABELS``); ``slice_labels[s]`` is 1 when slice ``s`` holds scar
    pixels in any phase; ``study_label`` is 1 when any slice does.
    """

    study_label: int
    slice_labels: list[int]
    segments: list[dict[str, Any]]
    masks: np.ndarray
    scenario: str
    subtype: str
    seed: int
    profile: str
    edv_ml: float
    esv_ml: float
    ef_pct: float
    lv_mass_g: float
    es_phase: int
    slices: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def scenario_name(self) -> str:
        return SCENARIO_NAMES.get(self.scenario, self.scenario)

    @property
    def n_scar_slices(self) -> int:
        return int(sum(self.slice_labels))

    def to_json(self, include_config: bool = True) -> dict[str, Any]:
        """JSON-ready dict (masks are not included: see ``save``)."""
        d = {
            "study_label": int(self.study_label),
            "slice_labels": [int(v) for v in self.slice_labels],
            "scenario": self.scenario,
            "scenario_name": self.scenario_name,
            "subtype": self.subtype,
            "seed": int(self.seed),
            "profile": self.profile,
            "edv_ml": round(float(self.edv_ml), 2),
            "esv_ml": round(float(self.esv_ml), 2),
            "ef_pct": round(float(self.ef_pct), 2),
            "lv_mass_g": round(float(self.lv_mass_g), 2),
            "es_phase": int(self.es_phase),
            "mask_labels": {str(k): v for k, v in MASK_LABELS.items()},
            "mask_shape": list(self.masks.shape),
            "segments": self.segments,
            "slices": self.slices,
        }
        if include_config:
            d["config"] = self.config
        return d

    def scar_label(self, reviewer: str = "phantom-generator") -> dict[str, Any]:
        """The DESIGN.md label contract (``.scar.json``)."""
        return {
            "study_label": int(self.study_label),
            "slice_labels": [int(v) for v in self.slice_labels],
            "segment_labels": [int(float(r["scar_extent_pct"]) > 0) for r in self.segments],
            "source": "LGE",
            "reviewer": reviewer,
            "comment": f"scenario {self.scenario} ({self.scenario_name}: {self.subtype}); phantom seed {self.seed}",
        }

    def save(self, truth_path: str | Path, masks_path: str | Path | None = None) -> None:
        """Write ``<id>.truth.json`` and (optionally) the masks as a compressed ``.npz`` (key ``masks``), atomically."""
        from stran.atomic import atomic_write_text, atomic_write_with

        atomic_write_text(truth_path, json.dumps(self.to_json(), indent=1))
        if masks_path is not None:
            buf = io.BytesIO()
            np.savez_compressed(buf, masks=self.masks)
            atomic_write_with(masks_path, lambda p: Path(p).write_bytes(buf.getvalue()))


def load_masks(path: str | Path) -> np.ndarray:
    with np.load(path) as z:
        return z["masks"]


def segment_table(cfg: PhantomConfig, tab: HeartTables, shape: CycleShape) -> list[dict[str, Any]]:
    """17 rows: level, territory, motion f, ED / ES thickness, thickening, transmurality, scar pattern, WMA class.

    Thickness is radial in the model (mean over the segment's material
    cells); ES is the global end-systolic phase. ``transmurality_pct`` is
    the 90th percentile over the segment of the scar's transmural extent,
    ``scar_extent_pct`` the scarred fraction of the segment's wall. Segment
    17 (apex cap) has no radial thickness.
    """
    pat, mo = cfg.pathology, cfg.motion
    valid = (tab.depths >= 0)[:, None] & (tab.segments > 0)
    g = tab.f * contraction(shape.p_es - tab.delay, shape) + tab.flash * septal_flash(shape.p_es)
    r_endo_es, r_epi_es = wall_radii(tab.r_endo, tab.r_epi, g, mo.radial_shortening, mo.longitudinal_shortening)
    ed = tab.r_epi - tab.r_endo
    es = r_epi_es - r_endo_es
    lo = np.clip(tab.scar_lo, 0.0, 1.0)
    hi = np.clip(tab.scar_hi, 0.0, 1.0)
    extent = np.clip(hi - lo, 0.0, 1.0)
    band_kinds = {b.kind for b in pat.bands}
    rows = []
    for seg in range(1, 18):
        cells = valid & (tab.segments == seg)
        ext = extent[cells] if cells.any() else np.zeros(1)
        tr = float(np.percentile(ext, 90))  # a robust maximum over the segment
        scar_pct = float(ext.mean())
        if tr < 0.02:
            tr, scar_pct, pattern = 0.0, 0.0, "none"
        elif pat.transmurality[seg - 1] > 0 or (not band_kinds):
            pattern = "transmural" if tr > 0.75 else "subendocardial"
        else:
            pattern = "/".join(sorted(band_kinds))
        f = float(pat.segment_f[seg - 1])
        delay = float(pat.segment_delay[seg - 1])
        flash = float(pat.segment_flash[seg - 1])
        row: dict[str, Any] = {
            "segment": seg,
            "name": SEGMENT_NAMES[seg],
            "level": segment_level(seg),
            "territory": TERRITORY_OF[seg],
            "motion_f": round(f, 4),
            "delay_rr": round(delay, 4),
            "ed_thickness_mm": None,
            "es_thickness_mm": None,
            "thickening_pct": None,
            "transmurality_pct": round(100.0 * tr, 1),
            "scar_extent_pct": round(100.0 * scar_pct, 1),
            "scar_pattern": pattern,
            "wma_class": wma_class(f, delay, flash),
            "thinned": False,
        }
        if seg < 17 and cells.any():
            e_ed = float(ed[cells].mean())
            e_es = float(es[cells].mean())
            row["ed_thickness_mm"] = round(e_ed, 2)
            row["es_thickness_mm"] = round(e_es, 2)
            row["thickening_pct"] = round(100.0 * (e_es - e_ed) / max(e_ed, 1e-6), 1)
            row["thinned"] = bool(e_ed <= 5.5)
        rows.append(row)
    return rows


def volumes(cfg: PhantomConfig, tab: HeartTables, shape: CycleShape, n: int = 60) -> tuple[float, float, float, float]:
    """(EDV ml, ESV ml, EF %, LV mass g) of the model, integrated over the material tables.

    The cavity (papillary muscles included, as in the masks) is integrated
    over ED depth with the through-plane compression of the base descent;
    EDV / ESV are the largest / smallest volume over ``n`` phases.
    """
    mo = cfg.motion
    cav = (tab.depths >= 0) & (tab.depths <= tab.cavity_length)
    dz = float(tab.depths[1] - tab.depths[0])
    da = 2.0 * np.pi / tab.r_endo.shape[1]
    p = np.arange(n) / n
    r_ed, f, delay, flash = tab.r_endo[cav], tab.f[cav], tab.delay[cav], tab.flash[cav]
    vols = []
    for pk in p:
        g = f * contraction(pk - delay, shape) + flash * septal_flash(pk)
        r_endo = r_ed * (1.0 - mo.radial_shortening * g)
        c = float(contraction(np.array([pk]), shape)[0])
        compress = 1.0 - mo.base_descent * c / tab.total_length
        vols.append(float(0.5 * np.sum(r_endo**2) * da * dz * compress) / 1000.0)
    edv, esv = max(vols), min(vols)
    ef = 100.0 * (edv - esv) / max(edv, 1e-9)
    wall = tab.depths >= 0
    mass = float(0.5 * np.sum(tab.r_epi[wall] ** 2 - tab.r_endo[wall] ** 2) * da * dz) / 1000.0 * 1.05
    return edv, esv, ef, mass
