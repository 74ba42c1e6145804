"""``stran detect``: scar detection on studies from the command line (batch), JSON + attention NIfTI per study."""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

from stran.engine.study_list import Job
from stran.errors import UserError, output_folder
from stran.resources import DEFAULT_MODEL, resolve_model

HELP = ("Detect scar on one or more studies (DICOM folders, 4-D NIfTI, or studies on a PACS) with a trained model; "
        "writes JSON results (and, for a PACS study, a DICOM SR and Segmentation back to the PACS).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stran.pacs.options import add_pacs_arguments

    parser.add_argument("studies", nargs="*",
                        help="DICOM study folders, Enhanced MR files, .nii.gz studies, or cohort folders of them "
                             "(.nii.gz files and/or DICOM study sub-folders)")
    parser.add_argument("--model", help=f"checkpoint (default: {DEFAULT_MODEL}; $STRAN_MODEL overrides)")
    parser.add_argument("--out", default="detections", help="output folder for <id>.json and <id>.attention.nii.gz")
    parser.add_argument("--mc-samples", type=int, default=8,
                        help="MC-dropout passes for uncertainty (0 = off: about 3x the studies per minute on a "
                             "cohort; docs/cli.md 'Cohorts' says what the passes are worth)")
    parser.add_argument("--no-attention", action="store_true", help="skip writing attention maps")
    parser.add_argument("--report", action="store_true",
                        help="also write <id>.report.png and <id>.report.pdf: AHA bullseye, per-slice chart, key frames "
                             "with the map, model, SHA-256 and uncertainty (research use only)")
    parser.add_argument("--db", help="also record every result in this results database (SQLite path or URL)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="processes that load and preprocess studies while this one runs the network (0 = load "
                             "here; default: 0 below 8 studies or on up to 3 cores, 1 from 4 cores, 2 from 8)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="inference threads of this process (default: the cores the workers leave, at least 1; "
                             "$OMP_NUM_THREADS when set)")
    parser.add_argument("--overwrite", action="store_true",
                        help="detect again studies whose <id>.json from this model is already in --out (default: "
                             "skip them, so a stopped run resumes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar / progress lines on stderr")
    add_pacs_arguments(parser)
    parser.add_argument("--pacs-cache", help="where studies fetched from the PACS are kept (default: <out>/pacs-cache)")
    parser.add_argument("--no-store", action="store_true",
                        help="do not write the results back to the PACS (default: an SR and a SEG per study)")


def _sources(args: argparse.Namespace, client: Any, cache: Path | None) -> tuple[list[Job], int]:
    """A job for every study asked for (files, DICOM folders, the studies of cohort folders; PACS studies through
    ``client`` into ``cache``), and how many were skipped (reported on stderr)."""
    from stran.engine.study_list import find_studies
    from stran.io import load_study
    from stran.pacs.options import pacs_studies

    jobs, skipped = find_studies(args.studies, lambda line: print(line, file=sys.stderr))
    if client is not None:
        from stran.io.import_command import progress_line
        from stran.pacs.fetch import fetch_study

        for uid in pacs_studies(args, client):
            fetch = partial(fetch_study, client, uid, cache, progress=progress_line)
            jobs.append(Job(uid, load=lambda fetch=fetch: load_study(fetch())))
    if not args.studies and client is None:
        raise UserError("no study given", "give DICOM folders or .nii.gz studies, or --dicomweb URL --study UID")
    return jobs, skipped


def run(args: argparse.Namespace) -> int:
    from stran.engine import cohort_launch

    model = resolve_model(args.model)
    out = output_folder(args.out)
    from stran.pacs.options import pacs_client

    client = pacs_client(args)
    cache = output_folder(args.pacs_cache or out / "pacs-cache", "--pacs-cache") if client is not None else None
    jobs, failures = _sources(args, client, cache)
    if not jobs:
        return 1
    mine, rank, world = cohort_launch.rank_share(jobs)
    label = "stran detect" + (f" (rank {rank} of {world})" if world > 1 else "")
    db = None
    if args.db:
        from stran.resultsdb import ResultsDB

        db = ResultsDB(args.db)
    try:
        tally = _detect(args, model, out, db, client, cache, mine, label, failures)
    finally:
        if db is not None:
            db.close()
    if len(jobs) > 1 or world > 1:
        sys.stdout.flush()
        print(tally.line(), file=sys.stderr)
    status = 1 if tally.failed else 0
    cohort_launch.finish_rank(rank, world, wait=status != 0)
    return status


def _detect(args: argparse.Namespace, model: Path, out: Path, db: Any, client: Any, cache: Path | None,
            mine: list[Job], label: str, failures: int) -> Any:
    """Skip the studies already done (resume), then detect the others; returns the run's ``Tally``."""
    from stran.engine import cohort
    from stran.engine.cohort_launch import default_threads, default_workers, set_threads
    from stran.engine.detect import Detector
    from stran.engine.study_list import finished_result, remove_stale_temporaries

    detector = Detector(model, mc_samples=args.mc_samples)
    needs = [".attention.nii.gz"] * (not args.no_attention) + [".report.png", ".report.pdf"] * args.report
    todo, finished = [], []
    for job in mine:
        result = None if args.overwrite else finished_result(out, job.image_id, detector.model_info["sha256"], needs,
                                                              job.path)
        if result is None:
            todo.append(job)
        else:
            finished.append(result)
    if finished:
        print(f"{label}: {len(finished)} of {len(mine)} studies already have results in {out} from this model: "
              "skipped (--overwrite detects them again)", file=sys.stderr)
        if db is not None:  # a run stopped between a JSON and its database row: the row is added, never twice
            for start in range(0, len(finished), 200):
                db.record_many(detections=finished[start:start + 200])
    remove_stale_temporaries(out, todo)
    workers = default_workers(len(todo)) if args.workers is None else max(0, args.workers)
    threads = set_threads(args.threads or default_threads(workers))
    tally = cohort.Tally(already_done=len(finished), failed=failures, workers=workers, threads=threads, label=label)
    if todo:
        cohort.run_cohort(todo, detector, partial(_write_outputs, args, out, db, client, cache), tally=tally,
                          keep_pixels=args.report, with_attention=not args.no_attention or args.report,
                          progress=not args.no_progress, debug=getattr(args, "debug", False))
    return tally


def _write_outputs(args: argparse.Namespace, out: Path, db: Any, client: Any, cache: Path | None, job: Job,
                   study: Any, detection: Any, progress: Any) -> None:
    """One study's outputs: the map and the report first, then ``<id>.json`` (its presence marks the study done
    for a resumed run), then the database row; each file atomic. Lines through ``progress`` (around its bar)."""
    from stran.atomic import atomic_write_text
    from stran.io import write_map
    from stran.io.import_command import print_left_out

    image_id = job.image_id
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
    if detection.attention is not None:
        write_map(study, detection.attention, out / f"{image_id}.attention.nii.gz")
    report = None
    if args.report:
        from stran.report.render import write_report

        report = write_report(r, study.pixels, report_map, png=out / f"{image_id}.report.png",
                              pdf=out / f"{image_id}.report.pdf")
    atomic_write_text(out / f"{image_id}.json", json.dumps(r, indent=1))
    if db is not None:
        db.record_detection(r)  # with its pacs record, when the results were stored on the PACS
    slices = " ".join("  - " if p is None else f"{p:.2f}" for p in r["slice_probabilities"])
    progress.write(f"{image_id}: {r['prediction_label']} (p={r['study_probability']:.3f}, threshold "
                   f"{r['threshold']:.2f}); slices: {slices}")
    if r.get("pacs"):
        progress.write(f"    {_pacs_line(r['pacs'])}")
    if report is not None:
        progress.write(f"    report: {report[0]}, {report[1].name}")
    print_left_out(study.left_out, write=progress.write)


def _pacs_line(record: dict[str, Any]) -> str:
    if record.get("error"):
        return f"not stored on {record['url']}: {record['error']}"
    what = "SR " + record["sr_sop_uid"] + (f" and SEG {record['map_sop_uid']}" if record.get("map_sop_uid") else "")
    return f"stored on {record['url']}: {what}"
