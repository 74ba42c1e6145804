"""The preprocessing's output is pinned: the shipped model and the cached training tensors depend on it.

``tests/data/preprocess_reference.npz`` holds what the chain produced before it learned to crop early
(commit d911d94) for a few phantom studies of different sizes (192 x 168 at 50 phases, a large in-plane one at
fine spacing that takes the anti-aliasing blur path, a large field of view, a heart near the image border with
another network geometry): the localisation (crop centres, slice coordinates), the intensity range, the label
map through ``preprocess_with_labels``, every 97th value of the normalised network input, and the shipped
model's detection on two of them. ``_full_frame_chain`` below is the old resampling kept as the reference: from
the stored localisation it rebuilds the whole network input the old way (full frames, then one crop), checked
against the stored samples. A faster chain must agree: the same localisation, input within 1e-3, identical
labels, probabilities to 3 decimals, the map on the study grid unchanged.

One deliberate change since: a study finer than 1 mm (the 2x interpolated ``384x336-fine``) is localised on
every 2nd pixel (``stran.transforms.localize.localization_stride``), so its centres may move by up to one coarse
pixel (they moved by 1.0-1.1 fine pixels, 0.9-1.0 mm); for such a case the test bounds that move, checks
everything after localisation exactly against the old chain rebuilt with the new centres, and bounds the
detection's change (study probability 0.936 -> 0.966, slices within 0.035, segments within 0.064). Every study at
coarser spacing, the whole phantom cohort included (1.4-2.2 mm), is still pinned exactly, except one:
``border`` (the heart cut by the image edge) gives other per-slice centres on some machines than on the one that
wrote the reference (up to 1.75 px in 3 of 8 slices on a 2-core AVX-512 Xeon, 2 Dec 2026, where the localiser of
commit d911d94 and today's agree with each other), so its centres are bounded by ``PLATFORM_TOLERANCE_PX`` and the
rest of its chain is checked exactly from the centres found, as for a strided case.

The studies are regenerated from their phantom configurations; a checksum of their pixels is stored too, so a
change of the phantom generator fails with its own message instead of looking like a preprocessing change.
Write the file again (``python tests/unit/test_preprocess_equivalence.py --write``) only when the preprocessing
is meant to change, which also means retraining the shipped model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from stran.phantom import generate_study, sample_config
from stran.transforms.localize import localization_stride
from stran.transforms.preprocess import PreprocessConfig, preprocess_with_labels

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests" / "data" / "preprocess_reference.npz"
MODEL = ROOT / "apps" / "stran" / "model" / "pretrained_scar.pt"
SAMPLE_STEP = 97  # every 97th value of the network input is stored

# name: (seed, acquisition overrides, PreprocessConfig keywords, detect with the shipped model?)
CASES: dict[str, tuple[int, dict[str, Any], dict[str, Any], bool]] = {
    "typical": (7, {}, {}, True),
    "192x168x10x50": (7, {"rows": 168, "cols": 192, "pixel_spacing": 1.8, "n_slices": 10, "n_phases": 50}, {}, False),
    "384x336-fine": (7, {"rows": 336, "cols": 384, "pixel_spacing": 0.9, "n_slices": 10, "n_phases": 20}, {}, True),
    "384x336-wide": (11, {"rows": 336, "cols": 384, "pixel_spacing": 1.8, "n_slices": 10, "n_phases": 20}, {}, False),
    "border": (
        23,
        {"rows": 128, "cols": 128, "pixel_spacing": 1.4, "n_phases": 16, "heart_offset": [40.0, -30.0]},
        {"n_slices": 8, "n_phases": 12, "size": 48, "spacing_mm": 2.5},
        False,
    ),
}


PLATFORM_TOLERANCE_PX = {"border": 2.0}  # see the module docstring


def case_study(name: str):
    """The phantom of one case (its ``cine`` and truth ``masks``)."""
    seed, overrides, _, _ = CASES[name]
    cfg = sample_config(seed, scenario="A")
    acq = cfg.acquisition
    n = int(overrides.get("n_slices", acq.n_slices))
    per_slice = {
        "rr_per_slice": (acq.rr_per_slice * 2)[:n],
        "misregistration": (acq.misregistration * 2)[:n],
        "depth_jitter": (acq.depth_jitter * 2)[:n],
    }
    acq = dataclasses.replace(acq, **per_slice, **overrides)
    return generate_study(dataclasses.replace(cfg, acquisition=acq))


def _checksum(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


# ----------------------------------------------------------------------------- the old resampling (reference)


def _old_resample_phases(values: np.ndarray, fractions: np.ndarray, n_out: int) -> np.ndarray:
    order = np.argsort(fractions)
    frac = np.mod(fractions[order], 1.0)
    vals = values[order].reshape(len(order), -1)
    targets = np.arange(n_out) / n_out
    xp = np.concatenate([frac - 1.0, frac, frac + 1.0])
    fp = np.concatenate([vals, vals, vals], axis=0)
    pos = np.searchsorted(xp, targets, side="right")
    x0, x1 = xp[pos - 1], xp[pos]
    w = ((targets - x0) / np.where(x1 > x0, x1 - x0, 1.0))[:, None]
    out = (1.0 - w) * fp[pos - 1] + w * fp[pos]
    return out.reshape((n_out,) + values.shape[1:]).astype(values.dtype, copy=False)


def _old_interp_slices(arr: np.ndarray, coords: np.ndarray) -> np.ndarray:
    lo = np.clip(np.floor(coords).astype(int), 0, arr.shape[0] - 1)
    hi = np.clip(lo + 1, 0, arr.shape[0] - 1)
    w = (coords - lo).reshape((-1,) + (1,) * (arr.ndim - 1))
    return (1.0 - w) * arr[lo] + w * arr[hi]


def _old_crop_grid(centers: np.ndarray, size: int, step: tuple[float, float], shape: tuple[int, int]) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    grids = []
    for r0, c0 in centers:
        gy = 2.0 * (r0 + offsets * step[0]) / (shape[0] - 1) - 1.0
        gx = 2.0 * (c0 + offsets * step[1]) / (shape[1] - 1) - 1.0
        yy, xx = torch.meshgrid(gy, gx, indexing="ij")
        grids.append(torch.stack([xx, yy], dim=-1))
    return torch.stack(grids).float()


def _full_frame_chain(study, labels: np.ndarray, c: PreprocessConfig, centers: np.ndarray, coords: np.ndarray):
    """The chain as it was after localisation: every source slice resampled to ``n_phases`` on the full frame,
    slices interpolated, a blur when downsampling by more than 1.5x, one bilinear crop, percentile normalisation;
    labels by nearest slice, phase and pixel. Returns (image (1, S', T', size, size), labels, (lo, hi))."""
    fr = study.phase_fractions
    per_slice = np.stack([_old_resample_phases(study.pixels[s], fr[s], c.n_phases) for s in range(study.n_slices)])
    img = torch.as_tensor(_old_interp_slices(per_slice, coords).astype(np.float32))
    spacing = study.pixel_spacing
    step = (c.spacing_mm / spacing[0], c.spacing_mm / spacing[1])
    if max(step) > 1.5:
        sigma = [0, 0, max(step[0] / 2.0 - 0.5, 0), max(step[1] / 2.0 - 0.5, 0)]
        img = torch.as_tensor(ndimage.gaussian_filter(img.numpy(), sigma))
    grid = _old_crop_grid(centers, c.size, step, tuple(img.shape[-2:]))
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True).numpy()
    lo, hi = np.percentile(out, [c.low_percentile, c.high_percentile])
    scale = float(hi - lo) if hi > lo else 1.0
    image = np.clip((out - lo) / scale, 0.0, 1.0)[None].astype(np.float32)
    sel = np.empty((len(coords), c.n_phases) + labels.shape[2:], dtype=labels.dtype)
    targets = np.arange(c.n_phases) / c.n_phases
    for j, k in enumerate(coords):
        s = int(np.clip(np.rint(k), 0, labels.shape[0] - 1))
        dist = np.abs(np.mod(fr[s], 1.0)[None, :] - targets[:, None])
        sel[j] = labels[s][np.argmin(np.minimum(dist, 1.0 - dist), axis=1)]
    lab = torch.as_tensor(sel.astype(np.float32))
    lab = F.grid_sample(lab, grid, mode="nearest", padding_mode="zeros", align_corners=True).numpy().astype(np.uint8)
    return image, lab, (float(lo), float(hi))


# ----------------------------------------------------------------------------- reference file


def _detection_summary(study) -> dict[str, Any]:
    from stran.engine.detect import Detector

    det = Detector(MODEL, mc_samples=0).detect(study)
    return {
        "study_probability": det.result["study_probability"],
        "slice_probabilities": det.result["slice_probabilities"],
        "segment_probabilities": det.result["segment_probabilities"],
        "map_sums": np.asarray(det.attention, np.float64).sum(axis=(2, 3)).tolist(),
    }


def write_reference(path: Path = REFERENCE) -> None:
    """Compute every case with the current chain and store it (see the module docstring for when)."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for name, (_, _, config, detect) in CASES.items():
        p = case_study(name)
        image, labels, prep = preprocess_with_labels(p.cine, p.truth.masks, PreprocessConfig(**config))
        arrays[f"{name}/image_samples"] = image.numpy().ravel()[::SAMPLE_STEP]
        arrays[f"{name}/labels"] = labels
        arrays[f"{name}/centers"] = prep.centers
        arrays[f"{name}/slice_coords"] = prep.slice_coords
        arrays[f"{name}/lv_slices"] = prep.lv_slices
        meta[name] = {"pixels_sha256": _checksum(p.cine.pixels), "intensity_range": list(prep.intensity_range)}
        if detect:
            meta[name]["detection"] = _detection_summary(p.cine)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)


