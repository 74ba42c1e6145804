"""The review workflow over REST, without any GUI: connect, pick a study, detect, correct, next, retrain, export.

One :class:`ScarSession` per server. Long calls take ``progress`` (a callable
``(fraction or None, message)``) and ``cancel`` (a :class:`~.client.CancelToken`)
so that the Slicer widget can run them in a :class:`~.jobs.Job`; the command
line (``stran demo``) calls the same methods directly.

Results database (optional, needs SQLAlchemy): every detection can be exported
automatically, corrections are recorded with their ``sent_utc``, and a
correction that cannot reach the server is kept there (``sent_utc`` NULL) and
delivered by :meth:`ScarSession.flush_queue` later. The correction id is made
here, before the first attempt, so a resend is recognised as the same record;
on the server the label of a study is one file that a resend overwrites with
the same content. A correction is therefore either on the server or in the
database (or both), never only in memory, unless the session says so.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .client import (
    DEFAULT_MODEL,
    CancelToken,
    MonaiLabelClient,
    MonaiLabelError,
    NotFound,
    RequestRejected,
    is_offline,
)
from .dicom_folder import DicomImport
from .nifti import Volume4D, nifti_bytes, normalised_slice_order, read_nifti

Progress = Callable[[float | None, str], None] | None
SOURCES = ("LGE", "visual")
TERMINAL_TASK_STATES = ("DONE", "ERROR", "STOPPED", "FAILED", "CANCELLED")


def new_id() -> str:
    """A record id (hex uuid4), the same form as ``resultsdb.new_id``."""
    return uuid.uuid4().hex


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class WorkflowError(Exception):
    """A step of the workflow cannot be done; the message says why and what to do."""


class CorrectionNotSaved(WorkflowError):
    """The server is unreachable and there is no results database to keep the correction."""


class DatabaseUnavailable(WorkflowError):
    """The results database is not configured or cannot be opened (e.g. SQLAlchemy missing)."""


# ----------------------------------------------------------------------------- records


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


@dataclass
class Correction:
    """A reviewer's label for one study (the ``.scar.json`` content) with its identity."""

    image_id: str
    study_uid: str
    study_label: int
    slice_labels: list
    reviewer: str
    source: str = "visual"
    comment: str = ""
    detection_id: str | None = None
    correction_id: str = field(default_factory=new_id)
    created_utc: str = field(default_factory=utc_now)
    picked_by: dict | None = None  # the next-study answer that chose this study, when one did
    segment_labels: list | None = None  # 17 x 0/1/None (AHA order) when the reader corrected segments

    def label(self) -> dict:
        """The label file content, as the server validates it (``segment_labels`` only when any is set)."""
        label = {
            "study_label": int(self.study_label),
            "slice_labels": [None if v is None else int(v) for v in self.slice_labels],
            "source": self.source,
            "reviewer": self.reviewer,
            "comment": self.comment or "",
        }
        if self.segment_labels and any(v is not None for v in self.segment_labels):
            label["segment_labels"] = [None if v is None else int(v) for v in self.segment_labels]
        return label

    def params(self) -> dict:
        """Label info sent with the file (kept by the datastore next to the label)."""
        return {"correction_id": self.correction_id, "detection_id": self.detection_id, "reviewer": self.reviewer,
                "created_utc": self.created_utc, "client": "CineScar"}

    def record(self) -> dict:
        """The results-database record."""
        record = {**self.label(), "correction_id": self.correction_id, "study_uid": self.study_uid,
                  "image_id": self.image_id, "detection_id": self.detection_id, "created_utc": self.created_utc}
        if self.picked_by:
            record["picked_by"] = self.picked_by
        return record

    @classmethod
    def from_record(cls, row: dict) -> Correction:
        return cls(
            image_id=row.get("image_id") or "",
            study_uid=row["study_uid"],
            study_label=int(row["study_label"]),
            slice_labels=list(row["slice_labels"]),
            reviewer=row["reviewer"],
            source=row["source"],
            comment=row.get("comment") or "",
            detection_id=row.get("detection_id"),
            correction_id=row["correction_id"],
            created_utc=row.get("created_utc") or utc_now(),
            segment_labels=list(row["segment_labels"]) if row.get("segment_labels") else None,
        )


