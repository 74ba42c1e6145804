"""Train task: the ``stran`` training engine on the datastore's reviewer labels, published atomically.

Retraining after corrections is a fine-tuning of the served model with a budget a reader waits for
(``time_budget_s``): on the studies reviewed since the served model was published, plus a replay sample of
earlier reviewed ones (at most ``max_studies`` in all) so that it does not forget them. The app keeps serving the
old model until the new one is validated: on the held-out reviewed studies its validation loss may exceed the old
model's by at most ``max_loss_increase``; otherwise it is kept aside in ``<model_dir>/kept_aside/`` and the
training statistics say why. A published model is written next to the served one only after that check
(``os.replace``), so a failed, stopped or rejected run leaves the previous model serving, and the next inference
picks the new file up by its modification time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask

from lib.trainers.lifetime import TrainingLock
from stran.atomic import atomic_write_text, atomic_write_with
from stran.engine import distributed
from stran.engine.dataset import StudyRecord, split_records
from stran.engine.labels import read_label_file
from stran.engine.trainer import TrainConfig, Trainer
from stran.lifetime import exit_with_parent
from stran.models import available_models, load_checkpoint
from stran.models.registry import stored_config

if TYPE_CHECKING:
    from lib.contracts import TrainerConfig

logger = logging.getLogger(__name__)

MIN_LABELLED = 4


def training_options(request: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Validated training options from a request (unknown keys of MONAI Label's own are ignored)."""
    opts = dict(defaults)
    problems = []
    for key, default in defaults.items():
        if key not in request:
            continue
        value = request[key]
        try:
            if isinstance(default, bool):
                if isinstance(value, str):
                    value = value.lower() in ("1", "true", "yes")
                opts[key] = bool(value)
            elif isinstance(default, int):
                if isinstance(value, bool) or float(value) != int(float(value)):
                    raise ValueError
                opts[key] = int(float(value))
            elif isinstance(default, float):
                opts[key] = float(value)
            else:
                opts[key] = str(value)
        except (TypeError, ValueError):
            problems.append(f"{key}={value!r} is not a valid {type(default).__name__}")
    if not 1 <= opts["epochs"] <= 1000:
        problems.append(f"epochs must be between 1 and 1000 (got {opts['epochs']})")
    for key in ("lr", "finetune_lr"):
        if not 0 < opts[key] < 1:
            problems.append(f"{key} must be in (0, 1) (got {opts[key]})")
    if not 0 < opts["val_split"] < 1:
        problems.append(f"val_split must be in (0, 1) (got {opts['val_split']})")
    if not 1 <= opts["batch_size"] <= 64:
        problems.append(f"batch_size must be between 1 and 64 (got {opts['batch_size']})")
    if not 0 <= opts["time_budget_s"] <= 86400:
        problems.append(f"time_budget_s must be between 0 (no limit) and 86400 (got {opts['time_budget_s']})")
    if not 0 <= opts["max_loss_increase"] <= 10:
        problems.append(f"max_loss_increase must be between 0 and 10 (got {opts['max_loss_increase']})")
    if not MIN_LABELLED <= opts["max_studies"] <= 100000:
        problems.append(f"max_studies must be at least {MIN_LABELLED} (got {opts['max_studies']})")
    if not 0 <= opts["processes"] <= 64:
        problems.append(f"processes must be between 0 (one per GPU) and 64 (got {opts['processes']})")
    gpus = opts["gpus"].replace(" ", "")
    if gpus != "all" and not all(g.isdigit() for g in gpus.split(",")):
        problems.append(f"gpus must be 'all' or GPU numbers such as '0,1' (got {opts['gpus']!r})")
    if opts["multi_gpu"] and _world_size(opts) < 2 and not problems:
        import torch

        if not torch.cuda.is_available():
            problems.append("multi_gpu on a server without GPUs needs processes >= 2 (CPU processes with gloo; "
                            "each takes batch_size / processes studies per step)")
    if opts["network"] not in available_models():
        problems.append(f"network {opts['network']!r} is not in the zoo {list(available_models())}")
    if problems:
        raise ValueError("invalid training options: " + "; ".join(problems))
    return opts


