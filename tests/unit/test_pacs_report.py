"""Detection results as DICOM: the TID 1500 SR and the map SEG, on real DICOM written and read back (no PACS)."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from stran.io import load_study, write_dicom
from stran.io.geometry import dicom_geometry
from stran.io.synthetic import make_cine_study
from stran.pacs.report import detection_sr, read_detection_sr, result_uids, scar_map_seg

LAYOUTS = {"series-per-slice": {}, "enhanced": {"frame_order": "phase-major"}}
SHA = "0123456789abcdef" * 4


def roundtrip(ds: pydicom.Dataset) -> pydicom.Dataset:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, write_like_original=False)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def load_cine(folder: Path, layout: str, **kwargs: Any) -> tuple[Any, list[pydicom.Dataset]]:
    """A small cine written as DICOM in ``layout`` and loaded back, with its headers (what the PACS fetch keeps)."""
    write_dicom(make_cine_study(**kwargs), folder, layout, **LAYOUTS[layout])
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.rglob("*.dcm"))]
    return load_study(folder), headers


@pytest.fixture(scope="module", params=list(LAYOUTS))
def cine(request, tmp_path_factory) -> tuple[Any, list[pydicom.Dataset]]:
    return load_cine(tmp_path_factory.mktemp(request.param), request.param, n_slices=4, n_phases=5, rows=24, cols=28)


def make_result(study: Any, kind: str = "scar") -> dict[str, Any]:
    rng = np.random.default_rng(7)
    slices = [float(p) for p in rng.random(study.n_slices)]
    slices[0] = slices[-1] = None  # outside the LV
    return {
        "detection_id": "d" * 32, "study_probability": 0.123456789012345678, "threshold": 0.37586188316345215,
        "prediction": 0, "slice_probabilities": slices,
        "segment_probabilities": [float(p) for p in rng.random(17) * 1e-3 ** rng.integers(0, 4, 17)],
        "uncertainty": {"method": "mc_dropout", "samples": 8, "std": 0.00145111791789, "entropy": 0.169836848212257,
                        "mutual_information": 2.705974675715206e-05},
        "model": {"name": "stran", "version": "0.1.0", "sha256": SHA, "trained_on": "synthetic"}, "map": kind,
    }


def uids_for(study: Any, sha: str = SHA):
    return result_uids(study.study_uid, list(dict.fromkeys(study.series_uids)), sha)


def measurement_groups(sr: pydicom.Dataset) -> dict[str, pydicom.Dataset]:
    """Measurement groups of a TID 1500 report by tracking identifier, walked with pydicom only."""
    container = next(i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010")
    out = {}
    for group in container.ContentSequence:
        label = next(i.TextValue for i in group.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "112039")
        out[label] = group
    return out


def frame_geometry(header: pydicom.Dataset, frame: int) -> tuple[np.ndarray, float]:
    item = header.PerFrameFunctionalGroupsSequence[frame - 1]
    ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
    return ipp, float(item.CardiacSynchronizationSequence[0].NominalCardiacTriggerDelayTime)


def assert_same_result(back: dict[str, Any], result: dict[str, Any], study: Any) -> None:
    assert back["study_uid"] == study.study_uid and back["prediction"] == result["prediction"]
    for key in ("study_probability", "threshold"):
        assert back[key] == pytest.approx(result[key], abs=1e-9, rel=0)
    assert [p is None for p in back["slice_probabilities"]] == [p is None for p in result["slice_probabilities"]]
    for got, want in zip(back["slice_probabilities"], result["slice_probabilities"], strict=True):
        assert got is None or got == pytest.approx(want, abs=1e-9, rel=0)
    if result["segment_probabilities"] is None:
        assert back["segment_probabilities"] is None
    else:
        assert np.allclose(back["segment_probabilities"], result["segment_probabilities"], atol=1e-9, rtol=0)
    assert back["uncertainty"].keys() == result["uncertainty"].keys()
    for key, value in result["uncertainty"].items():
        assert back["uncertainty"][key] == (value if isinstance(value, str) else pytest.approx(value, abs=1e-9, rel=0))
    assert back["model"] == {k: result["model"][k] for k in ("name", "version", "sha256")}


def test_sr_reads_back_as_the_json(cine) -> None:
    study, headers = cine
    result, uids = make_result(study), uids_for(study)
    sr = roundtrip(detection_sr(result, study, headers, uids=uids))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34" and sr.Modality == "SR"
    assert (sr.SeriesInstanceUID, sr.SOPInstanceUID) == (uids.sr_series, uids.sr_sop)
    assert sr.StudyInstanceUID == study.study_uid and "research use only" in sr.SeriesDescription
    back = read_detection_sr(sr)
    assert_same_result(back, result, study)
    # The floats travel exactly (FD); the DS copy keeps 16 characters.
    assert back["study_probability"] == result["study_probability"]
    assert back["segment_probabilities"] == result["segment_probabilities"]


def test_sr_slice_groups_reference_exactly_their_source_images(cine) -> None:
    study, headers = cine
    result = make_result(study)
    groups = measurement_groups(roundtrip(detection_sr(result, study, headers, uids=uids_for(study))))
    assert set(groups) == {"study"} | {f"slice {s + 1}" for s, p in enumerate(result["slice_probabilities"])
                                       if p is not None} | {f"AHA segment {k}" for k in range(1, 18)}
    by_uid = {h.SOPInstanceUID: h for h in headers}
    for s, p in enumerate(result["slice_probabilities"]):
        if p is None:
            continue
        images = [i.ReferencedSOPSequence[0] for i in groups[f"slice {s + 1}"].ContentSequence if i.ValueType == "IMAGE"]
        assert {ref.ReferencedSOPInstanceUID for ref in images} == set(study.sop_uids[s])
        multi = [ref for ref in images if "ReferencedFrameNumber" in ref]
        if multi:  # enhanced: the frames of this slice, one per phase
            (ref,) = multi
            frames = [frame_geometry(by_uid[ref.ReferencedSOPInstanceUID], int(f)) for f in ref.ReferencedFrameNumber]
            _, ipp, _ = dicom_geometry(study.affine, s)
            assert all(np.allclose(pos, ipp, atol=1e-4) for pos, _ in frames)
            assert sorted(t for _, t in frames) == pytest.approx(study.trigger_times[s].tolist())
    study_group = groups["study"]
    assert {i.ConceptCodeSequence[0].CodeMeaning for i in study_group.ContentSequence if i.ValueType == "CODE"} >= {
        "Absent", "Scar (morphologic abnormality)"}


def test_sr_without_uncertainty_or_segments(cine) -> None:
    study, headers = cine
    result = make_result(study)
    result.update(segment_probabilities=None, uncertainty={"method": "none", "samples": 0}, prediction=1)
    back = read_detection_sr(roundtrip(detection_sr(result, study, headers, uids=uids_for(study))))
    assert_same_result(back, result, study)


def test_seg_lies_on_the_cine_and_holds_the_map(cine) -> None:
    study, headers = cine
    kind = "scar" if len(headers) > 1 else "attention"  # the scar map on single-frame sources, attention on enhanced
    result, uids = make_result(study, kind), uids_for(study)
    rng = np.random.default_rng(3)
    attention = rng.random(study.pixels.shape).astype(np.float32)
    seg = roundtrip(scar_map_seg(result, study, attention, headers, uids=uids))
    assert (seg.Modality, seg.SegmentationType, seg.SeriesInstanceUID, seg.SOPInstanceUID) == (
        "SEG", "FRACTIONAL", uids.map_series, uids.map_sop)
    assert seg.SegmentSequence[0].SegmentLabel == {"scar": "scar probability", "attention": "attention"}[kind]
    assert seg.FrameOfReferenceUID == headers[0].FrameOfReferenceUID and seg.StudyInstanceUID == study.study_uid
    assert int(seg.NumberOfFrames) == study.n_slices
    first = np.argmin(study.trigger_times, axis=1)
    by_uid = {h.SOPInstanceUID: h for h in headers}
    positions = np.array([dicom_geometry(study.affine, s)[1] for s in range(study.n_slices)])
    seen = []
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        s = int(np.argmin(np.linalg.norm(positions - ipp, axis=1)))
        assert np.allclose(ipp, positions[s], atol=1e-6)
        assert float(np.dot(ipp, study.slice_normal)) == pytest.approx(study.slice_positions[s], abs=1e-6)
        assert np.abs(seg.pixel_array[i] / 255.0 - attention[s, first[s]]).max() <= 0.5 / 255 + 1e-9
        (source,) = item.DerivationImageSequence[0].SourceImageSequence
        assert source.ReferencedSOPInstanceUID == study.sop_uids[s, first[s]]
        if "ReferencedFrameNumber" in source:
            pos, trigger = frame_geometry(by_uid[source.ReferencedSOPInstanceUID], int(source.ReferencedFrameNumber))
            assert np.allclose(pos, positions[s], atol=1e-4) and trigger == pytest.approx(study.trigger_times[s, first[s]])
        seen.append(s)
    assert sorted(seen) == list(range(study.n_slices))
    referenced = {r.ReferencedSOPInstanceUID for series in seg.ReferencedSeriesSequence
                  for r in series.ReferencedInstanceSequence}
    assert referenced == {study.sop_uids[s, first[s]] for s in range(study.n_slices)}
    assert {series.SeriesInstanceUID for series in seg.ReferencedSeriesSequence} == {
        by_uid[u].SeriesInstanceUID for u in referenced}


def test_result_uids_are_deterministic(cine) -> None:
    study, _ = cine
    series = list(dict.fromkeys(study.series_uids))
    a, b = result_uids(study.study_uid, series, SHA), result_uids(study.study_uid, series[::-1], SHA)
    assert a == b and len({a.sr_series, a.sr_sop, a.map_series, a.map_sop}) == 4
    assert all(len(u) <= 64 and pydicom.uid.UID(u).is_valid for u in vars(a).values())
    for other in (result_uids(study.study_uid, series, "f" * 64), result_uids("1.2.3.4", series, SHA)):
        assert not set(vars(a).values()) & set(vars(other).values())


def test_bad_input_says_what_is_missing(cine) -> None:
    study, headers = cine
    result, uids = make_result(study), uids_for(study)
    with pytest.raises(ValueError, match="no slice_probabilities"):
        detection_sr({**result, "slice_probabilities": None}, study, headers, uids=uids)
    with pytest.raises(ValueError, match="3 slice_probabilities, the study 4 slices"):
        detection_sr({**result, "slice_probabilities": [0.1, 0.2, 0.3]}, study, headers, uids=uids)
    with pytest.raises(ValueError, match=r"map's shape \(4, 5, 24, 27\) differs"):
        scar_map_seg(result, study, np.zeros((4, 5, 24, 27), np.float32), headers, uids=uids)
    if len(headers) > 1:  # one header per image: leave the one of slice 2, phase 3 out
        lost = study.sop_uids[1, 2]
        fewer = [h for h in headers if h.SOPInstanceUID != lost]
        message = f"lack 1 image.*slice 2 phase 3 \\(SOP Instance UID {lost}\\)"
    else:  # the multi-frame file without the per-frame groups of the slice at index 1
        fewer = [copy.deepcopy(headers[0])]
        _, ipp, _ = dicom_geometry(study.affine, 1)
        fewer[0].PerFrameFunctionalGroupsSequence = [
            item for item in headers[0].PerFrameFunctionalGroupsSequence
            if not np.allclose(item.PlanePositionSequence[0].ImagePositionPatient, ipp, atol=1e-3)]
        message = f"lack {study.n_phases} image.*slice 2 phase 1 \\(a frame at trigger time 0 ms in {study.sop_uids[1, 0]}\\)"
    for build in (lambda: detection_sr(result, study, fewer, uids=uids),
                  lambda: scar_map_seg(result, study, np.zeros(study.pixels.shape, np.float32), fewer, uids=uids)):
        with pytest.raises(ValueError, match=message):
            build()


def test_the_shipped_model_result_round_trips(tmp_path) -> None:
    from stran.engine.detect import Detector
    from stran.resources import resolve_model

    study, headers = load_cine(tmp_path, "series-per-slice", n_slices=6, n_phases=8, rows=48, cols=56)
    detection = Detector(resolve_model(None), mc_samples=2).detect(study)
    result = detection.result
    uids = uids_for(study, result["model"]["sha256"])
    back = read_detection_sr(roundtrip(detection_sr(result, study, headers, uids=uids)))
    assert_same_result(back, result, study)
    seg = roundtrip(scar_map_seg(result, study, detection.attention, headers, uids=uids))
    assert int(seg.NumberOfFrames) == study.n_slices
