"""``stran detect``: scar detection on studies from the command line (batch), JSON + attention NIfTI per study."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stran.errors import UserError, output_folder
from stran.resources import DEFAULT_MODEL, resolve_model

HELP = ("Detect scar on one or more studies (DICOM folders, 4-D NIfTI, or studies on a PACS) with a trained model; "
        "writes JSON results (and, for a PACS study, a DICOM SR and Segmentation back to the PACS).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stran.pacs.options import add_pacs_arguments

    parser.add_argument("studies", nargs="*", help="DICOM study folders, Enhanced MR files or .nii.gz studies")
    parser.add_argument("--model", help=f"checkpoint (default: {DEFAULT_MODEL}; $STRAN_MODEL overrides)")
    parser.add_argument("--out", default="detections", help="output folder for <id>.json and <id>.attention.nii.gz")
    parser.add_argument("--mc-samples", type=int, default=8, help="MC-dropout passes for uncertainty (0 = off)")
    parser.add_argument("--no-attention", action="store_true", help="skip writing attention maps")
    parser.add_argument("--report", action="store_true",
                        help="also write <id>.report.png and <id>.report.pdf: AHA bullseye, per-slice chart, key frames "
                             "with the map, model, SHA-256 and uncertainty (research use only)")
    parser.add_argument("--db", help="also record every result in this results database (SQLite path or URL)")
    add_pacs_arguments(parser)
    parser.add_argument("--pacs-cache", help="where studies fetched from the PACS are kept (default: <out>/pacs-cache)")
    parser.add_argument("--no-store", action="store_true",
                        help="do not write the results back to the PACS (default: an SR and a SEG per study)")


def _sources(args: argparse.Namespace, client: Any, cache: Path | None) -> tuple[list[tuple[str, Callable[[], Any]]], int]:
    """(image id, loader) for every study asked for (PACS studies through ``client`` into ``cache``), and how many
    were skipped (reported on stderr)."""
    from stran.engine.dataset import NIFTI_SUFFIXES
    from stran.io import load_study
    from stran.pacs.options import pacs_studies

    jobs: list[tuple[str, Callable[[], Any]]] = []
    skipped = 0
    for source in args.studies:
        if not Path(source).exists():
            print(f"stran detect: skipped {source}: no such file or folder (give a DICOM folder, a DICOM file or a "
                  f".nii/.nii.gz study)", file=sys.stderr)
            skipped += 1
            continue
        image_id = Path(source).name
        for suffix in NIFTI_SUFFIXES:
            image_id = image_id.removesuffix(suffix)
        jobs.append((image_id, lambda path=Path(source): load_study(path)))
    if client is not None:
        from stran.io.import_command import progress_line
        from stran.pacs.fetch import fetch_study

        for uid in pacs_studies(args, client):
            jobs.append((uid, lambda uid=uid: load_study(fetch_study(client, uid, cache, progress=progress_line))))
    if not args.studies and client is None:
        raise UserError("no study given", "give DICOM folders or .nii.gz studies, or --dicomweb URL --study UID")
    return jobs, skipped


def run(args: argparse.Namespace) -> int:
    model = resolve_model(args.model)
    out = output_folder(args.out)
    from stran.pacs.options import pacs_client

    client = pacs_client(args)
    cache = output_folder(args.pacs_cache or out / "pacs-cache", "--pacs-cache") if client is not None else None
    jobs, failures = _sources(args, client, cache)
    if not jobs:
        return 1
    db = None
    if args.db:
        from stran.resultsdb import ResultsDB

        db = ResultsDB(args.db)

    from stran.atomic import atomic_write_text
    from stran.engine.detect import Detector
    from stran.io import CineLoadError, write_map
    from stran.io.import_command import print_left_out
    from stran.pacs.client import PacsAuthError, PacsError, PacsUnreachableError

    detector = Detector(model, mc_samples=args.mc_samples)
    for image_id, load in jobs:
        try:
            study = load()
        except (CineLoadError, PacsError) as exc:
            if isinstance(exc, (PacsUnreachableError, PacsAuthError)):
                raise  # the same for every study: one line
            print(f"stran detect: skipped {image_id}: {exc}" + (f" ({exc.hint})" if isinstance(exc, PacsError) else ""),
                  file=sys.stderr)
            failures += 1
            continue
        detection = detector.detect(study, image_id=image_id, with_attention=not args.no_attention or args.report)
        report_map = detection.attention  # the report shows the map even with --no-attention (nothing else does)
        if args.no_attention:
            detection.attention = None
        r = detection.result
        if client is not None and cache is not None and study.source.startswith("dicomweb ") and not args.no_store:
            from stran.pacs.store import store_or_say_why

            r["pacs"] = store_or_say_why(client, r, study, detection.attention, cache)
            if r["pacs"].get("error"):
                print(f"stran detect: results of {study.study_uid} not stored on the PACS: {r['pacs']['error']}",
                      file=sys.stderr)
        atomic_write_text(out / f"{image_id}.json", json.dumps(r, indent=1))
        if detection.attention is not None:
            write_map(study, detection.attention, out / f"{image_id}.attention.nii.gz")
        if args.report:
            from stran.report.render import write_report

            report = write_report(r, study.pixels, report_map, png=out / f"{image_id}.report.png",
                                  pdf=out / f"{image_id}.report.pdf")
        if db is not None:
            db.record_detection(r)  # with its pacs record, when the results were stored on the PACS
        slices = " ".join("  - " if p is None else f"{p:.2f}" for p in r["slice_probabilities"])
        print(f"{image_id}: {r['prediction_label']} (p={r['study_probability']:.3f}, threshold {r['threshold']:.2f}); "
              f"slices: {slices}")
        if r.get("pacs"):
            print(f"    {_pacs_line(r['pacs'])}")
        if args.report:
            print(f"    report: {report[0]}, {report[1].name}")
        print_left_out(study.left_out)
    if db is not None:
        db.close()
    return 1 if failures else 0


def _pacs_line(record: dict[str, Any]) -> str:
    if record.get("error"):
        return f"not stored on {record['url']}: {record['error']}"
    what = "SR " + record["sr_sop_uid"] + (f" and SEG {record['map_sop_uid']}" if record.get("map_sop_uid") else "")
    return f"stored on {record['url']}: {what}"
