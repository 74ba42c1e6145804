"""Validation and normalisation of what gets recorded: detection results, corrections, training runs, PACS exports.

Pure functions over plain dicts (standard library only), so that the same checks run in the server's
Python and inside 3D Slicer. Every check raises :class:`InvalidRecordError` (a ``ValueError``) whose
message names the field (dotted path) and says what was expected and what was found.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import InvalidRecordError

#: Longest accepted id (detection, correction, run ids; hex uuids are 32).
MAX_ID_LENGTH = 64
#: Longest accepted study UID (DICOM UIDs are at most 64 characters; other ids get some room).
MAX_UID_LENGTH = 128
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
#: Longest accepted DICOMweb base URL (after credentials, query and fragment are removed).
MAX_URL_LENGTH = 1024
#: DICOM UIDs (PS3.5 9.1): digits in dot-separated components without leading zeros, at most 64 characters.
MAX_DICOM_UID_LENGTH = 64
_DICOM_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
_MAP_KIND_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")

PREDICTION_LABELS = {0: "no scar", 1: "scar"}
#: The AHA 17-segment model: ``segment_probabilities`` and ``segment_labels`` have one entry per segment, in AHA order
#: (1 basal anterior ... 16 apical lateral, 17 apex).
N_SEGMENTS = 17
CORRECTION_SOURCES = ("LGE", "visual")
RUN_STATUSES = ("queued", "running", "finished", "failed", "stopped")
TERMINAL_RUN_STATUSES = ("finished", "failed", "stopped")

_MISSING = object()


# ----------------------------------------------------------------------------- helpers


def new_id() -> str:
    """A fresh record id (hex uuid4), for clients that create corrections or training runs."""
    return uuid.uuid4().hex


def now_utc() -> str:
    """The current time in the database's timestamp format."""
    return format_utc(datetime.now(timezone.utc))


