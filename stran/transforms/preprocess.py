"""The one preprocessing chain from a ``CineStudy`` to the network input, and back.

Used by training, the MONAI Label app and the CLI alike. Each step is a MONAI
``MapTransform`` working on a dict with keys ``"study"`` (the ``CineStudy``),
``"image"`` (the array being built) and ``"prep"`` (a ``PrepInfo`` record of
every choice made, which is what maps network outputs back to the study grid).

Order: heart localisation on the full study, then slice selection and phase
resampling (they shrink the data), then one bilinear resampling in-plane that
both changes the spacing and crops around the heart, then robust intensity
normalisation. Output ``image``: float32 tensor ``(1, S', T', size, size)``.

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


def _interp_slices(arr: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Linear interpolation along axis 0 at fractional indices ``coords``."""
    lo = np.clip(np.floor(coords).astype(int), 0, arr.shape[0] - 1)
    hi = np.clip(lo + 1, 0, arr.shape[0] - 1)
    w = (coords - lo).reshape((-1,) + (1,) * (arr.ndim - 1))
    return (1.0 - w) * arr[lo] + w * arr[hi]


def resample_phases(values: np.ndarray, fractions: np.ndarray, n_out: int) -> np.ndarray:
    """Circular linear interpolation of ``values[t, ...]`` sampled at phase ``fractions[t]`` to ``n_out`` even phases."""
    order = np.argsort(fractions)
    frac = np.mod(fractions[order], 1.0)
    vals = values[order].reshape(len(order), -1)
    targets = np.arange(n_out) / n_out
    # extend by one period on both sides so interpolation wraps around the RR cycle
    xp = np.concatenate([frac - 1.0, frac, frac + 1.0])
    fp = np.concatenate([vals, vals, vals], axis=0)
    pos = np.searchsorted(xp, targets, side="right")
    x0, x1 = xp[pos - 1], xp[pos]
    w = ((targets - x0) / np.where(x1 > x0, x1 - x0, 1.0))[:, None]
    out = (1.0 - w) * fp[pos - 1] + w * fp[pos]
    return out.reshape((n_out,) + values.shape[1:]).astype(values.dtype, copy=False)


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


class SelectSlicesAndPhasesd(MapTransform):
    """Pick ``n_slices`` evenly over the LV (linear interpolation between slices) and resample
    every slice to ``n_phases`` evenly spaced phases over its own RR interval."""

    def __init__(self, n_slices: int, n_phases: int, keys: str = "study") -> None:
        super().__init__(keys)
        self.n_slices, self.n_phases = n_slices, n_phases

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        study: CineStudy = d["study"]
        prep: PrepInfo = d["prep"]
        coords = lv_slice_coords(prep.lv_slices, self.n_slices)
        fractions = study.phase_fractions
        per_slice = np.stack(
            [resample_phases(study.pixels[s], fractions[s], self.n_phases) for s in range(study.n_slices)]
        )
        d["image"] = _interp_slices(per_slice, coords).astype(np.float32)
        if d.get("labels") is not None:
            d["labels"] = select_label_slices_and_phases(np.asarray(d["labels"]), coords, fractions, self.n_phases)
        prep.slice_coords = coords
        prep.centers = _interp_slices(d["location"].centers, coords)
        prep.n_phases = self.n_phases
        return d


def _crop_grid(centers: np.ndarray, size: int, step_px: tuple[float, float], shape: tuple[int, int]) -> torch.Tensor:
    """grid_sample grid (S', size, size, 2) sampling ``size`` x ``size`` pixels around each centre."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    grids = []
    for r0, c0 in centers:
        rows = r0 + offsets * step_px[0]
        cols = c0 + offsets * step_px[1]
        # align_corners=True: -1 and +1 are the centres of the first and last pixels
        gy = 2.0 * rows / (shape[0] - 1) - 1.0
        gx = 2.0 * cols / (shape[1] - 1) - 1.0
        yy, xx = torch.meshgrid(gy, gx, indexing="ij")
        grids.append(torch.stack([xx, yy], dim=-1))
    return torch.stack(grids).float()


class CropResampleInPlaned(MapTransform):
    """Resample every image to ``spacing_mm`` and crop ``size`` x ``size`` around the LV centre (one bilinear step)."""

    def __init__(self, size: int, spacing_mm: float, keys: str = "image") -> None:
        super().__init__(keys)
        self.size, self.spacing_mm = size, spacing_mm

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        prep: PrepInfo = d["prep"]
        img = torch.as_tensor(d["image"])  # (S', T', H, W)
        step = (self.spacing_mm / prep.source_spacing[0], self.spacing_mm / prep.source_spacing[1])
        if max(step) > 1.5:  # downsampling by more than 1.5x: blur first so the bilinear step does not alias
            sigma = [0, 0, max(step[0] / 2.0 - 0.5, 0), max(step[1] / 2.0 - 0.5, 0)]
            img = torch.as_tensor(ndimage.gaussian_filter(img.numpy(), sigma))
        grid = _crop_grid(prep.centers, self.size, step, tuple(img.shape[-2:]))
        out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        d["image"] = out.numpy()
        if d.get("labels") is not None:
            lab = torch.as_tensor(np.asarray(d["labels"], dtype=np.float32))
            d["labels"] = F.grid_sample(lab, grid, mode="nearest", padding_mode="zeros", align_corners=True).numpy().astype(np.uint8)
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
            SelectSlicesAndPhasesd(c.n_slices, c.n_phases),
            CropResampleInPlaned(c.size, c.spacing_mm),
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
