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
from pathlib import Path

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
from stran.models import build_model, load_checkpoint
from stran.models.checkpoint import read_checkpoint
from stran.resources import SHIPPED_MODEL

MODEL_DIR = SHIPPED_MODEL.parent
REPORT_DIR = REPO / "training" / "results" / "demo_model"
RUN_DIR = WORK / "runs" / "demo_model"


def training_minutes(history_path) -> float:
    """Training time from the run's per-epoch times (a resumed run counts every epoch once)."""
    return sum(h["seconds"] for h in json.loads(history_path.read_text())) / 60


def second_stage_only(trainer: Trainer, run: Path) -> Path:
    """The second stage on a finished first stage (``run``/best.pt and history.json): a fresh wall reader fitted on the
    frozen maps. The first stage's reader does not shape the maps (its measures carry no gradient into them)."""
    payload = read_checkpoint(run / "best.pt")
    model = build_model(trainer.config.model, **trainer.config.model_config)
    maps = {k: v for k, v in payload["model"].items() if not k.startswith("reader.")}
    model.load_state_dict({**model.state_dict(), **maps})
    extra = payload["extra"]
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "history.json", RUN_DIR / "history.json")
    best = {"epoch": extra["epoch"], "val_loss": extra["val_loss"], "val_auc": extra["val_auc"],
            "threshold": extra["threshold"]}
    trainer.refit_reader(model.state_dict(), best)
    return RUN_DIR / "best.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=RECIPE_EPOCHS)
    parser.add_argument("--card-only", action="store_true",
                        help="rewrite MODEL_CARD.md from the finished run and its reports (no training)")
    parser.add_argument("--maps-from", type=Path, default=None,
                        help="a finished first-stage run folder of this recipe: take its best maps, run the second "
                        "stage (the wall reader) only")
    args = parser.parse_args()
    train, val = train_val_records()
    config = recipe("stran", epochs=args.epochs)
    target = SHIPPED_MODEL
    cohorts = {"test": test_records, "fresh": fresh_records}
    if args.card_only:
        reports = {name: json.loads((REPORT_DIR / name / "metrics.json").read_text()) for name in cohorts}
    else:
        trainer = Trainer(config, train, val, RUN_DIR, cache_dir=CACHE,
                          trained_on=f"synthetic phantoms: {TRAIN_COHORT.describe()}")
        if args.maps_from:
            best_checkpoint = second_stage_only(trainer, args.maps_from)
        else:
            best_checkpoint = trainer.fit().best_checkpoint
        reports = {name: evaluate_checkpoint(best_checkpoint, records(), REPORT_DIR / name, cache_dir=CACHE,
                                             title=f"Demo model: held-out synthetic {name} cohort")
                   for name, records in cohorts.items()}
        atomic_write_with(target, lambda tmp: shutil.copyfile(best_checkpoint, tmp))
    _, meta = load_checkpoint(target)
    minutes = training_minutes(RUN_DIR / "history.json")
    card = model_card(meta, reports, load_bound(), config, minutes, len(train), len(val))
    atomic_write_text(MODEL_DIR / "MODEL_CARD.md", card)
    print(f"{target} (sha256 {meta['sha256'][:16]}...): test AUC {reports['test']['auc']['value']:.3f}, fresh AUC "
          f"{reports['fresh']['auc']['value']:.3f}, {minutes:.1f} min training, {dt.datetime.now():%H:%M}")


if __name__ == "__main__":
    main()
