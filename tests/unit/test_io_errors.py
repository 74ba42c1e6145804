"""Every bad input raises its named error; the message names the problem (and the files)."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from stran.io import (
    AmbiguousStackError,
    CineLoadError,
    InconsistentGeometryError,
    MissingPhaseError,
    MixedFrameOfReferenceError,
    NoCineSeriesError,
    SinglePhaseError,
    SingleSliceError,
    StudyNotFoundError,
    StudyTooLargeError,
    TruncatedFileError,
    UnreadablePixelDataError,
    UnsupportedFormatError,
    load_study,
    write_datastore_study,
    write_dicom,
)
from stran.io.dicom_writer import write_series
from stran.io.nifti import sidecar_path


def _listing(root):
    return sorted((str(p), p.stat().st_size) for p in root.rglob("*"))


def _load_fails(path, error, *words, files=()):
    root = path if path.is_dir() else path.parent
    before = _listing(root)
    with pytest.raises(error) as info:
        load_study(path)
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
    for f in files:
        assert str(f) in info.value.files and str(f) in message
    assert _listing(root) == before  # nothing written
    assert isinstance(info.value, CineLoadError)
    return info.value


def test_no_cine_series(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "image.png").write_bytes(b"\x89PNG....")
    err = _load_fails(tmp_path, NoCineSeriesError, "No cine MR images", "2 file(s) scanned", "not a DICOM file")
    assert str(tmp_path / "notes.txt") in err.files


def test_empty_folder(tmp_path):
    _load_fails(tmp_path, NoCineSeriesError, "0 file(s) scanned")


def test_single_slice(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=6)
    files = write_series(study, tmp_path, slices=[1], series_number=7)
    _load_fails(
        tmp_path, SingleSliceError, "Only one slice position", "6 phases", "at least two slices", files=files[:1]
    )


def test_single_phase(tmp_path, make_study):
    study = make_study(n_slices=4, n_phases=1)
    files = write_dicom(study, tmp_path, "single-series-slice-major")
    _load_fails(tmp_path, SinglePhaseError, "single image", "not a cine", files=files[:1])


@pytest.mark.parametrize(
    "change,words",
    [
        ({"rows": 36}, ["matrix size", "36x40", "32x40"]),
        ({"pixel_spacing": (1.25, 1.25)}, ["pixel spacing", "1.250x1.250"]),
    ],
)
def test_inconsistent_matrix_or_spacing(tmp_path, make_study, change, words):
    study = make_study(n_slices=4, n_phases=5)
    other = make_study(n_slices=4, n_phases=5, **change)
    for s in range(4):
        write_series(
            other if s == 2 else study,
            tmp_path,
            slices=[s],
            series_number=10 + s,
            frame_of_reference_uid="1.2.826.0.1.3680043.8.498.1",
        )
    bad = sorted(tmp_path.glob("MR0012_*.dcm"))
    _load_fails(tmp_path, InconsistentGeometryError, *words, "series 12", files=bad[:1])


def _cell(study_files, path):
    """(slice, phase) of a file written by ``write_dicom(..., "series-per-slice")`` (files slice-major)."""
    i = study_files.index(path)
    return i // 4, i % 4


def _missing_phase(tmp_path, files, bad, *words):
    err = _load_fails(tmp_path, MissingPhaseError, "incomplete", "cannot be read", *words, files=[bad])
    s, t = _cell(files, bad)
    assert f"slice {s + 1} of 3" in str(err) and f"lacks phase {t + 1} of 4" in str(err)
    assert err.missing == [(s, t, str(bad))]
    return err


def test_missing_pixel_data(tmp_path, make_study):
    files = write_dicom(make_study(n_slices=3, n_phases=4), tmp_path, "series-per-slice")
    ds = pydicom.dcmread(files[5])
    del ds.PixelData
    ds.save_as(files[5])
    _missing_phase(tmp_path, files, files[5], "no PixelData")


def test_short_pixel_data(tmp_path, make_study):
    files = write_dicom(make_study(n_slices=3, n_phases=4), tmp_path, "series-per-slice")
    ds = pydicom.dcmread(files[2])
    ds.PixelData = ds.PixelData[:1000]
    ds.save_as(files[2])
    _missing_phase(tmp_path, files, files[2], "PixelData holds 1000 bytes")


def test_undecodable_pixel_data(tmp_path, make_study):
    files = write_dicom(make_study(n_slices=3, n_phases=4), tmp_path, "series-per-slice")
    ds = pydicom.dcmread(files[3])
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8not really a jpeg\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(files[3])
    err = _missing_phase(tmp_path, files, files[3], "cannot be decoded", "JPEG")
    assert isinstance(err.__cause__, UnreadablePixelDataError)


@pytest.mark.parametrize("cut", ["pixels", "header", "meta"])
def test_truncated_cine_frame(tmp_path, make_study, cut):
    files = write_dicom(make_study(n_slices=3, n_phases=4), tmp_path, "series-per-slice")
    raw = files[4].read_bytes()
    files[4].write_bytes({"pixels": raw[: len(raw) - 700], "header": raw[:900], "meta": raw[:200]}[cut])
    _missing_phase(tmp_path, files, files[4], "again")


def test_truncated_enhanced_file(tmp_path, make_study):
    (path,) = write_dicom(make_study(n_slices=3, n_phases=4), tmp_path, "enhanced")
    raw = path.read_bytes()
    path.write_bytes(raw[:-5000])
    _load_fails(path, TruncatedFileError, "truncated", files=[path])


def test_mixed_frames_of_reference(tmp_path, make_study):
    study = make_study(n_slices=4, n_phases=5)
    for s in range(4):
        write_series(
            study, tmp_path, slices=[s], series_number=10 + s, frame_of_reference_uid="1.2.3.4" if s < 2 else "1.2.3.5"
        )
    _load_fails(tmp_path, MixedFrameOfReferenceError, "2 frames of reference", "1.2.3.4", "1.2.3.5", "separately")


def test_ambiguous_duplicate_images(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=4, series="single")
    write_dicom(study, tmp_path, "single-series-slice-major")
    twin = study.replace(sop_uids=None)  # same series and times, new SOP UIDs
    # Same acquisition time as slice 1 of the original (first slice at 10:00:00, then 20 s per slice).
    write_series(
        twin,
        tmp_path,
        slices=[1],
        series_number=10,
        series_uid=study.series_uids[0],
        prefix="DUP",
        acquisition_time=36020.0,
    )
    _load_fails(tmp_path, AmbiguousStackError, "share trigger times", "slice position")


def test_repeat_within_one_series_resolved_by_time(tmp_path, make_study):
    study = make_study(n_slices=3, n_phases=4, series="single")
    write_dicom(study, tmp_path, "single-series-slice-major")
    redo = make_study(n_slices=3, n_phases=4, series="single", seed=5).replace(series_uids=study.series_uids)
    write_series(
        redo,
        tmp_path,
        slices=[1],
        series_number=10,
        prefix="RE",
        acquisition_time="110000",
        study_uid=study.study_uid,
        frame_of_reference_uid=pydicom.dcmread(next(tmp_path.glob("MR*.dcm"))).FrameOfReferenceUID,
    )
    loaded = load_study(tmp_path)
    assert np.array_equal(loaded.pixels[1], redo.pixels[1])
    assert sum("earlier acquisition" in e.reason for e in loaded.left_out) == 4


def test_too_large(tmp_path, make_study, monkeypatch):
    study = make_study(n_slices=3, n_phases=4)
    write_dicom(study, tmp_path / "d", "series-per-slice")
    need = 3 * 4 * 32 * 40 * 4
    with pytest.raises(StudyTooLargeError) as info:
        load_study(tmp_path / "d", max_bytes=need - 1)
    msg = str(info.value)
    assert str(need) in msg and str(need - 1) in msg and "STRAN_MAX_STUDY_BYTES" in msg and "max_bytes" in msg
    assert load_study(tmp_path / "d", max_bytes=need).n_slices == 3
    monkeypatch.setenv("STRAN_MAX_STUDY_BYTES", "1000")
    with pytest.raises(StudyTooLargeError):
        load_study(tmp_path / "d")
    nii = write_datastore_study(study, tmp_path / "n", "s")
    with pytest.raises(StudyTooLargeError, match="1000 bytes"):
        load_study(nii)


def test_not_found_and_unsupported(tmp_path):
    with pytest.raises(StudyNotFoundError, match="does not exist"):
        load_study(tmp_path / "missing")
    other = tmp_path / "table.csv"
    other.write_text("a,b\n1,2\n")
    _load_fails(other, UnsupportedFormatError, "neither DICOM nor NIfTI", files=[other])


def test_nifti_errors(tmp_path, make_study):
    vol = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), str(vol))
    _load_fails(vol, SinglePhaseError, "3-D volume", files=[vol])
    one = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 1, 5), np.int16), np.eye(4)), str(one))
    _load_fails(one, SingleSliceError, "one slice", files=[one])
    study = make_study(n_slices=3, n_phases=4)
    store = tmp_path / "store"
    nii = write_datastore_study(study, store, "s1")
    raw = gzip.decompress(nii.read_bytes())
    cut = store / "s2.nii.gz"
    cut.write_bytes(gzip.compress(raw)[:-2000])
    _load_fails(cut, TruncatedFileError, "truncated", files=[cut])
    other = make_study(n_slices=3, n_phases=5)
    write_datastore_study(other, store, "s3")
    sidecar_path(store / "s3.nii.gz").write_text(sidecar_path(nii).read_text())  # sidecar of another study
    _load_fails(store / "s3.nii.gz", InconsistentGeometryError, "sidecar", files=[store / "s3.nii.gz"])
