"""A detection as a DICOM Comprehensive 3D SR (TID 1500 Measurement Report), and back.

Layout of the report (all groups: finding "Scar" (SCT 12402003)):

- group "study": study scar probability, decision threshold, the decision as "Presence of property"
  present / absent, the number of cine slices, the uncertainty (method, MC samples, and for MC dropout the
  standard deviation, predictive entropy and mutual information) and the model as Algorithm Identification
  (name, version, parameter ``sha256=<hex>``);
- one group "slice N" (N = 1-based slice index) per slice inside the LV, with its scar probability and its
  source images (each phase of the slice; frame numbers for a multi-frame source);
- one group "AHA segment N" per AHA segment when the model gives segment probabilities, finding site the
  segment's SNOMED CT code.

Numbers are written twice, as DICOM allows: NumericValue (DS, 16 characters: about 14 significant digits for
a probability, ~1e-14) and FloatingPointValue (FD, the float64 itself); ``read_detection_sr`` reads the FD value
when present, so the JSON numbers come back exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    Comprehensive3DSR,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    SourceImageForMeasurementGroup,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from stran import __version__
from stran.io.study import CineStudy

if TYPE_CHECKING:
    from stran.pacs.report import ResultUIDs

MANUFACTURER = "ST-RAN Scar"
RESEARCH_ONLY = "research use only"
SR_SERIES_NUMBER = 9901
STRAN_SCHEME = "99STRAN"

#: Private codes (coding scheme designator 99STRAN), used where DICOM and SNOMED CT have no concept.
STRAN_CODES: dict[str, Code] = {
    "n_slices": Code("NSLICES", STRAN_SCHEME, "Number of cine slices"),
    "samples": Code("MCSAMPLES", STRAN_SCHEME, "Number of Monte Carlo dropout samples"),
    "std": Code("MCSTD", STRAN_SCHEME, "Standard deviation of the MC dropout scar probabilities"),
    "entropy": Code("PREDENTROPY", STRAN_SCHEME, "Predictive entropy of the scar probability"),
    "mutual_information": Code("MUTUALINFO", STRAN_SCHEME, "Mutual information (BALD) of the scar probability"),
    "method": Code("UNCMETHOD", STRAN_SCHEME, "Uncertainty estimation method"),
    "mc_dropout": Code("MCDROPOUT", STRAN_SCHEME, "Monte Carlo dropout"),
    "none": Code("NOUNCERTAINTY", STRAN_SCHEME, "No uncertainty estimate"),
    "attention": Code("ATTENTION", STRAN_SCHEME, "Scar detection attention"),
}
UNITS = {
    "probability": Code("{probability}", "UCUM", "probability"),
    "count": Code("{count}", "UCUM", "count"),
    "nat": Code("{nat}", "UCUM", "nat"),
}
UNCERTAINTY_UNITS = {"std": "probability", "entropy": "nat", "mutual_information": "nat"}
AHA_SEGMENTS: tuple[Code, ...] = tuple(
    getattr(codes.SCT, f"LeftVentricle{name}Segment")
    for name in ("BasalAnterior", "BasalAnteroseptal", "BasalInferoseptal", "BasalInferior", "BasalInferolateral",
                 "BasalAnterolateral", "MidAnterior", "MidAnteroseptal", "MidInferoseptal", "MidInferior",
                 "MidInferolateral", "MidAnterolateral", "ApicalAnterior", "ApicalSeptal", "ApicalInferior",
                 "ApicalLateral")
) + (codes.SCT.LeftVentricleApex,)
SHA_PARAMETER = "sha256="


@dataclass(frozen=True)
class ImageRef:
    """One cine image in its source: the header and, for a multi-frame source, the 1-based frame number."""

    dataset: Dataset
    frame: int | None = None

    @property
    def sop_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


def _frame_table(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """ImagePositionPatient (N, 3) and cardiac trigger time (N,; NaN if absent) of each frame of an enhanced
    multi-frame header."""
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else Dataset()
    n = len(ds.PerFrameFunctionalGroupsSequence)
    ipps, triggers = np.full((n, 3), np.nan), np.full(n, np.nan)
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        pos = item.get("PlanePositionSequence") or shared.get("PlanePositionSequence")
        sync = item.get("CardiacSynchronizationSequence") or shared.get("CardiacSynchronizationSequence")
        if pos:
            ipps[k] = [float(v) for v in pos[0].ImagePositionPatient]
        if sync:
            trigger = sync[0].get("NominalCardiacTriggerDelayTime", sync[0].get("ActualCardiacTriggerDelayTime"))
            triggers[k] = np.nan if trigger is None else float(trigger)
    return ipps, triggers


def _find_frame(ipps: np.ndarray, triggers: np.ndarray, position: np.ndarray, trigger: float,
                tol: float) -> int | None:
    """1-based number of the frame within ``tol`` mm of ``position`` nearest to ``trigger`` (ms), if within 1 ms."""
    gap = np.where(np.linalg.norm(ipps - position, axis=1) < tol, np.abs(triggers - trigger), np.inf)
    gap = np.nan_to_num(gap, nan=np.inf)
    k = int(np.argmin(gap))
    return k + 1 if gap[k] <= 1.0 else None


def image_references(study: CineStudy, sources: Sequence[Dataset]) -> list[list[ImageRef | None]]:
    """The source image of each cine image, ``[slice][phase]``; None where the study holds no source image there
    (a slice the loader resampled in time). A frame of an enhanced multi-frame source is the one at the slice's
    plane position (within a quarter of the slice spacing) whose cardiac trigger time is within 1 ms of the
    phase's. Raises ValueError naming the images ``sources`` lack."""
    if study.sop_uids is None:
        raise ValueError("the study has no SOP Instance UIDs (it was not loaded from DICOM): nothing to reference")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    grid: list[list[ImageRef | None]] = []
    missing: list[str] = []
    for s in range(study.n_slices):
        origin = study.affine[:3, 3] + s * study.affine[:3, 2]
        row: list[ImageRef | None] = []
        for t in range(study.n_phases):
            uid = str(study.sop_uids[s, t] or "")
            ds = by_uid.get(uid)
            if ds is None:
                if uid:
                    missing.append(f"slice {s + 1} phase {t + 1} (SOP Instance UID {uid})")
                row.append(None)
            elif "PerFrameFunctionalGroupsSequence" not in ds:
                row.append(ImageRef(ds))
            else:
                if uid not in tables:
                    tables[uid] = _frame_table(ds)
                tt = float(study.trigger_times[s, t])
                frame = _find_frame(*tables[uid], origin, tt, 0.25 * study.slice_spacing)
                if frame is None:
                    missing.append(f"slice {s + 1} phase {t + 1} (a frame at trigger time {tt:g} ms in {uid})")
                row.append(None if frame is None else ImageRef(ds, frame))
        grid.append(row)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ValueError(f"the source headers lack {len(missing)} image(s) the study references: "
                         f"{'; '.join(missing[:3])}{more}")
    return grid


