"""The shared preprocessing chain and its inverse, on phantoms of every scenario and scanner profile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stran.phantom import PROFILE_NAMES, SCENARIOS, generate_study, sample_config
from stran.transforms import (
    PreprocessConfig,
    attention_to_study,
    build_preprocessing,
    localize_heart,
    preprocess_study,
    slice_scores_to_study,
)
from stran.transforms.localize import tail_percentiles
from stran.transforms.preprocess import resample_phases

LV_BLOOD = 1


@pytest.fixture(scope="module")
def phantoms():
    """One phantom per (scenario, profile) pair, cycling profiles so each appears with several scenarios."""
    cases = []
    for i, scenario in enumerate(SCENARIOS):
        for j in range(2):
            profile = PROFILE_NAMES[(2 * i + j) % len(PROFILE_NAMES)]
            cases.append(generate_study(sample_config(100 + 10 * i + j, scenario=scenario, profile=profile)))
    return cases


def test_every_profile_is_covered(phantoms):
    assert {p.cine.acquisition.vendor for p in phantoms} >= {"SIEMENS", "GE MEDICAL SYSTEMS", "Philips Medical Systems"}
    assert {p.truth.scenario for p in phantoms} == set(SCENARIOS)


def test_localiser_lands_inside_the_lv_blood_pool(phantoms):
    for p in phantoms:
        loc = localize_heart(p.cine)
        masks = p.truth.masks
        for s in range(p.cine.n_slices):
            pool = masks[s, 0] == LV_BLOOD
            if pool.sum() < 50:  # no real LV cavity in this slice (beyond apex or base)
                continue
            r, c = np.round(loc.centers[s]).astype(int)
            assert pool[r, c], f"{p.truth.scenario} {p.cine.acquisition.vendor} slice {s}: centre {loc.centers[s]} not in LV"
            assert loc.lv_slices[s], f"slice {s} holds the LV but was not detected"


def test_output_shape_range_and_default_geometry(phantoms):
    study = phantoms[0].cine
    image, prep = preprocess_study(study)
    assert image.shape == (1, 10, 20, 64, 64) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert prep.study_shape == study.pixels.shape
    assert prep.slice_coords[0] >= 0 and prep.slice_coords[-1] <= study.n_slices - 1
    assert np.all(np.diff(prep.slice_coords) > 0)


def test_other_input_sizes(phantoms):
    image, _ = preprocess_study(phantoms[1].cine, PreprocessConfig(n_slices=8, n_phases=16, size=48, spacing_mm=2.0))
    assert image.shape == (1, 8, 16, 48, 48)


def test_selected_slices_cover_the_lv(phantoms):
    for p in phantoms:
        _, prep = preprocess_study(p.cine)
        has_lv = np.nonzero((p.truth.masks[:, 0] == LV_BLOOD).sum(axis=(1, 2)) >= 50)[0]
        assert prep.slice_coords[0] <= has_lv[0] + 1 and prep.slice_coords[-1] >= has_lv[-1] - 1


def test_phase_resampling_is_circular_and_exact_on_samples():
    fractions = np.array([0.05, 0.3, 0.55, 0.8])
    values = np.array([1.0, 2.0, 3.0, 4.0])
    out = resample_phases(values, fractions, 4)  # targets 0, .25, .5, .75
    # 0.0 lies between 0.8 (value 4) and 1.05 (value 1): 4 + (1 - 4) * 0.2 / 0.25
    np.testing.assert_allclose(out, [4 - 3 * 0.8, 1.8, 2.8, 3.8])
    same = resample_phases(values, np.array([0.0, 0.25, 0.5, 0.75]), 4)
    np.testing.assert_allclose(same, values)


def test_per_slice_trigger_times_are_respected(phantoms):
    """Each slice is resampled over its own RR: shifting one slice's trigger times by a whole number of
    output phases rolls only that slice's output."""
    study = phantoms[2].cine
    image, _ = preprocess_study(study, PreprocessConfig(n_phases=20))
    assert image.shape[2] == 20
    shifted_tt = study.trigger_times.copy()
    shifted_tt[:] = np.mod(shifted_tt + study.rr_intervals[:, None] / 20.0 * 3, study.rr_intervals[:, None])
    image2, _ = preprocess_study(study.replace(trigger_times=shifted_tt), PreprocessConfig(n_phases=20))
    np.testing.assert_allclose(torch.roll(image, shifts=3, dims=2).numpy(), image2.numpy(), atol=2e-3)


