"""``stran evaluate``: held-out metrics of a checkpoint (JSON, markdown, ROC and reliability plots)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stran.errors import output_folder
from stran.resources import DEFAULT_MODEL, resolve_model

HELP = "Evaluate a checkpoint on held-out labelled studies: AUC, accuracy, sensitivity, specificity, F1 with 95%% CIs."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help=f"checkpoint to evaluate (the default model is {DEFAULT_MODEL})")
    parser.add_argument("studies", help="folder of held-out studies")
    parser.add_argument("--labels", help="folder of <id>.scar.json or a CSV")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--cache", default=None, help="preprocessing cache folder")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates for the CIs")


def run(args: argparse.Namespace) -> int:
    from stran.engine.dataset import find_studies
    from stran.engine.evaluate import evaluate_checkpoint

    resolve_model(args.checkpoint, option="CHECKPOINT")  # a missing file fails here, before any work
    output_folder(args.out)
    records = find_studies(args.studies, labels=args.labels, require_labels=True)
    evaluate_checkpoint(args.checkpoint, records, args.out, cache_dir=args.cache, n_boot=args.bootstrap)
    print((Path(args.out) / "metrics.md").read_text())
    return 0
