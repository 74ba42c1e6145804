"""Train the shipped demo model (ST-RAN with its scar-map head, the recipe of docs/training.md), test it on the
held-out and the fresh-seed cohorts beside the bound, write its card.

    python training/train_demo_model.py        # or: make demo-model (under an hour on 2 CPU cores)

Publishes apps/stran/model/pretrained_scar.pt (where the MONAI Label app looks for its pretrained
model) and apps/stran/model/MODEL_CARD.md; the evaluation reports go to training/results/demo_model/<cohort>/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil

from bound import load_bound
from experiment import (
    CACHE,
    RECIPE_EPOCHS,
    REPO,
    TRAIN_COHORT,
    WORK,
    fresh_records,
    recipe,
    test_records,
    train_val_records,
)
from model_card import model_card

from stran.atomic import atomic_write_text, atomic_write_with
from stran.engine.evaluate import evaluate_checkpoint
from stran.engine.trainer import Trainer
from stran.models import load_checkpoint

MODEL_DIR = REPO / "apps" / "stran" / "model"
REPORT_DIR = REPO / "training" / "results" / "demo_model"
RUN_DIR = WORK / "runs" / "demo_model"


def training_minutes(history_path) -> float:
    """Training time from the run's per-epoch times (a resumed run counts every epoch once)."""
    return sum(h["seconds"] for h in json.loads(history_path.read_text())) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=RECIPE_EPOCHS)
    parser.add_argument("--card-only", action="store_true",
                        help="rewrite MODEL_CARD.md from the finished run and its reports (no training)")
    args = parser.parse_args()
    train, val = train_val_records()
    config = recipe("stran", epochs=args.epochs)
    target = MODEL_DIR / "pretrained_scar.pt"
    cohorts = {"test": test_records, "fresh": fresh_records}
    if args.card_only:
        reports = {name: json.loads((REPORT_DIR / name / "metrics.json").read_text()) for name in cohorts}
    else:
        result = Trainer(config, train, val, RUN_DIR, cache_dir=CACHE,
                         trained_on=f"synthetic phantoms: {TRAIN_COHORT.describe()}").fit()
        reports = {name: evaluate_checkpoint(result.best_checkpoint, records(), REPORT_DIR / name, cache_dir=CACHE,
                                             title=f"Demo model: held-out synthetic {name} cohort")
                   for name, records in cohorts.items()}
        atomic_write_with(target, lambda tmp: shutil.copyfile(result.best_checkpoint, tmp))
    _, meta = load_checkpoint(target)
    minutes = training_minutes(RUN_DIR / "history.json")
    card = model_card(meta, reports, load_bound(), config, minutes, len(train), len(val))
    atomic_write_text(MODEL_DIR / "MODEL_CARD.md", card)
    print(f"{target} (sha256 {meta['sha256'][:16]}...): test AUC {reports['test']['auc']['value']:.3f}, fresh AUC "
          f"{reports['fresh']['auc']['value']:.3f}, {minutes:.1f} min training, {dt.datetime.now():%H:%M}")


if __name__ == "__main__":
    main()
