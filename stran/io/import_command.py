"""``stran import``: add DICOM cine studies to a datastore (4-D NIfTI + sidecar), reporting what it cannot read."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from stran.errors import output_folder
from stran.names import safe_id

HELP = ("Import DICOM study folders (or a folder of them, or studies on a PACS) into a MONAI Label datastore in our "
        "4-D NIfTI + sidecar format.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stran.pacs.options import add_pacs_arguments

    parser.add_argument("sources", nargs="*", help="DICOM study folders, or folders whose sub-folders are studies")
    parser.add_argument("--datastore", required=True, help="datastore folder (the server's --studies)")
    parser.add_argument("--overwrite", action="store_true", help="replace studies that are already in the datastore")
    add_pacs_arguments(parser)


def _first_study_uid(folder: Path) -> str | None:
    """The StudyInstanceUID of the first readable DICOM file under ``folder`` (headers only)."""
    import pydicom

    from stran.io.dicom_scan import iter_files

    for path in iter_files(folder):
        try:
            uid = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).get("StudyInstanceUID")
        except Exception:  # not DICOM, or unreadable: the loader reports it if it matters
            continue
        if uid:
            return str(uid)
    return None


def _study_folders(source: Path) -> list[Path]:
    """The study folders in ``source``: ``source`` itself when it holds files or when its sub-folders are the
    series of one study (one StudyInstanceUID, e.g. a Siemens export with one series per slice), else each
    sub-folder."""
    if any(p.is_file() for p in source.iterdir()):
        return [source]
    subs = sorted(p for p in source.iterdir() if p.is_dir())
    if len(subs) > 1 and len({_first_study_uid(s) for s in subs} - {None}) == 1:
        return [source]
    return subs


def print_left_out(left_out: list, limit: int = 10, write: Callable[[str], object] = print) -> None:
    """One indented line per file the loader left out, with the reason (``stran import`` and ``stran detect``)."""
    for entry in left_out[:limit]:
        write(f"    left out {entry.path}: {entry.reason}")
    if len(left_out) > limit:
        write(f"    ... and {len(left_out) - limit} more files left out (stran inspect lists them all)")


def import_from_pacs(args: argparse.Namespace, datastore: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Fetch ``--study`` / ``--all-cine`` studies into the datastore (ids are the Study Instance UIDs)."""
    from stran.pacs.client import PacsAuthError, PacsError, PacsUnreachableError
    from stran.pacs.fetch import fetch_study, is_cached
    from stran.pacs.options import pacs_client, pacs_studies

    client = pacs_client(args)
    if client is None:
        return [], []
    imported, skipped = [], []
    for uid in pacs_studies(args, client):
        if is_cached(datastore, uid) and not args.overwrite:
            skipped.append((uid, f"'{uid}' is already in the datastore (use --overwrite)"))
            continue
        try:
            fetch_study(client, uid, datastore, refresh=True, progress=progress_line)
        except PacsError as exc:
            if isinstance(exc, (PacsUnreachableError, PacsAuthError)):
                raise  # the same for every study: one line, not one per study
            skipped.append((uid, f"{exc} ({exc.hint})"))
            continue
        print(f"imported {uid} from {client.url}")
        imported.append(uid)
    return imported, skipped


def progress_line(done: int, total: int, message: str) -> None:
    """One line rewritten in place on a terminal (``fetch_study``'s progress)."""
    if sys.stdout.isatty():
        print(f"\r{message}", end="\n" if done >= total else "", flush=True)


def run(args: argparse.Namespace) -> int:
    from stran.errors import UserError
    from stran.io import CineLoadError, load_study, write_datastore_study

    if not args.sources and not args.dicomweb:
        raise UserError("nothing to import", "give DICOM study folders, or --dicomweb URL with --study UID")
    datastore = output_folder(args.datastore, "--datastore")
    imported, skipped = import_from_pacs(args, datastore)
    for raw in args.sources:
        source = Path(raw)
        if not source.is_dir():
            what = "not a folder" if source.exists() else "no such folder"
            skipped.append((raw, f"{what} (give DICOM study folders, or folders of them)"))
            continue
        for folder in _study_folders(source):
            image_id = safe_id(folder.name)
            if (datastore / f"{image_id}.nii.gz").exists() and not args.overwrite:
                skipped.append((str(folder), f"'{image_id}' is already in the datastore (use --overwrite)"))
                continue
            try:
                study = load_study(folder)
            except CineLoadError as exc:
                skipped.append((str(folder), str(exc)))
                continue
            write_datastore_study(study, datastore, image_id)
            imported.append(image_id)
            print(f"imported {image_id}: {study.n_slices} slices x {study.n_phases} phases, "
                  f"{len(study.left_out)} files left out")
            print_left_out(study.left_out)
    for folder, reason in skipped:
        print(f"stran import: skipped {folder}: {reason}", file=sys.stderr)
    print(f"{len(imported)} studies imported into {datastore}, {len(skipped)} skipped")
    return 1 if skipped and not imported else 0
