"""The local results database: detections, reviewer corrections, training runs and PACS exports, for analysis.

One schema and one implementation for the command line (``stran export``) and the 3D Slicer module.
This package imports only the standard library and SQLAlchemy 2 Core, with relative imports only, so
that the Slicer module can expose it unchanged as ``CineScarLib.resultsdb``: the extension's build copies these
files in, and a checkout loads them in place (``slicer_extension/CineScar/CineScarLib/__init__.py``).

    from .resultsdb import ResultsDB          # inside Slicer's <Module>Lib
    from stran.resultsdb import ResultsDB     # everywhere else

    with ResultsDB("results.sqlite") as db:   # or ResultsDB("postgresql://user@host/dbname")
        db.record_detection(result_json)
        db.export_csv("export/")
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ConflictError, InvalidRecordError, ResultsDBError, SchemaVersionError
from .records import (
    CORRECTION_SOURCES,
    N_SEGMENTS,
    RUN_STATUSES,
    new_id,
    now_utc,
    pacs_base_url,
    parse_correction,
    parse_detection,
    parse_pacs_export,
    parse_training_run,
)

# SQLAlchemy is imported on first use of these names: the command line starts without it.
_LAZY = {"FLOAT_RTOL": ".db", "ResultsDB": ".db", "database_url": ".db", "SCHEMA_VERSION": ".schema"}

__all__ = [
    "CORRECTION_SOURCES",
    "FLOAT_RTOL",
    "N_SEGMENTS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "ConflictError",
    "InvalidRecordError",
    "ResultsDB",
    "ResultsDBError",
    "SchemaVersionError",
    "database_url",
    "new_id",
    "now_utc",
    "pacs_base_url",
    "parse_correction",
    "parse_detection",
    "parse_pacs_export",
    "parse_training_run",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
