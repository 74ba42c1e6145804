"""The one training loop (used by ``training/``, the CLI and the MONAI Label trainer).

Adam with a cosine learning-rate schedule, early stopping on the validation
loss, the best model kept as a stran checkpoint. After every epoch the full
training state is written atomically to ``state.pt``: a run that is killed
(even mid-epoch) resumes from the last finished epoch with nothing corrupt,
and because every epoch reseeds its own random streams, a resumed run
reproduces an uninterrupted one.

Under torchrun (``stran.engine.distributed``) the same loop runs data-parallel: each rank trains on its share of every
global batch (``batch_size`` is the global batch), batch norm uses the group's statistics, rank 0 validates,
decides and writes, and every rank follows its decisions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from stran.atomic import atomic_path, atomic_write_text
from stran.engine import distributed
from stran.engine.augment import build_augmentation
from stran.engine.dataset import UNKNOWN, StudyRecord, build_dataset
from stran.engine.evaluate import map_dice
from stran.engine.loss import LossWeights, ScarLoss, positive_weight
from stran.engine.metrics import roc_auc, youden_threshold
from stran.engine.train_config import EpochStats, TrainConfig, TrainResult
from stran.models import available_models, build_model, load_checkpoint, resolve_config, run_model, save_checkpoint
from stran.models.registry import stored_config

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
BEST_FILE = "best.pt"


class TrainingStateMismatch(RuntimeError):
    """``out_dir`` holds a run with a different configuration: resuming it would mix two experiments."""


ProgressCallback = Callable[[dict[str, Any]], None]


def _ids_digest(records: Sequence[StudyRecord]) -> str:
    return hashlib.sha256("\n".join(sorted(r.study_id for r in records)).encode()).hexdigest()


class _RankSampler(Sampler):
    """This rank's share of the one-process order: the same ``randperm`` of the loader's generator, padded to a
    multiple of the group (the first studies again) and dealt round-robin, so every global batch holds the
    studies of the one-process batch."""

    def __init__(self, n: int, ctx: distributed.Dist, generator: torch.Generator) -> None:
        self.n, self.ctx, self.generator = n, ctx, generator

    def __len__(self) -> int:
        return -(-self.n // self.ctx.world_size)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        order += order[: len(self) * self.ctx.world_size - self.n]
        yield from order[self.ctx.rank :: self.ctx.world_size]


def _on(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


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
        device: str = "auto",
    ) -> None:
        """``device`` (``auto``, ``cpu``, ``cuda``) is where a one-process run trains (``auto``: the GPU when there
        is one); a torchrun group's processes use their own (``stran.engine.distributed``)."""
        if device not in distributed.DEVICES:
            raise ValueError(f"device {device!r} is not one of {distributed.DEVICES}")
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
        self.device = device
        self._dist = distributed.SINGLE
        self.out_dir.mkdir(parents=True, exist_ok=True)

    # --- data -----------------------------------------------------------------
    def _loaders(self) -> tuple[Any, Any]:
        c, ctx = self.config, self._dist
        if c.batch_size % ctx.world_size:
            raise ValueError(f"batch_size {c.batch_size} is the global batch: it must be a multiple of the "
                             f"{ctx.world_size} processes")
        augment = build_augmentation(c.augment_config) if c.augment else None
        for turn in (True, False) if ctx.active else (True,):  # one process per node fills the cache first
            if (ctx.local_rank == 0) == turn:
                train_ds = build_dataset(self.train_records, c.preprocess, cache_dir=self.cache_dir, augment=augment)
                val_ds = build_dataset(self.val_records, c.preprocess, cache_dir=self.cache_dir)
            ctx.barrier()
        self._train_ds = train_ds
        self._augment = augment
        self._generator = torch.Generator()
        sampler = _RankSampler(len(train_ds), ctx, self._generator) if ctx.active else None
        train_dl = DataLoader(train_ds, batch_size=c.batch_size // ctx.world_size, shuffle=sampler is None,
                              sampler=sampler, num_workers=0, generator=self._generator)
        val_dl = DataLoader(val_ds, batch_size=c.batch_size, shuffle=False, num_workers=0)
        return train_dl, val_dl

    def _shared(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run by rank 0 alone; every rank returns its result (or raises its error)."""
        ctx = self._dist
        if not ctx.active:
            return fn()
        out = None
        if ctx.main:
            try:
                out = (fn(), None)
            except Exception as exc:  # every rank raises it, none waits for rank 0 forever
                out = (None, exc)
        value, error = ctx.broadcast(out)
        if error is not None:
            raise error
        return value

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
        ctx = distributed.current()
        ctx = self._dist = ctx if ctx.active else distributed.single(self.device)
        progress, callback = progress and ctx.main, callback if ctx.main else None
        cores = distributed.local_cores() if ctx.device.type == "cpu" else c.num_threads
        torch.set_num_threads(max(1, min(c.num_threads, cores)))
        torch.manual_seed(c.seed)
        started = time.perf_counter()
        model = build_model(c.model, **c.model_config)
        train_dl, val_dl = self._loaders()
        loss_fn = self._loss().to(ctx.device)
        initial: tuple[float | None, float | None] = (None, None)
        if c.init_checkpoint:
            model = self._initial_weights(c.init_checkpoint)
        model.to(ctx.device)
        if c.init_checkpoint:
            loss0, probs0, y0, _ = self._shared(lambda: self._validate(model, loss_fn, val_dl))  # what to beat
            initial = (loss0, roc_auc(y0, probs0))
        optimizer = torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=c.epochs, eta_min=c.lr * 0.02)

        start_epoch, history, stale, best_model = 0, [], 0, None
        best = {"epoch": -1, "val_loss": float("inf"), "val_auc": float("nan"), "threshold": 0.5}
        state = self._shared(self._load_state)  # rank 0 reads state.pt: nodes need not share a file system
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch, best, stale = state["epoch"] + 1, state["best"], state["stale"]
            history = [EpochStats(**h) for h in state["history"]]
            best_model = state["best_model"]
            # best.pt may be newer than state.pt if the run died between the two writes: rewrite it from the state
            if ctx.main:
                self._save_best(self._model_with(best_model), best)
            log.info("resuming %s from epoch %d", self.out_dir, start_epoch)
        resumed_from = start_epoch
        if ctx.active:  # data-parallel: the same start everywhere, the group's batch norm, averaged gradients
            distributed.sync_batch_norm(model)
            distributed.broadcast_state(model)

        stopped_early, out_of_time = stale >= c.patience, False
        for epoch in range(start_epoch, c.epochs):
            if stopped_early:
                break
            if c.time_budget_s > 0 and history and epoch > start_epoch:
                out_of_time = self._shared(lambda: time.perf_counter() - started + history[-1].seconds > c.time_budget_s)
                if out_of_time:
                    log.info("time budget of %.0f s reached after %d epochs", c.time_budget_s, epoch)
                    break
            t0 = time.perf_counter()
            self._seed_epoch(epoch)
            train_loss = self._train_epoch(model, optimizer, loss_fn, train_dl, epoch, progress, callback)
            val_loss, val_probs, val_y, val_dice = self._shared(lambda: self._validate(model, loss_fn, val_dl))
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
                if ctx.main:
                    self._save_best(model, best)
            else:
                stale += 1
            stopped_early = stale >= c.patience
            if ctx.main:
                self._save_state(model, optimizer, scheduler, epoch, best, history, stale, best_model)
                atomic_write_text(self.out_dir / "history.json",
                                  json.dumps([dataclasses.asdict(h) for h in history], indent=1))
            message = (
                f"epoch {epoch + 1}/{c.epochs}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                f"val AUC {val_auc:.3f}" + ("" if np.isnan(val_dice) else f", val scar Dice {val_dice:.3f}")
                + f", lr {lr:.2e}, {stats.seconds:.0f} s"
            )
            if ctx.main:
                log.info(message)
            if progress:
                tqdm.write(message)
            if callback:
                callback({"event": "epoch", **dataclasses.asdict(stats), "best_epoch": best["epoch"], "epochs": c.epochs})

        if best["epoch"] < 0:
            raise RuntimeError("training finished without a single validated epoch")
        if c.refit_reader and getattr(model, "map_head", False):
            best = self._shared(lambda: self.refit_reader(best_model, best, progress, callback))
        ctx.barrier()
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
        """Mean training loss over the epoch's studies (all ranks'; the step callback sees rank 0's running mean)."""
        model.train()
        total, n = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=not progress, leave=False, unit="batch")
        for step, batch in enumerate(bar):
            batch = _on(batch, self._dist.device)
            optimizer.zero_grad(set_to_none=True)
            out = run_model(model, batch["image"], batch["geometry"])
            loss = loss_fn(out, batch)
            loss.backward()
            if self._dist.active:
                distributed.average_gradients(list(model.parameters()), self._dist)
            optimizer.step()
            b = batch["image"].shape[0]
            total += loss.item() * b
            n += b
            bar.set_postfix(loss=f"{total / n:.4f}")
            if callback:
                callback({"event": "step", "epoch": epoch, "step": step + 1, "steps": len(loader), "loss": total / n})
        total, n = self._dist.all_sum([total, n])
        return total / max(n, 1)

    @torch.no_grad()
    def _validate(self, model, loss_fn, loader) -> tuple[float, np.ndarray, np.ndarray, float]:
        model.eval()
        total, n, probs, ys, dice = 0.0, 0, [], [], []
        for batch in loader:
            batch = _on(batch, self._dist.device)
            out = run_model(model, batch["image"], batch["geometry"])
            loss = loss_fn(out, batch)
            b = batch["image"].shape[0]
            total += loss.item() * b
            n += b
            probs.append(torch.sigmoid(out["study_logit"]).cpu().numpy())
            ys.append(batch["study_target"].cpu().numpy())
            has = batch["has_labels"]
            if "maps" in out and bool(has.any()):
                dice.append(map_dice(out["maps"][has].cpu(), batch["labels"][has].cpu())[0])
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
