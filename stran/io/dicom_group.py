"""Group scanned DICOM frames into one short-axis cine stack (no pixels read here).

Our own grouping, because generic readers collapse cine (reference notes
section 2.4). Steps:

1. set aside unreadable files (``dicom_damaged``: left out when the stack is
   complete without them, else ``MissingPhaseError``); drop exact duplicates
   (same SOPInstanceUID and frame) and localizers (ImageType LOCALIZER);
2. cluster images by plane orientation (normals within ``ORIENTATION_TOLERANCE_DEG``)
   and keep the cluster with the most multi-phase slice positions: the SAX
   stack; the rest (long-axis views, localizers) is left out with the angle;
3. one frame of reference, one in-plane orientation;
4. slice positions = ImagePositionPatient projected on the stack normal
   (never SliceLocation or InstanceNumber), clustered within ``POSITION_TOLERANCE_MM``;
5. per position keep the latest acquisition (SeriesNumber, then
   AcquisitionTime) when a breath-hold was repeated;
6. phases ordered by trigger time within each slice; RR per slice from
   NominalInterval (or RRIntervalTimeNominal, HeartRate, else estimated);
7. slices with another phase count are marked for resampling to the most
   common count by phase fraction;
8. slices ordered along the normal; spacing from IPP differences (irregular
   gaps noted); the affine from ``geometry.affine_from_dicom``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from stran.io.dicom_damaged import check_complete, split_damaged
from stran.io.dicom_scan import Frame, ScanResult
from stran.io.dicom_stack import (
    ORIENTATION_TOLERANCE_DEG,
    SlicePlan,
    angle_deg,
    check_geometry,
    check_pixels,
    common_phase_grid,
    describe,
    files_of,
    order_phases,
    phase_key_count,
    stack_affine,
)
from stran.io.errors import (
    AmbiguousStackError,
    MixedFrameOfReferenceError,
    NoCineSeriesError,
    SinglePhaseError,
    SingleSliceError,
)
from stran.io.study import LeftOutFile

TILT_NOTE_DEG = 1.0
POSITION_TOLERANCE_MM = 0.5

__all__ = ["SlicePlan", "StackPlan", "plan_stack"]


@dataclass
class StackPlan:
    slices: list[SlicePlan]
    affine: np.ndarray
    rows: int
    cols: int
    n_phases: int
    slice_thickness: float | None
    left_out: list[LeftOutFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return len(self.slices), self.n_phases, self.rows, self.cols

    @property
    def frames(self) -> list[Frame]:
        return [f for s in self.slices for f in s.frames]


class _LeftOut:
    """Collects left-out frames per (file, reason), one entry per file."""

    def __init__(self, initial: list[LeftOutFile]) -> None:
        self.entries = list(initial)
        self._frames: dict[tuple[str, str], list[Frame]] = defaultdict(list)

    def add(self, frame: Frame, reason: str) -> None:
        self._frames[(frame.path, reason)].append(frame)

    def result(self) -> list[LeftOutFile]:
        out = list(self.entries)
        for (path, reason), frames in self._frames.items():
            if frames[0].multiframe:
                reason = f"{reason} ({len(frames)} of {frames[0].pixel.n_frames} frames)"
            out.append(LeftOutFile(path, reason))
        return sorted(out, key=lambda e: e.path)


def _orientation_clusters(frames: list[Frame]) -> list[tuple[np.ndarray, list[Frame]]]:
    """Greedy clusters of frames whose normals are within tolerance of the cluster's most common orientation."""
    by_iop: dict[tuple, list[Frame]] = defaultdict(list)
    for f in frames:
        by_iop[tuple(np.round(f.iop, 3))].append(f)
    clusters: list[tuple[np.ndarray, list[Frame]]] = []
    for _, members in sorted(by_iop.items(), key=lambda kv: -len(kv[1])):
        iop = members[0].iop
        for rep, cluster in clusters:
            if angle_deg(np.cross(rep[:3], rep[3:]), np.cross(iop[:3], iop[3:])) <= ORIENTATION_TOLERANCE_DEG:
                cluster.extend(members)
                break
        else:
            clusters.append((iop, list(members)))
    return clusters


def _unit_vector(iop: np.ndarray) -> np.ndarray:
    n = np.cross(iop[:3], iop[3:])
    return n / np.linalg.norm(n)