def _world_size(opts: dict[str, Any]) -> int:
    """Processes of a multi_gpu training: ``processes``, else one per visible GPU (``gpus`` of them)."""
    if opts["processes"]:
        return opts["processes"]
    import torch

    if opts["gpus"].replace(" ", "") != "all":
        return min(len(opts["gpus"].split(",")), torch.cuda.device_count())
    return torch.cuda.device_count()


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinite floats replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class ScarTrainer(TrainTask):
    def __init__(self, config: TrainerConfig) -> None:
        super().__init__(f"Train {config.network_name} on the reviewer labels (.scar.json) of the datastore")
        self.scar_config = config
        self.stats_path = Path(config.model_dir) / f"{config.name}.train_stats.json"

    def config(self) -> dict[str, Any]:
        return {
            "epochs": 5,
            "lr": 3e-4,  # training a network from scratch
            "finetune_lr": 3e-5,  # starting from the served model: small steps (docs/server.md, bench_retrain.py)
            "val_split": 0.25,
            "batch_size": 4,
            "network": self.scar_config.network_name,
            "init_from_current": True,
            "seed": 0,
            "time_budget_s": 45.0,
            "max_loss_increase": 0.05,
            "max_studies": 32,
            "multi_gpu": False,  # as MONAI Label's stock trainers: one training process per GPU (torch.distributed)
            "gpus": "all",
            "processes": 0,  # multi_gpu: this many processes (0: one per GPU); on a CPU server, gloo processes
        }

    def stats(self) -> dict[str, Any]:
        try:
            return _finite(json.loads(self.stats_path.read_text()))
        except (OSError, ValueError):
            return {}

    def labelled_records(self, datastore: Datastore) -> list[StudyRecord]:
        records = []
        for image_id in sorted(datastore.get_labeled_images(DefaultLabelTag.FINAL.value)):
            label_path = datastore.get_label_uri(image_id, DefaultLabelTag.FINAL.value)
            if not label_path.endswith(".scar.json"):
                continue
            label = read_label_file(label_path)
            records.append(StudyRecord(image_id, Path(datastore.get_image_uri(image_id)), label))
        return records

    def _served_since(self) -> float:
        """When the served model was published (its file's time; 0 for the shipped model only)."""
        published = self.scar_config.published_path
        return os.path.getmtime(published) if os.path.exists(published) else 0.0

    def validate(self, request: dict[str, Any], datastore: Datastore) -> tuple[dict[str, Any], list[StudyRecord]]:
        """Options and data checks done before a training process is started (raises ValueError);
        returns the options and the reviewed studies."""
        opts = training_options(request, self.config())
        records = self.labelled_records(datastore)
        classes = {r.label.study_label for r in records}
        if len(records) < MIN_LABELLED or len(classes) < 2:
            raise ValueError(
                f"training needs at least {MIN_LABELLED} reviewed studies including both scar and no-scar; "
                f"the datastore has {len(records)} ({sorted(classes)})"
            )
        return opts, records

    def _write_stats(self, stats: dict[str, Any]) -> None:
        """Write the statistics shown in ``/info`` (strict JSON: an undefined metric, e.g. an AUC on a
        one-class validation set, is written as null, since NaN would break every JSON client)."""
        atomic_write_text(self.stats_path, json.dumps(_finite(stats), indent=1, default=str))

    def lock(self) -> TrainingLock:
        """The lock that keeps one training of this model at a time, across server restarts."""
        return TrainingLock(self.scar_config.model_dir, self.scar_config.name)

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Train in MONAI Label's training process: holding the model's lock, and ending if the server dies."""
        lock = self.lock()
        lock.acquire()
        exit_with_parent(on_exit=lock.release)
        try:
            return self._train(request, datastore)
        except Exception as exc:
            if self.stats().get("status") != "FAILED":  # failed before the training itself: say so in the status
                self._write_stats({"status": "FAILED", "error": str(exc),
                                   "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
            raise
        finally:
            lock.release()

    def _train(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        opts, records = self.validate(request, datastore)
        label_ts = {r.study_id: float(datastore.get_label_info(r.study_id, DefaultLabelTag.FINAL.value).get("ts", 0))
                    for r in records}
        records, recent = select_for_finetuning(records, label_ts, self._served_since(), opts["max_studies"],
                                                opts["seed"])
        train, val = split_records(records, [1 - opts["val_split"], opts["val_split"]], seed=opts["seed"])
        if not val:
            train, val = train[1:], train[:1]
        current = self.scar_config.current_checkpoint()
        init = current if opts["init_from_current"] and current else ""
        if init and load_checkpoint(init)[1]["model_name"] != opts["network"]:
            init = ""  # the served model is another network: start from scratch
        started = dt.datetime.now(dt.timezone.utc)
        run_dir = Path(self.scar_config.model_dir) / "runs" / f"{self.scar_config.name}-{started:%Y%m%d-%H%M%S}"
        config = TrainConfig(
            model=opts["network"],
            model_config=stored_config(opts["network"], load_checkpoint(init)[1]["config"]) if init else {},
            epochs=opts["epochs"],
            lr=opts["finetune_lr"] if init else opts["lr"],
            batch_size=opts["batch_size"],
            seed=opts["seed"],
            patience=max(3, opts["epochs"]),
            init_checkpoint=init,
            refit_reader=False,  # a few reviewed studies, an interactive budget: the reader is fine-tuned with the rest
            time_budget_s=opts["time_budget_s"],
        )
        base = {"status": "RUNNING", "started": started.isoformat(timespec="seconds"), "options": opts,
                "train_studies": len(train), "val_studies": len(val), "initialised_from": init,
                "recent_studies": recent, "replayed_studies": len(records) - recent}
        self._write_stats(base)

        world = _world_size(opts) if opts["multi_gpu"] else 1
        if world > 1 and config.batch_size % world:
            config.batch_size = world * max(1, round(config.batch_size / world))  # the global batch, shared evenly
        base.update(processes=world, global_batch=config.batch_size)
        progress = _Progress(self.stats_path, base)
        try:
            job = (config, train, val, run_dir, Path(self.scar_config.model_dir) / "cache",
                   f"datastore {datastore.name()}: {len(train)} reviewed studies", progress)
            result = _fit(*job) if world < 2 else distributed.spawn_group(world, _fit, job)
            base = {**json.loads(self.stats_path.read_text()), **base} if world > 1 else base
            base.update(best_val_loss=result.best_val_loss, best_val_auc=result.best_val_auc,
                        served_val_loss=result.initial_val_loss, served_val_auc=result.initial_val_auc,
                        stopped_by_budget=result.stopped_by_budget, threshold=result.threshold)
            rejection = _rejection(result.best_val_loss, result.initial_val_loss, opts["max_loss_increase"])
            if rejection:
                target = Path(self.scar_config.model_dir) / "kept_aside" / f"{self.scar_config.name}-{started:%Y%m%d-%H%M%S}.pt"
                atomic_write_with(target, lambda tmp: shutil.copyfile(result.best_checkpoint, tmp))
                base.update(status="KEPT_ASIDE", reason=rejection, kept_aside=str(target.relative_to(self.scar_config.model_dir)))
            else:
                published = self.scar_config.published_path
                atomic_write_with(published, lambda tmp: shutil.copyfile(result.best_checkpoint, tmp))
                base.update(status="DONE", model_sha256=load_checkpoint(published)[1]["sha256"],
                            published=os.path.basename(published))
        except Exception as exc:
            base.update(status="FAILED", error=str(exc), finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
            self._write_stats(base)
            raise
        base["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self._write_stats(base)
        logger.info("training of %s: %s", self.scar_config.name, base.get("reason") or f"published {base['published']}")
        return base


class _Progress:
    """The training's progress into the statistics file shown in ``/info`` (picklable: rank 0 of a multi-process
    training writes it)."""

    def __init__(self, path: Path, base: dict[str, Any]) -> None:
        self.path, self.base = path, base

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] == "epoch":
            self.base.update(epoch=event["epoch"] + 1, epochs=event["epochs"], train_loss=event["train_loss"],
                             val_loss=event["val_loss"], val_auc=event["val_auc"], best_epoch=event["best_epoch"] + 1)
        elif event["event"] == "step":
            self.base.update(epoch=event["epoch"] + 1, step=event["step"], steps=event["steps"], loss=event["loss"])
        atomic_write_text(self.path, json.dumps(_finite(self.base), indent=1, default=str))


def _fit(config: TrainConfig, train: list[StudyRecord], val: list[StudyRecord], run_dir: Path, cache: Path,
         trained_on: str, progress: _Progress) -> Any:
    """One training (in this process, or as one rank of ``distributed.spawn_group``)."""
    return Trainer(config, train, val, run_dir, cache_dir=cache, trained_on=trained_on).fit(progress=False,
                                                                                           callback=progress)


def _rejection(new_loss: float, old_loss: float | None, margin: float) -> str:
    """Why the new model must not replace the served one ('' when it may)."""
    if old_loss is None or not math.isfinite(old_loss):
        return ""
    if not math.isfinite(new_loss) or new_loss > old_loss + margin:
        return (f"the new model is worse on the held-out reviewed studies (validation loss {new_loss:.3f} against "
                f"{old_loss:.3f} for the served model, more than the allowed {margin:g} higher); the served model "
                "stays. Review more studies or retrain with other options")
    return ""


def select_for_finetuning(records: list[StudyRecord], label_ts: dict[str, float], since: float, cap: int,
                          seed: int) -> tuple[list[StudyRecord], int]:
    """Every study reviewed after ``since`` (newest first when more than ``cap``), then a seeded random replay
    sample of the earlier reviewed ones up to ``cap`` in all; returns (records, how many are recent)."""
    recent = sorted((r for r in records if label_ts.get(r.study_id, 0.0) > since),
                    key=lambda r: -label_ts.get(r.study_id, 0.0))[:cap]
    chosen = {r.study_id for r in recent}
    earlier = [r for r in records if r.study_id not in chosen]
    rng = random.Random(seed)
    replay = rng.sample(earlier, min(len(earlier), cap - len(recent)))
    return sorted(recent + replay, key=lambda r: r.study_id), len(recent)
