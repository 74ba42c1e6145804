"""CineScarLib.volumefile: the server's 4-D NIfTI files read and written by Slicer's own sequence reader and writer
(slicer-core's vtkMRMLVolumeSequenceStorageNode), checked against nibabel both ways; CineScarLib.volume's geometry."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "slicer_extension" / "CineScar"))

pytest.importorskip("slicer")

from CineScarLib.volume import Volume4D, normalised_slice_order  # noqa: E402
from CineScarLib.volumefile import VolumeFileError, readVolume4D, volume4DBytes  # noqa: E402


def oblique_affine(spacing=(1.4, 1.6, 8.0), origin=(-40.0, 25.0, 60.0), angles=(0.3, -0.5, 0.8), flip=False) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rot = rz @ ry @ rx
    if flip:
        rot[:, 2] *= -1
    aff = np.eye(4)
    aff[:3, :3] = rot * np.asarray(spacing)
    aff[:3, 3] = origin
    return aff


def cine_array(t=5, k=4, j=12, i=10, dtype=np.int16, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(rng.integers(-200, 3000, size=(t, k, j, i))).astype(dtype)


def nibabel_file(path: Path, arr: np.ndarray, aff: np.ndarray, dt: float, unit: str = "msec",
                 slope: float | None = None) -> Path:
    img = nib.Nifti1Image(arr.transpose(3, 2, 1, 0), aff)
    img.header.set_xyzt_units("mm", unit)
    img.header.set_zooms((*img.header.get_zooms()[:3], dt))
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8, np.float32])
@pytest.mark.parametrize("flip", [False, True])
def test_nibabel_reads_what_slicer_writes(dtype, flip: bool) -> None:
    arr, aff = cine_array(dtype=dtype), oblique_affine(flip=flip)
    data = volume4DBytes(Volume4D(arr, aff, 38.5))
    assert data[:2] == b"\x1f\x8b"
    img = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    assert img.shape == (10, 12, 4, 5)  # (x, y, z, t)
    d = np.asanyarray(img.dataobj)
    assert d.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(d, arr.transpose(3, 2, 1, 0))
    np.testing.assert_allclose(img.affine, aff, atol=1e-4)
    unit = {"msec": 1.0, "sec": 1000.0}[img.header.get_xyzt_units()[1]]
    assert img.header.get_zooms()[3] * unit == pytest.approx(38.5, rel=1e-5)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("unit,dt,expected", [("msec", 41.0, 41.0), ("sec", 0.04, 40.0)])
def test_slicer_reads_what_nibabel_writes(tmp_path: Path, flip: bool, unit: str, dt: float, expected: float) -> None:
    """A left-handed stack (slice axis against row x column) comes in reversed, in the order the server's loader
    uses (``normalised_slice_order``): the same voxels at the same RAS positions."""
    arr, aff = cine_array(t=7, k=3, j=9, i=11), oblique_affine(flip=flip)
    path = nibabel_file(tmp_path / "n.nii.gz", arr, aff, dt, unit)
    expected_volume, reversed_ = normalised_slice_order(Volume4D(arr, aff, dt))
    assert reversed_ == flip
    for source in (path, path.read_bytes()):
        vol = readVolume4D(source)
        np.testing.assert_array_equal(vol.array, expected_volume.array)
        np.testing.assert_allclose(vol.affine, expected_volume.affine, atol=1e-4)
        assert vol.phase_interval_ms == pytest.approx(expected, rel=1e-5)
        assert vol.spacing == pytest.approx((1.4, 1.6, 8.0), abs=1e-4)


def test_a_server_map_reads_as_values_between_0_and_1(tmp_path: Path) -> None:
    """The app writes the scar map as uint8 with scl_slope 1/255 (stran.io.write_map, docs/io.md "Maps"): Slicer's
    reader applies the slope, as nibabel does."""
    counts = np.arange(256, dtype=np.uint8).reshape(4, 2, 4, 8)  # array[t, k, j, i]
    path = nibabel_file(tmp_path / "map.nii.gz", counts, oblique_affine(), 40.0, slope=1.0 / 255.0)
    vol = readVolume4D(path.read_bytes(), what="scar map")
    assert vol.array.dtype == np.float32 and vol.array.min() == 0.0
    np.testing.assert_allclose(vol.array, counts / 255.0, rtol=1e-6, atol=0)


def test_an_unknown_interval_is_one_nominal_rr() -> None:
    """A cine without a time step (e.g. a sequence with no time unit) goes out as 1000 ms over its phases, what the
    server assumes for a file without one."""
    vol = Volume4D(cine_array(t=4, k=2, j=3, i=3), oblique_affine(), 0.0)
    assert readVolume4D(volume4DBytes(vol)).phase_interval_ms == pytest.approx(250.0)


def test_plain_errors(tmp_path: Path) -> None:
    with pytest.raises(VolumeFileError, match="not a 4-D NIfTI image Slicer can read"):
        readVolume4D(b"<html>" + b" " * 400)
    with pytest.raises(VolumeFileError, match="scar map .* does not exist"):
        readVolume4D(tmp_path / "missing.nii.gz", what="scar map")
    assert list(tmp_path.iterdir()) == []


def test_geometry_helpers() -> None:
    aff = oblique_affine(spacing=(1.5, 1.5, 10.0))
    vol = Volume4D(np.zeros((3, 4, 8, 6), np.int16), aff, 40.0)
    centre = np.array(vol.slice_center_ras(2))
    np.testing.assert_allclose(centre, (aff @ np.array([2.5, 3.5, 2.0, 1.0]))[:3])
    np.testing.assert_allclose(np.linalg.norm(vol.slice_normal()), 1.0)
    np.testing.assert_allclose(vol.directions @ np.diag(vol.spacing), aff[:3, :3], atol=1e-9)
    assert vol.time_values_ms() == [0.0, 40.0, 80.0]
    with pytest.raises(ValueError, match="3-D or 4-D"):
        Volume4D(np.zeros((2, 2)), aff)


def test_normalised_slice_order_matches_the_server_loader() -> None:
    """A stack whose slice axis points against row x column is reversed (as stran's read_nifti does)."""
    arr = cine_array(t=2, k=4, j=5, i=6)
    aff = oblique_affine(flip=True)
    same, rev = normalised_slice_order(Volume4D(arr, oblique_affine(), 40.0))
    assert not rev
    out, rev = normalised_slice_order(Volume4D(arr, aff, 40.0))
    assert rev
    np.testing.assert_array_equal(out.array, arr[:, ::-1])
    for k in range(4):  # every voxel keeps its RAS position
        np.testing.assert_allclose(out.affine @ [1, 2, k, 1], aff @ [1, 2, 3 - k, 1], atol=1e-9)
    linear = out.affine[:3, :3]
    assert np.dot(np.cross(linear[:, 0], linear[:, 1]), linear[:, 2]) > 0
