"""The reviewer label (``.scar.json``, DESIGN.md "Label") and label tables (CSV).

``validate_label`` is the single validator used by training, the CLI and the
MONAI Label app's label endpoint.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LABEL_SUFFIX = ".scar.json"
SOURCES = ("LGE", "visual")
N_SEGMENTS = 17  # AHA 17-segment model
MASK_SUFFIXES = (".nii.gz", ".nii")


class LabelError(ValueError):
    """A label file or table that does not follow the ``.scar.json`` contract."""


@dataclass(frozen=True)
class ScarLabel:
    """Study label, optional per-slice and per-AHA-segment labels (None = not assessed), an optional scar mask
    file stored beside the label, provenance."""

    study_label: int
    slice_labels: tuple[int | None, ...] = ()
    source: str = "visual"
    reviewer: str = ""
    comment: str = ""
    segment_labels: tuple[int | None, ...] = ()
    scar_mask: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["slice_labels"] = list(self.slice_labels)
        d.pop("extra")
        if self.segment_labels:
            d["segment_labels"] = list(self.segment_labels)
        else:
            d.pop("segment_labels")
        if not self.scar_mask:
            d.pop("scar_mask")
        return d


def _as_binary(value: Any, what: str) -> int:
    if type(value) is not int or value not in (0, 1):  # not True/False, not 1.0
        raise LabelError(f"{what} must be the whole number 0 or 1, got {value!r}")
    return int(value)


def validate_label(obj: Any, *, n_slices: int | None = None) -> ScarLabel:
    """Check a decoded ``.scar.json`` object; ``n_slices`` is the stored study's slice count when known."""
    if not isinstance(obj, dict):
        raise LabelError(f"a scar label must be a JSON object, got {type(obj).__name__}")
    if "study_label" not in obj:
        raise LabelError('a scar label needs "study_label" (0 = no scar, 1 = scar)')
    known = {"study_label", "slice_labels", "source", "reviewer", "comment", "segment_labels", "scar_mask"}
    study_label = _as_binary(obj["study_label"], '"study_label"')
    raw_slices = obj.get("slice_labels", [])
    if raw_slices is None:
        raw_slices = []
    if not isinstance(raw_slices, list):
        raise LabelError('"slice_labels" must be a list of 0, 1 or null (one per slice of the stored study)')
    slices = tuple(None if v is None else _as_binary(v, f'"slice_labels"[{i}]') for i, v in enumerate(raw_slices))
    if slices and n_slices is not None and len(slices) != n_slices:
        raise LabelError(
            f'"slice_labels" has {len(slices)} entries but the study has {n_slices} slices; '
            "give one entry per slice (null where not assessed) or leave the list empty"
        )
    if study_label == 0 and any(v == 1 for v in slices):
        raise LabelError('"study_label" is 0 (no scar) but some "slice_labels" are 1: correct one of them')
    segments = _segment_labels(obj.get("segment_labels"), study_label)
    scar_mask = _scar_mask_name(obj.get("scar_mask"))
    source = obj.get("source", "visual")
    if source not in SOURCES:
        raise LabelError(f'"source" must be one of {list(SOURCES)}, got {source!r}')
    for key in ("reviewer", "comment"):
        if not isinstance(obj.get(key, ""), str):
            raise LabelError(f'"{key}" must be a string')
    return ScarLabel(
        study_label=study_label,
        slice_labels=slices,
        source=source,
        reviewer=obj.get("reviewer", ""),
        comment=obj.get("comment", ""),
        segment_labels=segments,
        scar_mask=scar_mask,
        extra={k: v for k, v in obj.items() if k not in known},
    )


def _segment_labels(raw: Any, study_label: int) -> tuple[int | None, ...]:
    """Optional ``segment_labels``: 17 entries 0, 1 or null in AHA order (1 basal anterior ... 17 apex)."""
    if raw is None or raw == []:
        return ()
    if not isinstance(raw, list) or len(raw) != N_SEGMENTS:
        raise LabelError(
            f'"segment_labels" must be a list of {N_SEGMENTS} entries (AHA segments 1-17 in order), each 0, 1 or null'
        )
    values = tuple(None if v is None else _as_binary(v, f'"segment_labels"[{i}] (segment {i + 1})')
                   for i, v in enumerate(raw))
    if study_label == 0 and any(v == 1 for v in values):
        raise LabelError('"study_label" is 0 (no scar) but some "segment_labels" are 1: correct one of them')
    return values


def _scar_mask_name(raw: Any) -> str:
    """Optional ``scar_mask``: the file name of a scar mask stored beside the label (no folders)."""
    if raw is None or raw == "":
        return ""
    if not isinstance(raw, str) or "/" in raw or "\\" in raw or raw.startswith(".") or not raw.endswith(MASK_SUFFIXES):
        raise LabelError(
            '"scar_mask" must be the plain file name of a NIfTI mask (.nii.gz or .nii) stored beside the label, '
            f"with no folder part, got {raw!r}"
        )
    return raw


def read_label_file(path: str | Path, *, n_slices: int | None = None) -> ScarLabel:
    """Read and validate one ``.scar.json`` file; the error names the file."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LabelError(f"{path}: not a readable JSON file ({exc})") from exc
    try:
        return validate_label(obj, n_slices=n_slices)
    except LabelError as exc:
        raise LabelError(f"{path}: {exc}") from exc


def read_label_csv(path: str | Path) -> dict[str, ScarLabel]:
    """Labels from a CSV with columns ``id, study_label`` and optionally ``slice_labels`` (e.g. "0;1;;1")."""
    path = Path(path)
    labels: dict[str, ScarLabel] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"id", "study_label"} <= set(reader.fieldnames):
            raise LabelError(f"{path}: a label CSV needs the columns 'id' and 'study_label' (got {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            try:
                slices_text = (row.get("slice_labels") or "").strip()
                slices = [None if v.strip() == "" else int(v) for v in slices_text.split(";")] if slices_text else []
                labels[row["id"]] = validate_label({"study_label": int(row["study_label"]), "slice_labels": slices})
            except (LabelError, ValueError) as exc:
                raise LabelError(f"{path}, line {line}: {exc}") from exc
    return labels
