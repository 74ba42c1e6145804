"""Small synthetic cine studies for I/O tests and benchmarks.

Not the phantom cohort (that is ``stran.phantom``): this is the smallest
thing that looks like a SAX cine to a loader: a stack of slices with a
beating bright blood pool inside a darker myocardial ring, per-slice RR,
realistic DICOM-like geometry and identity. Integer-valued pixels by default
so DICOM round trips are exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stran.io.study import Acquisition, CineStudy

# A typical oblique short-axis orientation (row, column direction cosines, LPS).
SAX_ANGLES_DEG = (-35.0, 30.0, 15.0)


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation R = Rz(c) @ Ry(b) @ Rx(a) for angles (a, b, c) in degrees."""
    a, b, c = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def orientation_from_angles(angles_deg: Sequence[float]) -> np.ndarray:
    """ImageOrientationPatient (row cosines, column cosines) of axial rotated by ``angles_deg``."""
    r = rotation_matrix(angles_deg)
    return np.concatenate([r[:, 0], r[:, 1]])


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["|".join(str(p) for p in parts)]))


def _contraction(fraction: np.ndarray) -> np.ndarray:
    """0 at end-diastole, 1 at end-systole (~0.35 RR), smooth, periodic."""
    f = np.mod(fraction, 1.0)
    systole = np.sin(np.pi * np.clip(f / 0.7, 0.0, 1.0)) ** 2
    return np.where(f < 0.7, systole, 0.0)


def ring_pixels(
    n_slices: int,
    fractions: np.ndarray,
    rows: int,
    cols: int,
    *,
    max_value: float = 1000.0,
    noise: float = 10.0,
    seed: int = 0,
    integer: bool = True,
) -> np.ndarray:
    """(S, T, rows, cols) float32: background, myocardial ring, beating blood pool; radius tapers along S."""
    rng = np.random.default_rng(seed)
    s_count, t_count = fractions.shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    out = np.empty((s_count, t_count, rows, cols), dtype=np.float32)
    base_r = 0.18 * min(rows, cols)
    for s in range(s_count):
        taper = 1.0 - 0.5 * (s / max(n_slices - 1, 1))
        cy = rows / 2.0 + 1.5 * np.sin(s)
        cx = cols / 2.0 + 1.5 * np.cos(s)
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        for t in range(t_count):
            c = float(_contraction(fractions[s, t]))
            r_endo = base_r * taper * (1.0 - 0.35 * c)
            wall = 0.4 * base_r * taper * (1.0 + 0.5 * c)
            img = np.full((rows, cols), 0.08 * max_value, dtype=np.float32)
            img[r2 <= (r_endo + wall) ** 2] = 0.25 * max_value
            img[r2 <= r_endo**2] = 0.75 * max_value
            out[s, t] = img
    if noise:
        out += rng.normal(0.0, noise, size=out.shape).astype(np.float32)
    np.clip(out, 0.0, max_value, out=out)
    if integer:
        np.rint(out, out=out)
    return out


def make_cine_study(
    n_slices: int = 4,
    n_phases: int = 6,
    rows: int = 32,
    cols: int = 40,
    *,
    pixel_spacing: tuple[float, float] = (1.5, 1.5),
    slice_spacing: float = 8.0,
    slice_thickness: float | None = None,
    angles_deg: Sequence[float] = SAX_ANGLES_DEG,
    iop: Sequence[float] | None = None,
    origin: Sequence[float] = (-30.0, -60.0, 40.0),
    reverse_normal: bool = False,
    rr_interval: float = 900.0,
    rr_jitter: float = 0.0,
    trigger_jitter_ms: float = 0.0,
    first_trigger_ms: float = 0.0,
    integer: bool = True,
    max_value: float = 1000.0,
    noise: float = 10.0,
    seed: int = 0,
    series: str = "per-slice",
    with_uids: bool = True,
    patient_id: str = "STRAN-TEST-001",
    vendor: str = "SIEMENS",
    field_strength: float = 1.5,
    sequence: str = "tfi2d1_25",
    model: str = "Aera",
) -> CineStudy:
    """A small cine-like CineStudy.

    ``rr_jitter`` is the relative per-slice RR spread (each breath-hold its own
    heart rate; RR values are rounded to whole ms as DICOM NominalInterval is an
    integer). ``trigger_jitter_ms`` adds per-image jitter to trigger times.
    ``iop`` (ImageOrientationPatient) overrides ``angles_deg``. ``reverse_normal`` makes the slice step point against row x column, so
    slice 0 is the highest along the DICOM normal. ``series``: "per-slice"
    (one SeriesInstanceUID per slice) or "single" (one for all slices).
    """
    rng = np.random.default_rng(seed + 1)
    iop = orientation_from_angles(angles_deg) if iop is None else np.asarray(iop, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    step = normal * slice_spacing * (-1.0 if reverse_normal else 1.0)
    from stran.io.geometry import affine_from_dicom

    affine = affine_from_dicom(iop, np.asarray(origin, dtype=np.float64), pixel_spacing, step)

    rr = np.full(n_slices, float(rr_interval))
    if rr_jitter:
        rr = np.rint(rr * (1.0 + rng.uniform(-rr_jitter, rr_jitter, n_slices)))
    base = np.arange(n_phases, dtype=np.float64)[None, :] / n_phases
    trigger = first_trigger_ms + base * rr[:, None]
    if trigger_jitter_ms:
        trigger = trigger + rng.uniform(-trigger_jitter_ms, trigger_jitter_ms, trigger.shape)
        trigger[:, 0] = np.maximum(trigger[:, 0], 0.0)
        trigger = np.round(trigger, 3)
    fractions = trigger / rr[:, None]
    pixels = ring_pixels(n_slices, fractions, rows, cols, max_value=max_value, noise=noise, seed=seed, integer=integer)

    study_uid, series_uids, sop_uids = "", [], None
    if with_uids:
        study_uid = _uid("study", seed, patient_id)
        if series == "single":
            series_uids = [_uid("series", seed, study_uid)] * n_slices
        else:
            series_uids = [_uid("series", seed, study_uid, s) for s in range(n_slices)]
        sop_uids = np.array(
            [[_uid("sop", seed, study_uid, s, t) for t in range(n_phases)] for s in range(n_slices)], dtype=object
        )
    return CineStudy(
        pixels=pixels,
        affine=affine,
        trigger_times=trigger,
        rr_interval=float(np.median(rr)),
        rr_intervals=rr,
        study_uid=study_uid,
        series_uids=series_uids,
        patient_id=patient_id,
        sop_uids=sop_uids,
        acquisition=Acquisition(vendor=vendor, field_strength=field_strength, sequence=sequence, model=model),
        slice_thickness=float(slice_thickness if slice_thickness is not None else min(8.0, slice_spacing)),
        source="synthetic",
    )
