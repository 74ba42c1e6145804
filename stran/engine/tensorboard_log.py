"""Optional TensorBoard logging of a training run: a ``Trainer.fit`` callback that writes scalars.

    tensorboard --logdir RUN/tensorboard        # then open http://localhost:6006

Scalars: ``train/step_loss`` (running mean over the epoch, per optimiser step), ``train/loss``,
``val/loss``, ``val/auc`` and ``lr`` per epoch. A resumed run appends to the same folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class TensorBoardLogger:
    """Callable progress callback (``Trainer.fit(callback=...)``); ``close()`` flushes the event file."""

    def __init__(self, log_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package (server lock)

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] == "step":
            self.writer.add_scalar("train/step_loss", event["loss"], event["epoch"] * event["steps"] + event["step"])
        elif event["event"] == "epoch":
            epoch = event["epoch"] + 1
            for tag, key in (("train/loss", "train_loss"), ("val/loss", "val_loss"), ("val/auc", "val_auc"), ("lr", "lr")):
                value = event.get(key)
                if value is not None and math.isfinite(value):  # an AUC on a one-class validation set is undefined
                    self.writer.add_scalar(tag, value, epoch)
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()
