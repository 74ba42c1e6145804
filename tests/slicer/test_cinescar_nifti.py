"""CineScarLib.nifti (numpy + gzip + struct) against nibabel, both ways, on 4-D cine-like images."""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "slicer_extension" / "CineScar"))

from CineScarLib.nifti import (  # noqa: E402
    NiftiError,
    Volume4D,
    nifti_bytes,
    normalised_slice_order,
    read_nifti,
    write_nifti,
)


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
    return rng.integers(-200, 3000, size=(t, k, j, i)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [True, False])
def test_nibabel_reads_what_we_write(tmp_path: Path, dtype, gz: bool) -> None:
    arr = cine_array(dtype=dtype)
    if np.issubdtype(dtype, np.unsignedinteger):
        arr = np.abs(arr.astype(np.int64)).astype(dtype)
    aff = oblique_affine()
    path = write_nifti(Volume4D(arr, aff, 38.5, "test cine"), tmp_path / ("c.nii.gz" if gz else "c.nii"))
    img = nib.load(str(path))
    assert img.shape == (10, 12, 4, 5)  # (x, y, z, t)
    data = np.asanyarray(img.dataobj)
    assert data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(data, arr.transpose(3, 2, 1, 0))
    np.testing.assert_allclose(img.affine, aff, atol=1e-4)
    np.testing.assert_allclose(img.header.get_qform(), aff, atol=1e-4)  # the qform agrees with the sform
    assert img.header.get_xyzt_units() == ("mm", "msec")
    assert img.header.get_zooms()[3] == pytest.approx(38.5)
    assert img.header["descrip"].tobytes().rstrip(b"\x00") == b"test cine"


@pytest.mark.parametrize("flip", [False, True])
def test_we_read_what_nibabel_writes(tmp_path: Path, flip: bool) -> None:
    arr = cine_array(t=7, k=3, j=9, i=11)
    aff = oblique_affine(flip=flip)
    img = nib.Nifti1Image(arr.transpose(3, 2, 1, 0), aff)
    img.header.set_xyzt_units("mm", "msec")
    zooms = list(img.header.get_zooms())
    zooms[3] = 41.0
    img.header.set_zooms(zooms)
    img.set_sform(aff, code=1)
    img.set_qform(aff, code=1)
    nib.save(img, str(tmp_path / "n.nii.gz"))
    vol = read_nifti(tmp_path / "n.nii.gz")
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-4)
    assert vol.phase_interval_ms == pytest.approx(41.0)
    assert vol.time_values_ms() == [0.0, 41.0, 82.0, 123.0, 164.0, 205.0, 246.0]
    assert vol.spacing == pytest.approx((1.4, 1.6, 8.0), abs=1e-4)


@pytest.mark.parametrize("flip", [False, True])
def test_qform_only_matches_nibabel(tmp_path: Path, flip: bool) -> None:
    """A file with qform but no sform: the quaternion path (incl. qfac = -1) gives nibabel's affine."""
    arr = cine_array(t=2, k=3, j=4, i=5)
    aff = oblique_affine(flip=flip)
    img = nib.Nifti1Image(arr.transpose(3, 2, 1, 0), aff)
    img.set_qform(aff, code=1)
    img.set_sform(None, code=0)
    nib.save(img, str(tmp_path / "q.nii"))
    vol = read_nifti(tmp_path / "q.nii")
    np.testing.assert_allclose(vol.affine, nib.load(str(tmp_path / "q.nii")).affine, atol=1e-4)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-4)


def test_scaling_seconds_and_3d(tmp_path: Path) -> None:
    arr = cine_array(t=1, k=3, j=4, i=5)[0]
    img = nib.Nifti1Image(arr.transpose(2, 1, 0).astype(np.int16), np.diag([2.0, 2.0, 5.0, 1.0]))
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, str(tmp_path / "s.nii"))
    vol = read_nifti(tmp_path / "s.nii")
    assert vol.array.shape == (1, 3, 4, 5) and vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array[0], arr * 0.5 + 10.0)
    np.testing.assert_allclose(vol.array[0], np.asanyarray(nib.load(str(tmp_path / "s.nii")).dataobj).transpose(2, 1, 0))

    four = nib.Nifti1Image(np.zeros((5, 4, 3, 6), np.float32), np.eye(4))
    four.header.set_xyzt_units("mm", "sec")
    zooms = list(four.header.get_zooms())
    zooms[3] = 0.04
    four.header.set_zooms(zooms)
    nib.save(four, str(tmp_path / "t.nii.gz"))
    assert read_nifti(tmp_path / "t.nii.gz").phase_interval_ms == pytest.approx(40.0)


