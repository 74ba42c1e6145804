"""Studies on disk -> cached, preprocessed training samples.

A folder of studies is either our cohort layout (``images/``, ``labels/``,
``cohort.csv``), a MONAI Label datastore (images at the top, reviewer labels in
``labels/final/``) or a folder of DICOM study folders. Labels come from
``.scar.json`` files or a CSV. Preprocessing runs once per study and is cached
on disk (MONAI ``PersistentDataset``), keyed by the file's path, size, mtime and
the preprocessing configuration, so later epochs and later runs do not re-read
DICOM or NIfTI.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import Dataset, PersistentDataset
from monai.transforms import Compose, DeleteItemsd, MapTransform

from stran.engine.labels import LABEL_SUFFIX, LabelError, ScarLabel, read_label_csv, read_label_file
from stran.io import CineLoadError, load_study
from stran.transforms.preprocess import PreprocessConfig, build_preprocessing

NIFTI_SUFFIXES = (".nii.gz", ".nii")
UNKNOWN = -1.0  # slice target for "not assessed"


@dataclass(frozen=True)
class StudyRecord:
    """One study on disk, its label (if reviewed) and descriptive metadata (scenario, vendor, ...)."""

    study_id: str
    path: Path
    label: ScarLabel | None = None
    meta: dict[str, str] = field(default_factory=dict, compare=False)


def _study_id(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _image_paths(folder: Path) -> list[Path]:
    paths = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.endswith(NIFTI_SUFFIXES):
            paths.append(p)
        elif p.is_dir() and p.name not in ("labels", "truth", "logs", ".cache") and not p.name.startswith("."):
            paths.append(p)  # a DICOM study folder
    return paths


def _default_label_dirs(root: Path) -> list[Path]:
    return [d for d in (root / "labels" / "final", root / "labels") if d.is_dir()]


def find_studies(root: str | Path, *, labels: str | Path | None = None, require_labels: bool = False) -> list[StudyRecord]:
    """Every study under ``root`` with its label (from ``labels``: a folder of ``.scar.json`` or a CSV)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"study folder {root} does not exist")
    image_dir = root / "images" if (root / "images").is_dir() else root
    paths = _image_paths(image_dir)
    if not paths:
        raise FileNotFoundError(f"no studies (.nii.gz files or DICOM folders) in {image_dir}")

    csv_labels: dict[str, ScarLabel] = {}
    label_dirs: list[Path] = []
    if labels is not None:
        labels = Path(labels)
        if labels.is_file():
            csv_labels = read_label_csv(labels)
        elif labels.is_dir():
            label_dirs = [labels]
        else:
            raise FileNotFoundError(f"labels {labels} is neither a CSV file nor a folder")
    else:
        label_dirs = _default_label_dirs(root)

    meta = _read_cohort_meta(root / "cohort.csv")
    records = []
    for path in paths:
        sid = _study_id(path)
        label = csv_labels.get(sid)
        for d in label_dirs:
            candidate = d / f"{sid}{LABEL_SUFFIX}"
            if candidate.is_file():
                label = read_label_file(candidate)
                break
        if require_labels and label is None:
            raise LabelError(f"study {sid} ({path}) has no label; label it or leave it out of the training folder")
        records.append(StudyRecord(sid, path, label, meta.get(sid, {})))
    return records


def _read_cohort_meta(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["id"]: dict(row) for row in csv.DictReader(fh) if row.get("id")}


def split_records(
    records: Sequence[StudyRecord], fractions: Sequence[float], *, seed: int = 0, stratify_key: str = "scenario"
) -> list[list[StudyRecord]]:
    """Deterministic stratified split (by label and ``meta[stratify_key]``) into len(fractions) parts."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {list(fractions)}")
    groups: dict[tuple, list[StudyRecord]] = {}
    for r in sorted(records, key=lambda r: r.study_id):
        key = (r.label.study_label if r.label else None, r.meta.get(stratify_key, ""))
        groups.setdefault(key, []).append(r)
    rng = np.random.default_rng(seed)
    parts: list[list[StudyRecord]] = [[] for _ in fractions]
    for key in sorted(groups, key=str):
        members = groups[key]
        order = rng.permutation(len(members))
        bounds = np.round(np.cumsum([0.0, *fractions]) * len(members)).astype(int)
        for i in range(len(fractions)):
            parts[i].extend(members[j] for j in order[bounds[i] : bounds[i + 1]])
    return [sorted(p, key=lambda r: r.study_id) for p in parts]


class LoadStudyd(MapTransform):
    """``path`` -> ``study`` (a CineStudy); a load error names the study."""

    def __init__(self) -> None:
        super().__init__("path")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        try:
            d["study"] = load_study(d["path"])
        except CineLoadError as exc:
            raise CineLoadError(f"study {d.get('id', d['path'])}: {exc}") from exc
        return d


class SliceTargetsd(MapTransform):
    """Map per-source-slice labels onto the S' network slices (nearest source slice; unknown = -1)."""

    def __init__(self) -> None:
        super().__init__("slice_labels")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        coords = d["prep"].slice_coords
        labels = d.get("slice_labels") or []
        targets = np.full(len(coords), UNKNOWN, dtype=np.float32)
        if labels:
            for j, c in enumerate(coords):
                v = labels[int(np.clip(np.rint(c), 0, len(labels) - 1))]
                targets[j] = UNKNOWN if v is None else float(v)
        d["slice_target"] = torch.from_numpy(targets)
        d["study_target"] = torch.tensor(float(d["study_label"]) if d.get("study_label") is not None else UNKNOWN)
        return d


def record_items(records: Sequence[StudyRecord], config: PreprocessConfig) -> list[dict[str, Any]]:
    """Dataset items; path size/mtime and the preprocessing config are part of the item so they key the cache."""
    items = []
    for r in records:
        stat = r.path.stat()
        items.append(
            {
                "id": r.study_id,
                "path": str(r.path),
                "size": stat.st_size,
                "mtime": stat.st_mtime_ns,
                "config": dataclasses.astuple(config),
                "study_label": r.label.study_label if r.label else None,
                "slice_labels": list(r.label.slice_labels) if r.label else [],
            }
        )
    return items


def preprocessing_with_targets(config: PreprocessConfig) -> Compose:
    """Load + the shared preprocessing chain + training targets; drops the full-resolution study."""
    return Compose(
        [
            LoadStudyd(),
            *build_preprocessing(config).transforms,
            SliceTargetsd(),
            DeleteItemsd(keys=["study", "location", "prep", "slice_labels", "study_label", "config", "size", "mtime"]),
        ]
    )


def build_dataset(
    records: Sequence[StudyRecord],
    config: PreprocessConfig,
    *,
    cache_dir: str | Path | None,
    augment: Compose | None = None,
) -> Dataset:
    """A dataset of ``{"id", "path", "image", "study_target", "slice_target"}``; cached on disk when ``cache_dir`` is set."""
    transforms = list(preprocessing_with_targets(config).transforms)
    if augment is not None:
        transforms += list(augment.transforms)
    items = record_items(records, config)
    if cache_dir is None:
        return Dataset(items, Compose(transforms))
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return PersistentDataset(items, Compose(transforms), cache_dir=str(cache_dir))
