"""The detection's map as a FRACTIONAL DICOM Segmentation on the cine's geometry, for viewers to overlay.

One frame per slice, taken at the slice's first phase (lowest trigger time: end-diastole) and derived from that
cine image. A frame per cine image is not possible: highdicom 0.22 indexes SEG frames by plane position only and
refuses repeated positions ("not unique according to the Dimension Index Pointers"), and a cine repeats each
position once per phase. highdicom also wants all source images in one series, which a cine exported with one
series per slice is not, so the SEG is built on one plane header per slice (the study's geometry, the patient and
study of the sources) and its references (Source Image Sequence, Referenced Series Sequence, each frame's
Derivation Image Sequence) are then set to the real source images, with frame numbers for a multi-frame source.
Values are stored as 8-bit fractions (1/255 steps) of type PROBABILITY.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from highdicom import AlgorithmIdentificationSequence
from highdicom.seg import Segmentation, SegmentDescription
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import DS

from stran import __version__
from stran.io.geometry import dicom_geometry
from stran.io.study import CineStudy
from stran.pacs.sr import MANUFACTURER, RESEARCH_ONLY, STRAN_CODES, ImageRef, image_references

if TYPE_CHECKING:
    from stran.pacs.report import ResultUIDs

SEG_SERIES_NUMBER = 9902
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_REQUIRED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
             "AccessionNumber")
_OPTIONAL = ("StudyInstanceUID", "FrameOfReferenceUID", "PositionReferenceIndicator", "ReferringPhysicianName")
_SEGMENT = {  # result["map"] -> (segment label, content label, segmented property type)
    "scar": ("scar probability", "SCAR_PROBABILITY", codes.SCT.Scar),
    "attention": ("attention", "ATTENTION", STRAN_CODES["attention"]),
}


def _plane_header(study: CineStudy, s: int, like: Dataset, series_uid: str, sop_uid: str) -> Dataset:
    """A header-only MR image at slice ``s`` of the study's grid, with the patient and study of ``like``."""
    iop, ipp, spacing = dicom_geometry(study.affine, s)
    h = Dataset()
    for kw in _REQUIRED:
        setattr(h, kw, like.get(kw, ""))
    for kw in _OPTIONAL:
        if kw in like:
            setattr(h, kw, like.get(kw))
    h.SOPClassUID, h.SOPInstanceUID, h.SeriesInstanceUID, h.Modality = MR_IMAGE_STORAGE, sop_uid, series_uid, "MR"
    h.Rows, h.Columns = study.matrix
    h.ImageOrientationPatient = [DS(v, auto_format=True) for v in iop]
    h.ImagePositionPatient = [DS(v, auto_format=True) for v in ipp]
    h.PixelSpacing = [DS(v, auto_format=True) for v in spacing]
    if study.slice_thickness:
        h.SliceThickness = DS(study.slice_thickness, auto_format=True)
    return h


def _source_item(ref: ImageRef, frames: Sequence[int] = ()) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.dataset.SOPClassUID
    item.ReferencedSOPInstanceUID = ref.sop_uid
    if frames:
        item.ReferencedFrameNumber = list(frames) if len(frames) > 1 else frames[0]
    return item


def _derivation(ref: ImageRef) -> Dataset:
    source = _source_item(ref, [ref.frame] if ref.frame else [])
    source.PurposeOfReferenceCodeSequence = [
        CodedConcept.from_code(codes.cid7202.SourceImageForImageProcessingOperation)]
    source.SpatialLocationsPreserved = "YES"
    item = Dataset()
    item.DerivationCodeSequence = [CodedConcept.from_code(codes.cid7203.Segmentation)]
    item.SourceImageSequence = [source]
    return item


def _set_references(seg: Segmentation, planes: list[ImageRef | None], positions: np.ndarray) -> None:
    """Point the SEG's references at the real source image of each frame (highdicom orders frames by position)."""
    for item in seg.PerFrameFunctionalGroupsSequence:
        ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64)
        ref = planes[int(np.argmin(np.linalg.norm(positions - ipp, axis=1)))]
        item.DerivationImageSequence = [_derivation(ref)] if ref is not None else []
    used = [ref for ref in planes if ref is not None]
    by_uid = {ref.sop_uid: ref for ref in used}
    frames = {uid: [ref.frame for ref in used if ref.sop_uid == uid and ref.frame] for uid in by_uid}
    seg.SourceImageSequence = [_source_item(ref, frames[uid]) for uid, ref in by_uid.items()]
    series: dict[str, list[Dataset]] = {}
    for ref in by_uid.values():
        series.setdefault(str(ref.dataset.SeriesInstanceUID), []).append(_source_item(ref))
    items = []
    for series_uid, instances in series.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.ReferencedInstanceSequence = instances
        items.append(item)
    seg.ReferencedSeriesSequence = items


def scar_map_seg(result: dict[str, Any], study: CineStudy, attention: np.ndarray, sources: Sequence[Dataset], *,
                 uids: ResultUIDs) -> Dataset:
    """The detection's map ``attention`` (S, T, H, W) in [0, 1] on the study grid as a FRACTIONAL Segmentation
    in the study: one frame per slice at its first phase, one segment named after ``result["map"]``."""
    attention = np.asarray(attention)
    if attention.shape != study.pixels.shape:
        raise ValueError(f"the map's shape {attention.shape} differs from the study's (S, T, H, W) {study.pixels.shape}")
    kind = result.get("map", "attention")
    if kind not in _SEGMENT:
        raise ValueError(f"unknown map kind {kind!r} (expected 'scar' or 'attention')")
    refs = image_references(study, sources)
    first = np.argmin(study.trigger_times, axis=1)
    planes = [refs[s][first[s]] for s in range(study.n_slices)]
    like = next((ref.dataset for ref in planes if ref is not None), None)
    if like is None:
        raise ValueError("the study references no source image: the SEG needs at least one")
    headers = [_plane_header(study, s, like, str(like.SeriesInstanceUID),
                             str(generate_uid(entropy_srcs=[uids.map_sop, "plane", str(s)])))
               for s in range(study.n_slices)]
    values = np.clip(np.nan_to_num(attention[np.arange(study.n_slices), first].astype(np.float32)), 0.0, 1.0)
    model = result["model"]
    label, content_label, property_type = _SEGMENT[kind]
    segment = SegmentDescription(
        segment_number=1, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=property_type, algorithm_type="AUTOMATIC",
        algorithm_identification=AlgorithmIdentificationSequence(
            name=model["name"], family=codes.cid7162.ArtificialIntelligence,
            version=model.get("version") or "unknown", parameters={"sha256": model["sha256"]}),
        anatomic_regions=[codes.SCT.LeftVentricleMyocardium],
    )
    seg = Segmentation(
        source_images=headers, pixel_array=values, segmentation_type="FRACTIONAL",
        segment_descriptions=[segment], series_instance_uid=uids.map_series, series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=uids.map_sop, instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=model["name"], software_versions=__version__, device_serial_number=model["sha256"],
        fractional_type="PROBABILITY", omit_empty_frames=False, content_label=content_label,
        content_description=f"{label} at the first cardiac phase of each slice",
        series_description=f"ST-RAN scar {label} map ({RESEARCH_ONLY})",
    )
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    _set_references(seg, planes, positions)
    return seg