@dataclass
class SubmitOutcome:
    correction_id: str
    status: str  # "sent" or "queued"
    message: str
    flushed: list = field(default_factory=list)  # queued corrections delivered first
    pending: int = 0  # corrections still waiting in the database
    database_warning: str | None = None


@dataclass
class FlushOutcome:
    sent: list = field(default_factory=list)
    rejected: list = field(default_factory=list)  # (correction_id, message)
    pending: int = 0
    offline_error: str | None = None

    def message(self) -> str:
        parts = []
        if self.sent:
            parts.append(f"{len(self.sent)} queued correction(s) delivered")
        if self.rejected:
            parts.append(f"{len(self.rejected)} refused by the server: " + "; ".join(m for _, m in self.rejected))
        if self.offline_error:
            parts.append(f"{self.pending} still waiting (server unreachable)")
        elif self.pending and not self.rejected:
            parts.append(f"{self.pending} still waiting")
        return ". ".join(parts) if parts else "no corrections waiting"


@dataclass
class TrainingRun:
    run_id: str
    model: str
    options: dict
    started_utc: str
    sha_before: str
    stats_before: dict
    task: dict = field(default_factory=dict)


@dataclass
class TrainingProgress:
    state: str  # "running", "publishing", "live", "kept_aside" (trained but worse: the old model stays), "failed"
    message: str
    fraction: float | None = None
    epoch: int | None = None
    epochs: int | None = None
    metrics: dict = field(default_factory=dict)
    model_sha256: str = ""

    @property
    def finished(self) -> bool:
        return self.state in ("live", "kept_aside", "failed")


# ----------------------------------------------------------------------------- session


