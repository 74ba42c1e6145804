"""The one preprocessing chain from a ``CineStudy`` to the network input, and back.

Used by training, the MONAI Label app and the CLI alike. Each step is a MONAI
``MapTransform`` working on a dict with keys ``"study"`` (the ``CineStudy``),
``"image"`` (the array being built) and ``"prep"`` (a ``PrepInfo`` record of
every choice made, which is what maps network outputs back to the study grid).

Order: heart localisation on the full study, then an early crop to the window
the network's field of view reads (a view of the study: every later step costs
what the network needs, not what the scanner acquired), then slice selection
and phase resampling, then one bilinear resampling in-plane that both changes
the spacing and crops around the heart, then robust intensity normalisation.
The early crop changes no number: the window holds every pixel the later steps
read, the anti-aliasing blur's reach included, or ends where the frame ends.
Output ``image``: float32 tensor ``(1, S', T', size, size)``.

An optional ``"labels"`` entry (uint8 label map ``(S, T, H, W)`` on the study's
grid, e.g. the phantom's truth masks) goes through the same spatial steps with
nearest-neighbour choices (nearest slice, nearest phase, nearest pixel on the
same sampling grid), so a label pixel lands on the anatomy of its image pixel.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Compose, MapTransform
from scipy import ndimage

from stran.io.study import CineStudy
from stran.transforms.localize import localize_heart


@dataclass(frozen=True)
class PreprocessConfig:
    """Network input geometry. The defaults are the paper's 10 slices x 20 phases x 64 x 64."""

    n_slices: int = 10
    n_phases: int = 20
    size: int = 64
    spacing_mm: float = 1.5
    low_percentile: float = 1.0
    high_percentile: float = 99.0

    def __post_init__(self) -> None:
        if self.n_slices < 1 or self.n_phases < 2 or self.size < 8 or self.spacing_mm <= 0:
            raise ValueError(f"invalid preprocessing configuration: {self}")