def test_inverse_maps_the_network_input_back_onto_the_study(phantoms):
    """Geometry round trip: the normalised network input itself, mapped back, must match the study's
    own normalised pixels inside the field of view."""
    study = phantoms[3].cine
    image, prep = preprocess_study(study)
    back = attention_to_study(image[0].numpy(), prep, study.phase_fractions)
    assert back.shape == study.pixels.shape and back.dtype == np.float32
    lo, hi = prep.intensity_range
    reference = np.clip((study.pixels - lo) / (hi - lo), 0, 1)
    s = int(round(prep.slice_coords[len(prep.slice_coords) // 2]))  # a source slice sampled exactly... nearly
    inside = back[s] > 0.05
    corr = np.corrcoef(back[s][inside], reference[s][inside])[0, 1]
    assert corr > 0.9, corr
    # outside the crop there is no attention
    r, c = np.round(prep.centers[len(prep.centers) // 2]).astype(int)
    far = back[s, :, :, :]
    half_fov_px = prep.size * prep.spacing_mm / prep.source_spacing[1] / 2
    cols = np.arange(study.matrix[1])
    assert np.all(far[:, :, np.abs(cols - c) > half_fov_px + 2] == 0)


def test_slice_scores_map_to_every_covered_source_slice(phantoms):
    study = phantoms[4].cine
    _, prep = preprocess_study(study)
    scores = np.linspace(0.0, 1.0, len(prep.slice_coords))
    per_slice = slice_scores_to_study(scores, prep)
    assert len(per_slice) == study.n_slices
    covered = [k for k, v in enumerate(per_slice) if v is not None]
    assert covered == list(range(int(np.ceil(prep.slice_coords[0] - 1e-6)), int(np.floor(prep.slice_coords[-1] + 1e-6)) + 1))
    values = [per_slice[k] for k in covered]
    assert values == sorted(values) and values[0] == pytest.approx(0.0) and values[-1] == pytest.approx(1.0)


def test_tail_percentiles_are_numpys(phantoms):
    rng = np.random.default_rng(5)
    arrays = [
        rng.normal(100, 30, 200_000).astype(np.float32),
        rng.integers(0, 40, 150_000).astype(np.float32),  # many ties
        np.where(rng.random(300_000) < 0.5, 0, rng.exponential(80, 300_000)).astype(np.float32),  # zero background
        np.sort(rng.normal(size=100_000)).astype(np.float32),  # a strided sample of sorted values
        np.ones(70_000, np.float32),
        phantoms[0].cine.pixels[3],
    ]
    for x in arrays:
        for low, high in ((1.0, 99.0), (0.5, 99.9), (0.0, 100.0), (5.0, 95.0)):
            assert tail_percentiles(x, low, high) == tuple(np.percentile(x, [low, high])), (x.shape, low, high)


def test_steps_after_localisation_read_only_a_window_around_the_heart(phantoms):
    """The early crop: slice/phase selection and resampling get a view of the study no larger than the network's
    field of view (plus the spread of the crop centres and a few pixels), not the whole matrix."""
    for p in phantoms[:4]:
        study = p.cine
        d = {"study": study}
        for t in build_preprocessing().transforms[:2]:
            d = t(d)
        window, c = d["image"], PreprocessConfig()
        assert np.shares_memory(window, study.pixels) and window.shape[:2] == study.pixels.shape[:2]
        extent = c.size * c.spacing_mm / np.asarray(study.pixel_spacing) + np.ptp(d["prep"].centers, axis=0) + 6
        assert np.all(np.asarray(window.shape[2:]) <= extent), (window.shape, extent)


def test_fine_grid_is_localised_on_a_coarser_one_and_lands_where_the_full_grid_does(monkeypatch):
    """A 0.9 mm study (2x interpolated) is localised on every 2nd pixel: centres in the study's own pixels, within
    one coarse pixel of localising on every pixel, and inside the LV blood pool; coarser than 1.0 mm uses every pixel."""
    import dataclasses

    from stran.transforms import localize

    assert localize.localization_stride((1.8, 1.8)) == 1 and localize.localization_stride((1.01, 1.01)) == 1
    assert localize.localization_stride((0.9, 0.9)) == 2 and localize.localization_stride((0.6, 0.6)) == 3
    cfg = sample_config(7, scenario="A")
    acq = dataclasses.replace(cfg.acquisition, rows=336, cols=384, pixel_spacing=0.9)
    phantom = generate_study(dataclasses.replace(cfg, acquisition=acq))
    coarse = localize_heart(phantom.cine)
    monkeypatch.setattr(localize, "LOCALIZE_SPACING_MM", 0.5)
    full = localize_heart(phantom.cine)
    assert np.abs(coarse.centers - full.centers).max() <= 2.0 + 1e-9
    np.testing.assert_array_equal(coarse.lv_slices, full.lv_slices)
    for s in range(phantom.cine.n_slices):
        pool = phantom.truth.masks[s, 0] == LV_BLOOD
        if pool.sum() >= 200 and coarse.lv_slices[s]:
            r, c = np.round(coarse.centers[s]).astype(int)
            assert pool[r, c], f"slice {s}: centre {coarse.centers[s]} not in the LV"
