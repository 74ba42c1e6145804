"""Preprocessed studies as float16 tensors, cached on disk once and held in memory for training and evaluation.

Each study runs the shared preprocessing chain once (with its truth label map when it has one); the result is
written to ``<cache_dir>/<key>.pt`` where the key hashes the study file (path, size, mtime), the mask file, the
preprocessing configuration and ``CACHE_VERSION``: a changed study or configuration is preprocessed again, an
unchanged one never. Building uses several processes; loading keeps every study in memory (about 2.4 MB per
study at the default 10 x 20 x 64 x 64), so an epoch reads nothing from disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from stran.atomic import atomic_path
from stran.lifetime import exit_with_parent
from stran.transforms.preprocess import PreprocessConfig

CACHE_VERSION = 3


def _stat(path: Path | None) -> list[Any]:
    if path is None:
        return []
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def cache_key(path: Path, mask_path: Path | None, config: PreprocessConfig) -> str:
    raw = json.dumps([CACHE_VERSION, _stat(path), _stat(mask_path), dataclasses.astuple(config)], default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def read_label_map(mask_path: Path, shape: tuple[int, int, int, int]) -> np.ndarray:
    """A label map (S, T, H, W) uint8 in the phantom's label convention (0 background, 1 LV blood, 2 myocardium,
    3 RV blood, 4 scar) from the phantom's ``.masks.npz`` or a NIfTI on the cine's grid ((x, y, z) or (x, y, z, t),
    a 3-D mask applies to every phase)."""
    name = mask_path.name
    if name.endswith(".npz"):
        from stran.phantom.truth import load_masks

        labels = load_masks(mask_path)
    elif name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        data = np.asarray(nib.load(str(mask_path)).dataobj)
        if data.ndim == 3:
            data = np.repeat(data[..., None], shape[1], axis=3)
        if data.ndim != 4:
            raise ValueError(f"{mask_path}: a scar mask must be 3-D or 4-D, got {data.ndim}-D")
        labels = np.transpose(data, (2, 3, 1, 0))  # (x, y, z, t) -> (S, T, H, W)
    else:
        raise ValueError(f"{mask_path}: a label map must be a .masks.npz or a .nii/.nii.gz file")
    labels = np.asarray(labels)
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(f"{mask_path}: label map shape {tuple(labels.shape)} does not match the study's {tuple(shape)}")
    if labels.size and (labels.min() < 0 or labels.max() > 4):
        raise ValueError(f"{mask_path}: label values must lie in 0-4 (0 background, 1 LV, 2 myocardium, 3 RV, 4 scar)")
    return labels.astype(np.uint8)


def preprocess_item(path: Path, mask_path: Path | None, config: PreprocessConfig) -> dict[str, Any]:
    """Load and preprocess one study (and its label map); the cached entry."""
    from stran.io import load_study
    from stran.transforms.preprocess import preprocess_study, preprocess_with_labels

    study = load_study(path)
    if mask_path is not None:
        image, labels, prep = preprocess_with_labels(study, read_label_map(mask_path, study.pixels.shape), config)
        labels = torch.from_numpy(labels)
    else:
        image, prep = preprocess_study(study, config)
        labels = None
    return {
        "image": image.to(torch.float16),
        "labels": labels,
        "slice_coords": np.asarray(prep.slice_coords, dtype=np.float32),
        "geometry": np.asarray(prep.geometry, dtype=np.float32),
    }


def _build_one(args: tuple[str, str | None, PreprocessConfig, str]) -> str:
    path, mask, config, target = args
    torch.set_num_threads(1)
    item = preprocess_item(Path(path), Path(mask) if mask else None, config)
    with atomic_path(Path(target)) as tmp:
        torch.save(item, tmp)
    return target


def build_cache(
    entries: Sequence[tuple[Path, Path | None]], config: PreprocessConfig, cache_dir: Path, *,
    workers: int = 2, progress: bool = True,
) -> list[Path]:
    """Preprocess every (study, mask) not yet cached; returns the cache file of each entry, in order."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    files = [cache_dir / f"{cache_key(p, m, config)}.pt" for p, m in entries]
    todo = [(str(p), str(m) if m else None, config, str(f)) for (p, m), f in zip(entries, files, strict=True)
            if not f.exists()]
    if todo:
        desc = f"preprocessing {len(todo)} studies"
        if workers > 1 and len(todo) > 1:
            # Workers end with their parent: a training stopped or killed mid-way leaves no worker waiting forever.
            with ProcessPoolExecutor(workers, initializer=exit_with_parent, initargs=(None, 0.5, os.getpid())) as pool:
                list(tqdm(pool.map(_build_one, todo, chunksize=4), total=len(todo), desc=desc, disable=not progress))
        else:
            for t in tqdm(todo, desc=desc, disable=not progress):
                _build_one(t)
    return files


def load_cached(files: Sequence[Path]) -> list[dict[str, Any]]:
    return [torch.load(f, map_location="cpu", weights_only=False) for f in files]


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))

