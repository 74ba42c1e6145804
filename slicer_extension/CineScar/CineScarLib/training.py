"""Retraining on the server until the new model is live: :class:`TrainingRun`, :class:`TrainingProgress` and
:class:`TrainingMixin` (start, one look at the progress, wait, stop; each run recorded in the results database)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .cancel import CancelToken, Progress
from .errors import MonaiLabelError, WorkflowError, is_offline
from .records import new_id, utc_now

TERMINAL_TASK_STATES = ("DONE", "ERROR", "STOPPED", "FAILED", "CANCELLED")


@dataclass
class TrainingRun:
    run_id: str
    model: str
    options: dict
    started_utc: str
    sha_before: str
    stats_before: dict
    task: dict = field(default_factory=dict)


@dataclass
class TrainingProgress:
    state: str  # "running", "publishing", "live", "kept_aside" (trained but worse: the old model stays), "failed"
    message: str
    fraction: float | None = None
    epoch: int | None = None
    epochs: int | None = None
    metrics: dict = field(default_factory=dict)
    model_sha256: str = ""

    @property
    def finished(self) -> bool:
        return self.state in ("live", "kept_aside", "failed")


class TrainingMixin:
    """:class:`~.session.ScarSession`'s training: uses the session's ``client``, ``model``, ``status``, ``connect``,
    ``db``, ``has_database`` and ``log``."""

    def start_training(self, options: dict | None = None) -> TrainingRun:
        """Start retraining on the reviewed studies; recorded in the database when there is one."""
        info = self.client.check(self.model)
        sha_before = str((info["models"][self.model].get("model") or {}).get("sha256") or "")
        stats_before = dict((info.get("train_stats") or {}).get(self.model) or {})
        task = self.client.train_start(self.model, options or {})
        run = TrainingRun(new_id(), self.model, dict(options or {}), utc_now(), sha_before, stats_before,
                          task if isinstance(task, dict) else {})
        self._record_run(run, "running")
        self.log(f"training of {self.model} started")
        return run

    def training_progress(self, run: TrainingRun) -> TrainingProgress:
        """One look at the server: epoch, metrics, and whether the new model is live."""
        info = self.client.info()
        stats = dict((info.get("train_stats") or {}).get(run.model) or {})
        model_info = (info.get("models") or {}).get(run.model) or {}
        sha_now = str((model_info.get("model") or {}).get("sha256") or "")
        fresh = bool(stats) and (
            stats.get("started") != run.stats_before.get("started") if "started" in stats else stats != run.stats_before
        )
        status = str(stats.get("status", "")).upper() if fresh else ""
        metrics = {k: stats[k] for k in ("loss", "train_loss", "val_loss", "val_auc", "best_epoch", "best_val_auc")
                   if isinstance(stats.get(k), (int, float)) and not isinstance(stats.get(k), bool)}
        epoch, epochs = stats.get("epoch") if fresh else None, stats.get("epochs") if fresh else None
        epochs = epochs or (run.options.get("epochs") if isinstance(run.options.get("epochs"), int) else None)
        fraction = None
        if isinstance(epoch, int) and isinstance(epochs, int) and epochs > 0:
            step, steps = stats.get("step"), stats.get("steps")
            within = (step / steps) if isinstance(step, int) and isinstance(steps, int) and steps > 0 else 0.0
            done = epoch if "val_auc" in stats and stats.get("epoch") == epoch and within in (0.0, 1.0) else epoch - 1 + within
            fraction = max(0.0, min(1.0, done / epochs))
        if status == "FAILED":
            return TrainingProgress("failed", f"Training failed on the server: {stats.get('error') or 'no reason given'}",
                                    fraction, epoch, epochs, metrics)
        if status == "KEPT_ASIDE":
            return TrainingProgress("kept_aside", f"New model kept aside, the old one still serves: {stats.get('reason')}",
                                    1.0, epoch, epochs, metrics)
        if status == "DONE":
            new_sha = str(stats.get("model_sha256") or "")
            if sha_now and (sha_now == new_sha or (not new_sha and sha_now != run.sha_before)):
                return TrainingProgress("live", f"New model live (sha256 {sha_now[:12]})", 1.0, epoch, epochs, metrics,
                                        sha_now)
            return TrainingProgress("publishing", "Training done; waiting for the server to serve the new model", 1.0,
                                    epoch, epochs, metrics, new_sha)
        task = self.client.train_status() or {}
        task_state = str(task.get("status", "")).upper()
        same_task = not run.task.get("id") or task.get("id") == run.task.get("id")
        if same_task and task_state in ("ERROR", "STOPPED", "FAILED", "CANCELLED"):
            details = task.get("details")
            tail = details[-1] if isinstance(details, list) and details else ""
            return TrainingProgress("failed", f"Training {task_state.lower()} on the server. {tail}".strip(), fraction,
                                    epoch, epochs, metrics)
        if status == "RUNNING" and isinstance(epoch, int):
            shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "best_epoch")
            message = f"Training epoch {epoch}/{epochs}" + (f" ({shown})" if shown else "")
        else:
            message = "Training starting"
        return TrainingProgress("running", message, fraction, epoch, epochs, metrics)

    def wait_for_training(
        self,
        run: TrainingRun,
        *,
        poll_s: float = 2.0,
        timeout_s: float | None = None,
        publish_grace_s: float = 120.0,
        progress: Progress = None,
        cancel: CancelToken | None = None,
        on_update: Callable[[TrainingProgress], None] | None = None,
    ) -> TrainingProgress:
        """Poll until the new model is live or the training failed (short server outages are waited out)."""
        cancel = cancel or CancelToken()
        start = time.monotonic()
        publishing_since = None
        offline_since = None
        last = TrainingProgress("running", "Training starting")
        while True:
            cancel.raise_if_cancelled()
            try:
                last = self.training_progress(run)
                offline_since = None
            except MonaiLabelError as exc:
                if not is_offline(exc):
                    raise
                offline_since = offline_since or time.monotonic()
                if time.monotonic() - offline_since > max(60.0, 10 * poll_s):
                    raise
                last = TrainingProgress("running", f"Server not answering, still waiting: {exc}", last.fraction,
                                        last.epoch, last.epochs, last.metrics)
            if progress:
                progress(last.fraction, last.message)
            if on_update:
                on_update(last)
            if last.state == "publishing":
                publishing_since = publishing_since or time.monotonic()
                if time.monotonic() - publishing_since > publish_grace_s:
                    last = TrainingProgress("failed", "Training finished but the server still serves the old model "
                                            f"after {publish_grace_s:.0f} s; see the server log.", 1.0, last.epoch,
                                            last.epochs, last.metrics, last.model_sha256)
            if last.finished:
                self._record_run(run, "finished" if last.state == "live" else "failed", last)
                if last.state == "live" and self.status is not None:
                    try:
                        self.connect()
                    except MonaiLabelError:
                        pass
                return last
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                raise WorkflowError(f"Training still running after {timeout_s:.0f} s; it goes on on the server.")
            cancel.wait(poll_s)

    def stop_training(self, run: TrainingRun | None = None) -> None:
        self.client.train_stop()
        if run is not None:
            self._record_run(run, "stopped")

    def _record_run(self, run: TrainingRun, status: str, progress: TrainingProgress | None = None) -> None:
        if not self.has_database:
            return
        record: dict[str, Any] = {"run_id": run.run_id, "model_name": run.model, "status": status,
                                  "started_utc": run.started_utc, "options": run.options}
        if progress is not None:
            record["metrics"] = progress.metrics
            if progress.model_sha256 and status == "finished":
                record["model_sha256"] = progress.model_sha256
        if status in ("finished", "failed", "stopped"):
            record["finished_utc"] = utc_now()
        try:
            self.db.record_training_run(record)
        except Exception as exc:  # noqa: BLE001 - bookkeeping only
            self.log(f"could not record the training run: {exc}")