# ----------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    with np.load(REFERENCE) as data:
        return {"meta": json.loads(str(data["meta"])), **{k: data[k] for k in data.files if k != "meta"}}


@pytest.fixture(scope="module")
def studies() -> dict[str, Any]:
    return {name: case_study(name) for name in CASES}


def _check_generator(reference: dict[str, Any], studies: dict[str, Any], name: str) -> None:
    if _checksum(studies[name].cine.pixels) != reference["meta"][name]["pixels_sha256"]:
        pytest.fail(f"case {name}: the phantom generator now makes other pixels, so the reference does not apply")


@pytest.mark.parametrize("name", list(CASES))
def test_network_input_and_labels_match_the_reference(reference, studies, name):
    _check_generator(reference, studies, name)
    p, config = studies[name], PreprocessConfig(**CASES[name][2])
    centers, coords = reference[f"{name}/centers"], reference[f"{name}/slice_coords"]
    old_image, old_labels, old_range = _full_frame_chain(p.cine, p.truth.masks, config, centers, coords)
    np.testing.assert_allclose(old_image.ravel()[::SAMPLE_STEP], reference[f"{name}/image_samples"], atol=1e-6)
    np.testing.assert_array_equal(old_labels, reference[f"{name}/labels"])
    np.testing.assert_allclose(old_range, reference["meta"][name]["intensity_range"], rtol=1e-6)

    image, labels, prep = preprocess_with_labels(p.cine, p.truth.masks, config)
    np.testing.assert_array_equal(prep.lv_slices, reference[f"{name}/lv_slices"])
    stride = localization_stride(p.cine.pixel_spacing)
    tolerance = max(float(stride) if stride > 1 else 0.0, PLATFORM_TOLERANCE_PX.get(name, 0.0))
    np.testing.assert_allclose(prep.centers, centers, atol=tolerance or 1e-9)
    np.testing.assert_allclose(prep.slice_coords, coords, atol=1e-12)
    if tolerance:  # the rest of the chain must match the old one from the centres found
        old_image, old_labels, old_range = _full_frame_chain(p.cine, p.truth.masks, config, prep.centers, coords)
    diff = float(np.abs(image.numpy() - old_image).max())
    assert diff <= 1e-3, f"{name}: network input differs by up to {diff:.2e}"
    np.testing.assert_array_equal(labels, old_labels)
    np.testing.assert_allclose(prep.intensity_range, old_range, rtol=1e-4)


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case[3]])
def test_detection_matches_the_reference(reference, studies, name):
    _check_generator(reference, studies, name)
    expected = reference["meta"][name]["detection"]
    got = _detection_summary(studies[name].cine)
    exact = localization_stride(studies[name].cine.pixel_spacing) == 1
    tolerance = {"study_probability": 5e-4, "slice_probabilities": 5e-4, "segment_probabilities": 5e-4} if exact else \
        {"study_probability": 0.05, "slice_probabilities": 0.05, "segment_probabilities": 0.1}
    assert abs(got["study_probability"] - expected["study_probability"]) < tolerance["study_probability"]
    for key in ("slice_probabilities", "segment_probabilities"):
        for a, b in zip(got[key], expected[key], strict=True):
            assert (a is None) == (b is None) and (a is None or abs(a - b) < tolerance[key]), (key, a, b)
    if exact:
        np.testing.assert_allclose(got["map_sums"], expected["map_sums"], rtol=1e-4, atol=1e-2)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/unit/test_preprocess_equivalence.py --write  (see the module docstring)")
    write_reference()
    print(f"wrote {REFERENCE}")
