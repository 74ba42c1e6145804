"""The one training loop (used by ``training/``, the CLI and the MONAI Label trainer).

Adam with a cosine learning-rate schedule, early stopping on the validation
loss, the best model kept as a stran checkpoint. After every epoch the full
training state is written atomically to ``state.pt``: a run that is killed
(even mid-epoch) resumes from the last finished epoch with nothing corrupt,
and because every epoch reseeds its own random streams, a resumed run
reproduces an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from stran.atomic import atomic_path, atomic_write_text
from stran.engine.augment import AugmentConfig, build_augmentation
from stran.engine.dataset import UNKNOWN, StudyRecord, build_dataset
from stran.engine.evaluate import map_dice
from stran.engine.loss import LossWeights, ScarLoss, positive_weight
from stran.engine.metrics import roc_auc, youden_threshold
from stran.models import available_models, build_model, load_checkpoint, resolve_config, run_model, save_checkpoint
from stran.models.registry import stored_config
from stran.transforms.preprocess import PreprocessConfig

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
BEST_FILE = "best.pt"


class TrainingStateMismatch(RuntimeError):
    """``out_dir`` holds a run with a different configuration: resuming it would mix two experiments."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (part of the resume key and stored in the checkpoint)."""

    model: str = "stran"
    model_config: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8
    slice_loss_weight: float = 0.5
    segment_loss_weight: float = 0.5
    pixel_loss_weight: float = 1.0
    unit_loss_weight: float = 1.0
    refit_reader: bool = True  # networks with a map head: refit the wall reader on the frozen maps at the end
    seed: int = 0
    augment: bool = True
    augment_config: AugmentConfig = field(default_factory=AugmentConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    init_checkpoint: str = ""  # start from these weights (fine-tuning) instead of a random initialisation
    num_threads: int = 2
    time_budget_s: float = 0.0  # > 0: start no epoch that would end past this many seconds (interactive retraining)

    def __post_init__(self) -> None:
        if isinstance(self.augment_config, dict):
            self.augment_config = AugmentConfig(**self.augment_config)
        if isinstance(self.preprocess, dict):
            self.preprocess = PreprocessConfig(**self.preprocess)
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if not 0 < self.lr < 1:
            problems.append(f"lr must be in (0, 1) (got {self.lr})")
        if self.patience < 1:
            problems.append(f"patience must be >= 1 (got {self.patience})")
        for name in ("slice_loss_weight", "segment_loss_weight", "pixel_loss_weight", "unit_loss_weight"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0 (got {getattr(self, name)})")
        if problems:
            raise ValueError("invalid training options: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Hash of the options that change the result (epochs excluded so a run can be extended)."""
        d = self.to_dict()
        d.pop("epochs")
        d.pop("num_threads")
        d.pop("time_budget_s")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    lr: float
    seconds: float
    val_scar_dice: float = float("nan")  # mean Dice of the scar map on validation slices with scar (map head only)


@dataclass
class TrainResult:
    best_checkpoint: Path
    best_epoch: int
    best_val_loss: float
    best_val_auc: float
    threshold: float
    history: list[EpochStats]
    stopped_early: bool
    resumed_from_epoch: int
    initial_val_loss: float | None = None  # the starting weights' validation loss (fine-tuning), before any step
    initial_val_auc: float | None = None
    stopped_by_budget: bool = False


ProgressCallback = Callable[[dict[str, Any]], None]


def _ids_digest(records: Sequence[StudyRecord]) -> str:
    return hashlib.sha256("\n".join(sorted(r.study_id for r in records)).encode()).hexdigest()


class Trainer:
    """Train one network on labelled studies; ``fit()`` resumes an interrupted run in ``out_dir``."""

    def __init__(
        self,
        config: TrainConfig,
        train_records: Sequence[StudyRecord],
        val_records: Sequence[StudyRecord],
        out_dir: str | Path,
        *,
        cache_dir: str | Path | None = None,
        trained_on: str = "",
    ) -> None:
        unlabeled = [r.study_id for r in [*train_records, *val_records] if r.label is None]
        if unlabeled:
            raise ValueError(f"{len(unlabeled)} studies have no label (e.g. {unlabeled[:3]}); training needs labelled studies")
        if not train_records or not val_records:
            raise ValueError(
                f"training needs both training and validation studies (got {len(train_records)} and {len(val_records)})"
            )
        overlap = {r.study_id for r in train_records} & {r.study_id for r in val_records}
        if overlap:
            raise ValueError(f"validation studies also in the training set: {sorted(overlap)[:5]}")
        self.config = config
        self.train_records, self.val_records = list(train_records), list(val_records)
        self.out_dir = Path(out_dir)
        self.cache_dir = cache_dir
        self.trained_on = trained_on
        self.out_dir.mkdir(parents=True, exist_ok=True)

    # --- data -----------------------------------------------------------------
    def _loaders(self) -> tuple[Any, Any]:
        c = self.config
        augment = build_augmentation(c.augment_config) if c.augment else None
        train_ds = build_dataset(self.train_records, c.preprocess, cache_dir=self.cache_dir, augment=augment)
        val_ds = build_dataset(self.val_records, c.preprocess, cache_dir=self.cache_dir)
        self._train_ds = train_ds
        self._augment = augment
        self._generator = torch.Generator()
        train_dl = DataLoader(train_ds, batch_size=c.batch_size, shuffle=True, num_workers=0, generator=self._generator)
        val_dl = DataLoader(val_ds, batch_size=c.batch_size, shuffle=False, num_workers=0)
        return train_dl, val_dl

    def _seed_epoch(self, epoch: int) -> None:
        seed = self.config.seed * 100_003 + epoch
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        self._generator.manual_seed(seed)
        if self._augment is not None:
            self._augment.set_random_state(seed=seed % 2**32)

    # --- state ----------------------------------------------------------------
    def _save_state(self, model, optimizer, scheduler, epoch, best, history, stale, best_model) -> None:
        state = {
            "best_model": best_model,
            "config_key": self.config.key(),
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "best": best,
            "history": [dataclasses.asdict(h) for h in history],
            "stale": stale,
        }
        with atomic_path(self.out_dir / STATE_FILE) as tmp:
            torch.save(state, tmp)

    def _load_state(self) -> dict[str, Any] | None:
        path = self.out_dir / STATE_FILE
        if not path.exists():
            return None
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("config_key") != self.config.key():
            raise TrainingStateMismatch(
                f"{self.out_dir} holds a training run with other options; use a new output folder, "
                f"or delete {path} to start over"
            )
        return state

    # --- loop -----------------------------------------------------------------
    def fit(self, *, progress: bool = True, callback: ProgressCallback | None = None) -> TrainResult:
        c = self.config
        torch.set_num_threads(c.num_threads)
        torch.manual_seed(c.seed)
        started = time.perf_counter()
        model = build_model(c.model, **c.model_config)
        train_dl, val_dl = self._loaders()
        loss_fn = self._loss()
        initial: tuple[float | None, float | None] = (None, None)
        if c.init_checkpoint:
            model = self._initial_weights(c.init_checkpoint)
            loss0, probs0, y0, _ = self._validate(model, loss_fn, val_dl)  # what a new model has to beat
            initial = (loss0, roc_auc(y0, probs0))
        optimizer = torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=c.epochs, eta_min=c.lr * 0.02)

        start_epoch, history, stale, best_model = 0, [], 0, None
        best = {"epoch": -1, "val_loss": float("inf"), "val_auc": float("nan"), "threshold": 0.5}
        state = self._load_state()
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch, best, stale = state["epoch"] + 1, state["best"], state["stale"]
            history = [EpochStats(**h) for h in state["history"]]
            best_model = state["best_model"]
            # best.pt may be newer than state.pt if the run died between the two writes: rewrite it from the state
            self._save_best(self._model_with(best_model), best)
            log.info("resuming %s from epoch %d", self.out_dir, start_epoch)
        resumed_from = start_epoch

        stopped_early, out_of_time = stale >= c.patience, False
        for epoch in range(start_epoch, c.epochs):
            if stopped_early:
                break
            if c.time_budget_s > 0 and history and epoch > start_epoch:
                out_of_time = time.perf_counter() - started + history[-1].seconds > c.time_budget_s
                if out_of_time:
                    log.info("time budget of %.0f s reached after %d epochs", c.time_budget_s, epoch)
                    break
            t0 = time.perf_counter()
            self._seed_epoch(epoch)
            train_loss = self._train_epoch(model, optimizer, loss_fn, train_dl, epoch, progress, callback)
            val_loss, val_probs, val_y, val_dice = self._validate(model, loss_fn, val_dl)
            val_auc = roc_auc(val_y, val_probs)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            stats = EpochStats(epoch, train_loss, val_loss, val_auc, lr, time.perf_counter() - t0, val_dice)
            history.append(stats)
            if val_loss < best["val_loss"]:
                threshold = youden_threshold(val_y, val_probs) if 0 < val_y.sum() < len(val_y) else 0.5
                best = {"epoch": epoch, "val_loss": val_loss, "val_auc": val_auc, "threshold": threshold}
                stale = 0
                best_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
                self._save_best(model, best)
            else:
                stale += 1
            stopped_early = stale >= c.patience
            self._save_state(model, optimizer, scheduler, epoch, best, history, stale, best_model)
            atomic_write_text(self.out_dir / "history.json", json.dumps([dataclasses.asdict(h) for h in history], indent=1))
            message = (
                f"epoch {epoch + 1}/{c.epochs}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                f"val AUC {val_auc:.3f}" + ("" if np.isnan(val_dice) else f", val scar Dice {val_dice:.3f}")
                + f", lr {lr:.2e}, {stats.seconds:.0f} s"
            )
            log.info(message)
            if progress:
                tqdm.write(message)
            if callback:
                callback({"event": "epoch", **dataclasses.asdict(stats), "best_epoch": best["epoch"], "epochs": c.epochs})

        if best["epoch"] < 0:
            raise RuntimeError("training finished without a single validated epoch")
        if c.refit_reader and getattr(model, "map_head", False):
            best = self.refit_reader(best_model, best, progress, callback)
        return TrainResult(
            best_checkpoint=self.out_dir / BEST_FILE,
            best_epoch=best["epoch"],
            best_val_loss=best["val_loss"],
            best_val_auc=best["val_auc"],
            threshold=best["threshold"],
            history=history,
            stopped_early=stopped_early,
            resumed_from_epoch=resumed_from,
            initial_val_loss=initial[0],
            initial_val_auc=initial[1],
            stopped_by_budget=out_of_time,
        )

    def refit_reader(self, state: dict[str, torch.Tensor], best: dict[str, Any], progress: bool = True,
                     callback: ProgressCallback | None = None) -> dict[str, Any]:
        """Second stage (``stran.engine.reader_fit``): a fresh wall reader fitted on the measures of the best epoch's
        maps, frozen; rewrites best.pt with it and its validation threshold."""
        from stran.engine.reader_fit import fit_reader, measure

        model = self._model_with(state)
        t0 = time.perf_counter()

        def report(done: int, total: int) -> None:
            if callback:
                callback({"event": "reader", "done": done, "total": total})

        train = measure(model, self.train_records, self.config.preprocess, self.cache_dir, progress=report)
        val = measure(model, self.val_records, self.config.preprocess, self.cache_dir, progress=report)
        threshold, val_auc = fit_reader(model, train, val, seed=self.config.seed)
        best = {**best, "threshold": threshold, "val_auc": val_auc, "reader_refit": True}
        self._save_best(model, best)
        message = f"wall reader refitted on the frozen maps: val AUC {val_auc:.3f}, {time.perf_counter() - t0:.0f} s"
        log.info(message)
        if progress:
            tqdm.write(message)
        return best

    def _loss(self) -> ScarLoss:
        c, recs = self.config, self.train_records
        return ScarLoss(
            study_pos_weight=positive_weight([float(r.label.study_label) for r in recs]),
            slice_pos_weight=positive_weight([float(v) for r in recs for v in r.label.slice_labels if v is not None]),
            segment_pos_weight=positive_weight([float(v) for r in recs for v in r.label.segment_labels if v is not None]),
            weights=LossWeights(slice=c.slice_loss_weight, segment=c.segment_loss_weight, pixel=c.pixel_loss_weight,
                                unit=c.unit_loss_weight),
        )

    def _train_epoch(self, model, optimizer, loss_fn, loader, epoch, progress, callback) -> float:
        model.train()
        total, n = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=not progress, leave=False, unit="batch")
        for step, batch in enumerate(bar):
            optimizer.zero_grad(set_to_none=True)
            out = run_model(model, batch["image"], batch["geometry"])
            loss = loss_fn(out, batch)
            loss.backward()
            optimizer.step()
            b = batch["image"].shape[0]
            total += loss.item() * b
            n += b
            bar.set_postfix(loss=f"{total / n:.4f}")
            if callback:
                callback({"event": "step", "epoch": epoch, "step": step + 1, "steps": len(loader), "loss": total / n})
        return total / max(n, 1)

    @torch.no_grad()
    def _validate(self, model, loss_fn, loader) -> tuple[float, np.ndarray, np.ndarray, float]:
        model.eval()
        total, n, probs, ys, dice = 0.0, 0, [], [], []
        for batch in loader:
            out = run_model(model, batch["image"], batch["geometry"])
            loss = loss_fn(out, batch)
            b = batch["image"].shape[0]
            total += loss.item() * b
            n += b
            probs.append(torch.sigmoid(out["study_logit"]).numpy())
            ys.append(batch["study_target"].numpy())
            has = batch["has_labels"]
            if "maps" in out and bool(has.any()):
                dice.append(map_dice(out["maps"][has], batch["labels"][has])[0])
        y = np.concatenate(ys)
        p = np.concatenate(probs)
        known = y != UNKNOWN
        d = np.concatenate(dice) if dice else np.zeros(0)
        return total / max(n, 1), p[known], y[known].astype(int), float(d.mean()) if d.size else float("nan")

    def _initial_weights(self, path: str) -> torch.nn.Module:
        model, meta = load_checkpoint(path)
        wanted = resolve_config(self.config.model, **self.config.model_config)
        stored = stored_config(meta["model_name"], meta["config"]) if meta["model_name"] in available_models() else {}
        if meta["model_name"] != self.config.model or resolve_config(meta["model_name"], **stored) != wanted:
            raise ValueError(
                f"cannot start from {path}: it holds a {meta['model_name']} network with config {meta.get('config')}, "
                f"not {self.config.model} with {self.config.model_config}"
            )
        return model

    def _model_with(self, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
        model = build_model(self.config.model, **self.config.model_config)
        model.load_state_dict(state_dict)
        return model

    def _save_best(self, model, best: dict[str, Any]) -> None:
        extra = {
            "threshold": best["threshold"],
            "val_auc": best["val_auc"],
            "val_loss": best["val_loss"],
            "epoch": best["epoch"],
            "trained_on": self.trained_on,
            "train_ids": sorted(r.study_id for r in self.train_records),
            "val_ids": sorted(r.study_id for r in self.val_records),
            "train_ids_sha256": _ids_digest(self.train_records),
            "train_config": self.config.to_dict(),
            "reader_refit": bool(best.get("reader_refit", False)),
        }
        save_checkpoint(self.out_dir / BEST_FILE, model, name=self.config.model, config=self.config.model_config, extra=extra)
