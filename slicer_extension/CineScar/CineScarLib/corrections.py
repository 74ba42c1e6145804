"""A reviewer's correction: the label (``<id>.scar.json``), its checks, and its delivery with an offline queue.

A correction that cannot reach the server is kept in the results database (``sent_utc`` NULL) and delivered by
:meth:`CorrectionsMixin.flush_queue` later. The correction id is made here, before the first attempt, so a resend
is recognised as the same record; on the server the label of a study is one file that a resend overwrites with
the same content. A correction is therefore either on the server or in the database (or both), never only in
memory, unless the session says so (:class:`~.errors.CorrectionNotSaved`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .cancel import CancelToken, Progress
from .errors import CorrectionNotSaved, DatabaseUnavailable, MonaiLabelError, RequestRejected, is_offline
from .records import new_id, utc_now

if TYPE_CHECKING:
    from .records import Detection

SOURCES = ("LGE", "visual")


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


class CorrectionsMixin:
    """:class:`~.session.ScarSession`'s corrections: make, check, send or keep, and send the kept ones.

    Uses the session's ``client``, ``db``, ``has_database``, ``last_pick`` and ``log``."""

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
