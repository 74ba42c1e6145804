"""Unreadable files in a study folder: left out when the cine is complete without them, else a named error.

The rule (one loader, one rule for every entry point): a file that cannot be read to the end (a truncated or
corrupt DICOM file, or one whose pixel data are missing or cut short) is set aside before the stack is planned.
When the planned stack is complete (every slice has every phase), the file is left out with its reason. When a
slice lacks a phase that such a file would have held, loading fails with ``MissingPhaseError`` naming the slice,
the phase and the unreadable file. Enhanced MR multi-frame files are one unit and keep their own checks
(``dicom_stack.check_pixels``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stran.io.dicom_scan import Frame, ScanResult
from stran.io.dicom_stack import SlicePlan, angle_deg, describe
from stran.io.errors import MissingPhaseError
from stran.io.study import LeftOutFile

TRIGGER_MATCH_MS = 1.0


@dataclass
class DamagedFile:
    """A file set aside before planning: why, its series if known, and its image if its header was readable."""

    path: str
    detail: str
    series_uid: str | None
    frame: Frame | None = None


def split_damaged(scan: ScanResult) -> tuple[list[Frame], list[DamagedFile]]:
    """Readable frames, and the damaged files (header unreadable, or single-frame pixel data that cannot be read)."""
    damaged = [DamagedFile(b.path, b.detail, b.series_uid) for b in scan.broken]
    good = []
    for f in scan.frames:
        if f.pixel.problem and not f.multiframe:
            detail = f.pixel.detail or f"pixel data {f.pixel.problem}"
            detail = f"truncated: {detail}" if f.pixel.problem == "truncated" else detail
            damaged.append(DamagedFile(f.path, detail, f.series_uid or None, f))
        else:
            good.append(f)
    return good, damaged


def _reference_fractions(slices: list[SlicePlan], n_full: int) -> np.ndarray:
    full = [s.trigger_times / s.rr for s in slices if len(s.frames) == n_full]
    return np.median(np.stack(full), axis=0)


def _missing_phases(s: SlicePlan, reference: np.ndarray) -> list[int]:
    """Phase indices of the reference grid that slice ``s`` lacks (the ones farthest from any of its phases)."""
    own = np.mod(s.trigger_times / s.rr, 1.0)
    dist = np.abs(reference[:, None] - own[None, :])
    dist = np.minimum(dist, 1.0 - dist).min(axis=1)
    n_missing = len(reference) - len(s.frames)
    return sorted(int(j) for j in np.argsort(-dist, kind="stable")[:n_missing])


def _slice_of(frame: Frame, slices: list[SlicePlan], normal: np.ndarray, tolerance_mm: float,
              max_angle_deg: float) -> int | None:
    if angle_deg(frame.normal, normal) > max_angle_deg:
        return None
    pos = float(np.dot(frame.ipp, normal))
    for i, s in enumerate(slices):
        if abs(pos - s.position) <= tolerance_mm and frame.series_uid in {f.series_uid for f in s.frames}:
            return i
    return None


def check_complete(
    slices: list[SlicePlan],
    damaged: list[DamagedFile],
    normal: np.ndarray,
    *,
    tolerance_mm: float,
    max_angle_deg: float,
) -> list[LeftOutFile]:
    """Raise ``MissingPhaseError`` if a slice lacks phases that damaged files would hold; else their left-out entries.

    ``slices`` are in the study's order with phases ordered (``order_phases`` done).
    """
    if not damaged:
        return []
    n_full = max(len(s.frames) for s in slices)
    short = {i for i, s in enumerate(slices) if len(s.frames) < n_full}
    reference = _reference_fractions(slices, n_full) if short else np.zeros(0)
    missing: list[tuple[int, int, str, str]] = []  # slice, phase, file, detail
    left_out: list[LeftOutFile] = []
    for d in damaged:
        if d.frame is not None:
            i = _slice_of(d.frame, slices, normal, tolerance_mm, max_angle_deg)
            t = d.frame.trigger_time
            in_slice = i is not None and t is not None and np.min(np.abs(slices[i].trigger_times - t)) <= TRIGGER_MATCH_MS
            if i in short and not in_slice:
                frac = np.mod((t if t is not None else 0.0) / slices[i].rr, 1.0)
                dist = np.abs(reference - frac)
                phase = int(np.argmin(np.minimum(dist, 1.0 - dist)))
                missing.append((i, phase, d.path, d.detail))
                continue
        else:
            candidates = [i for i in sorted(short) if d.series_uid is None
                          or d.series_uid in {f.series_uid for f in slices[i].frames}]
            if candidates:
                for i in candidates:
                    missing += [(i, j, d.path, d.detail) for j in _missing_phases(slices[i], reference)]
                continue
        kept_series = {f.series_uid for s in slices for f in s.frames}
        if d.series_uid is not None and d.series_uid not in kept_series:
            left_out.append(LeftOutFile(d.path, f"unreadable DICOM file of another series ({d.detail})"))
        else:
            left_out.append(LeftOutFile(
                d.path, f"unreadable DICOM file ({d.detail}); not needed: every slice of the cine has all its phases"
            ))
    if missing:
        raise _missing_error(slices, missing, n_full)
    return left_out


def _missing_error(slices: list[SlicePlan], missing: list[tuple[int, int, str, str]], n_full: int) -> MissingPhaseError:
    cells = sorted({(i, j) for i, j, _, _ in missing})
    parts = []
    for i, j in cells[:6]:
        s = slices[i]
        files = sorted({(p, detail) for a, b, p, detail in missing if (a, b) == (i, j)})
        path, detail = files[0]
        parts.append(
            f"slice {i + 1} of {len(slices)} (position {s.position:+.1f} mm, {describe(s.frames[0])}) lacks phase "
            f"{j + 1} of {n_full}; the file that should hold it cannot be read: {path} ({detail})"
        )
    more = f"; and {len(cells) - 6} more" if len(cells) > 6 else ""
    return MissingPhaseError(
        "The cine stack is incomplete: " + "; ".join(parts) + more
        + ". Copy or export the unreadable file(s) again (or remove the whole slice's series); nothing was loaded.",
        [p for _, _, p, _ in missing],
        [(i, j, p) for i, j, p, _ in missing],
    )
