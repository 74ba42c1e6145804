"""Each scenario produces what it says, measured on the generated masks and pixels (not read back from the config)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stran.phantom import PhantomConfig, ScenarioParams, generate_study, sample_config
from stran.phantom.anatomy import ADJACENCY
from stran.phantom.generator import pixel_heart_frame
from stran.phantom.measure import segment_wall_from_masks
from stran.phantom.render import LABEL_LV, LABEL_MYO, LABEL_SCAR

SEPTAL = {2, 3, 8, 9}
LATERAL = {5, 6, 11, 12}


def _small(cfg: PhantomConfig, phases: int = 12) -> PhantomConfig:
    return dataclasses.replace(cfg, acquisition=dataclasses.replace(cfg.acquisition, n_phases=phases))


def _find(scenario: str, accept) -> PhantomConfig:
    """First sampled config of ``scenario`` (seeds 0, 1, ...) that ``accept`` takes: deterministic."""
    for seed in range(500):
        cfg = sample_config(seed, scenario)
        if accept(cfg):
            return cfg
    raise AssertionError(f"no {scenario} config found")


def _remote(study, affected: set[int]) -> set[int]:
    near = affected | {a for s in affected for a in ADJACENCY[s]}
    return set(range(1, 17)) - near


def _mean(wall: dict, segs: set[int]) -> float:
    vals = [wall[s]["thickening_pct"] for s in segs if s in wall]
    assert vals, f"no measurable slices for segments {sorted(segs)}"
    return float(np.mean(vals))


def _darkening(cfg: PhantomConfig, study) -> float:
    """Relative signal change on the scar mask against the same study rendered with scar contrast 1.

    Same seed -> same noise, so the difference is the scar's signal alone.
    """
    cf = dataclasses.replace(cfg, pathology=dataclasses.replace(cfg.pathology, scar_contrast=1.0))
    ref = generate_study(cf).cine.pixels
    scar = study.truth.masks == LABEL_SCAR
    return float((study.cine.pixels[scar] - ref[scar]).mean() / ref[scar].mean())


@pytest.fixture(scope="module")
def scenario_a():
    cfg = _small(_find("A", lambda c: any(t > 0 for t in c.pathology.thin_to_mm) and not c.pathology.fat_foci))
    return cfg, generate_study(cfg)


@pytest.fixture(scope="module")
def scenario_b():
    cfg = _small(_find("B", lambda c: "DCM" not in c.pathology.subtype and c.pathology.bands[0].kind.startswith("mid")))
    return cfg, generate_study(cfg)


@pytest.fixture(scope="module")
def scenario_c():
    cfg = _small(_find("C", lambda c: c.pathology.subtype.split()[0] in ("stunned", "hibernating")))
    return cfg, generate_study(cfg)


def test_a_scar_with_wma_and_thinning(scenario_a):
    cfg, st = scenario_a
    t = st.truth
    assert t.study_label == 1 and sum(t.slice_labels) >= 2
    assert (t.masks == LABEL_SCAR).sum() > 100
    wall = segment_wall_from_masks(st)
    wma = set(cfg.pathology.wma_segments) - {17}
    remote = _remote(st, wma)
    assert _mean(wall, wma) < _mean(wall, remote) - 15.0
    rows = {r["segment"]: r for r in t.segments}
    thinned = {s for s, r in rows.items() if r["thinned"] and r["scar_pattern"] == "transmural"}
    measured = thinned & set(wall)
    assert measured, "a transmural segment should be measurable"
    for s in measured:
        assert wall[s]["ed_mm"] <= 6.0, (s, wall[s])  # notes: transmural scar -> ED wall <= 5.5 mm
        assert wall[s]["thickening_pct"] < 20.0, (s, wall[s])  # akinetic / dyskinetic
        assert rows[s]["wma_class"] in ("akinesis", "dyskinesis")
    # remote myocardium keeps normal ED thickness
    assert min(wall[s]["ed_mm"] for s in remote if s in wall) > 6.5


def test_a_scar_is_darker_than_remote(scenario_a):
    cfg, st = scenario_a
    k = cfg.pathology.scar_contrast
    lo, hi = ScenarioParams().a_contrast
    assert lo <= k <= hi
    d = _darkening(cfg, st)
    assert -(1.0 - k) * 1.05 < d < -0.3 * (1.0 - k)  # partial volume dilutes, never exceeds, the set contrast


def test_b_scar_without_wma(scenario_b):
    cfg, st = scenario_b
    t = st.truth
    assert t.study_label == 1 and (t.masks == LABEL_SCAR).sum() > 30
    scar_segs = {r["segment"] for r in t.segments if r["scar_extent_pct"] >= 5.0} - {17}
    assert scar_segs
    assert all(r["wma_class"] == "normal" for r in t.segments)
    wall = segment_wall_from_masks(st)
    remote = _remote(st, scar_segs)
    th = _mean(wall, scar_segs)
    assert th >= 30.0  # thickening stays normal-ish
    if remote & set(wall):
        assert th > _mean(wall, remote) - 15.0
    assert min(wall[s]["ed_mm"] for s in scar_segs if s in wall) > 6.0  # no thinning
    # subtle but visible: the band darkens the myocardium it covers
    d = _darkening(cfg, st)
    assert d < -0.05, d


def test_c_wma_without_scar(scenario_c):
    cfg, st = scenario_c
    t = st.truth
    assert t.study_label == 0 and sum(t.slice_labels) == 0 and not (t.masks == LABEL_SCAR).any()
    assert all(r["transmurality_pct"] == 0 for r in t.segments)
    wall = segment_wall_from_masks(st)
    wma = set(cfg.pathology.wma_segments) - {17}
    assert _mean(wall, wma) < _mean(wall, _remote(st, wma)) - 15.0
    # hard negative: normal ED thickness where the wall moves abnormally
    assert min(wall[s]["ed_mm"] for s in wma if s in wall) > 6.0


def test_c_shares_a_wma_distribution():
    """C (stunned / hibernating) draws its regional motion exactly like A: the WMA alone cannot tell them apart."""
    fa, fc = [], []
    for seed in range(150):
        a = sample_config(seed, "A").pathology
        c = sample_config(seed, "C").pathology
        fa += [a.segment_f[s - 1] for s in a.wma_segments]
        if c.subtype.split()[0] in ("stunned", "hibernating"):
            fc += [c.segment_f[s - 1] for s in c.wma_segments]
            assert all(x == 1.0 for x in c.thinning) and not any(c.thin_to_mm) and c.scar_contrast == 1.0
    assert abs(np.mean(fa) - np.mean(fc)) < 0.08 and abs(np.std(fa) - np.std(fc)) < 0.08


def test_c_lbbb_septum_contracts_late():
    cfg = _find("C", lambda c: c.pathology.subtype.startswith("LBBB"))
    cfg = _small(cfg, phases=25)
    st = generate_study(cfg)
    lat, inf = pixel_heart_frame(cfg)
    masks = st.truth.masks
    mids = [s for s, i in enumerate(st.truth.slices) if i["level"] == "mid"]

    def wall_curve(s, angle_lo, angle_hi):
        out = []
        for t in range(masks.shape[1]):
            m = masks[s, t]
            blood = m == LABEL_LV
            cl, ci = lat[blood].mean(), inf[blood].mean()
            phi = np.mod(np.degrees(np.arctan2(-(lat - cl), -(inf - ci))), 360.0)
            sector = (phi >= angle_lo) & (phi < angle_hi)
            out.append(float((sector & (m == LABEL_MYO)).sum()))
        return np.array(out)

    lags = []
    for s in mids:
        sept = wall_curve(s, 45, 135)
        latw = wall_curve(s, 225, 315)
        lags.append(int(np.argmax(sept)) - int(np.argmax(latw)))
    assert np.mean(lags) >= 1.0, lags  # septal peak thickening comes later than lateral


def test_d_normal_thickening():
    cfg = _small(sample_config(3, "D"))
    st = generate_study(cfg)
    t = st.truth
    assert t.study_label == 0 and not (t.masks == LABEL_SCAR).any()
    assert all(r["wma_class"] == "normal" and r["scar_pattern"] == "none" for r in t.segments)
    wall = segment_wall_from_masks(st)
    assert len(wall) >= 10
    assert 40.0 <= _mean(wall, set(wall)) <= 60.0
    eds = [v["ed_mm"] for v in wall.values()]
    assert 6.5 <= np.mean(eds) <= 11.0
    assert 50.0 <= t.ef_pct <= 75.0


def test_scar_scenarios_always_have_scar_pixels_and_negatives_never():
    # cheap: a few studies per scenario at low phase count
    for seed in range(3):
        for sc in "ABCD":
            st = generate_study(_small(sample_config(100 + seed, sc), phases=3))
            has = bool((st.truth.masks == LABEL_SCAR).any())
            assert has == (sc in "AB"), (sc, seed)
            assert st.truth.study_label == int(sc in "AB")