class ScarSession:
    """The workflow against one MONAI Label server running the ST-RAN Scar app.

    ``db``: a results database (a path or URL, or an open ``ResultsDB``), or None.
    ``auto_export``: store every detection in the database as it arrives.
    """

    def __init__(
        self,
        server_url: str,
        *,
        db: Any = None,
        model: str = DEFAULT_MODEL,
        auto_export: bool = False,
        client: MonaiLabelClient | None = None,
        log: Callable[[str], None] | None = None,
        **client_options: Any,
    ) -> None:
        self.client = client or MonaiLabelClient(server_url, **client_options)
        self.model = model
        self.auto_export = auto_export
        self.log = log or (lambda message: None)
        self.status: ServerStatus | None = None
        self.last_pick: dict | None = None  # the last next-study answer (id, score, reason, model)
        self._db = None
        self._db_location: str | None = None
        self._owns_db = False
        self._expected_infer_s: float | None = None
        if db is not None:
            self.set_database(db)

    # ---------------------------------------------------------------- database

    def set_database(self, db: Any) -> None:
        """Use a results database: a path/URL (opened lazily) or an open ``ResultsDB``; None to stop using one."""
        self.close_database()
        if db is None:
            return
        if isinstance(db, (str, Path)):
            self._db_location = str(db)
        else:
            self._db, self._owns_db = db, False

    @property
    def has_database(self) -> bool:
        return self._db is not None or self._db_location is not None

    @property
    def db(self):
        """The open ``ResultsDB`` (opened on first use); raises DatabaseUnavailable when there is none."""
        if self._db is None:
            if self._db_location is None:
                raise DatabaseUnavailable("No results database is set: choose a database file in the settings.")
            try:
                from .resultsdb import ResultsDB
            except ImportError as exc:
                raise DatabaseUnavailable(
                    f"The results database needs SQLAlchemy, which is not installed in this Python ({exc})."
                ) from exc
            try:
                self._db = ResultsDB(self._db_location)
            except Exception as exc:
                raise DatabaseUnavailable(f"Could not open the results database {self._db_location}: {exc}") from exc
            self._owns_db = True
        return self._db

    def close_database(self) -> None:
        if self._db is not None and self._owns_db:
            self._db.close()
        self._db, self._db_location, self._owns_db = None, None, False

    def close(self) -> None:
        self.close_database()
        self.client.close()

    # ---------------------------------------------------------------- server

    def connect(self) -> ServerStatus:
        """Check the server and its scar model; remembers and returns what it offers."""
        info = self.client.check(self.model)
        self.status = ServerStatus(
            url=self.client.url,
            name=str(info.get("name") or "MONAI Label app"),
            version=str(info.get("version") or ""),
            model=self.model,
            model_info=dict(info["models"][self.model]),
            info=info,
        )
        self.log(f"connected: {self.status.summary()}")
        return self.status

    def list_studies(self) -> list[StudyEntry]:
        """The datastore's studies, not-yet-reviewed first, most uncertain first within each group."""
        store = self.client.datastore()
        objects = store.get("objects") if isinstance(store, dict) else None
        if not isinstance(objects, dict):
            raise WorkflowError("The server's datastore listing has no 'objects': is this the ST-RAN Scar app?")
        entries = []
        for image_id, obj in objects.items():
            image_info = ((obj or {}).get("image") or {}).get("info") or {}
            labels = (obj or {}).get("labels") or {}
            score = study_score(image_info)
            entries.append(StudyEntry(str(image_id), "final" in labels, score, image_info))
        entries.sort(key=lambda e: (e.labeled, -(e.score if e.score is not None else -1.0), e.image_id))
        return entries

    def download_cine(self, image_id: str, *, progress: Progress = None, cancel: CancelToken | None = None) -> Volume4D:
        """The study's 4-D cine from the datastore."""
        data = self.client.download_image(image_id, progress=progress, cancel=cancel)
        return read_nifti(data)

    def upload_cine(self, volume: Volume4D, image_id: str | None = None, *, name_hint: str = "slicer-cine",
                    progress: Progress = None) -> str:
        """Put a cine (e.g. the one loaded in Slicer) in the datastore; returns its image id.

        Slices are first put in the order the server's loader uses, so slice
        indices in results and labels match the uploaded file.
        """
        volume, _ = normalised_slice_order(volume)
        image_id = image_id or make_image_id(name_hint)
        if progress:
            progress(None, f"uploading the cine as '{image_id}'")
        self.client.upload_image(image_id, nifti_bytes(volume), filename=f"{image_id}.nii.gz",
                                 params={"client": "CineScar"})
        self.log(f"uploaded cine as {image_id}")
        return image_id

    def import_dicom_folder(self, folder: str | Path, image_id: str | None = None, *, overwrite: bool = False,
                            progress: Progress = None, cancel: CancelToken | None = None) -> DicomImport:
        """Send a DICOM study folder to the server's datastore (``PUT /datastore/dicom``); logs what it left out.

        The server's refusals (``RequestRejected``) are passed on as they are: e.g. HTTP 422 naming the slice,
        the phase and the file when a cine frame cannot be read; 409 when ``image_id`` is taken."""
        return self._import_dicom(lambda: self.client.upload_dicom_folder(
            str(folder), image_id=image_id, overwrite=overwrite, params={"client": "CineScar"}, progress=progress,
            cancel=cancel), str(folder), progress)

    def import_dicom_files(self, files: list[str], name: str, image_id: str | None = None, *, progress: Progress = None,
                           cancel: CancelToken | None = None) -> DicomImport:
        """``import_dicom_folder`` for an explicit list of files (a study in Slicer's DICOM database)."""
        return self._import_dicom(lambda: self.client.upload_dicom_files(
            files, name, image_id=image_id, params={"client": "CineScar"}, progress=progress, cancel=cancel),
            name, progress)

    def _import_dicom(self, upload: Callable[[], dict], source: str, progress: Progress) -> DicomImport:
        try:
            answer = upload()
        except ValueError as exc:  # the files themselves (missing, empty, unreadable): nothing was sent
            raise WorkflowError(str(exc)) from None
        imported = DicomImport.from_answer(answer, source)
        self.log(f"imported {source} as '{imported.image_id}': {imported.slices} slices x {imported.phases} phases, "
                 f"{len(imported.left_out)} file(s) left out")
        for path, reason in imported.left_out:
            self.log(f"left out {path}: {reason}")
        if progress:
            progress(1.0, imported.message())
        return imported

    # ---------------------------------------------------------------- detection

    def detect(
        self,
        image_id: str | None = None,
        *,
        volume: Volume4D | None = None,
        mc_samples: int | None = None,
        fetch_cine: bool = True,
        with_attention: bool = True,
        progress: Progress = None,
        cancel: CancelToken | None = None,
    ) -> Detection:
        """Scar detection on a datastore study (``image_id``) or on a local cine (``volume``, uploaded first).

        Returns the result JSON, the attention map and the cine it was made on
        (downloaded when ``fetch_cine`` and not given). With ``auto_export`` the
        result is stored in the results database; an export failure is kept in
        ``Detection.export_error``, the detection itself still counts.
        """
        cancel = cancel or CancelToken()
        report = progress or (lambda fraction, message: None)
        if (image_id is None) == (volume is None):
            raise ValueError("give either image_id or volume")
        cine = None
        if volume is not None:
            volume, _ = normalised_slice_order(volume)
            image_id = self.upload_cine(volume, progress=report)
            cine = volume
        assert image_id is not None
        cancel.raise_if_cancelled()
        if cine is None and fetch_cine:
            report(0.02, f"downloading study '{image_id}'")
            cine = self.download_cine(image_id, cancel=cancel,
                                      progress=lambda f, m: report(None if f is None else 0.02 + 0.13 * f, m))
        cancel.raise_if_cancelled()
        params: dict[str, Any] = {"with_attention": bool(with_attention)}
        if mc_samples is not None:
            params["mc_samples"] = int(mc_samples)
        report(0.15, f"detecting scar on '{image_id}'")
        response = self.client.infer(
            self.model,
            image_id=image_id,
            params=params,
            output="all" if with_attention else "json",
            cancel=cancel,
            expected_s=self._expected_infer_s,
            progress=lambda f, m: report(None if f is None else 0.15 + 0.75 * f, m),
        )
        self._expected_infer_s = max(response.elapsed_s, 0.5)
        result = dict(response.result)
        if not isinstance(result.get("study_probability"), (int, float)):
            raise WorkflowError(f"The server's answer for '{image_id}' has no study probability: {str(result)[:200]}")
        fill_study_uid(result, image_id)
        attention = None
        if response.image is not None:
            report(0.92, "reading the attention map")
            attention = read_nifti(response.image)
        detection = Detection(result, image_id, attention, cine, response.elapsed_s)
        if self.auto_export and self.has_database:
            report(0.97, "storing the result in the results database")
            try:
                self.export_detection(detection)
            except Exception as exc:  # noqa: BLE001 - the detection is still good
                detection.export_error = str(exc)
        report(1.0, detection.summary())
        self.log(f"detected: {detection.summary()}")
        return detection

    def export_detection(self, detection: Detection | dict) -> str:
        """Store a detection result in the results database (idempotent); returns its id."""
        result = detection.result if isinstance(detection, Detection) else detection
        detection_id = self.db.record_detection(result)
        if isinstance(detection, Detection):
            detection.exported, detection.export_error = True, None
        return detection_id

    def export_csv(self, out_dir: str | Path) -> list[Path]:
        """One CSV per table plus manifest.json (see docs/results-database.md)."""
        return self.db.export_csv(out_dir)

    # ---------------------------------------------------------------- corrections

    def make_correction(self, detection: Detection, *, study_label: int, slice_labels: list | None = None,
                        reviewer: str, source: str = "visual", comment: str = "",
                        segment_labels: list | None = None) -> Correction:
        """A correction of ``detection`` (slice labels default to the predicted ones; ``segment_labels``, 17 x
        0/1/None from the bullseye, are sent only when any is set); when the study was the last next-study
        answer, the correction remembers which strategy and model chose it."""
        labels = detection.predicted_slice_labels() if slice_labels is None else list(slice_labels)
        pick = self.last_pick if self.last_pick and self.last_pick.get("id") == detection.image_id else None
        picked_by = None if pick is None else {k: pick[k] for k in ("strategy", "score_name", "score", "model_sha256")
                                               if k in pick}
        return Correction(image_id=detection.image_id, study_uid=detection.study_uid, study_label=study_label,
                          slice_labels=labels, reviewer=reviewer, source=source, comment=comment,
                          detection_id=detection.detection_id or None, picked_by=picked_by or None,
                          segment_labels=list(segment_labels) if segment_labels else None)

    def submit_correction(self, correction: Correction, *, n_slices: int | None = None, progress: Progress = None,
                          cancel: CancelToken | None = None) -> SubmitOutcome:
        """Send a correction to the server; keep it in the database if the server cannot be reached.

        Waiting corrections are sent first (oldest first) so that the server
        ends with the newest label of each study. Invalid labels and labels the
        server refuses (HTTP 4xx) raise and are not stored.
        """
        if not correction.slice_labels and n_slices:
            correction.slice_labels = [None] * n_slices  # "not assessed" (the database wants one entry per slice)
        validate_correction(correction, n_slices)
        report = progress or (lambda fraction, message: None)
        flushed: list = []
        if self.has_database:
            report(0.1, "sending corrections kept while the server was unreachable")
            try:
                outcome = self.flush_queue(cancel=cancel)
            except DatabaseUnavailable:
                outcome = FlushOutcome()
            flushed = outcome.sent
            if outcome.offline_error:
                return self._queue(correction, outcome.offline_error, flushed)
        if cancel is not None:
            cancel.raise_if_cancelled()
        report(0.5, f"sending the correction of '{correction.image_id}'")
        try:
            self.client.save_label(correction.image_id, correction.label(), params=correction.params())
        except MonaiLabelError as exc:
            if is_offline(exc):
                return self._queue(correction, str(exc), flushed)
            raise
        warning = None
        if self.has_database:
            try:
                self.db.record_correction(correction.record(), sent_utc=utc_now())
            except Exception as exc:  # noqa: BLE001 - it reached the server; say the copy failed
                warning = f"The correction reached the server but was not stored in the results database: {exc}"
        report(1.0, "correction sent")
        self.log(f"correction {correction.correction_id} of {correction.image_id} sent")
        return SubmitOutcome(correction.correction_id, "sent", f"Correction of '{correction.image_id}' sent to the server.",
                             flushed, self._pending_count(), warning)

    def _queue(self, correction: Correction, reason: str, flushed: list) -> SubmitOutcome:
        if not self.has_database:
            raise CorrectionNotSaved(
                f"{reason}\nThe correction was NOT saved: there is no results database to keep it until the server is "
                "back. Set a database in the settings, or submit again when the server answers."
            )
        try:
            self.db.record_correction(correction.record())
        except Exception as exc:
            raise CorrectionNotSaved(f"{reason}\nThe correction was NOT saved: the results database refused it ({exc}).") from exc
        pending = self._pending_count()
        self.log(f"correction {correction.correction_id} of {correction.image_id} queued")
        return SubmitOutcome(
            correction.correction_id,
            "queued",
            f"The server cannot be reached; the correction of '{correction.image_id}' is kept in the results database "
            f"and will be sent when it answers ({pending} waiting).",
            flushed,
            pending,
        )

    def pending_corrections(self) -> list[Correction]:
        """Corrections in the database that have not reached the server yet (oldest first)."""
        if not self.has_database:
            return []
        return [Correction.from_record(row) for row in self.db.corrections(unsent_only=True)]

    def _pending_count(self) -> int:
        try:
            return len(self.db.corrections(unsent_only=True)) if self.has_database else 0
        except Exception:  # noqa: BLE001 - a count for display only
            return 0

    def flush_queue(self, *, progress: Progress = None, cancel: CancelToken | None = None) -> FlushOutcome:
        """Send waiting corrections (oldest first); stop at the first "offline" failure.

        A correction the server refuses (4xx: e.g. its study is no longer in the
        datastore) stays waiting and is reported; the others go on.
        """
        outcome = FlushOutcome()
        pending = self.pending_corrections()
        for index, correction in enumerate(pending):
            if cancel is not None:
                cancel.raise_if_cancelled()
            if progress:
                progress(index / max(len(pending), 1), f"sending queued correction {index + 1} of {len(pending)}")
            try:
                self.client.save_label(correction.image_id, correction.label(), params=correction.params())
            except MonaiLabelError as exc:
                if is_offline(exc):
                    outcome.offline_error = str(exc)
                    break
                if isinstance(exc, RequestRejected):
                    outcome.rejected.append((correction.correction_id, f"'{correction.image_id}': {exc}"))
                    continue
                raise
            self.db.mark_corrections_sent([correction.correction_id])
            outcome.sent.append(correction.correction_id)
        outcome.pending = self._pending_count()
        if outcome.sent:
            self.log(f"{len(outcome.sent)} queued correction(s) delivered")
        return outcome

    # ---------------------------------------------------------------- active learning

    def next_study(self, strategy: str = "most_uncertain", *, progress: Progress = None,
                   cancel: CancelToken | None = None) -> str | None:
        """The id of the next study to review (None when every study has a label); the server's whole answer, with
        its ``reason``, is kept in ``last_pick``."""
        answer = self.client.next_sample(strategy, progress=progress, cancel=cancel)
        self.last_pick = answer
        if answer is None:
            return None
        if answer.get("reason"):
            self.log(f"next study {answer['id']}: {answer['reason']}")
        return str(answer["id"])

    # ---------------------------------------------------------------- training

    def start_training(self, options: dict | None = None) -> TrainingRun:
        """Start retraining on the reviewed studies; recorded in the database when there is one."""
        info = self.client.check(self.model)
        sha_before = str((info["models"][self.model].get("model") or {}).get("sha256") or "")
        stats_before = dict((info.get("train_stats") or {}).get(self.model) or {})
        task = self.client.train_start(self.model, options or {})
        run = TrainingRun(new_id(), self.model, dict(options or {}), utc_now(), sha_before, stats_before,
                          task if isinstance(task, dict) else {})
        self._record_run(run, "running")
        self.log(f"training of {self.model} started")
        return run

    def training_progress(self, run: TrainingRun) -> TrainingProgress:
        """One look at the server: epoch, metrics, and whether the new model is live."""
        info = self.client.info()
        stats = dict((info.get("train_stats") or {}).get(run.model) or {})
        model_info = (info.get("models") or {}).get(run.model) or {}
        sha_now = str((model_info.get("model") or {}).get("sha256") or "")
        fresh = bool(stats) and (
            stats.get("started") != run.stats_before.get("started") if "started" in stats else stats != run.stats_before
        )
        status = str(stats.get("status", "")).upper() if fresh else ""
        metrics = {k: stats[k] for k in ("loss", "train_loss", "val_loss", "val_auc", "best_epoch", "best_val_auc")
                   if isinstance(stats.get(k), (int, float)) and not isinstance(stats.get(k), bool)}
        epoch, epochs = stats.get("epoch") if fresh else None, stats.get("epochs") if fresh else None
        epochs = epochs or (run.options.get("epochs") if isinstance(run.options.get("epochs"), int) else None)
        fraction = None
        if isinstance(epoch, int) and isinstance(epochs, int) and epochs > 0:
            step, steps = stats.get("step"), stats.get("steps")
            within = (step / steps) if isinstance(step, int) and isinstance(steps, int) and steps > 0 else 0.0
            done = epoch if "val_auc" in stats and stats.get("epoch") == epoch and within in (0.0, 1.0) else epoch - 1 + within
            fraction = max(0.0, min(1.0, done / epochs))
        if status == "FAILED":
            return TrainingProgress("failed", f"Training failed on the server: {stats.get('error') or 'no reason given'}",
                                    fraction, epoch, epochs, metrics)
        if status == "KEPT_ASIDE":
            return TrainingProgress("kept_aside", f"New model kept aside, the old one still serves: {stats.get('reason')}",
                                    1.0, epoch, epochs, metrics)
        if status == "DONE":
            new_sha = str(stats.get("model_sha256") or "")
            if sha_now and (sha_now == new_sha or (not new_sha and sha_now != run.sha_before)):
                return TrainingProgress("live", f"New model live (sha256 {sha_now[:12]})", 1.0, epoch, epochs, metrics,
                                        sha_now)
            return TrainingProgress("publishing", "Training done; waiting for the server to serve the new model", 1.0,
                                    epoch, epochs, metrics, new_sha)
        task = self.client.train_status() or {}
        task_state = str(task.get("status", "")).upper()
        same_task = not run.task.get("id") or task.get("id") == run.task.get("id")
        if same_task and task_state in ("ERROR", "STOPPED", "FAILED", "CANCELLED"):
            details = task.get("details")
            tail = details[-1] if isinstance(details, list) and details else ""
            return TrainingProgress("failed", f"Training {task_state.lower()} on the server. {tail}".strip(), fraction,
                                    epoch, epochs, metrics)
        if status == "RUNNING" and isinstance(epoch, int):
            shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "best_epoch")
            message = f"Training epoch {epoch}/{epochs}" + (f" ({shown})" if shown else "")
        else:
            message = "Training starting"
        return TrainingProgress("running", message, fraction, epoch, epochs, metrics)

    def wait_for_training(
        self,
        run: TrainingRun,
        *,
        poll_s: float = 2.0,
        timeout_s: float | None = None,
        publish_grace_s: float = 120.0,
        progress: Progress = None,
        cancel: CancelToken | None = None,
        on_update: Callable[[TrainingProgress], None] | None = None,
    ) -> TrainingProgress:
        """Poll until the new model is live or the training failed (short server outages are waited out)."""
        cancel = cancel or CancelToken()
        start = time.monotonic()
        publishing_since = None
        offline_since = None
        last = TrainingProgress("running", "Training starting")
        while True:
            cancel.raise_if_cancelled()
            try:
                last = self.training_progress(run)
                offline_since = None
            except MonaiLabelError as exc:
                if not is_offline(exc):
                    raise
                offline_since = offline_since or time.monotonic()
                if time.monotonic() - offline_since > max(60.0, 10 * poll_s):
                    raise
                last = TrainingProgress("running", f"Server not answering, still waiting: {exc}", last.fraction,
                                        last.epoch, last.epochs, last.metrics)
            if progress:
                progress(last.fraction, last.message)
            if on_update:
                on_update(last)
            if last.state == "publishing":
                publishing_since = publishing_since or time.monotonic()
                if time.monotonic() - publishing_since > publish_grace_s:
                    last = TrainingProgress("failed", "Training finished but the server still serves the old model "
                                            f"after {publish_grace_s:.0f} s; see the server log.", 1.0, last.epoch,
                                            last.epochs, last.metrics, last.model_sha256)
            if last.finished:
                self._record_run(run, "finished" if last.state == "live" else "failed", last)
                if last.state == "live" and self.status is not None:
                    try:
                        self.connect()
                    except MonaiLabelError:
                        pass
                return last
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                raise WorkflowError(f"Training still running after {timeout_s:.0f} s; it goes on on the server.")
            cancel.wait(poll_s)

    def stop_training(self, run: TrainingRun | None = None) -> None:
        self.client.train_stop()
        if run is not None:
            self._record_run(run, "stopped")

    def _record_run(self, run: TrainingRun, status: str, progress: TrainingProgress | None = None) -> None:
        if not self.has_database:
            return
        record: dict[str, Any] = {"run_id": run.run_id, "model_name": run.model, "status": status,
                                  "started_utc": run.started_utc, "options": run.options}
        if progress is not None:
            record["metrics"] = progress.metrics
            if progress.model_sha256 and status == "finished":
                record["model_sha256"] = progress.model_sha256
        if status in ("finished", "failed", "stopped"):
            record["finished_utc"] = utc_now()
        try:
            self.db.record_training_run(record)
        except Exception as exc:  # noqa: BLE001 - bookkeeping only
            self.log(f"could not record the training run: {exc}")


