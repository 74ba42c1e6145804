"""The results database schema (SQLAlchemy 2 Core) and its migrations.

One schema for SQLite and PostgreSQL. ``SCHEMA_VERSION`` is the version this code writes; the
version of a database is the ``schema_version`` row of ``meta``. Opening a database of an older
version runs the steps in ``MIGRATIONS`` in order, in the same transaction (all or nothing);
a newer version is refused. See docs/results-database.md for the policy.

History:

* v1: meta, schema_history, studies, models, detections, corrections.
* v2: adds ``training_runs`` and ``corrections.sent_utc`` (when a correction reached the server).
* v3: adds ``corrections.picked_by`` (which active-learning strategy and model chose the study, if one did).
* v4: adds ``pacs_exports`` (the DICOM SR and Segmentation a detection was written back to a PACS as, by UID).
* v5: adds ``detections.segment_probabilities`` and ``corrections.segment_labels`` (the 17 AHA segments, JSON lists
  like the per-slice values beside them; NULL for a model without segment output or a label without segment labels).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    text,
)

SCHEMA_VERSION = 5

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

ID = 64  # detection / correction / run ids
UID = 128  # study UIDs
TIME = 32  # 'YYYY-MM-DDTHH:MM:SS.ffffffZ'
DICOM_UID = 64  # SR / SEG series and SOP instance UIDs (DICOM's limit)
URL = 1024  # DICOMweb base URLs (no credentials, no query)


def _json() -> JSON:
    # SQL NULL for Python None (not the JSON text 'null'), so "IS NULL" works in analysis queries.
    return JSON(none_as_null=True)


meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    comment="Database settings: schema_version, pseudonym_secret (never exported), created_utc.",
)

schema_history = Table(
    "schema_history",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_utc", String(TIME), nullable=False),
    Column("description", Text, nullable=False),
    comment="One row per schema version this database has been created at or migrated to.",
)

studies = Table(
    "studies",
    metadata,
    Column("study_uid", String(UID), primary_key=True),
    Column("patient_pseudonym", String(64), comment="keyed HMAC-SHA256 of the patient id (per-database key)"),
    Column("patient_id", Text, comment="raw patient id; NULL when the database pseudonymises"),
    Column("series_uids", _json()),
    Column("vendor", Text),
    Column("field_strength_t", Float),
    Column("slices", Integer),
    Column("phases", Integer),
    Column("pixel_spacing_row_mm", Float),
    Column("pixel_spacing_col_mm", Float),
    Column("slice_spacing_mm", Float),
    Column("rr_interval_ms", Float),
    Column("first_seen_utc", String(TIME), nullable=False),
    Column("updated_utc", String(TIME), nullable=False),
    Index(None, "patient_pseudonym"),
    Index(None, "vendor"),
)

models = Table(
    "models",
    metadata,
    Column("sha256", String(128), primary_key=True, comment="hex SHA-256 of the weights file"),
    Column("name", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("trained_on", _json()),
    Column("first_seen_utc", String(TIME), nullable=False),
    Index(None, "name", "version"),
)

detections = Table(
    "detections",
    metadata,
    Column("detection_id", String(ID), primary_key=True),
    Column("study_uid", String(UID), ForeignKey("studies.study_uid"), nullable=False),
    Column("image_id", Text, comment="datastore image id"),
    Column("model_sha256", String(128), ForeignKey("models.sha256"), nullable=False),
    Column("study_probability", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("prediction", SmallInteger, nullable=False),
    Column("prediction_label", String(16), nullable=False),
    Column("slice_probabilities", _json(), nullable=False),
    Column("uncertainty", _json()),
    Column("uncertainty_std", Float),
    Column("uncertainty_entropy", Float),
    Column("uncertainty_mutual_information", Float),
    Column("input_summary", _json()),
    Column("timings", _json()),
    Column("total_ms", Float),
    Column("created_utc", String(TIME), nullable=False, comment="when the server produced the result"),
    Column("recorded_utc", String(TIME), nullable=False, comment="when it was written here"),
    Column("payload_sha256", String(64), nullable=False, comment="hash of the normalised record (idempotency check)"),
    Column("segment_probabilities", _json(),
           comment="v5: JSON list of 17 probabilities or null, AHA order (segment 1 first); NULL: no segment output"),
    CheckConstraint("prediction IN (0, 1)", name="prediction"),
    CheckConstraint("study_probability >= 0 AND study_probability <= 1", name="study_probability"),
    CheckConstraint("threshold >= 0 AND threshold <= 1", name="threshold"),
    Index(None, "study_uid", "created_utc"),
    Index(None, "model_sha256"),
    Index(None, "created_utc"),
    Index(None, "image_id"),
)

corrections = Table(
    "corrections",
    metadata,
    Column("correction_id", String(ID), primary_key=True, comment="made by the client, so a queue can resend"),
    Column("study_uid", String(UID), ForeignKey("studies.study_uid"), nullable=False),
    Column("image_id", Text),
    Column("detection_id", String(ID), comment="the detection that was reviewed, if known (no foreign key)"),
    Column("study_label", SmallInteger, nullable=False),
    Column("slice_labels", _json(), nullable=False),
    Column("source", String(16), nullable=False),
    Column("reviewer", Text, nullable=False),
    Column("comment", Text, nullable=False),
    Column("created_utc", String(TIME), nullable=False),
    Column("recorded_utc", String(TIME), nullable=False),
    Column("payload_sha256", String(64), nullable=False),
    Column("sent_utc", String(TIME), comment="v2: when the label reached the MONAI Label server; NULL = not yet"),
    Column("picked_by", _json(), comment="v3: the next-study answer that chose this study (strategy, score, model)"),
    Column("segment_labels", _json(),
           comment="v5: JSON list of 17 labels 0, 1 or null, AHA order (segment 1 first); NULL: no segment labels"),
    CheckConstraint("study_label IN (0, 1)", name="study_label"),
    CheckConstraint("source IN ('LGE', 'visual')", name="source"),
    Index(None, "study_uid", "created_utc"),
    Index(None, "detection_id"),
    Index(None, "reviewer"),
    Index(None, "created_utc"),
    Index(None, "sent_utc"),
)

training_runs = Table(
    "training_runs",
    metadata,
    Column("run_id", String(ID), primary_key=True),
    Column("model_name", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_utc", String(TIME), nullable=False),
    Column("finished_utc", String(TIME)),
    Column("options", _json()),
    Column("metrics", _json()),
    Column("model_sha256", String(128), comment="the resulting weights (no foreign key: may not be used yet)"),
    Column("recorded_utc", String(TIME), nullable=False),
    Column("updated_utc", String(TIME), nullable=False),
    CheckConstraint("status IN ('queued', 'running', 'finished', 'failed', 'stopped')", name="status"),
    Index(None, "model_name", "started_utc"),
    Index(None, "status"),
)

pacs_exports = Table(
    "pacs_exports",
    metadata,
    Column("export_id", String(ID), primary_key=True),
    Column("detection_id", String(ID), ForeignKey("detections.detection_id"), nullable=False),
    Column("study_uid", String(UID), nullable=False, comment="the detection's study (the study the objects were stored in)"),
    Column("pacs_url", String(URL), nullable=False,
           comment="DICOMweb base URL: no user, password, query or fragment (records.pacs_base_url)"),
    Column("model_sha256", String(128), nullable=False, comment="the detection's model"),
    Column("sr_series_uid", String(DICOM_UID), nullable=False),
    Column("sr_sop_uid", String(DICOM_UID), nullable=False),
    Column("map_series_uid", String(DICOM_UID), comment="NULL: no map was stored"),
    Column("map_sop_uid", String(DICOM_UID)),
    Column("map_kind", String(16), comment="e.g. 'SEG'"),
    Column("stored_utc", String(TIME), nullable=False, comment="when the objects were stored on the PACS (first record)"),
    Column("recorded_utc", String(TIME), nullable=False, comment="when it was written here"),
    UniqueConstraint("detection_id", "pacs_url", "sr_sop_uid"),  # the same export recorded twice is one row
    CheckConstraint("(map_series_uid IS NULL) = (map_sop_uid IS NULL)", name="map_uids"),
    CheckConstraint("map_kind IS NULL OR map_sop_uid IS NOT NULL", name="map_kind"),
    Index(None, "study_uid", "stored_utc"),
    Index(None, "sr_sop_uid"),
    comment="v4: one row per detection written back to a PACS (DICOM SR + optional map) with STOW-RS.",
)

#: Tables in dependency order (parents first); every one but ``meta`` is exported to CSV.
TABLES: tuple[Table, ...] = (meta, schema_history, studies, models, detections, corrections, training_runs, pacs_exports)
EXPORTED: tuple[Table, ...] = TABLES[1:]
JSON_COLUMNS: dict[str, tuple[str, ...]] = {
    t.name: tuple(c.name for c in t.columns if isinstance(c.type, JSON)) for t in TABLES
}


# ----------------------------------------------------------------------------- migrations


def _v1_to_v2(conn: Connection) -> None:
    training_runs.create(conn)  # with its indexes
    conn.execute(text("ALTER TABLE corrections ADD COLUMN sent_utc VARCHAR(32)"))
    next(i for i in corrections.indexes if [c.name for c in i.columns] == ["sent_utc"]).create(conn)


def _v2_to_v3(conn: Connection) -> None:
    column_type = corrections.c.picked_by.type.compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE corrections ADD COLUMN picked_by {column_type}"))


def _v3_to_v4(conn: Connection) -> None:
    # Creates the table as defined above. Like v2's training_runs: if a later version changes pacs_exports,
    # that version's step adds the change and this step gets the v4 definition written out here first.
    pacs_exports.create(conn)  # with its unique key, checks and indexes


def _v4_to_v5(conn: Connection) -> None:
    # Nullable JSON columns at the end of their tables (where a fresh v5 database has them too): rows stored before
    # v5 get NULL, i.e. "no segment output" / "no segment labels", which is what they had.
    for table, column in ((detections, detections.c.segment_probabilities), (corrections, corrections.c.segment_labels)):
        column_type = column.type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column_type}"))


#: ``MIGRATIONS[n]`` turns a version n-1 database into version n. Never edit a released step: add one.
MIGRATIONS: dict[int, tuple[str, Callable[[Connection], None]]] = {
    2: ("add training_runs; add corrections.sent_utc", _v1_to_v2),
    3: ("add corrections.picked_by", _v2_to_v3),
    4: ("add pacs_exports", _v3_to_v4),
    5: ("add detections.segment_probabilities; add corrections.segment_labels", _v4_to_v5),
}


def schema_drift(conn: Connection) -> list[str]:
    """What the database lacks compared with this code's tables (empty when it matches)."""
    insp = inspect(conn)
    present = set(insp.get_table_names())
    problems = []
    for table in TABLES:
        if table.name not in present:
            problems.append(f"table {table.name} is missing")
            continue
        have = {c["name"] for c in insp.get_columns(table.name)}
        missing = [c.name for c in table.columns if c.name not in have]
        if missing:
            problems.append(f"table {table.name} lacks column(s) {', '.join(missing)}")
    return problems