def slice_probabilities(result: dict[str, Any], study: CineStudy) -> list[float | None]:
    """The result's per-slice probabilities, checked against the study's slices."""
    probs = result.get("slice_probabilities")
    if not probs:
        raise ValueError("the detection result has no slice_probabilities")
    if len(probs) != study.n_slices:
        raise ValueError(f"the detection result has {len(probs)} slice_probabilities, the study {study.n_slices} slices")
    return [None if p is None else float(p) for p in probs]


def _tracking(uids: ResultUIDs, label: str) -> TrackingIdentifier:
    return TrackingIdentifier(uid=generate_uid(entropy_srcs=[uids.sr_sop, label]), identifier=label)


def _probability(value: float) -> Measurement:
    return Measurement(name=codes.DCM.Probability, value=float(value), unit=UNITS["probability"])


def _study_group(result: dict[str, Any], study: CineStudy, uids: ResultUIDs) -> MeasurementsAndQualitativeEvaluations:
    model = result["model"]
    uncertainty = result.get("uncertainty") or {"method": "none", "samples": 0}
    method = str(uncertainty.get("method", "none"))
    if method not in ("mc_dropout", "none"):
        raise ValueError(f"unknown uncertainty method {method!r} (expected 'mc_dropout' or 'none')")
    measurements = [
        _probability(result["study_probability"]),
        Measurement(name=codes.DCM.ThresholdValue, value=float(result["threshold"]), unit=UNITS["probability"]),
        Measurement(name=STRAN_CODES["n_slices"], value=study.n_slices, unit=UNITS["count"]),
        Measurement(name=STRAN_CODES["samples"], value=int(uncertainty.get("samples", 0)), unit=UNITS["count"]),
    ]
    if method == "mc_dropout":
        measurements += [Measurement(name=STRAN_CODES[key], value=float(uncertainty[key]), unit=UNITS[unit])
                         for key, unit in UNCERTAINTY_UNITS.items()]
    decision = codes.DCM.Present if int(result["prediction"]) else codes.DCM.Absent
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(uids, "study"),
        finding_type=codes.SCT.Scar,
        finding_sites=[FindingSite(codes.SCT.LeftVentricleMyocardium)],
        algorithm_id=AlgorithmIdentification(model["name"], model.get("version") or "unknown",
                                             parameters=[f"{SHA_PARAMETER}{model['sha256']}"]),
        measurements=measurements,
        qualitative_evaluations=[QualitativeEvaluation(codes.DCM.PresenceOfProperty, decision),
                                 QualitativeEvaluation(STRAN_CODES["method"], STRAN_CODES[method])],
    )


