"""Pathology scenarios A-D (cine-data-notes section 1.5) and what each puts in a phantom.

* A  chronic ischemic scar with wall-motion abnormality (WMA): contiguous
  segments of one coronary territory, subendocardial wavefront, transmurality
  25-100 % setting the motion f and thinning (transmural -> ED wall <= 5.5 mm),
  scar signal x0.65-0.85 of remote myocardium, optional fatty metaplasia.
* B  non-ischemic scar without WMA: mid-wall septal stripe, epicardial lateral
  band or RV insertion points; no focal WMA (optionally mild local
  hypokinesis, or global DCM-like hypokinesis).
* C  WMA without scar: the same regional WMA as A (stunned / hibernating
  myocardium) with normal ED thickness and signal, or LBBB-like septal
  dyssynchrony, or global hypokinesis without scar.
* D  normal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stran.phantom.anatomy import ADJACENCY, TERRITORIES, TERRITORY_OF, segment_level

SCENARIOS = ("A", "B", "C", "D")
SCAR_SCENARIOS = frozenset({"A", "B"})
SCENARIO_NAMES = {
    "A": "chronic ischemic scar with WMA",
    "B": "non-ischemic scar without WMA",
    "C": "WMA without scar",
    "D": "normal",
}


@dataclass
class ScarBand:
    """A non-ischemic scar band in material coordinates.

    ``layer`` "mid-wall" centres the band at ``centre`` (fraction of the wall
    from the endocardium); "epicardial" puts its outer edge on the epicardium.
    Angles are AHA degrees (``angle_lo`` to ``angle_hi`` anticlockwise),
    depths fractions of the ED cavity length.
    """

    kind: str  # "mid-wall septal" | "epicardial lateral" | "rv-insertion"
    layer: str  # "mid-wall" | "epicardial"
    angle_lo: float
    angle_hi: float
    depth_lo: float
    depth_hi: float
    width_mm: float
    centre: float = 0.5
    edge_deg: float = 6.0


@dataclass
class FatFocus:
    """Fatty metaplasia inside a chronic infarct: bright fat with a dark chemical-shift rim."""

    angle_deg: float
    depth: float  # fraction of the ED cavity length
    position: float  # fraction of the wall from the endocardium
    radius_mm: float


@dataclass
class PathologyConfig:
    scenario: str = "D"
    subtype: str = "normal"
    territory: str | None = None
    segment_f: list[float] = field(default_factory=lambda: [1.0] * 17)  # fraction of normal motion
    segment_delay: list[float] = field(default_factory=lambda: [0.0] * 17)  # contraction delay, fraction of RR
    segment_flash: list[float] = field(default_factory=lambda: [0.0] * 17)  # LBBB septal flash amplitude
    transmurality: list[float] = field(default_factory=lambda: [0.0] * 17)  # subendocardial scar extent (0..1)
    thin_to_mm: list[float] = field(default_factory=lambda: [0.0] * 17)  # ED wall target (0 = not thinned)
    thinning: list[float] = field(default_factory=lambda: [1.0] * 17)  # ED wall factor (1 = none)
    wall_factor: float = 1.0  # global ED wall factor
    dilation: float = 1.0  # ED cavity radius factor
    bands: list[ScarBand] = field(default_factory=list)
    scar_contrast: float = 1.0  # scar signal / remote myocardium
    fat_foci: list[FatFocus] = field(default_factory=list)
    border_irregularity: float = 0.15  # relative jaggedness of the infarct's transmural extent
    wma_segments: list[int] = field(default_factory=list)  # the segments the scenario made abnormal

    @property
    def has_scar(self) -> bool:
        return any(t > 0 for t in self.transmurality) or bool(self.bands)


@dataclass
class ScenarioParams:
    """Knobs of the scenario sampler (ranges are uniform unless said otherwise)."""

    territory_weights: tuple[float, float, float] = (0.45, 0.30, 0.25)  # LAD, RCA, LCX
    cross_territory_probability: float = 0.15
    a_transmurality: tuple[float, float] = (0.25, 1.0)
    a_contrast: tuple[float, float] = (0.65, 0.85)
    a_fat_probability: float = 0.50
    a_thin_mm: tuple[float, float] = (3.5, 5.5)
    b_contrast: tuple[float, float] = (0.65, 0.82)
    b_band_mm: tuple[float, float] = (3.0, 5.0)
    # septal mid-wall, epicardial lateral, RV insertion
    b_pattern_weights: tuple[float, float, float] = (0.40, 0.30, 0.30)
    b_hypokinesis_probability: float = 0.5
    b_hypokinesis_f: tuple[float, float] = (0.80, 0.95)
    b_dcm_probability: float = 0.2
    c_subtype_weights: tuple[float, float, float] = (0.60, 0.25, 0.15)  # stunned/hibernating, LBBB, global
    global_f: tuple[float, float] = (0.40, 0.62)
    normal_f: tuple[float, float] = (0.90, 1.10)


def f_from_transmurality(t: float, rng: np.random.Generator) -> float:
    """Regional motion fraction for a transmurality (notes 1.5: <=25 % mild ... >75 % akinetic/dyskinetic)."""
    if t <= 0.25:
        return float(rng.uniform(0.7, 0.9))
    if t <= 0.50:
        return float(rng.uniform(0.4, 0.7))
    if t <= 0.75:
        return float(rng.uniform(0.1, 0.4))
    return float(rng.uniform(-0.2, 0.1))


def wma_class(f: float, delay: float = 0.0, flash: float = 0.0) -> str:
    """Wall-motion class of a segment's motion fraction (and timing)."""
    if delay > 0.05 or flash > 0.05:
        return "dyssynchronous"
    if f >= 0.8:
        return "normal"
    if f >= 0.55:
        return "mild hypokinesis"
    if f >= 0.3:
        return "moderate hypokinesis"
    if f >= 0.1:
        return "severe hypokinesis"
    if f >= -0.05:
        return "akinesis"
    return "dyskinesis"