def _positions(frames: list[Frame], normal: np.ndarray) -> list[tuple[float, list[Frame]]]:
    """Frames grouped by their position along ``normal`` (clusters within the tolerance), ascending."""
    if not frames:
        return []
    proj = np.array([float(np.dot(f.ipp, normal)) for f in frames])
    order = np.argsort(proj, kind="stable")
    groups: list[list[int]] = [[int(order[0])]]
    for a, b in zip(order[:-1], order[1:], strict=True):
        if proj[b] - proj[a] > POSITION_TOLERANCE_MM:
            groups.append([])
        groups[-1].append(int(b))
    return [(float(np.median(proj[g])), [frames[i] for i in g]) for g in groups]


def _cluster_score(cluster: list[Frame], rep: np.ndarray) -> tuple[int, int]:
    positions = _positions(cluster, _unit_vector(rep))
    return sum(1 for _, fs in positions if phase_key_count(fs) > 1), len(cluster)


def _acq_key(frames: list[Frame]) -> tuple:
    f = frames[0]
    return (
        f.series_number if f.series_number is not None else -1,
        f.acquisition_date,
        f.acquisition_time if f.acquisition_time is not None else -1.0,
        f.acquisition_number if f.acquisition_number is not None else -1,
    )


def _has_duplicate_times(frames: list[Frame]) -> bool:
    times = [round(f.trigger_time, 2) for f in frames if f.trigger_time is not None]
    return len(times) != len(set(times))


def _latest(pos: float, units: dict[tuple, list[Frame]], out: _LeftOut, notes: list[str]) -> list[Frame]:
    groups = list(units.values())
    if any(phase_key_count(u) > 1 for u in groups):  # a lone image never replaces a cine acquisition
        for u in groups:
            if phase_key_count(u) <= 1:
                for f in u:
                    out.add(f, f"single image at slice position {pos:+.1f} mm, not a cine ({describe(f)})")
        groups = [u for u in groups if phase_key_count(u) > 1]
    ordered = sorted(groups, key=_acq_key)
    kept = ordered[-1]
    if len(ordered) > 1:
        for unit in ordered[:-1]:
            for f in unit:
                out.add(
                    f,
                    f"earlier acquisition of slice {pos:+.1f} mm ({describe(f)}), replaced by the later {describe(kept[0])}",
                )
        notes.append(
            f"Slice at {pos:+.1f} mm was acquired {len(ordered)} times "
            f"({', '.join(describe(u[0]) for u in ordered)}); kept the latest ({describe(kept[0])})."
        )
    return kept


def _pick_acquisition(pos: float, frames: list[Frame], out: _LeftOut, notes: list[str]) -> list[Frame]:
    """One acquisition per slice position: the latest by SeriesNumber, then AcquisitionTime."""
    units: dict[tuple, list[Frame]] = defaultdict(list)
    for f in frames:
        units[(f.series_uid, f.path if f.multiframe else "")].append(f)
    kept = _latest(pos, units, out, notes)
    if not _has_duplicate_times(kept):
        return kept
    # Repeated within one series: split by acquisition number / time.
    units = defaultdict(list)
    for f in kept:
        units[(f.acquisition_number, f.acquisition_time)].append(f)
    if len(units) == 1 or any(_has_duplicate_times(u) for u in units.values()):
        times = Counter(round(f.trigger_time, 2) for f in kept if f.trigger_time is not None)
        dup = [f for f in kept if f.trigger_time is not None and times[round(f.trigger_time, 2)] > 1]
        raise AmbiguousStackError(
            f"At slice position {pos:+.1f} mm, {len(dup)} images of {describe(kept[0])} share trigger times and "
            "nothing (series, acquisition number or time) tells which acquisition they belong to. "
            "Remove the duplicated images or export the repeated acquisition as its own series.",
            files_of(dup),
        )
    return _latest(pos, units, out, notes)