def test_a_server_map_reads_as_values_between_0_and_1(tmp_path: Path) -> None:
    """The app writes the scar / attention map as uint8 with scl_slope 1/255 (stran.io.write_map, docs/io.md
    "Maps"): the module reads float32 values k/255, as nibabel does."""
    counts = np.arange(256, dtype=np.uint8).reshape(4, 2, 4, 8)  # array[t, k, j, i]
    img = nib.Nifti1Image(counts.transpose(3, 2, 1, 0), oblique_affine())
    img.header.set_slope_inter(1.0 / 255.0, 0.0)
    nib.save(img, str(tmp_path / "map.nii.gz"))
    vol = read_nifti(tmp_path / "map.nii.gz")
    assert vol.array.dtype == np.float32 and vol.array.min() == 0.0
    np.testing.assert_allclose(vol.array, counts / 255.0, rtol=1e-6, atol=0)
    reference = np.asanyarray(nib.load(str(tmp_path / "map.nii.gz")).dataobj).transpose(3, 2, 1, 0)
    np.testing.assert_allclose(vol.array, reference, rtol=1e-7, atol=0)


def test_big_endian(tmp_path: Path) -> None:
    arr = cine_array(t=3, k=2, j=4, i=5)
    img = nib.Nifti1Image(arr.transpose(3, 2, 1, 0).astype(">i2"), oblique_affine())
    img.set_data_dtype(">i2")
    hdr = img.header.as_byteswapped(">")
    big = nib.Nifti1Image(arr.transpose(3, 2, 1, 0).astype(">i2"), oblique_affine(), hdr)
    nib.save(big, str(tmp_path / "b.nii"))
    assert struct.unpack(">i", (tmp_path / "b.nii").read_bytes()[:4])[0] == 348
    vol = read_nifti(tmp_path / "b.nii")
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.affine, oblique_affine(), atol=1e-4)


def test_bytes_round_trip_and_errors(tmp_path: Path) -> None:
    vol = Volume4D(np.random.default_rng(1).random((4, 3, 6, 5)).astype(np.float32), oblique_affine(), 30.0)
    data = nifti_bytes(vol)
    assert data[:2] == b"\x1f\x8b"
    back = read_nifti(data)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)

    raw = gzip.decompress(data)
    with pytest.raises(NiftiError, match="truncated"):
        read_nifti(raw[:-10])
    with pytest.raises(NiftiError, match="gzip stream is damaged"):
        read_nifti(data[:-30])
    with pytest.raises(NiftiError, match="not a NIfTI-1"):
        read_nifti(b"<html>" + b" " * 400)
    with pytest.raises(NiftiError, match="more than"):
        read_nifti(data, max_bytes=100)
    with pytest.raises(NiftiError, match="no such file"):
        read_nifti(tmp_path / "missing.nii.gz")
    with pytest.raises(NiftiError, match="must end in"):
        write_nifti(vol, tmp_path / "x.nrrd")


def test_geometry_helpers() -> None:
    aff = oblique_affine(spacing=(1.5, 1.5, 10.0))
    vol = Volume4D(np.zeros((3, 4, 8, 6), np.int16), aff, 40.0)
    centre = np.array(vol.slice_center_ras(2))
    np.testing.assert_allclose(centre, (aff @ np.array([2.5, 3.5, 2.0, 1.0]))[:3])
    np.testing.assert_allclose(np.linalg.norm(vol.slice_normal()), 1.0)
    np.testing.assert_allclose(vol.directions @ np.diag(vol.spacing), aff[:3, :3], atol=1e-9)


def test_normalised_slice_order_matches_the_server_loader() -> None:
    """A stack whose slice axis points against row x column is reversed (as stran's read_nifti does)."""
    arr = cine_array(t=2, k=4, j=5, i=6)
    aff = oblique_affine(flip=True)
    vol = Volume4D(arr, aff, 40.0)
    same, rev = normalised_slice_order(Volume4D(arr, oblique_affine(), 40.0))
    assert not rev
    out, rev = normalised_slice_order(vol)
    assert rev
    np.testing.assert_array_equal(out.array, arr[:, ::-1])
    # every voxel keeps its RAS position
    for k in range(4):
        np.testing.assert_allclose(out.affine @ [1, 2, k, 1], aff @ [1, 2, 3 - k, 1], atol=1e-9)
    linear = out.affine[:3, :3]
    assert np.dot(np.cross(linear[:, 0], linear[:, 1]), linear[:, 2]) > 0