def _ischemic_region(rng: np.random.Generator, p: ScenarioParams) -> tuple[str, list[int], dict[int, float]]:
    """Territory, contiguous segments and a (possibly virtual) transmurality per segment."""
    names = ("LAD", "RCA", "LCX")
    w = np.asarray(p.territory_weights, dtype=np.float64)
    territory = names[int(rng.choice(3, p=w / w.sum()))]
    members = [s for s in TERRITORIES[territory] if s != 17]
    n = int(rng.integers(2, 7)) if territory == "LAD" else int(rng.integers(2, 5))
    core = int(rng.choice(members))
    region = [core]
    pool = set(TERRITORIES[territory])
    while len(region) < n:
        frontier = sorted({a for s in region for a in ADJACENCY[s] if a in pool and a not in region})
        if not frontier:
            break
        region.append(int(rng.choice(frontier)))
    if rng.random() < p.cross_territory_probability:
        other = sorted({a for s in region for a in ADJACENCY[s] if TERRITORY_OF[a] != territory and a != 17})
        if other:
            region.append(int(rng.choice(other)))
    t_core = float(rng.uniform(*p.a_transmurality))
    trans = {}
    for s in region:
        t = t_core if s == core else t_core * float(rng.uniform(0.55, 1.0))
        trans[s] = float(np.clip(t, p.a_transmurality[0], 1.0))
    return territory, region, trans


def _apply_regional_wma(
    rng: np.random.Generator, pat: PathologyConfig, region: list[int], trans: dict[int, float]
) -> None:
    for s in region:
        pat.segment_f[s - 1] = f_from_transmurality(trans[s], rng)
    for s in sorted({a for r in region for a in ADJACENCY[r]} - set(region)):
        pat.segment_f[s - 1] = min(pat.segment_f[s - 1], float(rng.uniform(0.75, 0.95)))  # tethering
    pat.wma_segments = sorted(region)


