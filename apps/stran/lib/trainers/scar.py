"""Train task: the ``stran`` training engine on the datastore's reviewer labels, published atomically.

The new model is written next to the served one only after training succeeds
(``os.replace``), so a failed or stopped run leaves the previous model serving,
and the next inference picks the new file up by its modification time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask

from lib.trainers.lifetime import TrainingLock, exit_with_parent
from stran.atomic import atomic_write_text, atomic_write_with
from stran.engine.dataset import StudyRecord, split_records
from stran.engine.labels import read_label_file
from stran.engine.trainer import TrainConfig, Trainer
from stran.models import available_models, load_checkpoint
from stran.models.registry import stored_config

if TYPE_CHECKING:
    from lib.configs.scar import ScarConfig

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
    if not 0 < opts["lr"] < 1:
        problems.append(f"lr must be in (0, 1) (got {opts['lr']})")
    if not 0 < opts["val_split"] < 1:
        problems.append(f"val_split must be in (0, 1) (got {opts['val_split']})")
    if not 1 <= opts["batch_size"] <= 64:
        problems.append(f"batch_size must be between 1 and 64 (got {opts['batch_size']})")
    if opts["network"] not in available_models():
        problems.append(f"network {opts['network']!r} is not in the zoo {list(available_models())}")
    if problems:
        raise ValueError("invalid training options: " + "; ".join(problems))
    return opts


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
    def __init__(self, config: ScarConfig) -> None:
        super().__init__(f"Train {config.network_name} on the reviewer labels (.scar.json) of the datastore")
        self.scar_config = config
        self.stats_path = Path(config.model_dir) / f"{config.name}.train_stats.json"

    def config(self) -> dict[str, Any]:
        return {
            "epochs": 5,
            "lr": 3e-4,
            "val_split": 0.25,
            "batch_size": 4,
            "network": self.scar_config.network_name,
            "init_from_current": True,
            "seed": 0,
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
        finally:
            lock.release()

    def _train(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        opts, records = self.validate(request, datastore)
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
            lr=opts["lr"],
            batch_size=opts["batch_size"],
            seed=opts["seed"],
            patience=max(3, opts["epochs"]),
            init_checkpoint=init,
            refit_reader=False,  # a few reviewed studies, an interactive budget: the reader is fine-tuned with the rest
        )
        base = {"status": "RUNNING", "started": started.isoformat(timespec="seconds"), "options": opts,
                "train_studies": len(train), "val_studies": len(val), "initialised_from": init}
        self._write_stats(base)

        def progress(event: dict[str, Any]) -> None:
            if event["event"] == "epoch":
                base.update(epoch=event["epoch"] + 1, epochs=event["epochs"], train_loss=event["train_loss"],
                            val_loss=event["val_loss"], val_auc=event["val_auc"], best_epoch=event["best_epoch"] + 1)
            else:
                base.update(epoch=event["epoch"] + 1, step=event["step"], steps=event["steps"], loss=event["loss"])
            self._write_stats(base)

        try:
            trainer = Trainer(config, train, val, run_dir, cache_dir=Path(self.scar_config.model_dir) / "cache",
                              trained_on=f"datastore {datastore.name()}: {len(train)} reviewed studies")
            result = trainer.fit(progress=False, callback=progress)
            published = self.scar_config.published_path
            atomic_write_with(published, lambda tmp: shutil.copyfile(result.best_checkpoint, tmp))
            sha = load_checkpoint(published)[1]["sha256"]
        except Exception as exc:
            base.update(status="FAILED", error=str(exc), finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
            self._write_stats(base)
            raise
        base.update(status="DONE", model_sha256=sha, published=os.path.basename(published), best_val_auc=result.best_val_auc,
                    threshold=result.threshold, finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        self._write_stats(base)
        logger.info("published %s (sha256 %s)", published, sha[:12])
        return base