def _source_images(refs: Sequence[ImageRef | None]) -> list[SourceImageForMeasurementGroup]:
    """One reference per source SOP instance, with the slice's frame numbers for a multi-frame source."""
    frames: dict[str, tuple[Dataset, list[int]]] = {}
    for ref in refs:
        if ref is not None:
            numbers = frames.setdefault(ref.sop_uid, (ref.dataset, []))[1]
            if ref.frame:
                numbers.append(ref.frame)
    return [SourceImageForMeasurementGroup(str(ds.SOPClassUID), uid, numbers or None)
            for uid, (ds, numbers) in frames.items()]


def detection_sr(result: dict[str, Any], study: CineStudy, sources: Sequence[Dataset], *,
                 uids: ResultUIDs) -> Dataset:
    """The detection ``result`` (``Detector.detect(study).result``) as a Comprehensive 3D SR in the study,
    referencing ``sources`` (the headers of the study's DICOM images, one per SOP instance)."""
    probs = slice_probabilities(result, study)
    segments = result.get("segment_probabilities")
    if segments is not None and len(segments) != len(AHA_SEGMENTS):
        raise ValueError(f"the detection result has {len(segments)} segment_probabilities, not {len(AHA_SEGMENTS)}")
    refs = image_references(study, sources)
    groups = [_study_group(result, study, uids)]
    for s, p in enumerate(probs):
        if p is not None:
            groups.append(MeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(uids, f"slice {s + 1}"),
                finding_type=codes.SCT.Scar,
                finding_sites=[FindingSite(codes.SCT.LeftVentricleMyocardium)],
                measurements=[_probability(p)],
                source_images=_source_images(refs[s]) or None,
            ))
    for k, p in enumerate(segments or []):
        groups.append(MeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(uids, f"AHA segment {k + 1}"),
            finding_type=codes.SCT.Scar,
            finding_sites=[FindingSite(AHA_SEGMENTS[k])],
            measurements=[_probability(p)],
        ))
    device = DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[MANUFACTURER, result["model"]["sha256"]]), name=MANUFACTURER,
        manufacturer_name=MANUFACTURER, model_name=result["model"]["name"])
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=ObserverContext(codes.DCM.Device, device)),
        procedure_reported=codes.SCT.CardiacMRI,
        imaging_measurements=groups,
    )
    evidence = list({ref.sop_uid: ref.dataset for row in refs for ref in row if ref is not None}.values())
    if not evidence:
        raise ValueError("the study references no source image: the SR needs at least one")
    return Comprehensive3DSR(
        evidence=evidence, content=report[0], series_instance_uid=uids.sr_series, series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.sr_sop, instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        series_description=f"ST-RAN scar detection ({RESEARCH_ONLY})", software_versions=__version__,
    )


