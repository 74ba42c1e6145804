"""Maps on the study grid are written compactly (uint8, scl_slope 1/255) and every reader sees values in [0, 1]:
nibabel and ``stran.io.read_nifti`` (the Slicer module reads them with Slicer's own reader:
tests/slicer/test_cinescar_volumefile.py)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from stran.io import read_nifti, write_map, write_nifti
from stran.io.nifti import MAP_SCALE

HALF_STEP = 0.5 / 255 + 1e-6


@pytest.fixture
def study_and_map(make_study):
    study = make_study(n_slices=3, n_phases=5, rows=24, cols=20, rr_jitter=0.05)
    values = np.random.default_rng(3).random(study.pixels.shape).astype(np.float32)
    values[0, 0, :2, :2] = [[0.0, 1.0], [0.5, 1.0 / 255]]
    values[1, 2] = 0.0  # mostly empty, as outside the network's field of view
    return study, values


def test_nibabel_reads_the_map_on_the_study_grid(study_and_map, tmp_path):
    study, values = study_and_map
    path = write_map(study, values, tmp_path / "m.attention.nii.gz")
    write_nifti(study.replace(pixels=values), tmp_path / "float.nii.gz")
    img, ref = nib.load(str(path)), nib.load(str(tmp_path / "float.nii.gz"))
    assert img.get_data_dtype() == np.uint8
    assert img.dataobj.slope == MAP_SCALE == pytest.approx(1 / 255, rel=1e-7) and img.dataobj.inter == 0.0
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-6)
    assert img.header.get_zooms() == ref.header.get_zooms() and img.header.get_xyzt_units() == ("mm", "msec")
    scaled = np.asanyarray(img.dataobj).transpose(2, 3, 1, 0)  # (x, y, z, t) -> (S, T, H, W)
    assert np.abs(scaled - values).max() <= HALF_STEP
    assert scaled.min() == 0.0 and 1.0 - 1e-7 < scaled.max() <= 1.0


def test_stran_and_nibabel_read_the_same_values(study_and_map, tmp_path):
    study, values = study_and_map
    path = write_map(study, values, tmp_path / "m.nii.gz")
    loaded = read_nifti(path)
    assert loaded.pixels.shape == values.shape and np.abs(loaded.pixels - values).max() <= HALF_STEP
    theirs = np.asanyarray(nib.load(str(path)).dataobj).transpose(2, 3, 1, 0)  # (x, y, z, t) -> (S, T, H, W)
    assert 1.0 - 1e-7 < theirs.max() <= 1.0
    np.testing.assert_allclose(loaded.pixels, theirs, rtol=1e-6, atol=0)


def test_the_map_is_a_quarter_of_float32_or_less(study_and_map, tmp_path):
    study, values = study_and_map
    compact = write_map(study, values, tmp_path / "m.nii")
    full = write_nifti(study.replace(pixels=values), tmp_path / "f.nii")
    assert compact.stat().st_size < 0.26 * full.stat().st_size + 400


def test_a_map_of_another_shape_is_refused(study_and_map, tmp_path):
    study, values = study_and_map
    with pytest.raises(ValueError, match="map shape"):
        write_map(study, values[:, :-1], tmp_path / "m.nii.gz")
