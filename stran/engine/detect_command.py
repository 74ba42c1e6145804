"""``stran detect``: scar detection on studies from the command line (batch), JSON + attention NIfTI per study."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stran.errors import output_folder
from stran.resources import DEFAULT_MODEL, resolve_model

HELP = "Detect scar on one or more studies (DICOM folders or 4-D NIfTI) with a trained model; writes JSON results."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("studies", nargs="+", help="DICOM study folders, Enhanced MR files or .nii.gz studies")
    parser.add_argument("--model", help=f"checkpoint (default: {DEFAULT_MODEL}; $STRAN_MODEL overrides)")
    parser.add_argument("--out", default="detections", help="output folder for <id>.json and <id>.attention.nii.gz")
    parser.add_argument("--mc-samples", type=int, default=8, help="MC-dropout passes for uncertainty (0 = off)")
    parser.add_argument("--no-attention", action="store_true", help="skip writing attention maps")
    parser.add_argument("--db", help="also record every result in this results database (SQLite path or URL)")


def run(args: argparse.Namespace) -> int:
    model = resolve_model(args.model)
    out = output_folder(args.out)
    sources = [s for s in args.studies if Path(s).exists()]
    for source in args.studies:
        if source not in sources:
            print(f"stran detect: skipped {source}: no such file or folder (give a DICOM folder, a DICOM file or a "
                  f".nii/.nii.gz study)", file=sys.stderr)
    if not sources:
        return 1
    db = None
    if args.db:
        from stran.resultsdb import ResultsDB

        db = ResultsDB(args.db)

    from stran.atomic import atomic_write_text
    from stran.engine.dataset import NIFTI_SUFFIXES
    from stran.engine.detect import Detector
    from stran.io import CineLoadError, load_study, write_map
    from stran.io.import_command import print_left_out

    detector = Detector(model, mc_samples=args.mc_samples)
    failures = len(args.studies) - len(sources)
    for source in sources:
        path = Path(source)
        image_id = path.name
        for suffix in NIFTI_SUFFIXES:
            image_id = image_id.removesuffix(suffix)
        try:
            study = load_study(path)
        except CineLoadError as exc:
            print(f"stran detect: skipped {source}: {exc}", file=sys.stderr)
            failures += 1
            continue
        detection = detector.detect(study, image_id=image_id, with_attention=not args.no_attention)
        r = detection.result
        atomic_write_text(out / f"{image_id}.json", json.dumps(r, indent=1))
        if detection.attention is not None:
            write_map(study, detection.attention, out / f"{image_id}.attention.nii.gz")
        if db is not None:
            db.record_detection(r)
        slices = " ".join("  - " if p is None else f"{p:.2f}" for p in r["slice_probabilities"])
        print(f"{image_id}: {r['prediction_label']} (p={r['study_probability']:.3f}, threshold {r['threshold']:.2f}); "
              f"slices: {slices}")
        print_left_out(study.left_out)
    if db is not None:
        db.close()
    return 1 if failures else 0