# ---------------------------------------------------------------------------------------------- reading back

Key = tuple[str, str]


def _key(code: Code | Dataset) -> Key:
    if isinstance(code, Code):
        return code.scheme_designator, code.value
    return str(code.CodingSchemeDesignator), str(code.CodeValue)


@dataclass
class _Group:
    """The items of one measurement group, by concept name."""

    label: str = ""
    numbers: dict[Key, float] = field(default_factory=dict)
    coded: dict[Key, Key] = field(default_factory=dict)
    texts: dict[Key, list[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, item: Dataset) -> _Group:
        group = cls()
        for child in item.get("ContentSequence", []):
            name, kind = _key(child.ConceptNameCodeSequence[0]), child.ValueType
            if kind == "NUM" and child.get("MeasuredValueSequence"):
                mv = child.MeasuredValueSequence[0]
                group.numbers[name] = float(mv.FloatingPointValue if "FloatingPointValue" in mv else mv.NumericValue)
            elif kind == "CODE":
                group.coded[name] = _key(child.ConceptCodeSequence[0])
            elif kind == "TEXT":
                group.texts.setdefault(name, []).append(str(child.TextValue))
        group.label = (group.texts.get(_key(codes.DCM.TrackingIdentifier)) or [""])[0]
        return group


def _groups(ds: Dataset) -> list[_Group]:
    for item in ds.get("ContentSequence", []):
        if _key(item.ConceptNameCodeSequence[0]) == _key(codes.DCM.ImagingMeasurements):
            return [_Group.read(g) for g in item.get("ContentSequence", [])
                    if _key(g.ConceptNameCodeSequence[0]) == _key(codes.DCM.MeasurementGroup)]
    return []


def _indexed(groups: list[_Group], prefix: str, size: int) -> list[float | None]:
    """Probabilities of the groups labelled ``<prefix> N`` at index N - 1."""
    out: list[float | None] = [None] * size
    for g in groups:
        match = re.fullmatch(rf"{prefix} (\d+)", g.label)
        if match and 1 <= int(match.group(1)) <= size:
            out[int(match.group(1)) - 1] = g.numbers[_key(codes.DCM.Probability)]
    return out


def read_detection_sr(ds: Dataset) -> dict[str, Any]:
    """The numbers of an SR written by ``detection_sr`` (e.g. read back from the PACS), keyed as in the result JSON."""
    groups = _groups(ds)
    study = next((g for g in groups if g.label == "study"), None)
    if study is None:
        raise ValueError(f"SR {ds.get('SOPInstanceUID', '?')} holds no ST-RAN study measurement group")
    num = study.numbers
    methods = {_key(STRAN_CODES[k]): k for k in ("mc_dropout", "none")}
    method = methods.get(study.coded.get(_key(STRAN_CODES["method"]), ("", "")), "none")
    uncertainty: dict[str, Any] = {"method": method, "samples": int(num[_key(STRAN_CODES["samples"])])}
    uncertainty.update({k: num[_key(STRAN_CODES[k])] for k in UNCERTAINTY_UNITS if _key(STRAN_CODES[k]) in num})
    params = study.texts.get(_key(codes.DCM.AlgorithmParameters), [])
    segments = _indexed(groups, "AHA segment", len(AHA_SEGMENTS))
    return {
        "study_uid": str(ds.StudyInstanceUID),
        "study_probability": num[_key(codes.DCM.Probability)],
        "threshold": num[_key(codes.DCM.ThresholdValue)],
        "prediction": int(study.coded[_key(codes.DCM.PresenceOfProperty)] == _key(codes.DCM.Present)),
        "slice_probabilities": _indexed(groups, "slice", int(num[_key(STRAN_CODES["n_slices"])])),
        "segment_probabilities": None if all(p is None for p in segments) else segments,
        "uncertainty": uncertainty,
        "model": {
            "name": study.texts[_key(codes.DCM.AlgorithmName)][0],
            "version": study.texts[_key(codes.DCM.AlgorithmVersion)][0],
            "sha256": next((p[len(SHA_PARAMETER):] for p in params if p.startswith(SHA_PARAMETER)), ""),
        },
    }
