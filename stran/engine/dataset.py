"""Studies on disk -> cached, preprocessed training samples with every target the data has.

A folder of studies is either our cohort layout (``images/``, ``labels/``,
``truth/``, ``cohort.csv``), a MONAI Label datastore (images at the top,
reviewer labels in ``labels/final/``) or a folder of DICOM study folders.
Labels come from ``.scar.json`` files or a CSV; a label may name a scar mask
stored beside it, and a phantom cohort's ``truth/`` folder adds the pixel masks
and the AHA segment table. Preprocessing runs once per study and is cached on
disk as float16 tensors (``stran.engine.tensor_cache``), so later epochs and
later runs do not re-read DICOM or NIfTI.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose

from stran.engine.labels import LABEL_SUFFIX, N_SEGMENTS, LabelError, ScarLabel, read_label_csv, read_label_file
from stran.io import CineLoadError
from stran.io.nifti import NIFTI_SUFFIXES, study_id_of
from stran.transforms.preprocess import PreprocessConfig

UNKNOWN = -1.0  # target for "not assessed"
IGNORE = 255  # label-map value for "no label here"


@dataclass(frozen=True)
class StudyRecord:
    """One study on disk, its label (if reviewed) and descriptive metadata (scenario, vendor, ...)."""

    study_id: str
    path: Path
    label: ScarLabel | None = None
    meta: dict[str, str] = field(default_factory=dict, compare=False)
    mask_path: Path | None = None  # a label map on the study's grid (phantom truth masks or a reviewer's scar mask)


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
        sid = study_id_of(path)
        label = csv_labels.get(sid)
        mask_path = None
        for d in label_dirs:
            candidate = d / f"{sid}{LABEL_SUFFIX}"
            if candidate.is_file():
                label = read_label_file(candidate)
                if label.scar_mask:
                    mask_path = d / label.scar_mask
                    if not mask_path.is_file():
                        raise LabelError(f"{candidate}: its scar mask {mask_path} does not exist")
                break
        if require_labels and label is None:
            raise LabelError(f"study {sid} ({path}) has no label; label it or leave it out of the training folder")
        label, truth_masks = _with_phantom_truth(root, sid, label)
        records.append(StudyRecord(sid, path, label, meta.get(sid, {}), mask_path or truth_masks))
    return records


def _with_phantom_truth(root: Path, sid: str, label: ScarLabel | None) -> tuple[ScarLabel | None, Path | None]:
    """A phantom cohort's ``truth/`` folder: its masks, and its segment table where the label has no segments."""
    masks = root / "truth" / f"{sid}.masks.npz"
    truth = root / "truth" / f"{sid}.truth.json"
    if label is not None and not label.segment_labels and truth.is_file():
        rows = json.loads(truth.read_text(encoding="utf-8")).get("segments") or []
        if len(rows) == N_SEGMENTS:
            segments = tuple(int(float(r.get("scar_extent_pct") or 0) > 0) for r in rows)
            label = dataclasses.replace(label, segment_labels=segments)
    return label, masks if masks.is_file() else None


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


def _slice_targets(labels: Sequence[int | None], coords: np.ndarray) -> torch.Tensor:
    """Per-source-slice labels on the S' network slices (nearest source slice; unknown = -1)."""
    targets = np.full(len(coords), UNKNOWN, dtype=np.float32)
    if labels:
        for j, c in enumerate(coords):
            v = labels[int(np.clip(np.rint(c), 0, len(labels) - 1))]
            targets[j] = UNKNOWN if v is None else float(v)
    return torch.from_numpy(targets)


def study_targets(record: StudyRecord, slice_coords: np.ndarray) -> dict[str, torch.Tensor]:
    """Study, slice (on the network's slices) and AHA segment targets of a record; -1 where unknown."""
    label = record.label
    segments = list(label.segment_labels) if label and label.segment_labels else [None] * N_SEGMENTS
    return {
        "study_target": torch.tensor(float(label.study_label) if label else UNKNOWN),
        "slice_target": _slice_targets(list(label.slice_labels) if label else [], slice_coords),
        "segment_target": torch.tensor([UNKNOWN if v is None else float(v) for v in segments], dtype=torch.float32),
    }


class CachedStudies(torch.utils.data.Dataset):
    """Preprocessed studies in memory (float16) with their targets; ``augment`` (a MONAI ``Compose`` of
    ``stran.engine.augment`` transforms) runs on every access. Items: ``id``, ``image`` (1, S, T, H, W) float32,
    ``labels`` (S, T, H, W) uint8 (255 = no label), ``has_labels``, ``geometry`` (3,), and the targets."""

    def __init__(self, records: Sequence[StudyRecord], cached: Sequence[dict[str, Any]], augment: Compose | None = None) -> None:
        self.records, self.cached, self.augment = list(records), list(cached), augment

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r, c = self.records[i], self.cached[i]
        image = c["image"].float()
        labels = c["labels"]
        item = {
            "id": r.study_id,
            "image": image,
            "labels": labels if labels is not None else torch.full(image.shape[1:], IGNORE, dtype=torch.uint8),
            "has_labels": torch.tensor(labels is not None),
            "geometry": torch.from_numpy(np.asarray(c["geometry"], dtype=np.float32)),
            **study_targets(r, c["slice_coords"]),
        }
        return self.augment(item) if self.augment is not None else item


def build_dataset(
    records: Sequence[StudyRecord],
    config: PreprocessConfig,
    *,
    cache_dir: str | Path | None,
    augment: Compose | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> CachedStudies:
    """Preprocess (once, cached in ``cache_dir`` when given) and hold the studies in memory."""
    from stran.engine.tensor_cache import build_cache, default_workers, load_cached, preprocess_item

    entries = [(r.path, r.mask_path) for r in records]
    if cache_dir is None:
        cached = []
        for p, m in entries:
            try:
                cached.append(preprocess_item(p, m, config))
            except CineLoadError as exc:
                raise CineLoadError(f"study {p}: {exc}") from exc
    else:
        files = build_cache(entries, config, Path(cache_dir), workers=workers or default_workers(), progress=progress)
        cached = load_cached(files)
    return CachedStudies(records, cached, augment)
