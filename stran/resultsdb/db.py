"""``ResultsDB``: the local results database (SQLite file or any SQLAlchemy URL, e.g. PostgreSQL)."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import math
import os
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import URL, Connection, Engine, Table, create_engine, event, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError

from . import schema as S
from .errors import ConflictError, InvalidRecordError, ResultsDBError, SchemaVersionError
from .pacs import put_pacs_export, select_pacs_exports
from .records import (
    TERMINAL_RUN_STATUSES,
    canonical_json,
    now_utc,
    parse_correction,
    parse_detection,
    parse_pacs_export,
    parse_training_run,
    parse_utc,
    payload_hash,
)

T = TypeVar("T")

#: Relative tolerance when a study's float metadata (spacing, RR, field strength) is compared with what is stored.
FLOAT_RTOL = 1e-3
_PG_LOCK_KEY = 0x57524E5344  # pg_advisory_xact_lock key serialising schema creation/migration
_WRITE_ATTEMPTS = 3
_CORRECTION_CONTENT = ("study_uid", "image_id", "detection_id", "study_label", "slice_labels", "source", "reviewer", "comment",
                       "segment_labels")
#: Fields added after records were first hashed (v5): they enter ``payload_sha256`` only when set, so that a record
#: stored before them (and sent again, e.g. from the Slicer module's queue) still hashes as it did.
_HASHED_WHEN_SET = ("segment_probabilities", "segment_labels")
_RUN_FIXED = ("model_name", "started_utc", "options")
_RUN_MUTABLE = ("status", "finished_utc", "metrics", "model_sha256")


def database_url(url_or_path: str | os.PathLike[str]) -> URL:
    """A plain path (no ``://``) means a SQLite file at that path; anything else is a SQLAlchemy URL."""
    if isinstance(url_or_path, os.PathLike) or "://" not in str(url_or_path):
        path = Path(url_or_path).expanduser().absolute()
        return URL.create("sqlite", database=str(path))
    try:
        return make_url(str(url_or_path))
    except ArgumentError as exc:
        raise ResultsDBError(f"not a database path or URL: {url_or_path!r} ({exc})") from None


class ResultsDB:
    """Detection results, reviewer corrections, training runs and what was written to a PACS, for analysis.

    ``ResultsDB(path)`` opens (or creates) a SQLite file; ``ResultsDB("postgresql://user@host/db")``
    any SQLAlchemy URL. The schema is created or migrated on open (see ``schema.py``). Every
    ``record_*`` call is one transaction: it writes everything or nothing. Records are immutable and
    keyed by their id: recording the same record again is a no-op, different content under a used id
    raises :class:`ConflictError`.

    With ``pseudonymise=True`` (the default) the raw patient id is not stored: ``studies.patient_pseudonym``
    holds a keyed HMAC-SHA256 of it, with a random key kept in this database (so pseudonyms differ
    between databases and the same patient maps to the same pseudonym within one).
    """

    def __init__(self, url_or_path: str | os.PathLike[str], *, pseudonymise: bool = True, busy_timeout_s: float = 30.0) -> None:
        self.pseudonymise = pseudonymise
        url = database_url(url_or_path)
        self.dialect = url.get_backend_name()
        if self.dialect == "sqlite" and url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        self._engine = _make_engine(url, busy_timeout_s)
        self.url = self._engine.url.render_as_string(hide_password=True)
        self.migrated_from: int | None = None  # the version found on open, if it was older
        self.created = False
        try:
            self._secret = self._open_schema()
        except BaseException:
            self._engine.dispose()
            raise

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsDB({self.url!r}, schema_version={self.schema_version})"

    @property
    def schema_version(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(S.meta.c.value).where(S.meta.c.key == "schema_version")).scalar_one())

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                if self.dialect == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")  # one snapshot for multi-table reads
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            raise ResultsDBError(f"could not read the results database {self.url}: {_reason(exc)}") from exc

    def _write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one write transaction; retry when a concurrent writer inserted the same key first."""
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                with self._engine.connect() as conn:
                    conn.execution_options(stran_write=True)  # SQLite: BEGIN IMMEDIATE
                    with conn.begin():
                        return work(conn)
            except IntegrityError as exc:
                if attempt == _WRITE_ATTEMPTS:
                    raise ResultsDBError(f"the results database {self.url} refused the write: {_reason(exc)}") from exc
            except DBAPIError as exc:
                raise ResultsDBError(f"the results database {self.url} refused the write: {_reason(exc)}") from exc
        raise AssertionError("unreachable")

    def _open_schema(self) -> str:
        def work(conn: Connection) -> str:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            names = set(inspect(conn).get_table_names())
            ours = {t.name for t in S.TABLES}
            now = now_utc()
            if "meta" not in names:
                foreign = sorted(names & ours) if self.dialect != "sqlite" else sorted(names)
                if foreign:
                    raise SchemaVersionError(
                        f"{self.url} is not an ST-RAN results database (it has tables {', '.join(foreign[:8])} but no "
                        "'meta' table); choose an empty database or a new file"
                    )
                S.metadata.create_all(conn)
                secret = secrets.token_hex(32)
                conn.execute(S.meta.insert(), [
                    {"key": "schema_version", "value": str(S.SCHEMA_VERSION)},
                    {"key": "pseudonym_secret", "value": secret},
                    {"key": "created_utc", "value": now},
                ])
                conn.execute(S.schema_history.insert().values(
                    version=S.SCHEMA_VERSION, applied_utc=now, description=f"created at schema version {S.SCHEMA_VERSION}"
                ))
                self.created = True
                return secret
            settings = {key: value for key, value in conn.execute(select(S.meta.c.key, S.meta.c.value))}
            try:
                version = int(settings["schema_version"])
                secret = settings["pseudonym_secret"]
                bytes.fromhex(secret)
            except (KeyError, ValueError):
                raise SchemaVersionError(
                    f"{self.url}: the 'meta' table lacks a valid schema_version or pseudonym_secret; the database is damaged"
                ) from None
            if version > S.SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.url} has results-database schema version {version}, written by a newer version of ST-RAN Scar; "
                    f"this version reads schema versions 1 to {S.SCHEMA_VERSION}. Update ST-RAN Scar (or the Slicer "
                    "extension) to open it; the database was not changed."
                )
            if version < 1:
                raise SchemaVersionError(f"{self.url}: schema version {version} is not valid")
            for step in range(version + 1, S.SCHEMA_VERSION + 1):
                description, migrate = S.MIGRATIONS[step]
                migrate(conn)
                conn.execute(S.meta.update().where(S.meta.c.key == "schema_version").values(value=str(step)))
                conn.execute(S.schema_history.insert().values(
                    version=step, applied_utc=now, description=f"migrated from {step - 1}: {description}"
                ))
            if version < S.SCHEMA_VERSION:
                self.migrated_from = version
            drift = S.schema_drift(conn)
            if drift:
                raise SchemaVersionError(
                    f"{self.url} says schema version {S.SCHEMA_VERSION} but does not match it: {'; '.join(drift)}"
                )
            return secret

        return self._write(work)

    # ------------------------------------------------------------------ pseudonyms

    def pseudonym(self, patient_id: str | None) -> str | None:
        """The pseudonym this database gives ``patient_id`` (keyed HMAC-SHA256, 96 bits shown)."""
        if patient_id is None or not str(patient_id).strip():
            return None
        digest = hmac.new(bytes.fromhex(self._secret), str(patient_id).strip().encode("utf-8"), hashlib.sha256)
        return "anon-" + digest.hexdigest()[:24]

    # ------------------------------------------------------------------ recording

    def record_detection(self, result: Mapping[str, Any]) -> str:
        """Store one detection result (the server's infer JSON); returns its ``detection_id``. A ``pacs`` record
        in the result (what was stored on a PACS, without an ``error``) goes in ``pacs_exports``, in the same
        transaction."""
        parsed = parse_detection(result)
        export = _stored_export(result)

        def work(conn: Connection) -> str:
            now = now_utc()
            detection_id = self._put_detection(conn, parsed, now)
            if export is not None:
                put_pacs_export(conn, {**export, "detection_id": detection_id}, now)
            return detection_id

        return self._write(work)

    def record_correction(self, correction: Mapping[str, Any] | None = None, **fields: Any) -> str:
        """Store a reviewer's correction: the ``.scar.json`` label plus ``correction_id``, ``study_uid``,
        ``image_id`` (and optionally ``detection_id``, ``created_utc``, ``sent_utc``), given in the mapping
        or as keywords (keywords win). Returns the ``correction_id``."""
        row = parse_correction({**(correction or {}), **fields})
        sent = _optional_time({**(correction or {}), **fields}.get("sent_utc"), "sent_utc")
        return self._write(lambda conn: self._put_correction(conn, row, sent, now_utc()))

    def record_training_run(self, run: Mapping[str, Any] | None = None, **fields: Any) -> str:
        """Store or update a training run. ``model_name``, ``started_utc`` and ``options`` are fixed once
        stored; ``status``, ``finished_utc``, ``metrics`` and ``model_sha256`` may change until the run has
        a final status (finished, failed, stopped). Returns the ``run_id``."""
        row = parse_training_run({**(run or {}), **fields})
        return self._write(lambda conn: self._put_run(conn, row, now_utc()))

    def record_pacs_export(self, export: Mapping[str, Any] | None = None, **fields: Any) -> str:
        """Note that a recorded detection was written to a PACS: ``detection_id``, ``pacs_url``, ``sr_series_uid``,
        ``sr_sop_uid`` and optionally ``map_series_uid``, ``map_sop_uid``, ``map_kind``, ``stored_utc``, ``study_uid``
        and ``model_sha256`` (checked against the detection), ``export_id`` (made when absent); in the mapping or as
        keywords (keywords win). The URL is stored without user, password, query or fragment. Recording the same
        export (detection, URL, SR SOP UID) again is a no-op. Returns the ``export_id``; see ``pacs.py``."""
        row = parse_pacs_export({**(export or {}), **fields})
        return self._write(lambda conn: put_pacs_export(conn, row, now_utc()))

    def record_many(
        self,
        *,
        detections: Iterable[Mapping[str, Any]] = (),
        corrections: Iterable[Mapping[str, Any]] = (),
        training_runs: Iterable[Mapping[str, Any]] = (),
    ) -> dict[str, list[str]]:
        """Store a batch in ONE transaction: every item is validated first, then all are written or none.

        An error names the item (``detections[2]: ...``). Returns the ids by kind.
        """
        parsed_d, parsed_c, parsed_r = [], [], []
        for kind, items, parse, out in (
            ("detections", detections, parse_detection, parsed_d),
            ("corrections", corrections, None, parsed_c),
            ("training_runs", training_runs, parse_training_run, parsed_r),
        ):
            for index, item in enumerate(items):
                try:
                    if parse is None:
                        out.append((parse_correction(item), _optional_time(_field(item, "sent_utc"), "sent_utc")))
                    else:
                        out.append(parse(item))
                except InvalidRecordError as exc:
                    raise exc.in_item(f"{kind}[{index}]") from None

        def work(conn: Connection) -> dict[str, list[str]]:
            now = now_utc()
            ids: dict[str, list[str]] = {"detections": [], "corrections": [], "training_runs": []}
            for kind, items, put in (
                ("detections", parsed_d, lambda p: self._put_detection(conn, p, now)),
                ("training_runs", parsed_r, lambda p: self._put_run(conn, p, now)),
                ("corrections", parsed_c, lambda p: self._put_correction(conn, p[0], p[1], now)),
            ):
                for index, item in enumerate(items):
                    try:
                        ids[kind].append(put(item))
                    except InvalidRecordError as exc:
                        raise exc.in_item(f"{kind}[{index}]") from None
                    except ConflictError as exc:
                        raise ConflictError(f"{kind}[{index}]: {exc}", kind=exc.kind, record_id=exc.record_id,
                                            differences=exc.differences) from None
            return ids

        return self._write(work)

    def mark_corrections_sent(self, correction_ids: Iterable[str], *, sent_utc: Any = None) -> int:
        """Note that these corrections reached the server (first time only). Returns how many changed."""
        when = _optional_time(sent_utc, "sent_utc") or now_utc()
        ids = list(correction_ids)

        def work(conn: Connection) -> int:
            c = S.corrections.c
            found = set(conn.execute(select(c.correction_id).where(c.correction_id.in_(ids))).scalars())
            unknown = [i for i in ids if i not in found]
            if unknown:
                raise ResultsDBError(f"unknown correction id(s): {', '.join(unknown[:5])}")
            result = conn.execute(
                S.corrections.update().where(c.correction_id.in_(ids), c.sent_utc.is_(None)).values(sent_utc=when)
            )
            return int(result.rowcount)

        return self._write(work) if ids else 0

    # ------------------------------------------------------------------ writers (inside a transaction)

    def _put_detection(self, conn: Connection, parsed: Mapping[str, Any], now: str) -> str:
        study = dict(parsed["study"])
        raw_patient = study.pop("patient_id")
        study["patient_pseudonym"] = self.pseudonym(raw_patient)
        model = dict(parsed["model"])
        row = dict(parsed["detection"])
        row["payload_sha256"] = payload_hash({"study": study, "model": model, "detection": _hashed(row)})
        det_id = row["detection_id"]
        stored = _one(conn, S.detections, det_id)
        if stored is not None:
            if stored["payload_sha256"] == row["payload_sha256"]:
                return det_id
            diffs = _differences(stored, row, skip=("payload_sha256", "recorded_utc"))
            stored_study = _one(conn, S.studies, study["study_uid"]) or {}
            stored_model = _one(conn, S.models, model["sha256"]) or {}
            diffs.update({f"study.{k}": v for k, v in _differences(stored_study, study, skip=("study_uid",), lenient=True).items()})
            diffs.update({f"model.{k}": v for k, v in _differences(stored_model, model).items()})
            raise ConflictError.of("detection", det_id, diffs, "detection ids are unique: give a new result a new detection_id")
        self._merge_model(conn, model, now)
        study["patient_id"] = None if self.pseudonymise else raw_patient
        self._merge_study(conn, study, now)
        conn.execute(S.detections.insert().values(**row, recorded_utc=now))
        return det_id

    def _merge_model(self, conn: Connection, model: dict[str, Any], now: str) -> None:
        stored = _one(conn, S.models, model["sha256"])
        if stored is None:
            conn.execute(S.models.insert().values(**model, first_seen_utc=now))
            return
        diffs = _differences(stored, model, skip=("first_seen_utc",), fill_nulls=True)
        if diffs:
            raise ConflictError.of("model", model["sha256"], diffs, "one sha256 must always carry the same name, version and trained_on")
        if stored["trained_on"] is None and model["trained_on"] is not None:
            conn.execute(S.models.update().where(S.models.c.sha256 == model["sha256"]).values(trained_on=model["trained_on"]))

    def _merge_study(self, conn: Connection, study: dict[str, Any], now: str) -> None:
        uid = study["study_uid"]
        stored = _one(conn, S.studies, uid)
        if stored is None:
            conn.execute(S.studies.insert().values(**study, first_seen_utc=now, updated_utc=now))
            return
        diffs = _differences(stored, study, skip=("study_uid", "patient_id", "first_seen_utc", "updated_utc"),
                             fill_nulls=True, lenient=True)
        if diffs:
            raise ConflictError.of("study", uid, diffs, "the same study UID arrived with different study metadata")
        fills = {k: v for k, v in study.items() if v is not None and stored.get(k) is None}
        if "slices" in fills:  # corrections stored before the study's size was known must fit it
            c = S.corrections.c
            for corr_id, labels in conn.execute(select(c.correction_id, c.slice_labels).where(c.study_uid == uid)):
                if len(labels) != fills["slices"]:
                    raise ConflictError.of("study", uid, {"slices": (f"{len(labels)} (labels of correction {corr_id})", fills["slices"])},
                                    "slice labels and slice probabilities must refer to the same slices")
        if fills:
            conn.execute(S.studies.update().where(S.studies.c.study_uid == uid).values(**fills, updated_utc=now))

    def _put_correction(self, conn: Connection, row: dict[str, Any], sent: str | None, now: str) -> str:
        corr_id = row["correction_id"]
        content = {k: row[k] for k in _CORRECTION_CONTENT}
        digest = payload_hash(_hashed(content))
        stored = _one(conn, S.corrections, corr_id)
        if stored is not None:
            if stored["payload_sha256"] != digest:
                raise ConflictError.of("correction", corr_id, _differences(stored, content),
                                "correction ids are unique: a changed label is a new correction with a new correction_id")
            if sent is not None and stored["sent_utc"] is None:
                conn.execute(S.corrections.update().where(S.corrections.c.correction_id == corr_id).values(sent_utc=sent))
            return corr_id
        study = _one(conn, S.studies, row["study_uid"])
        if study is None:
            conn.execute(S.studies.insert().values(study_uid=row["study_uid"], first_seen_utc=now, updated_utc=now))
        elif study["slices"] is not None and len(row["slice_labels"]) != study["slices"]:
            raise InvalidRecordError(
                f"correction {corr_id!r}: field 'slice_labels' has {len(row['slice_labels'])} entries but study "
                f"{row['study_uid']} has {study['slices']} slices (one label or null per slice)",
                field="slice_labels",
            )
        conn.execute(S.corrections.insert().values(
            **content, correction_id=corr_id, created_utc=row["created_utc"] or now, recorded_utc=now,
            payload_sha256=digest, sent_utc=sent, picked_by=row.get("picked_by"),
        ))
        return corr_id

    def _put_run(self, conn: Connection, row: dict[str, Any], now: str) -> str:
        run_id = row["run_id"]
        stored = _one(conn, S.training_runs, run_id)
        if stored is None:
            conn.execute(S.training_runs.insert().values(**row, recorded_utc=now, updated_utc=now))
            return run_id
        fixed = _differences(stored, {k: row[k] for k in _RUN_FIXED})
        if fixed:
            raise ConflictError.of("training run", run_id, fixed, "model_name, started_utc and options of a run never change")
        changes = _differences(stored, {k: row[k] for k in _RUN_MUTABLE})
        if changes and stored["status"] in TERMINAL_RUN_STATUSES:
            raise ConflictError.of("training run", run_id, changes, f"the run already ended ({stored['status']}) and is final")
        if changes:
            conn.execute(S.training_runs.update().where(S.training_runs.c.run_id == run_id).values(
                **{k: row[k] for k in _RUN_MUTABLE}, updated_utc=now
            ))
        return run_id

    # ------------------------------------------------------------------ queries

    def detections(
        self,
        *,
        study_uid: str | None = None,
        model_sha256: str | None = None,
        model_name: str | None = None,
        since: Any = None,
        until: Any = None,
    ) -> list[dict[str, Any]]:
        """Detections (oldest first) with ``model_name``, ``model_version`` and ``patient_pseudonym`` joined in.

        ``since`` / ``until``: ISO times (inclusive / exclusive) on ``created_utc``."""
        d, m, s = S.detections, S.models, S.studies
        query = (
            select(d, m.c.name.label("model_name"), m.c.version.label("model_version"), s.c.patient_pseudonym)
            .join(m, m.c.sha256 == d.c.model_sha256)
            .join(s, s.c.study_uid == d.c.study_uid)
            .order_by(d.c.created_utc, d.c.detection_id)
        )
        if study_uid is not None:
            query = query.where(d.c.study_uid == study_uid)
        if model_sha256 is not None:
            query = query.where(d.c.model_sha256 == model_sha256.lower())
        if model_name is not None:
            query = query.where(m.c.name == model_name)
        if since is not None:
            query = query.where(d.c.created_utc >= parse_utc(since, "since"))
        if until is not None:
            query = query.where(d.c.created_utc < parse_utc(until, "until"))
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def corrections(
        self,
        *,
        study_uid: str | None = None,
        reviewer: str | None = None,
        detection_id: str | None = None,
        unsent_only: bool = False,
    ) -> list[dict[str, Any]]:
        """Corrections (oldest first). ``unsent_only``: those not yet marked as sent to the server."""
        c = S.corrections.c
        query = select(S.corrections).order_by(c.created_utc, c.correction_id)
        if study_uid is not None:
            query = query.where(c.study_uid == study_uid)
        if reviewer is not None:
            query = query.where(c.reviewer == reviewer)
        if detection_id is not None:
            query = query.where(c.detection_id == detection_id)
        if unsent_only:
            query = query.where(c.sent_utc.is_(None))
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def training_runs(self, *, model_name: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        c = S.training_runs.c
        query = select(S.training_runs).order_by(c.started_utc, c.run_id)
        if model_name is not None:
            query = query.where(c.model_name == model_name)
        if status is not None:
            query = query.where(c.status == status.lower())
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def pacs_exports(self, *, study_uid: str | None = None, detection_id: str | None = None) -> list[dict[str, Any]]:
        """What was written to a PACS (oldest store first), by study or by detection."""
        with self._read() as conn:
            return [dict(r) for r in conn.execute(select_pacs_exports(study_uid=study_uid, detection_id=detection_id)).mappings()]

    def studies(self) -> list[dict[str, Any]]:
        return self.rows("studies")

    def models(self) -> list[dict[str, Any]]:
        return self.rows("models")

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of one table, in primary-key order (``meta`` included, secret and all)."""
        return self.snapshot([table])[table]

    def snapshot(self, tables: Iterable[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """The content of several tables (default: all) read in one transaction."""
        chosen = [_table(name) for name in tables] if tables is not None else list(S.TABLES)
        with self._read() as conn:
            return {t.name: [dict(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns)).mappings()] for t in chosen}

    def counts(self) -> dict[str, int]:
        """Rows per exported table."""
        with self._read() as conn:
            return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in S.EXPORTED}

    # ------------------------------------------------------------------ export

    def export_csv(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write ``<table>.csv`` for every table but ``meta`` (which holds the pseudonym key), plus
        ``manifest.json`` (schema version, export time, row counts). One consistent snapshot; each file
        is written to a temporary name and renamed into place, so a reader never sees half a file.
        Returns the paths written: the CSV files in table order, then the manifest."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        data = self.snapshot([t.name for t in S.EXPORTED])
        files: list[tuple[Path, Callable[[Any], None]]] = []
        for table in S.EXPORTED:
            json_cols = set(S.JSON_COLUMNS[table.name])
            header = [c.name for c in table.columns]
            rows = [[_csv_cell(r[name], name in json_cols) for name in header] for r in data[table.name]]

            def write(handle: Any, header: list[str] = header, rows: list[list[str]] = rows) -> None:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(header)
                writer.writerows(rows)

            files.append((out / f"{table.name}.csv", write))
        manifest = {
            "format": "stran-resultsdb-csv",
            "schema_version": self.schema_version,
            "exported_utc": now_utc(),
            "database": self.url,
            "pseudonymised_patient_ids": all(r["patient_id"] is None for r in data["studies"]),
            "rows": {name: len(rows) for name, rows in data.items()},
            "files": [p.name for p, _ in files],
        }
        files.append((out / "manifest.json", lambda h: h.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")))
        written: list[Path] = []
        temps: list[tuple[str, Path]] = []
        try:
            for path, write in files:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=out)
                temps.append((tmp, path))
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                    write(handle)
                    handle.flush()
                    os.fsync(handle.fileno())
            for tmp, path in temps:
                os.replace(tmp, path)
                written.append(path)
        finally:
            for tmp, _ in temps:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return written


# ---------------------------------------------------------------------------- module helpers


def _stored_export(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The parsed ``pacs`` record of a detection result, or None when it has none or storing failed."""
    record = result.get("pacs") if isinstance(result, Mapping) else None
    if not isinstance(record, Mapping) or record.get("error") or not record.get("sr_sop_uid"):
        return None
    return parse_pacs_export({**record, "pacs_url": record.get("url"), "detection_id": result.get("detection_id"),
                              "model_sha256": (result.get("model") or {}).get("sha256")})


def _hashed(record: Mapping[str, Any]) -> dict[str, Any]:
    """What ``payload_sha256`` is taken of: the record without the later fields (``_HASHED_WHEN_SET``) that are None."""
    return {k: v for k, v in record.items() if not (k in _HASHED_WHEN_SET and v is None)}


def _make_engine(url: URL, busy_timeout_s: float) -> Engine:
    kwargs: dict[str, Any] = {"json_serializer": canonical_json, "json_deserializer": json.loads}
    if url.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": busy_timeout_s}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(url, **kwargs)
    except NoSuchModuleError as exc:
        raise ResultsDBError(f"unsupported database URL {url.render_as_string(hide_password=True)}: {exc}") from None
    except ModuleNotFoundError as exc:
        hint = " (PostgreSQL needs: pip install 'psycopg[binary]')" if url.get_backend_name() == "postgresql" else ""
        raise ResultsDBError(f"the database driver for {url.drivername} is not installed: {exc}{hint}") from None
    if engine.dialect.name == "sqlite":
        busy_ms = int(busy_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below): real transactions, DDL included
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
                cursor.execute("PRAGMA foreign_keys = ON")
                # readers never block the writer (and vice versa). Switching a new file to WAL can fail at once,
                # without the busy timeout, while another opener does the same: retry until the timeout.
                deadline = time.monotonic() + busy_timeout_s
                while True:
                    try:
                        cursor.execute("PRAGMA journal_mode = WAL")
                        break
                    except sqlite3.OperationalError as exc:
                        if "locked" not in str(exc) or time.monotonic() > deadline:
                            raise
                        time.sleep(0.02)
                cursor.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe with WAL
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # A write transaction takes the write lock up front, so two writers queue on the busy
            # timeout instead of failing when a read lock cannot be upgraded.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("stran_write") else "BEGIN")

    return engine


def _reason(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)


def _table(name: str) -> Table:
    for table in S.TABLES:
        if table.name == name:
            return table
    raise ValueError(f"no table {name!r}; tables: {', '.join(t.name for t in S.TABLES)}")


def _one(conn: Connection, table: Table, key: str) -> dict[str, Any] | None:
    (pk,) = table.primary_key.columns
    row = conn.execute(select(table).where(pk == key)).mappings().first()
    return None if row is None else dict(row)


def _field(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, Mapping) else None


def _optional_time(value: Any, field: str) -> str | None:
    return None if value is None else parse_utc(value, field)


def _same(old: Any, new: Any, lenient: bool) -> bool:
    if lenient and isinstance(old, float) and isinstance(new, float):
        return math.isclose(old, new, rel_tol=FLOAT_RTOL)
    return old == new


def _differences(stored: Mapping[str, Any], new: Mapping[str, Any], *, skip: Iterable[str] = (),
                 fill_nulls: bool = False, lenient: bool = False) -> dict[str, tuple[Any, Any]]:
    """Fields whose stored value differs from the new one (``fill_nulls``: a NULL on either side is no conflict)."""
    skipped = set(skip)
    diffs = {}
    for key, value in new.items():
        if key in skipped or key not in stored:
            continue
        old = stored[key]
        if fill_nulls and (old is None or value is None):
            continue
        if not _same(old, value, lenient):
            diffs[key] = (old, value)
    return diffs


def _csv_cell(value: Any, is_json: bool) -> str:
    if value is None:
        return ""
    if is_json:
        return canonical_json(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)
