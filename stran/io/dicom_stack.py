"""Per-slice timing, consistency checks and the stack affine for a planned cine stack (used by ``dicom_group``)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from stran.io.dicom_scan import Frame
from stran.io.errors import InconsistentGeometryError, TruncatedFileError, UnreadablePixelDataError
from stran.io.geometry import affine_from_dicom

ORIENTATION_TOLERANCE_DEG = 10.0
SPACING_TOLERANCE_MM = 1e-3


@dataclass
class SlicePlan:
    position: float  # mm along the stack normal
    frames: list[Frame]  # in phase order
    trigger_times: np.ndarray  # ms, one per frame
    rr: float  # ms
    series_uid: str
    target_times: np.ndarray | None = None  # set when the slice must be resampled to the common phase count

    @property
    def resample(self) -> bool:
        return self.target_times is not None


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two planes' normals (sign-free), degrees."""
    c = abs(float(np.dot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(min(1.0, c))))


def describe(frame: Frame) -> str:
    desc = f"series {frame.series_number}" if frame.series_number is not None else f"series {frame.series_uid or '?'}"
    return f"{desc} '{frame.series_description}'" if frame.series_description else desc


def files_of(frames: list[Frame], limit: int = 50) -> list[str]:
    return list(dict.fromkeys(f.path for f in frames))[:limit]


def phase_key_count(frames: list[Frame]) -> int:
    """Distinct phases among ``frames`` (trigger times, else one per image)."""
    keys = {f.trigger_time if f.trigger_time is not None else (f.temporal_index, f.sop_uid, f.frame) for f in frames}
    return len(keys)


def order_phases(pos: float, frames: list[Frame], notes: list[str]) -> tuple[list[Frame], np.ndarray, float]:
    """Phase order (by trigger time), trigger times (ms) and RR (ms) of one slice."""
    if all(f.trigger_time is not None for f in frames):
        frames = sorted(frames, key=lambda f: (f.trigger_time, f.frame))
        times = np.array([f.trigger_time for f in frames], dtype=np.float64)
        synthetic = False
    elif all(f.temporal_index is not None for f in frames):
        frames = sorted(frames, key=lambda f: f.temporal_index)
        notes.append(f"Slice at {pos:+.1f} mm has no trigger times; phases ordered by temporal position index.")
        synthetic = True
    else:
        frames = sorted(frames, key=lambda f: (f.instance_number is None, f.instance_number or 0, f.path, f.frame))
        notes.append(
            f"Slice at {pos:+.1f} mm has no trigger times; phases ordered by InstanceNumber (check the order)."
        )
        synthetic = True
    rrs = [f.nominal_interval for f in frames if f.nominal_interval and f.nominal_interval > 0]
    hrs = [f.heart_rate for f in frames if f.heart_rate and f.heart_rate > 0]
    n = len(frames)
    if rrs:
        rr = float(np.median(rrs))
    elif hrs:
        rr = 60000.0 / float(np.median(hrs))
        notes.append(f"Slice at {pos:+.1f} mm: RR interval taken from HeartRate ({rr:.0f} ms).")
    elif not synthetic and n > 1:
        step = float(np.median(np.diff(times)))
        rr = float(times[-1] + step)
        notes.append(f"Slice at {pos:+.1f} mm: no NominalInterval; RR estimated from trigger times as {rr:.0f} ms.")
    else:
        rr = 1000.0
        notes.append(f"Slice at {pos:+.1f} mm: no RR interval in the headers; assumed {rr:.0f} ms.")
    if synthetic:
        times = np.arange(n, dtype=np.float64) * rr / n
    return frames, times, rr


def check_pixels(frames: list[Frame]) -> None:
    truncated = [f for f in frames if f.pixel.problem == "truncated"]
    if truncated:
        raise TruncatedFileError(
            f"{len(files_of(truncated, 10**9))} file(s) of the cine stack are truncated ({truncated[0].pixel.detail}). "
            "Copy or export them again; nothing was loaded.",
            files_of(truncated),
        )
    bad = [f for f in frames if f.pixel.problem in ("missing", "undecodable")]
    if bad:
        raise UnreadablePixelDataError(
            f"Pixel data of {len(files_of(bad, 10**9))} file(s) of the cine stack cannot be read: {bad[0].pixel.detail}. "
            "Export the series again (uncompressed if possible); nothing was loaded.",
            files_of(bad),
        )


