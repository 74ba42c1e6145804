"""Write a ``CineStudy`` as DICOM MR, in the layouts scanners and PACS exports use.

Layouts (``DicomLayout``):

- ``single-series-slice-major`` / ``single-series-phase-major``: every slice in
  one series, InstanceNumber running over phases within a slice, or over
  slices within a phase (GE / Philips classic export);
- ``series-per-slice``: one series per slice, InstanceNumber = phase (Siemens
  retro-gated cine, UK Biobank);
- ``enhanced``: one Enhanced MR Image Storage multi-frame file with shared and
  per-frame functional groups.

Pixels are stored as 16-bit unsigned integers: integer-valued input in
[0, 65535] is stored as is; anything else through RescaleSlope/Intercept
(one pair for the whole study). Each file is written to a temporary name and
renamed into place, so a reader never sees a half-written file.

``write_series`` and ``write_enhanced`` are the building blocks tests use for
the hard cases (repeated breath-holds, one slice with another phase count,
localizers, another frame of reference).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from stran.io.dicom_headers import (
    ENHANCED_MR_IMAGE_STORAGE,
    FRAME_CONTENT_TAG,
    MR_IMAGE_STORAGE,
    PixelEncoding,
    apply_extra,
    atomic_save,
    base_dataset,
    ds_value,
    frame_of_reference_uid,
    parse_time,
    pixel_encoding,
    series_uid_for,
    set_image_pixel,
    sop_uid_for,
    time_str,
)
from stran.io.geometry import dicom_geometry
from stran.io.study import CineStudy

__all__ = [
    "DicomLayout",
    "PixelEncoding",
    "frame_of_reference_uid",
    "pixel_encoding",
    "write_dicom",
    "write_enhanced",
    "write_series",
]


class DicomLayout(str, Enum):
    SINGLE_SERIES_SLICE_MAJOR = "single-series-slice-major"
    SINGLE_SERIES_PHASE_MAJOR = "single-series-phase-major"
    SERIES_PER_SLICE = "series-per-slice"
    ENHANCED = "enhanced"


def write_series(
    study: CineStudy,
    out_dir: str | Path,
    *,
    slices: Iterable[int] | None = None,
    series_number: int = 1,
    series_uid: str | None = None,
    series_description: str | None = None,
    instance_order: str = "slice-major",
    acquisition_time: str | float | None = None,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "M", "RETRO", "DIS2D"),
    prefix: str = "MR",
    encoding: PixelEncoding | None = None,
    **opts: Any,
) -> list[Path]:
    """Write some slices of ``study`` (all phases) as one classic MR series; returns the files.

    ``acquisition_time`` is the first slice's breath-hold (HHMMSS or seconds
    after midnight); each further slice is 20 s later. ``opts``: header
    overrides (``manufacturer``, ``model``, ``field_strength``,
    ``sequence_name``, ``patient_id``, ``patient_name``, ``study_uid``,
    ``frame_of_reference_uid``, ``study_date``, ``implicit_vr``) and
    ``extra`` (keyword -> value set on every file, None deletes).
    """
    sel = list(range(study.n_slices)) if slices is None else [int(s) for s in slices]
    if instance_order not in ("slice-major", "phase-major"):
        raise ValueError(f"instance_order must be 'slice-major' or 'phase-major', not {instance_order!r}")
    enc = encoding or pixel_encoding(study.pixels)
    out = Path(out_dir)
    uid = series_uid_for(study, sel, series_uid)
    t0 = parse_time(acquisition_time)
    acq = study.acquisition
    rows, cols = study.matrix
    n_t = study.n_phases
    normal = study.slice_normal
    sequence_name = str(opts.get("sequence_name", acq.sequence or "tfi2d1_25"))
    desc = series_description or ("cine_retro_sax" if len(sel) > 1 else f"cine_retro_sax_s{sel[0] + 1}")
    paths: list[Path] = []
    for k, s in enumerate(sel):
        iop, ipp, spacing = dicom_geometry(study.affine, s)
        rr = float(study.rr_intervals[s])
        acq_time = t0 + 20.0 * k
        for t in range(n_t):
            sop = sop_uid_for(study, s, t)
            ds = base_dataset(study, opts, MR_IMAGE_STORAGE, sop)
            ds.ImageType = list(image_type)
            ds.SeriesTime = time_str(t0)
            ds.AcquisitionTime = time_str(acq_time)
            ds.ContentTime = time_str(acq_time + float(study.trigger_times[s, t]) / 1000.0)
            ds.SeriesDescription = desc
            ds.ProtocolName = desc
            ds.ScanningSequence = "GR"
            ds.SequenceVariant = ["SK", "SS"]
            ds.ScanOptions = "CT"
            ds.MRAcquisitionType = "2D"
            ds.SequenceName = sequence_name
            ds.SliceThickness = ds_value(
                study.slice_thickness if study.slice_thickness is not None else study.slice_spacing
            )
            ds.SpacingBetweenSlices = ds_value(study.slice_spacing)
            ds.RepetitionTime = ds_value(opts.get("repetition_time", 3.0))
            ds.EchoTime = ds_value(opts.get("echo_time", 1.5))
            ds.FlipAngle = ds_value(opts.get("flip_angle", 60.0))
            ds.ImagingFrequency = ds_value(42.577 * float(ds.MagneticFieldStrength))
            ds.TriggerTime = ds_value(study.trigger_times[s, t])
            ds.NominalInterval = int(round(rr))
            ds.CardiacNumberOfImages = n_t
            ds.HeartRate = int(round(60000.0 / rr)) if rr > 0 else 0
            ds.SeriesInstanceUID = uid
            ds.SeriesNumber = int(series_number)
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = (k * n_t + t + 1) if instance_order == "slice-major" else (t * len(sel) + k + 1)
            ds.ImagePositionPatient = [ds_value(v) for v in ipp]
            ds.ImageOrientationPatient = [ds_value(v) for v in iop]
            ds.SliceLocation = ds_value(float(np.dot(ipp, normal)))
            ds.PixelSpacing = [ds_value(v) for v in spacing]
            set_image_pixel(ds, rows, cols, enc, enc.encode(study.pixels[s, t]))
            if not enc.identity:
                ds.RescaleIntercept = ds_value(enc.intercept)
                ds.RescaleSlope = ds_value(enc.slope)
                ds.RescaleType = "US"
            ds.WindowCenter = ds_value(float(study.pixels[s].mean()))
            ds.WindowWidth = ds_value(max(float(np.ptp(study.pixels[s])), 1.0))
            apply_extra(ds, opts)
            name = f"{prefix}{int(series_number):04d}_{int(ds.InstanceNumber):05d}.dcm"
            paths.append(atomic_save(ds, out / name))
    return paths


def write_enhanced(
    study: CineStudy,
    out_dir: str | Path,
    *,
    series_number: int = 1,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    series_description: str = "cine_retro_sax_enhanced",
    frame_order: str = "slice-major",
    acquisition_time: str | float | None = None,
    filename: str | None = None,
    encoding: PixelEncoding | None = None,
    **opts: Any,
) -> Path:
    """One Enhanced MR Image Storage file holding every (slice, phase) frame; returns its path.

    ``frame_order``: "slice-major" (phases within a slice) or "phase-major".
    Per frame: FrameContentSequence (StackID, InStackPositionNumber,
    TemporalPositionIndex, DimensionIndexValues), PlanePositionSequence and
    CardiacSynchronizationSequence (NominalCardiacTriggerDelayTime,
    RRIntervalTimeNominal); shared: PixelMeasures, PlaneOrientation, MR timing,
    PixelValueTransformation. ``opts`` as for ``write_series``.
    """
    if frame_order not in ("slice-major", "phase-major"):
        raise ValueError(f"frame_order must be 'slice-major' or 'phase-major', not {frame_order!r}")
    enc = encoding or pixel_encoding(study.pixels)
    n_s, n_t = study.n_slices, study.n_phases
    rows, cols = study.matrix
    if sop_uid is None:
        cells = set(study.sop_uids.ravel().tolist()) if study.sop_uids is not None else set()
        sop_uid = cells.pop() if len(cells) == 1 and "" not in cells else str(generate_uid())
    ds = base_dataset(study, opts, ENHANCED_MR_IMAGE_STORAGE, sop_uid)
    t0 = parse_time(acquisition_time)
    acq = study.acquisition
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.SeriesTime = time_str(t0)
    ds.ContentTime = time_str(t0)
    ds.AcquisitionDateTime = f"{ds.AcquisitionDate}{time_str(t0)}"
    ds.SeriesDescription = series_description
    ds.ProtocolName = series_description
    ds.SeriesInstanceUID = series_uid or series_uid_for(study, range(n_s), None)
    ds.SeriesNumber = int(series_number)
    ds.InstanceNumber = 1
    ds.AcquisitionNumber = 1
    ds.ContentQualification = "PRODUCT"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = "MIXED"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.MRAcquisitionType = "2D"
    ds.ImagingFrequency = ds_value(42.577 * float(ds.MagneticFieldStrength))
    ds.PulseSequenceName = str(opts.get("sequence_name", acq.sequence or "tfi2d1_25"))
    ds.EchoPulseSequence = "GRADIENT"
    ds.SteadyStatePulseSequence = "TIME_REVERSED"
    ds.CardiacSynchronizationTechnique = "RETROSPECTIVE"
    ds.CardiacSignalSource = "ECG"
    ds.CardiacRRIntervalSpecified = ds_value(study.rr_interval)
    ds.CardiacBeatRejectionTechnique = "NONE"
    ds.NumberOfFrames = n_s * n_t
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"

    dim_org = str(generate_uid())
    org = Dataset()
    org.DimensionOrganizationUID = dim_org
    ds.DimensionOrganizationSequence = [org]
    ds.DimensionOrganizationType = "3D_TEMPORAL"
    dims = []
    for pointer, label in (
        (0x00209056, "Stack ID"),
        (0x00209057, "In-Stack Position Number"),
        (0x00209128, "Temporal Position Index"),
    ):
        d = Dataset()
        d.DimensionOrganizationUID = dim_org
        d.DimensionIndexPointer = pointer
        d.FunctionalGroupPointer = FRAME_CONTENT_TAG
        d.DimensionDescriptionLabel = label
        dims.append(d)
    ds.DimensionIndexSequence = dims

    iop, _, spacing = dicom_geometry(study.affine, 0)
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [ds_value(v) for v in spacing]
    pm.SliceThickness = ds_value(study.slice_thickness if study.slice_thickness is not None else study.slice_spacing)
    pm.SpacingBetweenSlices = ds_value(study.slice_spacing)
    shared.PixelMeasuresSequence = [pm]
    po = Dataset()
    po.ImageOrientationPatient = [ds_value(v) for v in iop]
    shared.PlaneOrientationSequence = [po]
    timing = Dataset()
    timing.RepetitionTime = float(opts.get("repetition_time", 3.0))
    timing.FlipAngle = float(opts.get("flip_angle", 60.0))
    timing.EchoTrainLength = 1
    shared.MRTimingAndRelatedParametersSequence = [timing]
    echo = Dataset()
    echo.EffectiveEchoTime = float(opts.get("echo_time", 1.5))
    shared.MREchoSequence = [echo]
    ft = Dataset()
    ft.FrameType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ft.PixelPresentation = "MONOCHROME"
    ft.VolumetricProperties = "VOLUME"
    ft.VolumeBasedCalculationTechnique = "NONE"
    ft.ComplexImageComponent = "MAGNITUDE"
    ft.AcquisitionContrast = "MIXED"
    shared.MRImageFrameTypeSequence = [ft]
    pvt = Dataset()
    pvt.RescaleIntercept = ds_value(enc.intercept)
    pvt.RescaleSlope = ds_value(enc.slope)
    pvt.RescaleType = "US"
    shared.PixelValueTransformationSequence = [pvt]
    ds.SharedFunctionalGroupsSequence = [shared]

    if frame_order == "slice-major":
        order = [(s, t) for s in range(n_s) for t in range(n_t)]
    else:
        order = [(s, t) for t in range(n_t) for s in range(n_s)]
    per_frame = []
    frames = np.empty((len(order), rows, cols), dtype="<u2")
    for i, (s, t) in enumerate(order):
        _, ipp, _ = dicom_geometry(study.affine, s)
        tt = float(study.trigger_times[s, t])
        rr = float(study.rr_intervals[s])
        acq_time = t0 + 20.0 * s
        fg = Dataset()
        fc = Dataset()
        fc.StackID = "1"
        fc.InStackPositionNumber = s + 1
        fc.TemporalPositionIndex = t + 1
        fc.DimensionIndexValues = [1, s + 1, t + 1]
        fc.FrameAcquisitionDateTime = f"{ds.AcquisitionDate}{time_str(acq_time + tt / 1000.0)}"
        fc.FrameReferenceDateTime = fc.FrameAcquisitionDateTime
        fc.FrameAcquisitionDuration = 40.0
        fg.FrameContentSequence = [fc]
        pp = Dataset()
        pp.ImagePositionPatient = [ds_value(v) for v in ipp]
        fg.PlanePositionSequence = [pp]
        cs = Dataset()
        cs.NominalPercentageOfCardiacPhase = 100.0 * tt / rr if rr > 0 else 0.0
        cs.NominalCardiacTriggerDelayTime = tt
        cs.ActualCardiacTriggerDelayTime = tt
        cs.RRIntervalTimeNominal = rr
        cs.HeartRate = int(round(60000.0 / rr)) if rr > 0 else 0
        fg.CardiacSynchronizationSequence = [cs]
        per_frame.append(fg)
        frames[i] = enc.encode(study.pixels[s, t])
    ds.PerFrameFunctionalGroupsSequence = per_frame
    set_image_pixel(ds, rows, cols, enc, frames)
    apply_extra(ds, opts)
    name = filename or f"MR{int(series_number):04d}_enhanced.dcm"
    return atomic_save(ds, Path(out_dir) / name)


def write_dicom(
    study: CineStudy,
    out_dir: str | Path,
    layout: DicomLayout | str = DicomLayout.SERIES_PER_SLICE,
    *,
    series_number: int = 10,
    subfolders: bool = True,
    **options: Any,
) -> list[Path]:
    """Write ``study`` under ``out_dir`` in ``layout``; returns the files written.

    ``series_number`` is the (first) SeriesNumber; with ``series-per-slice``
    slice k gets ``series_number + k`` and, when ``subfolders``, its own
    folder ``SE<number>``. Other ``options`` go to ``write_series`` /
    ``write_enhanced`` (header overrides, ``extra``, ``acquisition_time``,
    ``frame_order`` for enhanced).
    """
    layout = DicomLayout(layout)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enc = options.pop("encoding", None) or pixel_encoding(study.pixels)
    if layout is DicomLayout.ENHANCED:
        return [write_enhanced(study, out, series_number=series_number, encoding=enc, **options)]
    if layout in (DicomLayout.SINGLE_SERIES_SLICE_MAJOR, DicomLayout.SINGLE_SERIES_PHASE_MAJOR):
        order = "slice-major" if layout is DicomLayout.SINGLE_SERIES_SLICE_MAJOR else "phase-major"
        return write_series(study, out, series_number=series_number, instance_order=order, encoding=enc, **options)
    t0 = parse_time(options.pop("acquisition_time", None))
    paths: list[Path] = []
    for s in range(study.n_slices):
        number = series_number + s
        folder = out / f"SE{number:04d}" if subfolders else out
        # The slice's own series UID when the study has one per slice, else a new one.
        paths += write_series(
            study, folder, slices=[s], series_number=number, acquisition_time=t0 + 20.0 * s, encoding=enc, **options
        )
    return paths
