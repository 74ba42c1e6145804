"""Map network outputs (per-slice scores, attention maps) back onto the source study's grid."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stran.transforms.preprocess import PrepInfo


def _covered(prep: PrepInfo) -> tuple[np.ndarray, np.ndarray]:
    """Source slice indices covered by the network input, and their fractional position among the S' output slices."""
    n_src = prep.study_shape[0]
    coords = np.asarray(prep.slice_coords, dtype=np.float64)
    k = np.arange(n_src, dtype=np.float64)
    inside = (k >= coords[0] - 1e-6) & (k <= coords[-1] + 1e-6)
    if coords.size == 1:
        return np.nonzero(np.isclose(k, coords[0], atol=0.5))[0], np.zeros(1)
    pos = np.interp(k[inside], coords, np.arange(coords.size, dtype=np.float64))
    return np.nonzero(inside)[0], pos


def slice_scores_to_study(scores: np.ndarray, prep: PrepInfo) -> list[float | None]:
    """Per-output-slice scores (S',) -> one score per source slice (None where the input did not cover it)."""
    scores = np.asarray(scores, dtype=np.float64)
    out: list[float | None] = [None] * prep.study_shape[0]
    idx, pos = _covered(prep)
    for k, p in zip(idx, pos, strict=True):
        out[int(k)] = float(np.interp(p, np.arange(scores.size), scores))
    return out


def _field_of_view(center: float, step: float, size: int, n: int) -> tuple[int, int]:
    """Source pixel range [first, last) whose crop coordinate lies within (-1, size): outside it the bilinear
    sampling with zero padding gives exactly 0 (one pixel of slack on each side)."""
    first = int(np.floor(center + (-1.0 - (size - 1) / 2.0) * step)) - 1
    last = int(np.ceil(center + (size - (size - 1) / 2.0) * step)) + 2
    return min(max(first, 0), n), min(max(last, 0), n)


def attention_to_study(attention: np.ndarray, prep: PrepInfo, phase_fractions: np.ndarray) -> np.ndarray:
    """Attention (S', T', size, size) in [0, 1] -> (S, T, H, W) float32 on the source study grid.

    ``phase_fractions`` (S, T) are the source images' trigger time / RR. Pixels
    and slices outside the network's field of view get 0; only the pixels
    inside it are computed (and the zeros elsewhere are never written).
    """
    att = np.asarray(attention, dtype=np.float32)
    n_out_slices, n_out_phases, size, _ = att.shape
    S, T, H, W = prep.study_shape
    result = np.zeros((S, T, H, W), dtype=np.float32)
    idx, pos = _covered(prep)
    step = (prep.spacing_mm / prep.source_spacing[0], prep.spacing_mm / prep.source_spacing[1])
    centers = np.asarray(prep.centers, dtype=np.float64)
    for k, p in zip(idx, pos, strict=True):
        lo = int(np.clip(np.floor(p), 0, n_out_slices - 1))
        hi = min(lo + 1, n_out_slices - 1)
        w = p - lo
        slab = (1 - w) * att[lo] + w * att[hi]  # (T', size, size)
        center = (1 - w) * centers[lo] + w * centers[hi]
        # phases: circular interpolation at each source image's phase fraction
        t_pos = np.mod(phase_fractions[k], 1.0) * n_out_phases
        t0 = np.floor(t_pos).astype(int) % n_out_phases
        t1 = (t0 + 1) % n_out_phases
        tw = (t_pos - np.floor(t_pos))[:, None, None]
        per_phase = (1 - tw) * slab[t0] + tw * slab[t1]  # (T, size, size)
        # in-plane: source pixel -> crop pixel coordinate; align_corners=True normalisation
        (r0, r1), (c0, c1) = (_field_of_view(center[a], step[a], size, n) for a, n in ((0, H), (1, W)))
        if r1 <= r0 or c1 <= c0:
            continue
        u = (torch.arange(r0, r1, dtype=torch.float64) - center[0]) / step[0] + (size - 1) / 2.0
        v = (torch.arange(c0, c1, dtype=torch.float64) - center[1]) / step[1] + (size - 1) / 2.0
        gy = 2.0 * u / (size - 1) - 1.0
        gx = 2.0 * v / (size - 1) - 1.0
        yy, xx = torch.meshgrid(gy, gx, indexing="ij")
        grid = torch.stack([xx, yy], dim=-1).float()[None].expand(T, r1 - r0, c1 - c0, 2)
        src = torch.from_numpy(np.ascontiguousarray(per_phase, dtype=np.float32))[:, None]
        out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0].numpy()
        result[k, :, r0:r1, c0:c1] = np.clip(out, 0.0, 1.0)
    return result


def segments_to_study(ids: np.ndarray, prep: PrepInfo) -> np.ndarray:
    """AHA segment numbers (S', size, size) on the network's grid -> (S, H, W) uint8 on the source study's grid:
    nearest network slice and pixel (segment numbers are labels, never blended); 0 outside the field of view."""
    ids = np.asarray(ids)
    n_out_slices, size, _ = ids.shape
    S, _, H, W = prep.study_shape
    result = np.zeros((S, H, W), dtype=np.uint8)
    idx, pos = _covered(prep)
    step = (prep.spacing_mm / prep.source_spacing[0], prep.spacing_mm / prep.source_spacing[1])
    centers = np.asarray(prep.centers, dtype=np.float64)
    for k, p in zip(idx, pos, strict=True):
        near = int(np.clip(np.rint(p), 0, n_out_slices - 1))
        lo = int(np.clip(np.floor(p), 0, n_out_slices - 1))
        hi = min(lo + 1, n_out_slices - 1)
        center = (1 - (p - lo)) * centers[lo] + (p - lo) * centers[hi]  # the crop centre attention_to_study uses
        (r0, r1), (c0, c1) = (_field_of_view(center[a], step[a], size, n) for a, n in ((0, H), (1, W)))
        if r1 <= r0 or c1 <= c0:
            continue
        u = np.rint((np.arange(r0, r1) - center[0]) / step[0] + (size - 1) / 2.0).astype(int)
        v = np.rint((np.arange(c0, c1) - center[1]) / step[1] + (size - 1) / 2.0).astype(int)
        rows_in, cols_in = (u >= 0) & (u < size), (v >= 0) & (v < size)
        block = np.zeros((r1 - r0, c1 - c0), dtype=np.uint8)
        block[np.ix_(rows_in, cols_in)] = ids[near][np.ix_(u[rows_in], v[cols_in])]
        result[k, r0:r1, c0:c1] = block
    return result