def check_geometry(frames: list[Frame], rep_iop: np.ndarray) -> tuple[float, float]:
    def split(key, fmt: str, what: str) -> None:
        groups: dict[object, list[Frame]] = defaultdict(list)
        for f in frames:
            groups[key(f)].append(f)
        if len(groups) > 1:
            parts = sorted(groups.items(), key=lambda kv: -len(kv[1]))
            desc = "; ".join(
                f"{fmt.format(*k) if isinstance(k, tuple) else k} in {len(v)} images ({describe(v[0])})"
                for k, v in parts
            )
            minority = [f for _, v in parts[1:] for f in v]
            raise InconsistentGeometryError(
                f"Images of the short-axis stack have different {what}: {desc}. A cine stack needs one {what} "
                "throughout; remove the series that does not belong to it (or load it separately).",
                files_of(minority),
            )

    split(lambda f: (f.rows, f.cols), "{}x{}", "matrix size (rows x columns)")
    missing = [f for f in frames if f.pixel_spacing is None]
    if missing:
        raise InconsistentGeometryError("Images of the short-axis stack have no PixelSpacing.", files_of(missing))
    split(
        lambda f: tuple(round(v / SPACING_TOLERANCE_MM) * SPACING_TOLERANCE_MM for v in f.pixel_spacing),
        "{:.3f}x{:.3f} mm",
        "pixel spacing",
    )
    rep_row = rep_iop[:3] / np.linalg.norm(rep_iop[:3])
    rotated = [
        f
        for f in frames
        if np.degrees(np.arccos(np.clip(np.dot(f.iop[:3] / np.linalg.norm(f.iop[:3]), rep_row), -1, 1)))
        > ORIENTATION_TOLERANCE_DEG
    ]
    if rotated:
        raise InconsistentGeometryError(
            f"{len(rotated)} images lie in the short-axis plane but are rotated or flipped in-plane against the rest "
            f"({describe(rotated[0])}): they cannot be stacked without resampling. Remove them or load them separately.",
            files_of(rotated),
        )
    return frames[0].pixel_spacing


def common_phase_grid(slices: list[SlicePlan], notes: list[str]) -> int:
    """The most common phase count; slices with another count get ``target_times`` on the common phase-fraction grid."""
    count_freq = Counter(len(s.frames) for s in slices)
    n_phases = max(count_freq, key=lambda n: (count_freq[n], n))
    reference = [s for s in slices if len(s.frames) == n_phases]
    target = np.median(np.stack([s.trigger_times / s.rr for s in reference]), axis=0)
    for s in slices:
        if len(s.frames) != n_phases:
            s.target_times = target * s.rr
            notes.append(
                f"Slice at {s.position:+.1f} mm has {len(s.frames)} phases, the others {n_phases}: resampled to {n_phases} "
                "by phase fraction (trigger time / RR), circular linear interpolation in time."
            )
    rrs = np.array([s.rr for s in slices])
    if np.ptp(rrs) > 1.0:
        notes.append(
            f"RR interval differs between slices ({rrs.min():.0f}-{rrs.max():.0f} ms, one breath-hold each); "
            "trigger times are kept per slice."
        )
    return n_phases


def stack_affine(
    slices: list[SlicePlan], rep_iop: np.ndarray, pixel_spacing: tuple[float, float], notes: list[str]
) -> np.ndarray:
    """Voxel -> LPS affine of slices ascending along the normal (row x column): spacing from IPP differences."""
    normal = np.cross(rep_iop[:3], rep_iop[3:])
    normal = normal / np.linalg.norm(normal)
    rep = rep_iop.copy()
    rep[:3] /= np.linalg.norm(rep[:3])
    rep[3:] /= np.linalg.norm(rep[3:])
    pos = np.array([s.position for s in slices])
    ipps = np.array([s.frames[0].ipp for s in slices])
    steps = np.diff(pos)
    step_mm = float(np.median(steps))
    irregular = np.abs(steps - step_mm) > max(0.1, 0.05 * step_mm)
    if np.any(irregular):
        notes.append(
            "Irregular slice spacing: steps "
            + ", ".join(f"{d:.2f}" for d in steps)
            + f" mm (median {step_mm:.2f} mm used for the affine; a slice may be missing). Actual positions: "
            + ", ".join(f"{p:+.2f}" for p in pos)
            + " mm."
        )
    total = ipps[-1] - ipps[0]
    in_plane = total - normal * float(np.dot(total, normal))
    step_vec = normal * step_mm + in_plane / (len(slices) - 1)
    predicted = ipps[0] + np.outer(np.arange(len(slices)), step_vec)
    drift = np.linalg.norm((ipps - predicted) - np.outer(np.dot(ipps - predicted, normal), normal), axis=1)
    if drift.max() > 0.5:
        notes.append(
            f"Slice centres are not on one line (in-plane offsets up to {drift.max():.1f} mm); the affine uses the mean step."
        )
    return affine_from_dicom(rep, ipps[0], pixel_spacing, step_vec)
