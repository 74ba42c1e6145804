"""Phantom generator: config sampling, determinism, the CineStudy it produces, truth and labels."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from stran.engine.labels import validate_label
from stran.io.study import CineStudy
from stran.phantom import (
    PROFILE_NAMES,
    SCENARIOS,
    GroundTruth,
    PhantomConfig,
    generate_study,
    sample_config,
)
from stran.phantom.anatomy import ADJACENCY, TERRITORIES, segment_at
from stran.phantom.measure import blood_myo_contrast
from stran.phantom.render import LABEL_MYO, LABEL_SCAR
from stran.phantom.signal import TISSUES, bssfp


def _small(cfg: PhantomConfig, phases: int = 12) -> PhantomConfig:
    """Fewer phases for speed (everything else as sampled)."""
    return dataclasses.replace(cfg, acquisition=dataclasses.replace(cfg.acquisition, n_phases=phases))


@pytest.fixture(scope="module")
def study_a():
    return generate_study(_small(sample_config(11, "A")))


def test_sample_config_is_deterministic_and_forced_fields_hold():
    a, b = sample_config(123), sample_config(123)
    assert a.to_dict() == b.to_dict()
    assert sample_config(124).to_dict() != a.to_dict()
    for sc in SCENARIOS:
        for prof in PROFILE_NAMES:
            cfg = sample_config(7, sc, prof)
            assert cfg.scenario == sc and cfg.profile == prof
    with pytest.raises(ValueError):
        sample_config(1, "E")
    with pytest.raises(ValueError):
        sample_config(1, profile="toshiba-7T")


def test_sampled_ranges_are_realistic():
    for seed in range(40):
        acq = sample_config(seed).acquisition
        assert 8 <= acq.n_slices <= 14
        assert 8.0 <= acq.slice_pitch <= 10.0
        assert 20 <= acq.n_phases <= 30
        assert 128 <= acq.cols <= 192 and 128 <= acq.rows <= acq.cols
        assert 1.4 <= acq.pixel_spacing <= 2.2
        assert 15.0 <= acq.snr <= 40.0 and 0.2 <= acq.shading <= 0.5
        assert 750 * 0.95 - 1 <= min(acq.rr_per_slice) and max(acq.rr_per_slice) <= 1000 * 1.05 + 1
        assert all(abs(r / acq.rr_ms - 1.0) <= 0.051 for r in acq.rr_per_slice)
        assert len(acq.misregistration) == len(acq.depth_jitter) == acq.n_slices


def test_config_json_round_trip():
    cfg = sample_config(5, "B")
    again = PhantomConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.to_dict() == cfg.to_dict()


def test_same_seed_gives_bit_identical_study():
    cfg = _small(sample_config(21, "A"), phases=6)
    s1, s2 = generate_study(cfg), generate_study(PhantomConfig.from_dict(cfg.to_dict()))
    assert s1.cine.pixels.tobytes() == s2.cine.pixels.tobytes()
    assert np.array_equal(s1.truth.masks, s2.truth.masks)
    assert s1.cine.study_uid == s2.cine.study_uid
    assert (s1.cine.sop_uids == s2.cine.sop_uids).all()
    other = generate_study(_small(sample_config(22, "A"), phases=6))
    assert other.cine.study_uid != s1.cine.study_uid


def test_cine_study_contract(study_a):
    c: CineStudy = study_a.cine
    cfg = study_a.config
    acq = cfg.acquisition
    assert c.pixels.dtype == np.float32
    assert c.pixels.shape == (acq.n_slices, acq.n_phases, acq.rows, acq.cols)
    assert np.array_equal(c.pixels, np.rint(c.pixels))
    assert c.pixels.min() >= 0 and c.pixels.max() <= 65535
    assert c.pixels.max() > 100  # a real dynamic range, not a flat image
    # geometry: oblique SAX, slices ordered along the normal at the configured pitch and spacing
    assert np.allclose(c.pixel_spacing, (acq.pixel_spacing, acq.pixel_spacing))
    assert c.slice_spacing == pytest.approx(acq.slice_pitch)
    assert np.all(np.diff(c.slice_positions) > 0)
    assert np.max(np.abs(c.slice_normal)) < 0.95  # not an axis-aligned plane
    # timing: per-slice RR, phases ordered by trigger time within each slice, covering one RR
    assert np.all(np.diff(c.trigger_times, axis=1) > 0)
    assert np.allclose(c.rr_intervals, acq.rr_per_slice)
    assert np.all(c.trigger_times[:, -1] < c.rr_intervals)
    # identity
    assert c.patient_id == f"PHANTOM-{cfg.seed:06d}"
    assert c.study_uid and len(set(c.series_uids)) == acq.n_slices
    assert c.sop_uids.shape == (acq.n_slices, acq.n_phases) and len(set(c.sop_uids.ravel())) == c.sop_uids.size
    assert all(len(u) <= 64 for u in [c.study_uid, *c.series_uids])
    assert c.acquisition.vendor and c.acquisition.field_strength in (1.5, 3.0) and c.acquisition.sequence
    assert 6.0 <= c.slice_thickness <= acq.slice_pitch
    # nothing about the scenario leaks into the image's metadata
    meta = (c.source + " " + " ".join(c.notes)).lower()
    assert "scar" not in meta and "scenario" not in meta and cfg.pathology.subtype.lower() not in meta


def test_masks_and_slice_labels_are_consistent(study_a):
    t: GroundTruth = study_a.truth
    m = t.masks
    assert m.shape == study_a.cine.pixels.shape and m.dtype == np.uint8
    assert set(np.unique(m)) <= {0, 1, 2, 3, 4}
    assert t.slice_labels == [int((m[s] == LABEL_SCAR).any()) for s in range(m.shape[0])]
    assert t.study_label == int(any(t.slice_labels))
    assert [s["scar"] for s in t.slices] == t.slice_labels
    # every slice that cuts the LV cavity shows blood pool, myocardium and (basal/mid) RV at ED
    for s, info in enumerate(t.slices):
        if info["level"] in ("basal", "mid"):
            assert {1, 2, 3} <= set(np.unique(m[s, 0]))


def test_truth_json_and_scar_label(study_a):
    t = study_a.truth
    d = json.loads(json.dumps(t.to_json()))
    assert d["scenario"] == "A" and d["study_label"] == 1
    assert len(d["segments"]) == 17 and [r["segment"] for r in d["segments"]] == list(range(1, 18))
    for key in (
        "level",
        "territory",
        "motion_f",
        "ed_thickness_mm",
        "thickening_pct",
        "transmurality_pct",
        "scar_pattern",
        "wma_class",
    ):
        assert key in d["segments"][0]
    assert 20 < d["ef_pct"] < 80 and d["edv_ml"] > d["esv_ml"] > 0 and d["lv_mass_g"] > 50
    assert PhantomConfig.from_dict(d["config"]).to_dict() == study_a.config.to_dict()
    label = t.scar_label()
    assert set(label) == {"study_label", "slice_labels", "segment_labels", "source", "reviewer", "comment"}
    assert label["segment_labels"] == [int(r["scar_extent_pct"] > 0) for r in t.segments] and len(t.segments) == 17
    assert validate_label(label, n_slices=len(t.slice_labels)).segment_labels == tuple(label["segment_labels"])
    assert label["source"] == "LGE" and label["reviewer"] == "phantom-generator"
    assert label["slice_labels"] == t.slice_labels and "scenario A" in label["comment"]


def test_truth_save_writes_json_and_masks(tmp_path, study_a):
    from stran.phantom import load_masks

    study_a.truth.save(tmp_path / "x.truth.json", tmp_path / "x.masks.npz")
    assert json.loads((tmp_path / "x.truth.json").read_text())["seed"] == study_a.config.seed
    assert np.array_equal(load_masks(tmp_path / "x.masks.npz"), study_a.truth.masks)


def test_aha_segments_and_territories():
    assert sorted(s for t in TERRITORIES.values() for s in t) == list(range(1, 18))
    # ukbb_cardiac convention: anterior 0, septal 90, inferior 180, lateral 270
    assert list(segment_at([0, 60, 120, 180, 240, 300], "basal")) == [1, 2, 3, 4, 5, 6]
    assert list(segment_at([0, 90, 180, 270], "apical")) == [13, 14, 15, 16]
    assert ADJACENCY[1] == {2, 6, 7} and 17 in ADJACENCY[13]


def test_bssfp_contrast_matches_notes():
    t15, t3 = TISSUES[1.5], TISSUES[3.0]
    r15 = bssfp(*t15["blood"], 60, 1.5) / bssfp(*t15["myocardium"], 60, 1.5)
    r3 = bssfp(*t3["blood"], 60, 1.5) / bssfp(*t3["myocardium"], 60, 1.5)
    assert r15 == pytest.approx(3.04, abs=0.05)
    assert r3 == pytest.approx(3.59, abs=0.05)
    fat = bssfp(0.9, 280, 80, 60, 1.5) / bssfp(*t15["myocardium"], 60, 1.5)
    assert fat == pytest.approx(4.0, abs=0.1)


def test_blood_myocardium_contrast_by_field_strength_measured_on_pixels():
    ratios = {}
    for prof in ("siemens-1.5T", "siemens-3T", "philips-1.5T", "ge-3T"):
        st = generate_study(_small(sample_config(31, "D", prof), phases=4))
        ratios[prof] = blood_myo_contrast(st)
    for prof, r in ratios.items():
        lo, hi = (2.5, 3.5) if "1.5T" in prof else (3.0, 4.3)
        assert lo <= r <= hi, (prof, r)
    assert ratios["siemens-3T"] > ratios["siemens-1.5T"]


def test_profiles_change_intensity_scale_noise_and_shading():
    meds = {}
    for prof in ("ge-1.5T", "siemens-1.5T", "philips-1.5T"):
        st = generate_study(_small(sample_config(41, "D", prof), phases=4))
        meds[prof] = float(np.median(st.cine.pixels[st.truth.masks == LABEL_MYO]))
    assert meds["ge-1.5T"] > 1.5 * meds["siemens-1.5T"]
    assert meds["siemens-1.5T"] > 1.2 * meds["philips-1.5T"]
    cfgs = [sample_config(41, "D", p).acquisition for p in PROFILE_NAMES]
    assert len({round(c.snr, 3) for c in cfgs}) > 1 and len({round(c.shading, 3) for c in cfgs}) > 1