def _depth_range(rng: np.random.Generator) -> tuple[float, float]:
    options = [(0.0, 0.34), (0.0, 0.67), (0.33, 0.67), (0.10, 0.80), (0.33, 0.95)]
    lo, hi = options[int(rng.integers(len(options)))]
    lo = max(0.0, lo + float(rng.uniform(-0.03, 0.05)))
    hi = min(1.0, hi + float(rng.uniform(-0.05, 0.03)))
    return lo, hi


def _b_bands(rng: np.random.Generator, p: ScenarioParams, rv_half_span: float) -> list[ScarBand]:
    w = np.asarray(p.b_pattern_weights, dtype=np.float64)
    kind = ("mid-wall septal", "epicardial lateral", "rv-insertion")[int(rng.choice(3, p=w / w.sum()))]
    width = float(rng.uniform(*p.b_band_mm))
    if kind == "mid-wall septal":
        lo, hi = 90.0 - float(rng.uniform(25, 55)), 90.0 + float(rng.uniform(25, 55))
        d_lo, d_hi = _depth_range(rng)
        return [ScarBand(kind, "mid-wall", lo, hi, d_lo, d_hi, width, centre=float(rng.uniform(0.42, 0.58)))]
    if kind == "epicardial lateral":
        c = 270.0 + float(rng.uniform(-25, 25))
        half = float(rng.uniform(25, 55))
        d_lo, d_hi = _depth_range(rng)
        return [ScarBand(kind, "epicardial", c - half, c + half, d_lo, d_hi, width)]
    bands = []
    which = int(rng.integers(3))  # 0 anterior, 1 inferior, 2 both
    d_lo = float(rng.uniform(0.0, 0.2))
    d_hi = float(np.clip(d_lo + rng.uniform(0.4, 0.7), 0.0, 0.9))
    for k, sign in ((0, -1.0), (1, 1.0)):
        if which in (k, 2):
            c = 90.0 + sign * rv_half_span + float(rng.uniform(-5, 5))
            half = float(rng.uniform(15, 25))
            bands.append(
                ScarBand(
                    kind,
                    "mid-wall",
                    c - half,
                    c + half,
                    d_lo,
                    d_hi,
                    max(width, 2.5),
                    centre=float(rng.uniform(0.4, 0.6)),
                    edge_deg=5.0,
                )
            )
    return bands


def _band_segments(band: ScarBand) -> list[int]:
    """Segments a band touches (for mild local hypokinesis)."""
    from stran.phantom.anatomy import segment_at

    segs: set[int] = set()
    angles = np.linspace(band.angle_lo, band.angle_hi, 25)
    for level, (a, b) in (("basal", (0.0, 1 / 3)), ("mid", (1 / 3, 2 / 3)), ("apical", (2 / 3, 1.0))):
        if band.depth_hi > a + 0.03 and band.depth_lo < b - 0.03:
            segs.update(int(s) for s in segment_at(angles, level))
    return sorted(segs)


