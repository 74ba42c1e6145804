"""A training process's lifetime: one per model across server restarts, and none outliving its server.

MONAI Label runs a training in a child process of the server. If the server is killed (``kill -9``, a crash),
that child would train on as an orphan and publish a model nobody asked for any more; ``stran.lifetime.exit_with_parent`` makes
it stop within a second instead. ``TrainingLock`` is a file in the model folder naming the training's process:
created exclusively when a training starts, removed when it ends, and found stale (its process gone) after a
crash, so a restarted server refuses a second training only while the first one really runs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class TrainingRunning(RuntimeError):
    """Another training of the same model is running."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TrainingLock:
    """``<model_dir>/<model>.training.lock``: ``{"pid", "started"}`` of the running training."""

    def __init__(self, model_dir: str | Path, model: str) -> None:
        self.path = Path(model_dir) / f"{model}.training.lock"

    def holder(self) -> dict[str, Any] | None:
        """The running training's record; None when there is none (a stale lock is removed)."""
        try:
            record = json.loads(self.path.read_text())
            pid = int(record["pid"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            record, pid = {}, -1  # unreadable: a crash while it was written
        if pid > 0 and _alive(pid):
            return record
        self.path.unlink(missing_ok=True)
        return None

    def acquire(self) -> None:
        """Take the lock for this process; ``TrainingRunning`` when a live training holds it."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is not None:
                    raise TrainingRunning(f"a training of this model is running (process {holder.get('pid')}, "
                                          f"started {holder.get('started', '?')})") from None
                continue  # the stale lock was removed: try again
            with os.fdopen(fd, "w") as fh:
                json.dump({"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, fh)
            return
        raise TrainingRunning("could not take the training lock; try again")

    def release(self) -> None:
        holder = self.holder()
        if holder is not None and int(holder.get("pid", -1)) == os.getpid():
            self.path.unlink(missing_ok=True)