def plan_stack(scan: ScanResult, source: str) -> StackPlan:
    """Decide which frames form the cine stack and how; raises a ``CineLoadError`` subclass when it cannot."""
    out = _LeftOut(scan.left_out)
    notes: list[str] = []
    seen: dict[tuple, Frame] = {}
    candidates: list[Frame] = []
    readable, damaged = split_damaged(scan)
    for f in readable:
        # An identical copy: same SOPInstanceUID, frame, position and trigger time.
        key = (f.sop_uid or f.path, f.frame, tuple(np.round(f.ipp, 2)), f.trigger_time)
        if key in seen:
            out.add(f, f"duplicate of {seen[key].path} (same SOPInstanceUID)")
        elif "LOCALIZER" in f.image_type:
            seen[key] = f
            out.add(f, f"localizer (ImageType LOCALIZER, {describe(f)})")
        else:
            seen[key] = f
            candidates.append(f)
    if not candidates:
        reasons = Counter(e.reason.split(" (")[0] for e in out.result())
        summary = ", ".join(f"{n} {r}" for r, n in reasons.most_common(6)) or "no files at all"
        broken = f"; {len(damaged)} unreadable DICOM file(s)" if damaged else ""
        raise NoCineSeriesError(
            f"No cine MR images found in {source}: {scan.n_files} file(s) scanned ({summary}{broken}). "
            "Point to the folder or file that holds the short-axis cine series.",
            [e.path for e in out.result()][:20] + [d.path for d in damaged][:20],
        )

    clusters = _orientation_clusters(candidates)
    rep_iop, stack = max(clusters, key=lambda c: _cluster_score(c[1], c[0]))
    normal = _unit_vector(rep_iop)
    for iop, members in clusters:
        if members is stack:
            continue
        angle = angle_deg(normal, _unit_vector(iop))
        for f in members:
            out.add(
                f, f"orientation {angle:.0f} deg off the short-axis stack (localizer or long-axis view, {describe(f)})"
            )

    fors: dict[str, list[Frame]] = defaultdict(list)
    for f in stack:
        fors[f.frame_of_reference].append(f)
    if len(fors) > 1:
        desc = "; ".join(f"{uid or '(none)'}: {len(v)} images ({describe(v[0])})" for uid, v in fors.items())
        raise MixedFrameOfReferenceError(
            f"The short-axis images come from {len(fors)} frames of reference ({desc}): they were not acquired in one "
            "scanner session and position. Put each study in its own folder and load them separately.",
            [v[0].path for v in fors.values()] + files_of(stack),
        )

    slices: list[SlicePlan] = []
    for pos, frames in _positions(stack, normal):
        kept = _pick_acquisition(pos, frames, out, notes)
        slices.append(SlicePlan(pos, kept, np.empty(0), 0.0, kept[0].series_uid))

    counts = [phase_key_count(s.frames) for s in slices]
    if max(counts) <= 1:
        raise SinglePhaseError(
            f"Every slice position ({len(slices)}) has a single image: no cardiac phases, so this is not a cine "
            f"acquisition ({describe(stack[0])}). Load the cine series (several phases per slice), not a localizer "
            "or a static stack.",
            files_of(stack),
        )
    if len(slices) > 1:
        lonely = [s for s, c in zip(slices, counts, strict=True) if c == 1]
        for s in lonely:
            for f in s.frames:
                out.add(f, f"single image at slice position {s.position:+.1f} mm, not a cine ({describe(f)})")
            notes.append(f"Left out a single (non-cine) image at slice position {s.position:+.1f} mm.")
        slices = [s for s, c in zip(slices, counts, strict=True) if c > 1]
    if len(slices) < 2:
        s = slices[0]
        raise SingleSliceError(
            f"Only one slice position ({s.position:+.1f} mm, {len(s.frames)} phases, {describe(s.frames[0])}) was found: "
            "a short-axis cine stack needs at least two slices. This looks like a single-slice (e.g. long-axis) cine; "
            "load the folder with the complete short-axis stack.",
            files_of(s.frames),
        )

    kept_frames = [f for s in slices for f in s.frames]
    check_pixels(kept_frames)
    pixel_spacing = check_geometry(kept_frames, rep_iop)
    tilts = [angle_deg(normal, f.normal) for f in kept_frames]
    if max(tilts) > TILT_NOTE_DEG:
        notes.append(
            f"Some slices are tilted up to {max(tilts):.1f} deg against the stack orientation; stacked with one orientation."
        )

    for s in slices:
        s.frames, s.trigger_times, s.rr = order_phases(s.position, s.frames, notes)
        expected = Counter(f.cardiac_images for f in s.frames if f.cardiac_images).most_common(1)
        if expected and expected[0][0] > len(s.frames):
            notes.append(
                f"Slice at {s.position:+.1f} mm has {len(s.frames)} images but CardiacNumberOfImages is "
                f"{expected[0][0]}: images may be missing."
            )
    out.entries += check_complete(
        slices, damaged, normal, tolerance_mm=POSITION_TOLERANCE_MM, max_angle_deg=ORIENTATION_TOLERANCE_DEG
    )

    n_phases = common_phase_grid(slices, notes)
    affine = stack_affine(slices, rep_iop, pixel_spacing, notes)
    thickness = [f.slice_thickness for f in kept_frames if f.slice_thickness]
    plan = StackPlan(
        slices=slices,
        affine=affine,
        rows=kept_frames[0].rows,
        cols=kept_frames[0].cols,
        n_phases=n_phases,
        slice_thickness=float(np.median(thickness)) if thickness else None,
        left_out=out.result(),
        notes=notes,
    )
    return plan
