"""The hard cases of cine grouping: jitter, phase counts, repeats, localizers, instance order."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from stran.io import load_study, write_dicom
from stran.io.dicom_writer import frame_of_reference_uid, write_series
from stran.io.synthetic import SAX_ANGLES_DEG, orientation_from_angles, rotation_matrix


def _reasons(study) -> dict[str, str]:
    return {e.path: e.reason for e in study.left_out}


def test_trigger_jitter_and_rr_per_slice(tmp_path, make_study):
    study = make_study(n_slices=5, n_phases=25, rows=16, cols=16, rr_jitter=0.08, trigger_jitter_ms=6.0, seed=4)
    assert np.ptp(study.rr_intervals) > 20  # each breath-hold its own heart rate
    write_dicom(study, tmp_path, "single-series-slice-major")
    loaded = load_study(tmp_path)
    assert loaded.pixels.shape == (5, 25, 16, 16)
    assert np.array_equal(loaded.pixels, study.pixels)
    assert np.allclose(loaded.trigger_times, study.trigger_times, atol=1e-6)
    assert np.allclose(loaded.rr_intervals, study.rr_intervals)
    assert loaded.rr_interval == pytest.approx(float(np.median(study.rr_intervals)))
    assert np.all(np.diff(loaded.trigger_times, axis=1) > 0)
    assert any("RR interval differs" in n for n in loaded.notes)


def test_instance_numbers_are_not_trusted(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=6, series="single", trigger_jitter_ms=2.0)
    files = write_dicom(study, tmp_path, "single-series-slice-major")
    rng = np.random.default_rng(0)
    for f, number in zip(
        files, rng.permutation(len(files)) + 1, strict=True
    ):  # scrambled InstanceNumber and SliceLocation
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = int(number)
        ds.SliceLocation = float(rng.uniform(-100, 100))
        ds.save_as(f)
    loaded = load_study(tmp_path)
    assert np.array_equal(loaded.pixels, study.pixels)
    assert (loaded.sop_uids == study.sop_uids).all()


def test_slice_major_and_phase_major_agree(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=5, series="single")
    write_dicom(study, tmp_path / "sm", "single-series-slice-major")
    write_dicom(study, tmp_path / "pm", "single-series-phase-major")
    a, b = load_study(tmp_path / "sm"), load_study(tmp_path / "pm")
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.pixels, study.pixels)
    assert (a.sop_uids == b.sop_uids).all()


def test_different_phase_counts_are_resampled(tmp_path, make_study):
    s25 = make_study(n_slices=4, n_phases=25, rows=16, cols=16, seed=2)
    s24 = make_study(n_slices=4, n_phases=24, rows=16, cols=16, seed=2, rr_interval=960.0)
    for s in range(4):
        source = s24 if s == 2 else s25
        write_series(source, tmp_path, slices=[s], series_number=10 + s)
    loaded = load_study(tmp_path)
    assert loaded.pixels.shape == (4, 25, 16, 16)
    note = [n for n in loaded.notes if "resampled" in n]
    assert len(note) == 1 and "24 phases" in note[0] and "25" in note[0]
    for s in (0, 1, 3):
        assert np.array_equal(loaded.pixels[s], s25.pixels[s])
        assert (loaded.sop_uids[s] == s25.sop_uids[s]).all()
    assert (loaded.sop_uids[2] == "").all()  # interpolated frames have no source image
    # Slice 2 lies on the common phase-fraction grid, in its own RR.
    assert loaded.rr_intervals[2] == pytest.approx(960.0)
    assert np.allclose(loaded.trigger_times[2] / 960.0, s25.trigger_times[0] / 900.0)
    # Each resampled frame is the circular linear interpolation of its neighbours in the 24-phase slice.
    src = s24.trigger_times[2] / 960.0
    for j in (0, 7, 24):
        g = loaded.trigger_times[2, j] / 960.0
        k = int(np.searchsorted(src, g, side="right") - 1) % 24
        k1 = (k + 1) % 24
        f0, f1 = src[k], src[k1] + (1.0 if k1 == 0 else 0.0)
        w = (g - f0) / (f1 - f0)
        expected = (1 - w) * s24.pixels[2, k] + w * s24.pixels[2, k1]
        assert np.allclose(loaded.pixels[2, j], expected, atol=1e-3)


def test_repeated_acquisition_keeps_latest(tmp_path, make_study):
    study = make_study(n_slices=4, n_phases=5, seed=1)
    redo = make_study(n_slices=4, n_phases=5, seed=9)  # same geometry, other UIDs and noise
    # The repeat (series 30) is written first and the original series after: order on disk must not matter.
    repeat = write_series(
        redo,
        tmp_path / "b",
        slices=[1],
        series_number=30,
        acquisition_time="103000",
        study_uid=study.study_uid,
        frame_of_reference_uid=frame_of_reference_uid(study),
    )
    original = write_dicom(study, tmp_path / "a", "series-per-slice", acquisition_time="100000")
    loaded = load_study(tmp_path)
    assert loaded.pixels.shape == (4, 5, 32, 40)
    assert np.array_equal(loaded.pixels[1], redo.pixels[1])
    assert np.array_equal(loaded.pixels[[0, 2, 3]], study.pixels[[0, 2, 3]])
    assert loaded.series_uids[1] == redo.series_uids[1]
    reasons = _reasons(loaded)
    replaced = [str(f) for f in original if "SE0011" in str(f)]
    assert len(replaced) == 5 and all("earlier acquisition" in reasons[f] for f in replaced)
    assert not any(str(f) in reasons for f in repeat)
    assert any("acquired 2 times" in n and "series 30" in n for n in loaded.notes)


def test_repeated_acquisition_same_series_number_uses_time(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=4, seed=1)
    redo = make_study(n_slices=3, n_phases=4, seed=7)
    write_dicom(study, tmp_path, "series-per-slice", series_number=5, acquisition_time="120000")
    # Same SeriesNumber as slice 0's series (5), later AcquisitionTime, own series UID.
    write_series(
        redo,
        tmp_path,
        slices=[0],
        series_number=5,
        acquisition_time="121500",
        prefix="RE",
        study_uid=study.study_uid,
        frame_of_reference_uid=frame_of_reference_uid(study),
    )
    loaded = load_study(tmp_path)
    assert np.array_equal(loaded.pixels[0], redo.pixels[0])
    assert sum("earlier acquisition" in e.reason for e in loaded.left_out) == 4


def test_localizer_and_long_axis_left_out(tmp_path, make_study):
    study = make_study(n_slices=4, n_phases=6, seed=3)
    write_dicom(study, tmp_path / "sax", "series-per-slice", series_number=10)
    # Three-plane localizer (no LOCALIZER in ImageType: caught by orientation).
    localizer_files = []
    for k, angles in enumerate([(0, 0, 0), (90, 0, 0), (0, 90, 0)]):
        loc = make_study(n_slices=1, n_phases=1, rows=24, cols=24, angles_deg=angles, origin=(0, 0, 0), seed=20 + k)
        localizer_files += write_series(
            loc, tmp_path / "loc", series_number=1, prefix=f"LOC{k}", image_type=("ORIGINAL", "PRIMARY", "M")
        )
    # A long-axis cine: one position, 6 phases, rotated 80 degrees about the SAX row direction.
    r = rotation_matrix(SAX_ANGLES_DEG) @ rotation_matrix((80, 0, 0))
    lax = make_study(n_slices=1, n_phases=6, rows=24, cols=28, iop=np.concatenate([r[:, 0], r[:, 1]]), seed=30)
    lax_files = write_series(lax, tmp_path / "lax", series_number=3, series_description="cine_4ch")
    # An explicit localizer in the SAX orientation, and non-image files.
    tagged = make_study(n_slices=1, n_phases=1, iop=orientation_from_angles(SAX_ANGLES_DEG), origin=(5, 5, 5), seed=40)
    tagged_files = write_series(
        tagged, tmp_path / "loc", series_number=2, prefix="TAG", image_type=("ORIGINAL", "PRIMARY", "M", "LOCALIZER")
    )
    (tmp_path / "README.txt").write_text("exported by PACS")
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID, sr.SOPInstanceUID, sr.Modality = (
        sr.file_meta.MediaStorageSOPClassUID,
        sr.file_meta.MediaStorageSOPInstanceUID,
        "SR",
    )
    sr.is_little_endian, sr.is_implicit_VR = True, False
    pydicom.dcmwrite(str(tmp_path / "report.dcm"), sr, write_like_original=False)

    loaded = load_study(tmp_path)
    assert np.array_equal(loaded.pixels, study.pixels)
    reasons = _reasons(loaded)
    for f in localizer_files + lax_files:
        assert "orientation" in reasons[str(f)] and "deg off the short-axis stack" in reasons[str(f)]
    assert "localizer" in reasons[str(tagged_files[0])]
    assert reasons[str(tmp_path / "README.txt")] == "not a DICOM file"
    assert "no image data" in reasons[str(tmp_path / "report.dcm")]
    assert len(loaded.left_out) == 3 + 6 + 1 + 2


def test_duplicate_copies_and_temp_files_are_left_out(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=4)
    files = write_dicom(study, tmp_path / "a", "series-per-slice")
    copy = tmp_path / "b" / "copy.dcm"
    copy.parent.mkdir()
    copy.write_bytes(files[0].read_bytes())
    (tmp_path / "b" / ".MR0010_00001.dcm.k2j4x.tmp").write_bytes(files[1].read_bytes()[:500])
    loaded = load_study(tmp_path)
    assert np.array_equal(loaded.pixels, study.pixels)
    reasons = _reasons(loaded)
    assert "duplicate of" in reasons[str(copy)]
    assert any("temporary file" in r for r in reasons.values())


def test_irregular_gap_is_noted(tmp_path, make_study):
    study = make_study(n_slices=5, n_phases=4)
    for s in (0, 1, 3, 4):  # slice 2 missing
        write_series(study, tmp_path, slices=[s], series_number=10 + s)
    loaded = load_study(tmp_path)
    assert loaded.n_slices == 4
    assert any("Irregular slice spacing" in n for n in loaded.notes)
    assert loaded.slice_spacing == pytest.approx(8.0)


def test_single_series_per_slice_enhanced_files(tmp_path, make_study):
    """Philips-style export: one Enhanced MR file per slice."""
    from stran.io.dicom_writer import write_enhanced
    from stran.io.study import CineStudy

    study = make_study(n_slices=3, n_phases=5, rr_jitter=0.05)
    for s in range(3):
        one = CineStudy(
            pixels=study.pixels[s : s + 1],
            affine=_slice_affine(study, s),
            trigger_times=study.trigger_times[s : s + 1],
            rr_interval=study.rr_intervals[s],
            study_uid=study.study_uid,
            series_uids=[study.series_uids[s]],
            patient_id=study.patient_id,
            slice_thickness=study.slice_thickness,
        )
        write_enhanced(one, tmp_path, series_number=20 + s, frame_of_reference_uid="1.2.3.4")
    loaded = load_study(tmp_path)
    assert np.array_equal(loaded.pixels, study.pixels)
    assert np.allclose(loaded.affine, study.affine, atol=1e-6)
    assert np.allclose(loaded.rr_intervals, study.rr_intervals)


def _slice_affine(study, s):
    a = study.affine.copy()
    a[:3, 3] = study.affine[:3, 3] + s * study.affine[:3, 2]
    return a


def test_lone_image_never_replaces_a_cine_slice(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=5)
    write_dicom(study, tmp_path, "series-per-slice", series_number=10)
    still = make_study(n_slices=3, n_phases=1, seed=8)  # same geometry, one image per slice
    lone = write_series(
        still, tmp_path, slices=[1], series_number=90, prefix="ST", frame_of_reference_uid=frame_of_reference_uid(study)
    )
    loaded = load_study(tmp_path)
    assert np.array_equal(loaded.pixels, study.pixels)
    assert "single image at slice position" in _reasons(loaded)[str(lone[0])]


def test_missing_trigger_times_fall_back_with_a_note(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=5)
    files = write_dicom(study, tmp_path, "series-per-slice")
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.TriggerTime
        ds.save_as(f)
    loaded = load_study(tmp_path)
    assert np.array_equal(loaded.pixels, study.pixels)  # InstanceNumber = phase in this layout
    assert any("ordered by InstanceNumber" in n for n in loaded.notes)
    assert np.allclose(loaded.trigger_times[0], np.arange(5) * 900.0 / 5)


def test_folder_with_nifti_hints_at_the_file(tmp_path, make_study):
    from stran.io import NoCineSeriesError, write_datastore_study

    write_datastore_study(make_study(n_slices=3, n_phases=4), tmp_path, "s1")
    with pytest.raises(NoCineSeriesError, match="load one of them by its own path"):
        load_study(tmp_path)


def test_in_plane_rotated_slice_is_an_error(tmp_path, make_study):
    from stran.io import InconsistentGeometryError

    study = make_study(n_slices=3, n_phases=4)
    iop = orientation_from_angles(SAX_ANGLES_DEG)
    rotated = make_study(n_slices=3, n_phases=4, iop=np.concatenate([iop[3:], -iop[:3]]))  # same plane, 90 deg in-plane
    for s in range(3):
        write_series(
            rotated if s == 1 else study, tmp_path, slices=[s], series_number=10 + s, frame_of_reference_uid="1.2.3"
        )
    with pytest.raises(InconsistentGeometryError, match="rotated or flipped in-plane"):
        load_study(tmp_path)


def test_multiframe_without_functional_groups_left_out(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=4)
    write_dicom(study, tmp_path, "series-per-slice")
    (enh,) = write_dicom(study, tmp_path / "enh", "enhanced")
    ds = pydicom.dcmread(enh)
    del ds.PerFrameFunctionalGroupsSequence
    ds.save_as(enh)
    loaded = load_study(tmp_path)
    assert "without per-frame functional groups" in _reasons(loaded)[str(enh)]
