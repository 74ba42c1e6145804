"""Heart localisation from cine motion and shape (no segmentation model is available).

1. Motion: the temporal standard deviation of each slice is large where the
   ventricles beat; its smoothed sum over slices peaks near the ventricles.
2. Shape: near that peak, the LV cavity is the brightest disk inside a dark
   ring (blood pool inside myocardium) of the time-averaged image whose rim
   moves; the RV cavity is a crescent and fits a disk poorly, and static
   round structures (aorta, stomach) have no moving rim.
3. Per slice: the best disk score within one cavity radius of the global
   centre; a robust straight line through these centres is the LV axis, and a
   slice keeps its own centre only when it lies near that line.
The slices that hold the LV are those whose best disk score reaches a
fraction of the best slice's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

from stran.io.study import CineStudy


@dataclass(frozen=True)
class HeartLocation:
    """Where the LV is: per-slice centre (row, column) in study pixels, and LV coverage."""

    centers: np.ndarray  # (S, 2) float, (row, column) pixel coordinates of the LV centre per slice
    lv_slices: np.ndarray  # (S,) bool, slices that contain a beating LV
    presence: np.ndarray  # (S,) float in [0, 1], LV blood-pool score per slice relative to the best slice


def _robust_scale(img: np.ndarray) -> float:
    lo, hi = np.percentile(img, [1.0, 99.0])
    return float(hi - lo) if hi > lo else 1.0


def _motion_maps(study: CineStudy) -> np.ndarray:
    """Per-slice temporal std, each slice normalised by its own intensity range: (S, H, W)."""
    px = study.pixels
    scales = np.array([_robust_scale(px[s]) for s in range(study.n_slices)], dtype=np.float32)
    return px.std(axis=1) / scales[:, None, None]


def _disk_kernel(radius_px: tuple[float, float], inner: float = 0.0) -> np.ndarray:
    """Normalised disk (``inner`` = 0) or annulus (``inner`` = inner radius as a fraction of the outer) kernel."""
    ry, rx = radius_px
    ny, nx = int(np.ceil(ry)), int(np.ceil(rx))
    yy, xx = np.mgrid[-ny : ny + 1, -nx : nx + 1]
    d = np.hypot(yy / ry, xx / rx)
    k = ((d <= 1.0) & (d > inner)).astype(np.float32)
    return k / k.sum()


def blood_pool_score(
    mean_img: np.ndarray, motion: np.ndarray, spacing: tuple[float, float], radii_mm: tuple[float, ...]
) -> np.ndarray:
    """Per pixel, best over ``radii_mm``: (mean of a disk - mean of the 8 mm ring around it) x motion on its rim.

    The LV cavity is a bright disk in a dark myocardial ring whose rim (the
    endocardium) moves; a static bright structure (aorta, stomach) has no
    moving rim, and the RV crescent fits a disk poorly.
    """
    best = np.zeros(mean_img.shape, dtype=np.float32)
    for r in radii_mm:
        disk = signal.fftconvolve(mean_img, _disk_kernel((r / spacing[0], r / spacing[1])), mode="same")
        outer = ((r + 8.0) / spacing[0], (r + 8.0) / spacing[1])
        ring = signal.fftconvolve(mean_img, _disk_kernel(outer, inner=r / (r + 8.0)), mode="same")
        rim_outer = ((r + 6.0) / spacing[0], (r + 6.0) / spacing[1])
        rim = signal.fftconvolve(motion, _disk_kernel(rim_outer, inner=max(r - 6.0, 0.0) / (r + 6.0)), mode="same")
        best = np.maximum(best, (np.clip(disk - ring, 0, None) * np.clip(rim, 0, None)).astype(np.float32))
    return best


def localize_heart(
    study: CineStudy,
    *,
    cavity_radius_mm: float = 20.0,
    search_mm: float = 50.0,
    presence_fraction: float = 0.1,
    snap_mm: float = 6.0,
) -> HeartLocation:
    """Find the LV centre in every slice and the slices that contain a beating LV."""
    spacing = study.pixel_spacing  # (row, column) mm
    rows, cols = np.ogrid[: study.matrix[0], : study.matrix[1]]

    def within(center: tuple[float, float], mm: float) -> np.ndarray:
        return np.hypot((rows - center[0]) * spacing[0], (cols - center[1]) * spacing[1]) <= mm

    motion = _motion_maps(study)
    sigma_px = (cavity_radius_mm / spacing[0], cavity_radius_mm / spacing[1])
    smooth = ndimage.gaussian_filter(motion.sum(axis=0), sigma_px, mode="constant")
    motion_peak = tuple(float(v) for v in np.unravel_index(int(np.argmax(smooth)), smooth.shape))

    means = study.pixels.mean(axis=1)
    radii = (10.0, 15.0, 20.0, 25.0, 30.0)
    scores = np.stack(
        [blood_pool_score(means[s] / _robust_scale(means[s]), motion[s], spacing, radii) for s in range(study.n_slices)]
    )
    total = np.where(within(motion_peak, search_mm), scores.sum(axis=0), -np.inf)
    global_center = tuple(float(v) for v in np.unravel_index(int(np.argmax(total)), total.shape))

    near = within(global_center, cavity_radius_mm)
    raw = np.empty((study.n_slices, 2))
    presence = np.empty(study.n_slices)
    for s in range(study.n_slices):
        local = np.where(near, scores[s], -np.inf)
        raw[s] = np.unravel_index(int(np.argmax(local)), local.shape)
        presence[s] = local.max()
    presence = presence / presence.max() if presence.max() > 0 else presence
    lv_slices = presence >= presence_fraction
    line = _fit_axis(raw, lv_slices, global_center)
    # keep a slice's own centre when it is near the axis (breath-hold shifts), else the axis
    offset_mm = np.hypot((raw[:, 0] - line[:, 0]) * spacing[0], (raw[:, 1] - line[:, 1]) * spacing[1])
    centers = np.where(((offset_mm <= snap_mm) & lv_slices)[:, None], raw, line)
    return HeartLocation(centers=centers, lv_slices=lv_slices, presence=presence)


def _fit_axis(raw: np.ndarray, lv_slices: np.ndarray, fallback: tuple[float, float]) -> np.ndarray:
    """Robust straight-line fit (Theil-Sen) of the per-slice centres along the stack.

    Breath-hold misregistration and scoring noise move single slices by a few
    millimetres; the line keeps every slice near the LV axis and extends it to
    slices outside the LV coverage.
    """
    n = raw.shape[0]
    idx = np.nonzero(lv_slices & ~np.isnan(raw[:, 0]))[0]
    if idx.size == 0:
        return np.tile(np.asarray(fallback, dtype=np.float64), (n, 1))
    if idx.size < 3:
        return np.tile(np.nanmedian(raw[idx], axis=0), (n, 1))
    out = np.empty((n, 2))
    k = np.arange(n, dtype=np.float64)
    i, j = np.triu_indices(idx.size, k=1)
    for axis in range(2):
        y = raw[idx, axis]
        slope = float(np.median((y[j] - y[i]) / (idx[j] - idx[i])))
        intercept = float(np.median(y - slope * idx))
        out[:, axis] = intercept + slope * k
    return out
