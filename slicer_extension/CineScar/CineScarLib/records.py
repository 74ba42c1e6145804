"""What the review workflow passes around: the server's status, a datastore study, a detection result (stdlib +
the NIfTI reader's ``Volume4D``), and the ids and times records carry."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .dicom_folder import DicomImport
from .volume import Volume4D


def new_id() -> str:
    """A record id (hex uuid4), the same form as ``resultsdb.new_id``."""
    return uuid.uuid4().hex


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class ServerStatus:
    url: str
    name: str
    version: str
    model: str
    model_info: dict
    info: dict

    @property
    def model_sha256(self) -> str:
        return str((self.model_info.get("model") or {}).get("sha256") or "")

    @property
    def model_version(self) -> str:
        return str((self.model_info.get("model") or {}).get("version") or "")

    def summary(self) -> str:
        sha = self.model_sha256[:12] or "unknown"
        return f"{self.name} {self.version} at {self.url}: model '{self.model}' {self.model_version} (sha256 {sha})"


@dataclass
class StudyEntry:
    """One datastore study: ``labeled`` = has a reviewer (final) label; ``score`` = uncertainty if scored."""

    image_id: str
    labeled: bool
    score: float | None = None
    info: dict = field(default_factory=dict)

    def describe(self) -> str:
        parts = [self.image_id, "reviewed" if self.labeled else "not reviewed"]
        if self.score is not None:
            parts.append(f"uncertainty {self.score:.3f}")
        return " - ".join(parts)


@dataclass
class Detection:
    """A detection result (the server's JSON), its attention map and, if fetched, the cine it was made on."""

    result: dict
    image_id: str
    attention: Volume4D | None = None
    cine: Volume4D | None = None
    elapsed_s: float = 0.0
    exported: bool = False
    export_error: str | None = None
    imported: DicomImport | None = None  # the DICOM study upload made for this detection, if one was needed

    @property
    def pacs(self) -> dict | None:
        """Where the server stored the result on the PACS: ``{url, study_uid, sr_series_uid, sr_sop_uid,
        map_series_uid, map_sop_uid, map_kind}``, or ``{url, study_uid, error}``; None when it did not try."""
        record = self.result.get("pacs")
        return dict(record) if isinstance(record, dict) else None

    @property
    def detection_id(self) -> str:
        return str(self.result.get("detection_id", ""))

    @property
    def study(self) -> dict:
        return self.result.get("study") or {}

    @property
    def study_uid(self) -> str:
        return str(self.study.get("study_uid") or "")

    @property
    def probability(self) -> float:
        return float(self.result["study_probability"])

    @property
    def verdict(self) -> str:
        return str(self.result.get("prediction_label") or ("scar" if self.result.get("prediction") else "no scar"))

    @property
    def slice_probabilities(self) -> list:
        return list(self.result.get("slice_probabilities") or [])

    @property
    def threshold(self) -> float:
        return float(self.result.get("threshold", 0.5))

    @property
    def model_sha256(self) -> str:
        return str((self.result.get("model") or {}).get("sha256") or "")

    @property
    def n_slices(self) -> int:
        return len(self.slice_probabilities) or int(self.study.get("slices") or 0)

    def predicted_slice_labels(self) -> list:
        """0/1 per slice from the slice probabilities and the threshold (None where there is no score)."""
        return [None if p is None else int(float(p) >= self.threshold) for p in self.slice_probabilities]

    def summary(self) -> str:
        unc = self.result.get("uncertainty") or {}
        std = unc.get("std")
        extra = f", uncertainty (std) {float(std):.3f}" if std is not None else ""
        return f"{self.image_id or 'uploaded study'}: {self.verdict} (p = {self.probability:.3f}{extra})"


def study_score(image_info: dict) -> float | None:
    """The uncertainty the app's ``most_uncertain`` strategy stored for a study (MC-dropout entropy), if any."""
    value = image_info.get("scar_uncertainty")
    if isinstance(value, dict):
        value = value.get("entropy")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def fill_study_uid(result: dict, image_id: str) -> None:
    """Results of studies without a UID (a plain NIfTI upload) get ``image:<id>`` so they can be stored."""
    study = result.setdefault("study", {})
    if isinstance(study, dict) and not study.get("study_uid"):
        study["study_uid"] = f"image:{image_id}" if image_id else f"detection:{result.get('detection_id', new_id())}"
