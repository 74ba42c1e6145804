"""``stran export``: load detection results into the local results database and export it to CSV.

    stran export --db results.sqlite --import-json out/*.json --csv export/
    stran export --db postgresql://me@dbhost/scar --csv export/

Imports only the standard library and this package (relative imports), like the rest of it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .errors import ConflictError, InvalidRecordError
from .records import parse_correction, parse_detection, parse_training_run

HELP = "Record detection result JSON files in the local results database and export every table to CSV."

_KINDS = (  # key that identifies the record kind, record_many keyword, validator
    ("detection_id", "detections", parse_detection),
    ("correction_id", "corrections", parse_correction),
    ("run_id", "training_runs", parse_training_run),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, metavar="PATH_OR_URL",
                        help="SQLite file (created if missing) or SQLAlchemy URL, e.g. postgresql://user@host/dbname")
    parser.add_argument("--import-json", nargs="+", default=[], metavar="FILE",
                        help="detection result JSON files (the server's infer output; a file may hold one object or a "
                             "list; objects with correction_id or run_id are stored as corrections or training runs; "
                             "a folder means every *.json in it). All are stored in one transaction, or none.")
    parser.add_argument("--csv", metavar="OUT_DIR", help="write one CSV per table plus manifest.json into OUT_DIR")
    parser.add_argument("--no-pseudonymise", action="store_true",
                        help="store raw patient ids as well (default: only a keyed pseudonym is stored)")


def load_records(paths: list[str]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """Read JSON files into ``record_many`` keyword lists; every item is validated, errors name the file."""
    batches: dict[str, list[dict[str, Any]]] = {name: [] for _, name, _ in _KINDS}
    origin: dict[str, str] = {}
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(path.glob("*.json")))
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidRecordError(f"{raw}: no such file or folder")
    for path in files:
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidRecordError(f"{path}: not readable JSON ({exc})") from None
        items = content if isinstance(content, list) else [content]
        for index, item in enumerate(items):
            where = f"{path}" + (f" item {index}" if isinstance(content, list) else "")
            if not isinstance(item, dict):
                raise InvalidRecordError(f"{where}: expected a JSON object, got {type(item).__name__}")
            for key, name, validate in _KINDS:
                if key in item:
                    try:
                        validate(item)
                    except InvalidRecordError as exc:
                        raise InvalidRecordError(f"{where}: {exc}", field=exc.field) from None
                    batches[name].append(item)
                    origin[str(item[key]).strip()] = where
                    break
            else:
                raise InvalidRecordError(
                    f"{where}: not a detection result, correction or training run (no detection_id, correction_id or run_id)"
                )
    return batches, origin


def run(args: argparse.Namespace) -> int:
    from .db import ResultsDB

    batches, origin = load_records(args.import_json)
    with ResultsDB(args.db, pseudonymise=not args.no_pseudonymise) as db:
        if db.migrated_from is not None:
            print(f"migrated {db.url} from schema version {db.migrated_from} to {db.schema_version}")
        if any(batches.values()):
            before = db.counts()
            try:
                db.record_many(**batches)
            except ConflictError as exc:
                raise ConflictError(f"{exc} [from {origin.get(exc.record_id, '?')}]", kind=exc.kind,
                                    record_id=exc.record_id, differences=exc.differences) from None
            after = db.counts()
            for _, name, _ in _KINDS:
                if batches[name]:
                    new = after[name] - before[name]
                    print(f"{name}: {len(batches[name])} read, {new} new, {len(batches[name]) - new} already stored")
        if args.csv:
            for path in db.export_csv(args.csv):
                print(f"wrote {path}")
        if not args.csv and not any(batches.values()):
            print(f"{db.url} (schema version {db.schema_version})")
            for name, count in db.counts().items():
                print(f"  {name}: {count} rows")
    return 0
