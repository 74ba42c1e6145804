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

Localisation needs no pixel finer than ``LOCALIZE_SPACING_MM``: a study
reconstructed on a finer grid (the scanner's 2x interpolation, e.g. 384 x 336 at
0.9 mm) is localised on every k-th pixel, so its cost follows the field of view,
not the matrix. Studies coarser than 1.0 mm (the whole phantom cohort, 1.4-2.2
mm) are localised on every pixel, exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from stran.io.study import CineStudy

LOCALIZE_SPACING_MM = 2.0  # the finest grid localisation works on


def localization_stride(spacing: tuple[float, float]) -> int:
    """Every how many pixels (rows and columns) localisation reads: the largest k with k x spacing <= 2 mm."""
    return max(1, int(np.floor(LOCALIZE_SPACING_MM / max(spacing) + 1e-9)))


@dataclass(frozen=True)
class HeartLocation:
    """Where the LV is: per-slice centre (row, column) in study pixels, and LV coverage."""

    centers: np.ndarray  # (S, 2) float, (row, column) pixel coordinates of the LV centre per slice
    lv_slices: np.ndarray  # (S,) bool, slices that contain a beating LV
    presence: np.ndarray  # (S,) float in [0, 1], LV blood-pool score per slice relative to the best slice


def tail_percentiles(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """``np.percentile(values, [low, high])`` (linear method, the same numbers) without partitioning every value.

    A sorted strided sample says roughly where each percentile lies. When the values there are tied (a
    background of zeros, integer pixel values), two counts show that both order statistics the percentile
    needs are that value; otherwise only the values beyond a threshold a little past the percentile (a few per
    cent) are copied and partitioned. Falls back to ``np.percentile`` when that tail comes out too short.
    """
    flat = values.reshape(-1)
    n = flat.size
    if n < 65536:
        lo, hi = np.percentile(flat, [low, high])
        return float(lo), float(hi)
    sample = np.sort(flat[:: n // 4096])
    last = sample.size - 1
    out = []
    for q, upper in ((low, False), (high, True)):
        virtual = (n - 1) * (q / 100.0)
        k = int(np.floor(virtual))
        ranks = [k, min(k + 1, n - 1)]
        got = _tied_order_statistics(flat, ranks, sample[round(q / 100.0 * last)])
        if got is None:
            beyond = float(np.clip(q / 100.0 + (-0.02 if upper else 0.02), 0.0, 1.0))
            got = _tail_order_statistics(flat, ranks, sample[int(beyond * last)], upper)
        if got is None:
            lo, hi = np.percentile(flat, [low, high])
            return float(lo), float(hi)
        out.append(_lerp(got[0], got[1], virtual - k))
    return out[0], out[1]


def _tied_order_statistics(flat: np.ndarray, ranks: list[int], value: np.floating) -> list | None:
    """``value`` at every rank when all ``ranks`` fall among the values equal to it (counted, not copied)."""
    below = int(np.count_nonzero(flat < value))
    if min(ranks) < below or max(ranks) >= below + int(np.count_nonzero(flat == value)):
        return None
    return [value] * len(ranks)


def _tail_order_statistics(flat: np.ndarray, ranks: list[int], threshold: np.floating, upper: bool) -> list | None:
    """The values at ascending ``ranks`` of ``flat`` found among those beyond ``threshold`` (above it when
    ``upper``, else below) and those equal to it; None when a rank lies outside that tail."""
    beyond = flat[flat > threshold] if upper else flat[flat < threshold]
    first = flat.size - beyond.size if upper else 0  # rank of the first value beyond the threshold
    if all(first <= r < first + beyond.size for r in ranks):
        tied = 0
    else:
        tied = int(np.count_nonzero(flat == threshold))
        first_tied = first - tied if upper else beyond.size
        if not all(first <= r < first + beyond.size or first_tied <= r < first_tied + tied for r in ranks):
            return None
    inner = [r - first for r in ranks if first <= r < first + beyond.size]
    part = np.partition(beyond, inner) if inner else beyond
    return [part[r - first] if first <= r < first + beyond.size else threshold for r in ranks]


def _lerp(a: np.floating, b: np.floating, t: float) -> float:
    """numpy's percentile interpolation, step for step (float32 difference, float64 blend)."""
    diff = float(b - a)
    return float(b) - diff * (1.0 - t) if t >= 0.5 else float(a) + diff * t


def _robust_scale(img: np.ndarray) -> float:
    lo, hi = tail_percentiles(img, 1.0, 99.0)
    return float(hi - lo) if hi > lo else 1.0


def _slice_statistics(px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per slice of ``px`` (S, T, H, W): temporal std normalised by the slice's own intensity range (motion), and
    the temporal mean; both (S, H, W) float32, computed one slice at a time (no full-study temporaries)."""
    motion = np.empty((px.shape[0],) + px.shape[2:], dtype=np.float32)
    means = np.empty_like(motion)
    for s in range(px.shape[0]):
        frames = np.ascontiguousarray(px[s])  # a strided view is gathered once; the reductions need it contiguous
        means[s], std = _mean_and_std(frames)
        motion[s] = std / np.float32(_robust_scale(frames))
    return motion, means


def _mean_and_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x.mean(axis=0)`` and ``x.std(axis=0)``, the same numbers (numpy's own two passes) with one mean."""
    mean = x.mean(axis=0)
    dev = x - mean
    np.multiply(dev, dev, out=dev)
    var = dev.sum(axis=0)
    np.true_divide(var, x.shape[0], out=var)
    return mean, np.sqrt(var, out=var)


def _disk_kernel(radius_px: tuple[float, float], inner: float = 0.0) -> np.ndarray:
    """Normalised disk (``inner`` = 0) or annulus (``inner`` = inner radius as a fraction of the outer) kernel."""
    ry, rx = radius_px
    ny, nx = int(np.ceil(ry)), int(np.ceil(rx))
    yy, xx = np.mgrid[-ny : ny + 1, -nx : nx + 1]
    d = np.hypot(yy / ry, xx / rx)
    k = ((d <= 1.0) & (d > inner)).astype(np.float32)
    return k / k.sum()


class BloodPoolScorer:
    """Per pixel, best over ``radii_mm``: (mean of a disk - mean of the 8 mm ring around it) x motion on its rim.

    The LV cavity is a bright disk in a dark myocardial ring whose rim (the
    endocardium) moves; a static bright structure (aorta, stomach) has no
    moving rim, and the RV crescent fits a disk poorly. Every convolution is
    ``mode="same"`` with zeros outside the image, done by FFT on images of one
    ``shape``: the kernels' spectra are computed once and each image is
    transformed once (the disk minus its ring is one kernel).
    """

    def __init__(self, shape: tuple[int, int], spacing: tuple[float, float], radii_mm: tuple[float, ...]) -> None:
        pairs = []
        for r in radii_mm:
            disk = _disk_kernel((r / spacing[0], r / spacing[1]))
            outer = ((r + 8.0) / spacing[0], (r + 8.0) / spacing[1])
            ring = _disk_kernel(outer, inner=r / (r + 8.0))
            rim_outer = ((r + 6.0) / spacing[0], (r + 6.0) / spacing[1])
            rim = _disk_kernel(rim_outer, inner=max(r - 6.0, 0.0) / (r + 6.0))
            pairs.append((_embed(disk, ring.shape) - ring, rim))
        self.half = (max(k.shape[0] for p in pairs for k in p) // 2, max(k.shape[1] for p in pairs for k in p) // 2)
        self.shape = shape
        self.fft_shape = tuple(sp_fft.next_fast_len(n + 2 * h, real=True) for n, h in zip(shape, self.half, strict=True))
        self.spectra = [tuple(self._spectrum(k) for k in p) for p in pairs]

    def _spectrum(self, kernel: np.ndarray) -> np.ndarray:
        canvas = _embed(kernel, (2 * self.half[0] + 1, 2 * self.half[1] + 1))
        return sp_fft.rfft2(canvas, self.fft_shape)

    def _same(self, spectrum: np.ndarray, kernel_spectrum: np.ndarray) -> np.ndarray:
        full = sp_fft.irfft2(spectrum * kernel_spectrum, self.fft_shape)
        return full[self.half[0] : self.half[0] + self.shape[0], self.half[1] : self.half[1] + self.shape[1]]

    def __call__(self, mean_img: np.ndarray, motion: np.ndarray) -> np.ndarray:
        mean_f = sp_fft.rfft2(mean_img, self.fft_shape)
        motion_f = sp_fft.rfft2(motion, self.fft_shape)
        best = np.zeros(self.shape, dtype=np.float32)
        for contrast_k, rim_k in self.spectra:
            contrast = np.clip(self._same(mean_f, contrast_k), 0, None)
            rim = np.clip(self._same(motion_f, rim_k), 0, None)
            np.maximum(best, contrast * rim, out=best)
        return best


def _embed(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``kernel`` centred in a zero array of the (larger, odd) ``shape``."""
    out = np.zeros(shape, dtype=np.float32)
    r0, c0 = (shape[0] - kernel.shape[0]) // 2, (shape[1] - kernel.shape[1]) // 2
    out[r0 : r0 + kernel.shape[0], c0 : c0 + kernel.shape[1]] = kernel
    return out


def localize_heart(
    study: CineStudy,
    *,
    cavity_radius_mm: float = 20.0,
    search_mm: float = 50.0,
    presence_fraction: float = 0.1,
    snap_mm: float = 6.0,
) -> HeartLocation:
    """Find the LV centre in every slice and the slices that contain a beating LV.

    The blood-pool scores are computed only in a window around the motion peak: what lies within ``search_mm``
    of it plus ``cavity_radius_mm`` (where the per-slice centres may fall) plus the largest kernel's reach, so
    every score that is used sees the same pixels as on the whole image. A study finer than
    ``LOCALIZE_SPACING_MM`` is localised on every ``localization_stride``-th pixel; the centres are given in the
    study's own pixels all the same.
    """
    stride = localization_stride(study.pixel_spacing)
    pixels = study.pixels if stride == 1 else study.pixels[:, :, ::stride, ::stride]
    spacing = (study.pixel_spacing[0] * stride, study.pixel_spacing[1] * stride)  # (row, column) mm of the grid used
    matrix = pixels.shape[2:]
    motion, means = _slice_statistics(pixels)
    sigma_px = (cavity_radius_mm / spacing[0], cavity_radius_mm / spacing[1])
    smooth = ndimage.gaussian_filter(motion.sum(axis=0), sigma_px, mode="constant")
    motion_peak = tuple(float(v) for v in np.unravel_index(int(np.argmax(smooth)), smooth.shape))

    radii = (10.0, 15.0, 20.0, 25.0, 30.0)
    reach = [int(np.ceil((max(radii) + 8.0) / sp)) + 1 for sp in spacing]
    needed = [int(np.ceil((search_mm + cavity_radius_mm) / sp)) + 1 for sp in spacing]
    box = [
        (max(int(p) - n - k, 0), min(int(p) + n + k + 1, size))
        for p, n, k, size in zip(motion_peak, needed, reach, matrix, strict=True)
    ]
    (r0, r1), (c0, c1) = box
    scorer = BloodPoolScorer((r1 - r0, c1 - c0), spacing, radii)
    scores = np.stack(
        [scorer(means[s, r0:r1, c0:c1] / _robust_scale(means[s]), motion[s, r0:r1, c0:c1]) for s in range(study.n_slices)]
    )
    rows, cols = np.ogrid[r0:r1, c0:c1]

    def within(center: tuple[float, float], mm: float) -> np.ndarray:
        return np.hypot((rows - center[0]) * spacing[0], (cols - center[1]) * spacing[1]) <= mm

    total = np.where(within(motion_peak, search_mm), scores.sum(axis=0), -np.inf)
    global_center = _unravel(np.argmax(total), total.shape, (r0, c0))

    near = within(global_center, cavity_radius_mm)
    raw = np.empty((study.n_slices, 2))
    presence = np.empty(study.n_slices)
    for s in range(study.n_slices):
        local = np.where(near, scores[s], -np.inf)
        raw[s] = _unravel(np.argmax(local), local.shape, (r0, c0))
        presence[s] = local.max()
    presence = presence / presence.max() if presence.max() > 0 else presence
    lv_slices = presence >= presence_fraction
    line = _fit_axis(raw, lv_slices, global_center)
    # keep a slice's own centre when it is near the axis (breath-hold shifts), else the axis
    offset_mm = np.hypot((raw[:, 0] - line[:, 0]) * spacing[0], (raw[:, 1] - line[:, 1]) * spacing[1])
    centers = np.where(((offset_mm <= snap_mm) & lv_slices)[:, None], raw, line)
    return HeartLocation(centers=centers * stride, lv_slices=lv_slices, presence=presence)


def _unravel(flat_index: np.integer, shape: tuple[int, ...], origin: tuple[int, int]) -> tuple[float, float]:
    """(row, column) in study pixels of a flat index into a window whose first pixel is ``origin``."""
    r, c = np.unravel_index(int(flat_index), shape)
    return float(r + origin[0]), float(c + origin[1])


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