def format_utc(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ``: fixed width, so text order is time order."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(value: Any, field: str) -> str:
    """An ISO 8601 time (string or ``datetime``) as UTC text. A time without offset is taken as UTC."""
    if isinstance(value, datetime):
        return format_utc(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecordError(f"field '{field}' must be an ISO 8601 time such as '2026-11-25T12:00:00Z', got {_show(value)}", field=field)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRecordError(
            f"field '{field}' is not an ISO 8601 time: {value!r} (expected e.g. '2026-11-25T12:00:00Z')", field=field
        ) from None
    return format_utc(moment)


def canonical_json(value: Any) -> str:
    """JSON text with sorted keys and no spaces: the form stored in JSON columns and hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def payload_hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _get(data: Mapping[str, Any], key: str, path: str, *, required: bool) -> Any:
    value = data.get(key, _MISSING)
    if value is _MISSING:
        if required:
            raise InvalidRecordError(f"missing field '{path}{key}'", field=f"{path}{key}")
        return None
    return value


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRecordError(f"field '{field}' must be an object (dict), got {_show(value)}", field=field)
    return value


def _id(value: Any, field: str, *, max_length: int = MAX_ID_LENGTH) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecordError(f"field '{field}' must be a non-empty string id, got {_show(value)}", field=field)
    text = value.strip()
    if len(text) > max_length:
        raise InvalidRecordError(f"field '{field}' is longer than {max_length} characters: {text[:40]!r}...", field=field)
    if not _ID_RE.match(text):
        raise InvalidRecordError(
            f"field '{field}' may hold only letters, digits and . _ : - (got {text!r})", field=field
        )
    return text


def _text(value: Any, field: str, *, optional: bool = True, non_empty: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidRecordError(f"field '{field}' must be a string, got {_show(value)}", field=field)
    if non_empty and not value.strip():
        raise InvalidRecordError(f"field '{field}' must not be empty", field=field)
    return value


def _float(value: Any, field: str, *, optional: bool = True, lo: float | None = None, hi: float | None = None,
           positive: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidRecordError(f"field '{field}' must be a number, got {_show(value)}", field=field)
    number = float(value)
    if not math.isfinite(number):
        raise InvalidRecordError(f"field '{field}' must be finite, got {number}", field=field)
    if lo is not None and number < lo or hi is not None and number > hi:
        raise InvalidRecordError(f"field '{field}' must lie in [{lo}, {hi}], got {number}", field=field)
    if positive and number <= 0:
        raise InvalidRecordError(f"field '{field}' must be > 0, got {number}", field=field)
    return number


def _int(value: Any, field: str, *, optional: bool = True, choices: Sequence[int] | None = None,
         minimum: int | None = None) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidRecordError(f"field '{field}' must be an integer, got {_show(value)}", field=field)
    number = int(value)
    if choices is not None and number not in choices:
        raise InvalidRecordError(f"field '{field}' must be one of {list(choices)}, got {number}", field=field)
    if minimum is not None and number < minimum:
        raise InvalidRecordError(f"field '{field}' must be >= {minimum}, got {number}", field=field)
    return number


def _json_value(value: Any, field: str) -> Any:
    """Any JSON-encodable value (dicts with string keys, lists, numbers, strings, null)."""
    try:
        canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise InvalidRecordError(f"field '{field}' must be JSON-encodable: {exc}", field=field) from None
    return json.loads(canonical_json(value))


def _json_object(value: Any, field: str) -> dict[str, Any] | None:
    if value is None:
        return None
    return dict(_json_value(_mapping(value, field), field))


# ----------------------------------------------------------------------------- detection results


def parse_study(study: Any, path: str = "study") -> dict[str, Any]:
    """The study block of a detection result -> the columns of ``studies`` (raw patient id kept here)."""
    study = _mapping(study, path)
    p = f"{path}."
    spacing = _get(study, "pixel_spacing_mm", p, required=False)
    if spacing is None:
        row_mm = col_mm = None
    elif isinstance(spacing, Sequence) and not isinstance(spacing, str):
        if len(spacing) != 2:
            raise InvalidRecordError(
                f"field '{p}pixel_spacing_mm' must be [row, column] spacing in mm, got {len(spacing)} values", field=f"{p}pixel_spacing_mm"
            )
        row_mm = _float(spacing[0], f"{p}pixel_spacing_mm[0]", optional=False, positive=True)
        col_mm = _float(spacing[1], f"{p}pixel_spacing_mm[1]", optional=False, positive=True)
    else:
        row_mm = col_mm = _float(spacing, f"{p}pixel_spacing_mm", optional=False, positive=True)
    series = _get(study, "series_uids", p, required=False)
    if series is not None:
        if isinstance(series, str) or not isinstance(series, Sequence):
            raise InvalidRecordError(f"field '{p}series_uids' must be a list of strings, got {_show(series)}", field=f"{p}series_uids")
        series = [_text(uid, f"{p}series_uids[{i}]", optional=False, non_empty=True) for i, uid in enumerate(series)]
    patient = _get(study, "patient_id", p, required=False)
    if patient is not None and not isinstance(patient, str):  # no value in the message: it may identify a patient
        raise InvalidRecordError(f"field '{p}patient_id' must be a string, got a {type(patient).__name__}", field=f"{p}patient_id")
    patient = patient.strip() if patient and patient.strip() else None
    return {
        "study_uid": _id(_get(study, "study_uid", p, required=True), f"{p}study_uid", max_length=MAX_UID_LENGTH),
        "patient_id": patient,
        "series_uids": series,
        "vendor": _text(_get(study, "vendor", p, required=False), f"{p}vendor"),
        "field_strength_t": _float(_get(study, "field_strength_t", p, required=False), f"{p}field_strength_t", positive=True),
        "slices": _int(_get(study, "slices", p, required=False), f"{p}slices", minimum=1),
        "phases": _int(_get(study, "phases", p, required=False), f"{p}phases", minimum=1),
        "pixel_spacing_row_mm": row_mm,
        "pixel_spacing_col_mm": col_mm,
        "slice_spacing_mm": _float(_get(study, "slice_spacing_mm", p, required=False), f"{p}slice_spacing_mm", positive=True),
        "rr_interval_ms": _float(_get(study, "rr_interval_ms", p, required=False), f"{p}rr_interval_ms", positive=True),
    }


def parse_model(model: Any, path: str = "model") -> dict[str, Any]:
    model = _mapping(model, path)
    p = f"{path}."
    version = _get(model, "version", p, required=True)
    if isinstance(version, numbers.Real) and not isinstance(version, bool):
        version = str(version)
    sha = _text(_get(model, "sha256", p, required=True), f"{p}sha256", optional=False, non_empty=True).strip().lower()
    if len(sha) > 128:
        raise InvalidRecordError(f"field '{p}sha256' is longer than 128 characters", field=f"{p}sha256")
    return {
        "sha256": sha,
        "name": _text(_get(model, "name", p, required=True), f"{p}name", optional=False, non_empty=True),
        "version": _text(version, f"{p}version", optional=False, non_empty=True),
        "trained_on": _json_value(_get(model, "trained_on", p, required=False), f"{p}trained_on"),
    }


def parse_detection(result: Any) -> dict[str, Any]:
    """A detection result (the server's infer JSON) -> ``{"study": ..., "model": ..., "detection": ...}``.

    Required: ``detection_id``, ``study.study_uid``, ``study_probability``, ``threshold``, ``prediction``,
    ``slice_probabilities``, ``model.name/version/sha256``, ``created_utc``. Optional: ``image_id``,
    ``prediction_label`` (checked against ``prediction``), ``segment_probabilities`` (17 probabilities or nulls in
    AHA order; null or ``[]``: the model has no segment output), ``uncertainty``, ``input``, ``timings`` and
    the other study fields. Unknown top-level fields are ignored.
    """
    result = _mapping(result, "detection result")
    detection_id = _id(_get(result, "detection_id", "", required=True), "detection_id")
    try:
        study = parse_study(_get(result, "study", "", required=True))
        model = parse_model(_get(result, "model", "", required=True))
        prediction = _int(_get(result, "prediction", "", required=True), "prediction", optional=False, choices=(0, 1))
        label = _text(_get(result, "prediction_label", "", required=False), "prediction_label")
        if label is not None and label != PREDICTION_LABELS[prediction]:
            raise InvalidRecordError(
                f"field 'prediction_label' is {label!r} but prediction is {prediction} ({PREDICTION_LABELS[prediction]!r})",
                field="prediction_label",
            )
        slice_probs = _get(result, "slice_probabilities", "", required=True)
        if isinstance(slice_probs, str) or not isinstance(slice_probs, Sequence):
            raise InvalidRecordError(
                f"field 'slice_probabilities' must be a list (one probability or null per slice), got {_show(slice_probs)}",
                field="slice_probabilities",
            )
        slice_probs = [_float(v, f"slice_probabilities[{i}]", lo=0.0, hi=1.0) for i, v in enumerate(slice_probs)]
        if study["slices"] is not None and len(slice_probs) != study["slices"]:
            raise InvalidRecordError(
                f"field 'slice_probabilities' has {len(slice_probs)} entries but study.slices is {study['slices']} "
                "(one entry per slice of the study, null for slices that were not scored)",
                field="slice_probabilities",
            )
        segments = _segment_list(_get(result, "segment_probabilities", "", required=False), "segment_probabilities",
                                 lambda v, f: _float(v, f, lo=0.0, hi=1.0), "a probability or null")
        uncertainty = _json_object(_get(result, "uncertainty", "", required=False), "uncertainty")
        unc_values = {}
        for key in ("std", "entropy", "mutual_information"):
            unc_values[key] = _float(uncertainty.get(key), f"uncertainty.{key}", lo=0.0) if uncertainty else None
        if uncertainty is not None:
            method = _text(uncertainty.get("method"), "uncertainty.method")
            _int(uncertainty.get("samples"), "uncertainty.samples", minimum=0 if method == "none" else 1)
        timings = _json_object(_get(result, "timings", "", required=False), "timings")
        if timings:
            for key, value in timings.items():
                _float(value, f"timings.{key}", lo=0.0)
        image_id = _text(_get(result, "image_id", "", required=False), "image_id")
        detection = {
            "detection_id": detection_id,
            "study_uid": study["study_uid"],
            "image_id": image_id,
            "model_sha256": model["sha256"],
            "study_probability": _float(_get(result, "study_probability", "", required=True), "study_probability",
                                        optional=False, lo=0.0, hi=1.0),
            "threshold": _float(_get(result, "threshold", "", required=True), "threshold", optional=False, lo=0.0, hi=1.0),
            "prediction": prediction,
            "prediction_label": PREDICTION_LABELS[prediction],
            "slice_probabilities": slice_probs,
            "segment_probabilities": segments,
            "uncertainty": uncertainty,
            "uncertainty_std": unc_values["std"],
            "uncertainty_entropy": unc_values["entropy"],
            "uncertainty_mutual_information": unc_values["mutual_information"],
            "input_summary": _json_object(_get(result, "input", "", required=False), "input"),
            "timings": timings,
            "total_ms": _float(timings.get("total_ms"), "timings.total_ms") if timings else None,
            "created_utc": parse_utc(_get(result, "created_utc", "", required=True), "created_utc"),
        }
    except InvalidRecordError as exc:
        raise InvalidRecordError(f"detection {detection_id!r}: {exc}", field=exc.field) from None
    return {"study": study, "model": model, "detection": detection}


# ----------------------------------------------------------------------------- corrections


def parse_correction(correction: Any) -> dict[str, Any]:
    """A reviewer's label (the ``.scar.json`` content) plus ``correction_id``, ``study_uid``, ``image_id``.

    Optional: ``detection_id`` (the detection that was corrected), ``created_utc`` (default: now), ``picked_by``
    (the next-study answer that chose the study: a JSON object, e.g. strategy, score, model_sha256),
    ``segment_labels`` (17 entries 0, 1 or null in AHA order; null or ``[]``: no segment labels).
    """
    correction = _mapping(correction, "correction")
    correction_id = _id(_get(correction, "correction_id", "", required=True), "correction_id")
    try:
        labels = _get(correction, "slice_labels", "", required=True)
        if isinstance(labels, str) or not isinstance(labels, Sequence):
            raise InvalidRecordError(
                f"field 'slice_labels' must be a list of 0, 1 or null (one per slice), got {_show(labels)}", field="slice_labels"
            )
        labels = [_label(v, f"slice_labels[{i}]", optional=True) for i, v in enumerate(labels)]
        segment_labels = _segment_list(_get(correction, "segment_labels", "", required=False), "segment_labels",
                                       lambda v, f: _label(v, f, optional=True), "0, 1 or null")
        source = _get(correction, "source", "", required=True)
        if source not in CORRECTION_SOURCES:
            raise InvalidRecordError(f"field 'source' must be one of {list(CORRECTION_SOURCES)}, got {_show(source)}", field="source")
        detection_id = _get(correction, "detection_id", "", required=False)
        created = _get(correction, "created_utc", "", required=False)
        row = {
            "correction_id": correction_id,
            "study_uid": _id(_get(correction, "study_uid", "", required=True), "study_uid", max_length=MAX_UID_LENGTH),
            "image_id": _text(_get(correction, "image_id", "", required=False), "image_id"),
            "detection_id": None if detection_id is None else _id(detection_id, "detection_id"),
            "study_label": _label(_get(correction, "study_label", "", required=True), "study_label", optional=False),
            "slice_labels": labels,
            "segment_labels": segment_labels,
            "source": source,
            "reviewer": _text(_get(correction, "reviewer", "", required=True), "reviewer", optional=False),
            "comment": _text(_get(correction, "comment", "", required=False), "comment") or "",
            "created_utc": None if created is None else parse_utc(created, "created_utc"),
            "picked_by": _json_object(_get(correction, "picked_by", "", required=False), "picked_by"),
        }
    except InvalidRecordError as exc:
        raise InvalidRecordError(f"correction {correction_id!r}: {exc}", field=exc.field) from None
    return row


def _segment_list(value: Any, field: str, check: Callable[[Any, str], Any], entry: str) -> list[Any] | None:
    """A per-segment list (``N_SEGMENTS`` entries in AHA order, each checked by ``check``); None or [] -> None."""
    if value is None or (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 0):
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidRecordError(
            f"field '{field}' must be a list of {N_SEGMENTS} entries (AHA segments 1-17 in order), each {entry}; "
            f"got {_show(value)}", field=field)
    if len(value) != N_SEGMENTS:
        raise InvalidRecordError(
            f"field '{field}' has {len(value)} entries; it needs {N_SEGMENTS} (AHA segments 1-17 in order, each "
            f"{entry}), or null when there are none", field=field)
    return [check(v, f"{field}[{i}]") for i, v in enumerate(value)]


def _label(value: Any, field: str, *, optional: bool) -> int | None:
    if isinstance(value, bool):  # JSON true/false from a client: accept as 1/0
        return int(value)
    return _int(value, field, optional=optional, choices=(0, 1))


# ----------------------------------------------------------------------------- training runs


def parse_training_run(run: Any) -> dict[str, Any]:
    """``{"run_id", "model_name", "status", "started_utc", "finished_utc"?, "options"?, "metrics"?, "model_sha256"?}``.

    ``status`` is one of queued, running, finished, failed, stopped (case-insensitive).
    """
    run = _mapping(run, "training run")
    run_id = _id(_get(run, "run_id", "", required=True), "run_id")
    try:
        status = _text(_get(run, "status", "", required=True), "status", optional=False).strip().lower()
        if status not in RUN_STATUSES:
            raise InvalidRecordError(f"field 'status' must be one of {list(RUN_STATUSES)}, got {status!r}", field="status")
        finished = _get(run, "finished_utc", "", required=False)
        sha = _text(_get(run, "model_sha256", "", required=False), "model_sha256")
        row = {
            "run_id": run_id,
            "model_name": _text(_get(run, "model_name", "", required=True), "model_name", optional=False, non_empty=True),
            "status": status,
            "started_utc": parse_utc(_get(run, "started_utc", "", required=True), "started_utc"),
            "finished_utc": None if finished is None else parse_utc(finished, "finished_utc"),
            "options": _json_object(_get(run, "options", "", required=False), "options"),
            "metrics": _json_object(_get(run, "metrics", "", required=False), "metrics"),
            "model_sha256": sha.strip().lower() if sha and sha.strip() else None,
        }
        if row["finished_utc"] is not None and row["finished_utc"] < row["started_utc"]:
            raise InvalidRecordError(
                f"field 'finished_utc' ({row['finished_utc']}) is before started_utc ({row['started_utc']})", field="finished_utc"
            )
    except InvalidRecordError as exc:
        raise InvalidRecordError(f"training run {run_id!r}: {exc}", field=exc.field) from None
    return row


# ----------------------------------------------------------------------------- PACS exports


def pacs_base_url(value: Any, field: str = "pacs_url") -> str:
    """A DICOMweb base URL in the form stored: what identifies the server, and nothing that could let someone in.

    ``http`` or ``https`` with a host, else refused. Removed, never stored: a user name and password
    (``user:password@``), the query (``?access_token=...``) and the fragment. The scheme and host are lower-cased
    and a trailing ``/`` is dropped, so the same server always gives the same text. Error messages never show the
    URL as given (it may hold a password), only this form or its scheme.
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecordError(f"field '{field}' must be a DICOMweb URL such as 'https://pacs.example.org/dicom-web', "
                                 f"got a {type(value).__name__}" + (" (empty)" if isinstance(value, str) else ""), field=field)
    text = value.strip()
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InvalidRecordError(f"field '{field}' must be a URL without spaces or control characters", field=field)
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise InvalidRecordError(f"field '{field}' is not a valid URL (bad host or port)", field=field) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidRecordError(
            f"field '{field}' must be an http:// or https:// DICOMweb URL, got scheme {scheme or '(none)'!r}", field=field
        )
    if not host:
        raise InvalidRecordError(f"field '{field}' must name a host (e.g. 'https://pacs.example.org/dicom-web')", field=field)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    url = urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRecordError(f"field '{field}' is longer than {MAX_URL_LENGTH} characters: {url[:60]!r}...", field=field)
    return url


def _dicom_uid(value: Any, field: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecordError(f"field '{field}' must be a DICOM UID such as '1.2.840.10008.5.1.4.1.1.88.34', "
                                 f"got {_show(value)}", field=field)
    uid = value.strip()
    if len(uid) > MAX_DICOM_UID_LENGTH or not _DICOM_UID_RE.match(uid):
        raise InvalidRecordError(
            f"field '{field}' is not a DICOM UID (digits in dot-separated parts without leading zeros, at most "
            f"{MAX_DICOM_UID_LENGTH} characters): {uid[:70]!r}", field=field
        )
    return uid


def parse_pacs_export(export: Any) -> dict[str, Any]:
    """What a detection was written to a PACS as (the ``pacs`` record of a detection result, plus its ids).

    Required: ``detection_id``, ``pacs_url`` (the DICOMweb base URL; see :func:`pacs_base_url` for what is removed),
    ``sr_series_uid``, ``sr_sop_uid``. Optional: ``export_id`` (``None`` here: the database makes one),
    ``study_uid`` and ``model_sha256`` (``None``: taken from the stored detection; if given, they must match it),
    ``map_series_uid`` + ``map_sop_uid`` (both or neither), ``map_kind`` (e.g. ``SEG``; only with a map),
    ``stored_utc`` (``None``: now). Unknown fields (such as the ``pacs`` record's ``url`` or ``error``) are ignored.
    """
    export = _mapping(export, "PACS export")
    export_id = _get(export, "export_id", "", required=False)
    export_id = None if export_id is None else _id(export_id, "export_id")
    what = f"PACS export {export_id!r}" if export_id else "PACS export"
    try:
        study_uid = _get(export, "study_uid", "", required=False)
        sha = _get(export, "model_sha256", "", required=False)
        if sha is not None:
            sha = _text(sha, "model_sha256", optional=False, non_empty=True).strip().lower()
            if len(sha) > 128:
                raise InvalidRecordError("field 'model_sha256' is longer than 128 characters", field="model_sha256")
        map_series = _dicom_uid(_get(export, "map_series_uid", "", required=False), "map_series_uid", optional=True)
        map_sop = _dicom_uid(_get(export, "map_sop_uid", "", required=False), "map_sop_uid", optional=True)
        if (map_series is None) != (map_sop is None):
            missing = "map_sop_uid" if map_sop is None else "map_series_uid"
            raise InvalidRecordError(f"field '{missing}' is missing: a map needs both map_series_uid and map_sop_uid "
                                     "(or neither, for a detection stored without a map)", field=missing)
        kind = _text(_get(export, "map_kind", "", required=False), "map_kind")
        if kind is not None:
            kind = kind.strip().upper()
            if not _MAP_KIND_RE.match(kind):
                raise InvalidRecordError(f"field 'map_kind' must be a short DICOM modality such as 'SEG', got {kind[:40]!r}",
                                         field="map_kind")
            if map_sop is None:
                raise InvalidRecordError(f"field 'map_kind' is {kind!r} but no map_sop_uid is given", field="map_kind")
        stored = _get(export, "stored_utc", "", required=False)
        row = {
            "export_id": export_id,
            "detection_id": _id(_get(export, "detection_id", "", required=True), "detection_id"),
            "study_uid": None if study_uid is None else _id(study_uid, "study_uid", max_length=MAX_UID_LENGTH),
            "pacs_url": pacs_base_url(_get(export, "pacs_url", "", required=True), "pacs_url"),
            "model_sha256": sha,
            "sr_series_uid": _dicom_uid(_get(export, "sr_series_uid", "", required=True), "sr_series_uid"),
            "sr_sop_uid": _dicom_uid(_get(export, "sr_sop_uid", "", required=True), "sr_sop_uid"),
            "map_series_uid": map_series,
            "map_sop_uid": map_sop,
            "map_kind": kind,
            "stored_utc": None if stored is None else parse_utc(stored, "stored_utc"),
        }
        if map_sop is not None and map_sop in (row["sr_sop_uid"], row["sr_series_uid"], map_series):
            raise InvalidRecordError(f"field 'map_sop_uid' repeats another UID of the export ({map_sop})", field="map_sop_uid")
        if row["sr_sop_uid"] == row["sr_series_uid"]:
            raise InvalidRecordError("field 'sr_sop_uid' equals sr_series_uid (a SOP instance needs its own UID)",
                                     field="sr_sop_uid")
    except InvalidRecordError as exc:
        raise InvalidRecordError(f"{what}: {exc}", field=exc.field) from None
    return row
