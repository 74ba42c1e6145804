"""Round trips: synthetic study -> DICOM (every layout) / NIfTI -> load_study gives the same study."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest

from stran.io import DicomLayout, load_study, read_nifti, write_datastore_study, write_dicom, write_nifti
from stran.io.dicom_reader import resample_circular
from stran.io.geometry import lps_to_ras, ras_to_lps
from stran.io.nifti import sidecar_path
from stran.io.synthetic import rotation_matrix


def assert_same(loaded, study, *, series=True, sops=True):
    assert loaded.pixels.shape == study.pixels.shape
    assert np.array_equal(loaded.pixels, study.pixels)
    assert np.allclose(loaded.affine, study.affine, atol=1e-6)
    assert np.allclose(loaded.trigger_times, study.trigger_times, atol=1e-6)
    assert np.allclose(loaded.rr_intervals, study.rr_intervals)
    assert loaded.rr_interval == pytest.approx(study.rr_interval)
    assert loaded.study_uid == study.study_uid
    assert loaded.patient_id == study.patient_id
    assert loaded.slice_thickness == pytest.approx(study.slice_thickness)
    if series:
        assert loaded.series_uids == study.series_uids
    if sops:
        assert (loaded.sop_uids == study.sop_uids).all()
    assert loaded.acquisition.vendor == study.acquisition.vendor
    assert loaded.acquisition.field_strength == pytest.approx(study.acquisition.field_strength)


LAYOUTS = [
    ("single-series-slice-major", "single"),
    ("single-series-phase-major", "single"),
    ("series-per-slice", "per-slice"),
]


@pytest.mark.parametrize("layout,series", LAYOUTS)
def test_classic_layouts_round_trip(tmp_path, make_study, layout, series):
    study = make_study(n_slices=4, n_phases=6, series=series, rr_jitter=0.05, trigger_jitter_ms=3.0)
    files = write_dicom(study, tmp_path, layout)
    assert len(files) == 24 and all(f.exists() for f in files)
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temporary files left
    loaded = load_study(tmp_path)
    assert_same(loaded, study)
    assert loaded.left_out == []
    assert loaded.source == str(tmp_path)


def test_layouts_have_realistic_headers(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=5, series="single")
    files = write_dicom(study, tmp_path / "pm", DicomLayout.SINGLE_SERIES_PHASE_MAJOR)
    (second,) = [f for f in files if f.name.endswith("_00002.dcm")]
    ds = pydicom.dcmread(second)
    assert ds.Modality == "MR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    # phase-major: instance 2 is slice 1 of phase 0
    assert ds.InstanceNumber == 2 and float(ds.TriggerTime) == pytest.approx(study.trigger_times[1, 0])
    for kw in (
        "FrameOfReferenceUID",
        "SliceThickness",
        "SpacingBetweenSlices",
        "SliceLocation",
        "NominalInterval",
        "CardiacNumberOfImages",
        "HeartRate",
        "MagneticFieldStrength",
        "SequenceName",
        "ScanningSequence",
        "SeriesDescription",
        "AcquisitionTime",
        "Manufacturer",
        "PatientID",
    ):
        assert kw in ds, kw
    enh = pydicom.dcmread(write_dicom(study, tmp_path / "enh", "enhanced")[0])
    assert enh.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1" and int(enh.NumberOfFrames) == 15
    frame = enh.PerFrameFunctionalGroupsSequence[7]
    assert frame.FrameContentSequence[0].InStackPositionNumber == 2
    assert frame.FrameContentSequence[0].TemporalPositionIndex == 3
    assert frame.CardiacSynchronizationSequence[0].NominalCardiacTriggerDelayTime == pytest.approx(
        study.trigger_times[1, 2]
    )
    shared = enh.SharedFunctionalGroupsSequence[0]
    assert "PixelMeasuresSequence" in shared and "PlaneOrientationSequence" in shared


@pytest.mark.parametrize("frame_order", ["slice-major", "phase-major"])
def test_enhanced_round_trip(tmp_path, make_study, frame_order):
    study = make_study(n_slices=4, n_phases=6, series="single", rr_jitter=0.05, trigger_jitter_ms=3.0)
    (path,) = write_dicom(study, tmp_path, "enhanced", frame_order=frame_order)
    for source in (tmp_path, path):  # the folder, or the file itself
        loaded = load_study(source)
        assert_same(loaded, study, sops=False)
        sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert set(loaded.sop_uids.ravel()) == {sop}


def test_oblique_and_reversed_stack_order(tmp_path, make_study):
    study = make_study(n_slices=5, n_phases=4, angles_deg=(50.0, -20.0, 70.0), reverse_normal=True)
    write_dicom(study, tmp_path, "series-per-slice")
    loaded = load_study(tmp_path)
    # Loaded slices run along row x column; the source ran the other way: same voxels in the same places.
    assert np.array_equal(loaded.pixels, study.pixels[::-1])
    assert np.allclose(loaded.trigger_times, study.trigger_times[::-1])
    assert (loaded.sop_uids == study.sop_uids[::-1]).all()
    assert loaded.series_uids == study.series_uids[::-1]
    s = study.n_slices
    for k in range(s):
        for ij in [(0, 0), (7, 3)]:
            v_loaded = loaded.affine @ np.array([ij[0], ij[1], k, 1.0])
            v_source = study.affine @ np.array([ij[0], ij[1], s - 1 - k, 1.0])
            assert np.allclose(v_loaded, v_source, atol=1e-6)
    assert np.all(np.diff(loaded.slice_positions) > 0)
    assert loaded.slice_spacing == pytest.approx(study.slice_spacing)


def test_non_integer_pixels_use_rescale(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=4, integer=False, max_value=3.7)
    files = write_dicom(study, tmp_path, "series-per-slice")
    ds = pydicom.dcmread(files[0])
    assert float(ds.RescaleSlope) != 1.0
    loaded = load_study(tmp_path)
    slope = float(ds.RescaleSlope)
    assert np.max(np.abs(loaded.pixels - study.pixels)) <= slope / 2 + 1e-6


def test_implicit_vr_and_no_preamble(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=4)
    files = write_dicom(study, tmp_path, "series-per-slice", implicit_vr=True)
    raw = files[0].read_bytes()
    files[0].write_bytes(raw[132:])  # strip preamble and file meta magic -> data set starts with group 0002
    loaded = load_study(tmp_path)
    assert_same(loaded, study)


def test_datastore_round_trip(tmp_path, make_study):
    study = make_study(n_slices=4, n_phases=6, rr_jitter=0.05, trigger_jitter_ms=3.0, reverse_normal=True)
    study.notes.append("a note")
    path = write_datastore_study(study, tmp_path, "study-001")
    assert path.name == "study-001.nii.gz" and sidecar_path(path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study-001.cine.json", "study-001.nii.gz"]
    loaded = load_study(path)
    assert_same(loaded, study)
    assert np.array_equal(loaded.affine, study.affine)  # exact, from the sidecar
    assert loaded.notes == ["a note"]
    img = nib.load(str(path))
    assert img.shape == (40, 32, 4, 6)
    assert img.header.get_xyzt_units() == ("mm", "msec")
    assert img.header.get_zooms()[3] == pytest.approx(np.median(np.diff(study.trigger_times, axis=1)), rel=1e-5)
    assert np.allclose(img.affine, lps_to_ras(study.affine), atol=1e-4)
    assert np.array_equal(np.asanyarray(img.dataobj)[5, 3, 2, 1], study.pixels[2, 1, 3, 5])
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["format"] == "stran-cine" and meta["version"] == 1
    assert load_study(sidecar_path(path)).study_uid == study.study_uid  # the sidecar path works too


def test_datastore_float_pixels_exact(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=4, integer=False, max_value=2.5)
    loaded = load_study(write_datastore_study(study, tmp_path, "f"))
    assert np.array_equal(loaded.pixels, study.pixels)


def test_dicom_to_datastore_keeps_identity(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=5)
    write_dicom(study, tmp_path / "dicom", "series-per-slice")
    from_dicom = load_study(tmp_path / "dicom")
    again = load_study(write_datastore_study(from_dicom, tmp_path / "store", "x"))
    assert_same(again, study)
    assert again.source == str(tmp_path / "dicom")


def test_acdc_style_nifti(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 500, size=(24, 20, 5, 7)).astype(np.int16)  # (x, y, z, t)
    ras = np.eye(4)
    ras[:3, :3] = rotation_matrix((10, 20, 30)) @ np.diag([1.6, 1.5, 10.0])
    ras[:3, 3] = [12.0, -40.0, 7.0]
    img = nib.Nifti1Image(data, ras)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((1.6, 1.5, 10.0, 0.035))
    path = tmp_path / "patient001_4d.nii.gz"
    nib.save(img, str(path))
    study = load_study(path)
    assert study.pixels.shape == (5, 7, 20, 24)
    assert study.pixels[2, 3, 4, 6] == data[6, 4, 2, 3]
    assert np.allclose(study.affine, ras_to_lps(ras), atol=1e-5)
    assert study.pixel_spacing == pytest.approx((1.5, 1.6), rel=1e-5)
    assert study.slice_spacing == pytest.approx(10.0)
    assert np.allclose(study.trigger_times[0], np.arange(7) * 35.0, atol=1e-3)
    assert study.rr_interval == pytest.approx(7 * 35.0, rel=1e-5)
    assert study.patient_id == "patient001_4d"


def test_acdc_style_nifti_reversed_z(tmp_path):
    data = np.arange(8 * 6 * 3 * 4, dtype=np.int16).reshape(8, 6, 3, 4)
    ras = np.diag([1.5, 1.5, -8.0, 1.0])  # z runs against x cross y
    path = tmp_path / "case_sa.nii"
    nib.save(nib.Nifti1Image(data, ras), str(path))
    study = read_nifti(path)
    assert study.pixels[0, 1, 2, 3] == data[3, 2, 2, 1]  # slice order reversed
    src_ras = ras @ np.array([3, 2, 2, 1.0])
    assert np.allclose(lps_to_ras(study.affine) @ np.array([3, 2, 0, 1.0]), src_ras)
    assert any("reversed" in n for n in study.notes)


def test_write_nifti_plain_round_trip(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=5)
    path = write_nifti(study, tmp_path / "plain.nii.gz")
    loaded = load_study(path)
    assert np.array_equal(loaded.pixels, study.pixels)
    assert np.allclose(loaded.affine, study.affine, atol=1e-4)
    assert loaded.rr_interval == pytest.approx(study.rr_interval, rel=1e-4)


def test_resample_circular_wraps():
    src = np.array([0.0, 0.25, 0.5, 0.75])
    images = np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    out = resample_circular(images, src, np.array([0.125, 0.875, 0.5]))
    assert np.allclose(out[:, 0, 0], [0.5, 1.5, 2.0])  # 0.875 lies between 0.75 (3) and 1.0 (0 again)