def sample_pathology(
    rng: np.random.Generator,
    scenario: str,
    *,
    rv_half_span: float,
    wall_mm: float,
    params: ScenarioParams | None = None,
) -> PathologyConfig:
    """A random pathology of ``scenario`` ("A", "B", "C" or "D")."""
    p = params or ScenarioParams()
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")
    pat = PathologyConfig(scenario=scenario)
    pat.segment_f = [float(v) for v in rng.uniform(*p.normal_f, size=17)]
    pat.segment_delay = [float(v) for v in rng.uniform(-0.01, 0.01, size=17)]

    if scenario == "A":
        territory, region, trans = _ischemic_region(rng, p)
        pat.subtype = f"ischemic {territory}"
        pat.territory = territory
        _apply_regional_wma(rng, pat, region, trans)
        for s, t in trans.items():
            pat.transmurality[s - 1] = t
            if t > 0.75:
                pat.thin_to_mm[s - 1] = float(rng.uniform(*p.a_thin_mm))
            elif t > 0.5:
                pat.thinning[s - 1] = float(rng.uniform(0.8, 0.95))
        burden = sum(trans.values())
        pat.dilation = float(1.0 + min(0.12, 0.03 * burden) * rng.uniform(0.5, 1.0))
        pat.scar_contrast = float(rng.uniform(*p.a_contrast))
        pat.border_irregularity = float(rng.uniform(0.08, 0.22))
        if rng.random() < p.a_fat_probability:
            core = max(trans, key=lambda s: trans[s])
            for _ in range(int(rng.integers(1, 4))):
                pat.fat_foci.append(_fat_focus(rng, core, trans[core]))
    elif scenario == "B":
        pat.bands = _b_bands(rng, p, rv_half_span)
        pat.subtype = pat.bands[0].kind
        pat.scar_contrast = float(rng.uniform(*p.b_contrast))
        if rng.random() < p.b_dcm_probability:
            _global_hypokinesis(rng, pat, p)
            pat.subtype += " + DCM"
        elif rng.random() < p.b_hypokinesis_probability:
            segs = sorted({s for b in pat.bands for s in _band_segments(b)})
            for s in segs:
                pat.segment_f[s - 1] = float(rng.uniform(*p.b_hypokinesis_f))
    elif scenario == "C":
        w = np.asarray(p.c_subtype_weights, dtype=np.float64)
        sub = int(rng.choice(3, p=w / w.sum()))
        if sub == 0:
            territory, region, trans = _ischemic_region(rng, p)
            pat.subtype = f"{'stunned' if rng.random() < 0.5 else 'hibernating'} {territory}"
            pat.territory = territory
            _apply_regional_wma(rng, pat, region, trans)
            # the same mild remodelling as A, so cavity size does not give the scar away
            pat.dilation = float(1.0 + min(0.12, 0.03 * sum(trans.values())) * rng.uniform(0.5, 1.0))
        elif sub == 1:
            pat.subtype = "LBBB septal dyssynchrony"
            septal = [2, 3, 8, 9, 14]
            for s in septal:
                pat.segment_delay[s - 1] = float(rng.uniform(0.08, 0.15))
                pat.segment_f[s - 1] = float(rng.uniform(0.3, 0.7))
                pat.segment_flash[s - 1] = float(rng.uniform(0.15, 0.35))
            for s in (5, 6, 11, 12, 16):  # late, slightly stronger lateral wall
                pat.segment_delay[s - 1] = float(rng.uniform(0.0, 0.03))
            pat.wma_segments = septal
        else:
            _global_hypokinesis(rng, pat, p)
            pat.subtype = "global hypokinesis (DCM without scar)"
    else:
        pat.subtype = "normal"
    return pat


def _global_hypokinesis(rng: np.random.Generator, pat: PathologyConfig, p: ScenarioParams) -> None:
    g = float(rng.uniform(*p.global_f))
    pat.segment_f = [float(g * v) for v in rng.uniform(0.85, 1.15, size=17)]
    pat.dilation = float(rng.uniform(1.10, 1.28))
    pat.wall_factor = float(rng.uniform(0.80, 0.95))
    pat.wma_segments = list(range(1, 18))


def _fat_focus(rng: np.random.Generator, segment: int, transmurality: float) -> FatFocus:
    from stran.phantom.anatomy import segment_sector

    centre, half = segment_sector(segment)
    level = segment_level(segment)
    depth_frac = {"basal": 1 / 6, "mid": 0.5, "apical": 5 / 6, "apex": 0.97}[level]
    return FatFocus(
        angle_deg=float(centre + rng.uniform(-0.5, 0.5) * half),
        depth=float(depth_frac + rng.uniform(-0.08, 0.08)),
        position=float(rng.uniform(0.15, 0.6) * transmurality),
        radius_mm=float(rng.uniform(2.5, 4.5)),
    )