# ----------------------------------------------------------------------------- helpers


def validate_correction(correction: Correction, n_slices: int | None = None) -> None:
    """Raise ValueError with a plain message if the server would refuse this label."""
    problems = []
    if correction.study_label not in (0, 1) or isinstance(correction.study_label, bool):
        problems.append("choose the study label: scar or no scar")
    labels = correction.slice_labels
    if not isinstance(labels, (list, tuple)):
        problems.append("slice labels must be a list")
    else:
        bad = [i for i, v in enumerate(labels) if v not in (0, 1, None) or isinstance(v, bool)]
        if bad:
            problems.append(f"slice label(s) {bad} must be scar, no scar or empty")
        if n_slices is not None and labels and len(labels) != n_slices:
            problems.append(f"{len(labels)} slice labels given, the study has {n_slices} slices")
        if correction.study_label == 0 and any(v == 1 for v in labels):
            problems.append("a 'no scar' study cannot have a slice labelled scar")
    segments = correction.segment_labels
    if segments:
        if not isinstance(segments, (list, tuple)) or len(segments) != 17:
            problems.append("AHA segment labels must be 17 entries (segments 1-17 in order)")
        else:
            bad = [i + 1 for i, v in enumerate(segments) if v not in (0, 1, None) or isinstance(v, bool)]
            if bad:
                problems.append(f"AHA segment label(s) {bad} must be scar, no scar or empty")
            if correction.study_label == 0 and any(v == 1 for v in segments):
                scar = [i + 1 for i, v in enumerate(segments) if v == 1]
                problems.append(f"a 'no scar' study cannot have an AHA segment labelled scar (segment(s) {scar})")
    if correction.source not in SOURCES:
        problems.append(f"the source must be one of {', '.join(SOURCES)}")
    if not str(correction.reviewer or "").strip():
        problems.append("enter the reviewer's name")
    if not correction.image_id:
        problems.append("the correction has no study (image id)")
    if not correction.study_uid:
        problems.append("the correction has no study UID")
    if problems:
        raise ValueError("The correction cannot be submitted: " + "; ".join(problems) + ".")


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


def make_image_id(name_hint: str) -> str:
    """A datastore id from a node name: letters, digits, - and _ only, plus a short unique suffix."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name_hint or "cine").strip("_-")[:40] or "cine"
    return f"{stem}-{uuid.uuid4().hex[:6]}"


def is_missing_study(error: BaseException) -> bool:
    return isinstance(error, NotFound)