@dataclass
class PrepInfo:
    """What preprocessing did to one study (enough to map outputs back)."""

    study_shape: tuple[int, int, int, int]  # (S, T, H, W) of the source study
    slice_coords: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (S',) source slice index of each output slice
    centers: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (S', 2) source (row, col) at the crop centre
    lv_slices: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (S,) source slices with LV
    source_spacing: tuple[float, float] = (1.0, 1.0)  # (row, col) mm
    spacing_mm: float = 1.5
    size: int = 64
    n_phases: int = 20
    intensity_range: tuple[float, float] = (0.0, 1.0)
    geometry: np.ndarray = field(default_factory=lambda: np.array([-1.0, 0.0, 0.0], np.float32))  # study_geometry()


def study_geometry(affine: np.ndarray) -> np.ndarray:
    """(anterior_row, anterior_col, apex_last) of a study: the patient's anterior direction in the image plane (unit,
    row and column components) and 1.0 when the slices run from the base to the apex (the LV apex points left,
    anterior and inferior: LPS (0.62, -0.52, -0.58) in the standard anatomy), else 0.0. It places the AHA segments
    (``stran.models.maps.aha_segment_ids``); the network's slices keep the study's slice order."""
    col = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    row = affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    along = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    anterior = np.array([0.0, -1.0, 0.0])
    a = np.array([np.dot(anterior, row), np.dot(anterior, col)])
    a = a / max(float(np.linalg.norm(a)), 1e-6)
    apex_last = float(np.dot(along, np.array([0.62, -0.52, -0.58])) > 0)
    return np.array([a[0], a[1], apex_last], dtype=np.float32)


class LocalizeHeartd(MapTransform):
    """Find the LV per slice (``stran.transforms.localize``) and record it in ``prep``."""

    def __init__(self, keys: str = "study") -> None:
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        study: CineStudy = d["study"]
        loc = localize_heart(study)
        d["location"] = loc
        d["prep"] = PrepInfo(
            study_shape=tuple(study.pixels.shape),  # type: ignore[arg-type]
            lv_slices=loc.lv_slices,
            source_spacing=study.pixel_spacing,
            geometry=study_geometry(study.affine),
        )
        return d


def lv_slice_coords(lv_slices: np.ndarray, n_out: int) -> np.ndarray:
    """Evenly spaced source slice coordinates from the first to the last LV slice."""
    idx = np.nonzero(lv_slices)[0]
    first, last = (int(idx[0]), int(idx[-1])) if idx.size else (0, lv_slices.size - 1)
    if n_out == 1:
        return np.array([(first + last) / 2.0])
    return np.linspace(first, last, n_out)


def _slice_neighbours(coords: np.ndarray, n_src: int) -> tuple[np.ndarray, np.ndarray]:
    """The two source slices each fractional coordinate interpolates between."""
    lo = np.clip(np.floor(coords).astype(int), 0, n_src - 1)
    return lo, np.clip(lo + 1, 0, n_src - 1)


def _interp_slices(arr: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Linear interpolation along axis 0 at fractional indices ``coords`` (reads only those neighbours)."""
    lo, hi = _slice_neighbours(coords, arr.shape[0])
    w = (coords - lo).astype(_weight_dtype(arr)).reshape((-1,) + (1,) * (arr.ndim - 1))
    return (1.0 - w) * arr[lo] + w * arr[hi]


def _weight_dtype(arr: np.ndarray) -> np.dtype:
    """Interpolation weights in the array's own float precision (float32 pixels stay float32: half the traffic)."""
    return np.result_type(arr.dtype, np.float32)


def resample_phases(values: np.ndarray, fractions: np.ndarray, n_out: int) -> np.ndarray:
    """Circular linear interpolation of ``values[t, ...]`` sampled at phase ``fractions[t]`` to ``n_out`` even phases."""
    order = np.argsort(fractions)
    frac = np.mod(fractions[order], 1.0)
    n = len(order)
    targets = np.arange(n_out) / n_out
    # extend by one period on both sides so interpolation wraps around the RR cycle
    xp = np.concatenate([frac - 1.0, frac, frac + 1.0])
    pos = np.searchsorted(xp, targets, side="right")
    x0, x1 = xp[pos - 1], xp[pos]
    w = ((targets - x0) / np.where(x1 > x0, x1 - x0, 1.0)).astype(_weight_dtype(values))
    w = w.reshape((-1,) + (1,) * (values.ndim - 1))
    before, after = values[order[(pos - 1) % n]], values[order[pos % n]]
    return ((1.0 - w) * before + w * after).astype(values.dtype, copy=False)


def select_label_slices_and_phases(labels: np.ndarray, coords: np.ndarray, fractions: np.ndarray, n_phases: int) -> np.ndarray:
    """The nearest-neighbour counterpart of slice selection and phase resampling for a label map (S, T, H, W):
    the nearest source slice to each coordinate, and per slice the source phase nearest (circularly) to each of the
    ``n_phases`` even phase fractions."""
    out = np.empty((len(coords), n_phases) + labels.shape[2:], dtype=labels.dtype)
    targets = np.arange(n_phases) / n_phases
    for j, c in enumerate(coords):
        s = int(np.clip(np.rint(c), 0, labels.shape[0] - 1))
        dist = np.abs(np.mod(fractions[s], 1.0)[None, :] - targets[:, None])
        out[j] = labels[s][np.argmin(np.minimum(dist, 1.0 - dist), axis=1)]
    return out


def _in_plane_step(prep: PrepInfo, spacing_mm: float) -> tuple[float, float]:
    """Source pixels per output pixel (rows, columns)."""
    return spacing_mm / prep.source_spacing[0], spacing_mm / prep.source_spacing[1]


def _blur_sigma(step: tuple[float, float]) -> tuple[float, float] | None:
    """Anti-aliasing blur (rows, columns) in source pixels when downsampling by more than 1.5x, else None."""
    if max(step) <= 1.5:
        return None
    return max(step[0] / 2.0 - 0.5, 0.0), max(step[1] / 2.0 - 0.5, 0.0)


def _sample_positions(centers: np.ndarray, size: int, step: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Source (rows (S', size), columns (S', size)) of the output pixels: ``size`` x ``size`` around each centre."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    return centers[:, :1] + offsets * step[0], centers[:, 1:] + offsets * step[1]


class CropAroundHeartd(MapTransform):
    """Pick the output slices (``n_slices`` evenly over the LV) and their crop centres (in ``prep``), then cut the
    study down to the window the network's crop will read: what every output slice samples around its centre,
    plus the anti-aliasing blur's reach and a pixel for interpolation. Later steps touch only this window (a view,
    no copy), so their cost follows the network's field of view, not the matrix; their results are those of whole
    frames."""

    def __init__(self, n_slices: int, size: int, spacing_mm: float, keys: str = "study") -> None:
        super().__init__(keys)
        self.n_slices, self.size, self.spacing_mm = n_slices, size, spacing_mm

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        study: CineStudy = d["study"]
        prep: PrepInfo = d["prep"]
        prep.slice_coords = lv_slice_coords(prep.lv_slices, self.n_slices)
        prep.centers = _interp_slices(d["location"].centers, prep.slice_coords)
        step = _in_plane_step(prep, self.spacing_mm)
        sigma = _blur_sigma(step) or (0.0, 0.0)
        window = []
        for positions, s, n in zip(_sample_positions(prep.centers, self.size, step), sigma, study.matrix, strict=True):
            reach = int(4.0 * s + 0.5) + 1  # gaussian_filter's radius (truncate 4) and one pixel of slack
            lo = int(np.clip(np.floor(positions.min()) - reach, 0, max(n - 2, 0)))
            window.append((lo, int(np.clip(np.floor(positions.max()) + reach + 2, lo + 2, n))))
        (r0, r1), (c0, c1) = window
        d["origin"] = (r0, c0)
        d["image"] = study.pixels[:, :, r0:r1, c0:c1]
        if d.get("labels") is not None:
            d["labels"] = np.asarray(d["labels"])[:, :, r0:r1, c0:c1]
        return d


class SelectSlicesAndPhasesd(MapTransform):
    """Interpolate the output slices between source slices (linear) after resampling each source slice used to
    ``n_phases`` evenly spaced phases over its own RR interval."""

    def __init__(self, n_phases: int, keys: str = "image") -> None:
        super().__init__(keys)
        self.n_phases = n_phases

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        study: CineStudy = d["study"]
        prep: PrepInfo = d["prep"]
        window = d["image"]
        fractions = study.phase_fractions
        per_slice = np.empty((study.n_slices, self.n_phases) + window.shape[2:], dtype=np.float32)
        for s in np.unique(_slice_neighbours(prep.slice_coords, study.n_slices)):  # only the slices used
            per_slice[s] = resample_phases(window[s], fractions[s], self.n_phases)
        d["image"] = _interp_slices(per_slice, prep.slice_coords).astype(np.float32)
        if d.get("labels") is not None:
            d["labels"] = select_label_slices_and_phases(d["labels"], prep.slice_coords, fractions, self.n_phases)
        prep.n_phases = self.n_phases
        return d


def _nearest_indices(positions: np.ndarray, n: int) -> np.ndarray:
    """Nearest source index of each position as ``grid_sample(mode="nearest", align_corners=True)`` picks it on a
    whole frame of ``n`` pixels (same float32 steps, ties to even); -1 where it falls outside the frame."""
    grid = (2.0 * positions / (n - 1) - 1.0).astype(np.float32)
    idx = np.rint((grid + np.float32(1.0)) * np.float32((n - 1) / 2.0)).astype(np.int64)
    return np.where((idx >= 0) & (idx < n), idx, -1)


class ResampleInPlaned(MapTransform):
    """Resample every image to ``spacing_mm`` and crop ``size`` x ``size`` around the LV centre (one bilinear step,
    after a Gaussian blur when downsampling by more than 1.5x); labels take the nearest pixel of the same grid."""

    def __init__(self, size: int, spacing_mm: float, keys: str = "image") -> None:
        super().__init__(keys)
        self.size, self.spacing_mm = size, spacing_mm

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        prep: PrepInfo = d["prep"]
        img = np.asarray(d["image"])  # (S', T', h, w): the window from CropAroundHeartd
        h, w = img.shape[-2:]
        r0, c0 = d["origin"]
        step = _in_plane_step(prep, self.spacing_mm)
        sigma = _blur_sigma(step)
        if sigma is not None:  # the window reaches the frame's edge wherever the blur could see past it
            img = ndimage.gaussian_filter(img, [0, 0, sigma[0], sigma[1]])
        rows, cols = _sample_positions(prep.centers, self.size, step)
        gy = torch.from_numpy(2.0 * (rows - r0) / (h - 1) - 1.0)
        gx = torch.from_numpy(2.0 * (cols - c0) / (w - 1) - 1.0)
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1).float()
        out = F.grid_sample(torch.from_numpy(img), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        d["image"] = out.numpy()
        if d.get("labels") is not None:
            H, W = prep.study_shape[2:]
            ri, ci = _nearest_indices(rows, H), _nearest_indices(cols, W)
            lab = np.asarray(d["labels"])
            picked = lab[np.arange(len(ri))[:, None, None, None], np.arange(lab.shape[1])[None, :, None, None],
                         np.maximum(ri - r0, 0)[:, None, :, None], np.maximum(ci - c0, 0)[:, None, None, :]]
            inside = (ri >= 0)[:, None, :, None] & (ci >= 0)[:, None, None, :]
            d["labels"] = np.where(inside, picked, 0).astype(np.uint8)
        prep.spacing_mm, prep.size = self.spacing_mm, self.size
        return d


class RobustNormalized(MapTransform):
    """Map the [low, high] intensity percentiles of the crop to [0, 1] and clip (vendor scales differ)."""

    def __init__(self, low: float, high: float, keys: str = "image") -> None:
        super().__init__(keys)
        self.low, self.high = low, high

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        img = np.asarray(d["image"], dtype=np.float32)
        lo, hi = np.percentile(img, [self.low, self.high])
        scale = float(hi - lo) if hi > lo else 1.0
        d["image"] = torch.from_numpy(np.clip((img - lo) / scale, 0.0, 1.0)[None].astype(np.float32))
        d["prep"].intensity_range = (float(lo), float(hi))
        return d


def build_preprocessing(config: PreprocessConfig | None = None) -> Compose:
    """The preprocessing chain: ``{"study": CineStudy}`` -> adds ``"image"`` (1, S', T', size, size) and ``"prep"``."""
    c = config or PreprocessConfig()
    return Compose(
        [
            LocalizeHeartd(),
            CropAroundHeartd(c.n_slices, c.size, c.spacing_mm),
            SelectSlicesAndPhasesd(c.n_phases),
            ResampleInPlaned(c.size, c.spacing_mm),
            RobustNormalized(c.low_percentile, c.high_percentile),
        ]
    )


def preprocess_study(study: CineStudy, config: PreprocessConfig | None = None) -> tuple[torch.Tensor, PrepInfo]:
    """Run the chain on one study; returns (image (1, S', T', size, size), PrepInfo)."""
    out = build_preprocessing(config)({"study": study})
    return out["image"], out["prep"]


def preprocess_with_labels(
    study: CineStudy, labels: np.ndarray, config: PreprocessConfig | None = None
) -> tuple[torch.Tensor, np.ndarray, PrepInfo]:
    """The chain on a study and its label map (S, T, H, W); returns (image, labels (S', T', size, size) uint8, prep)."""
    if tuple(labels.shape) != tuple(study.pixels.shape):
        raise ValueError(f"label map shape {tuple(labels.shape)} differs from the study's {tuple(study.pixels.shape)}")
    out = build_preprocessing(config)({"study": study, "labels": labels})
    return out["image"], out["labels"], out["prep"]
