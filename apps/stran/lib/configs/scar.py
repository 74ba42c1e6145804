"""One zoo network served as a MONAI Label model: where its weights live, its infer task and its trainer."""

from __future__ import annotations

import os
import threading
from typing import Any

from monailabel.interfaces.config import TaskConfig

from lib.infers import ScarInfer
from lib.trainers import ScarTrainer
from stran.engine.detect import Detector
from stran.pacs.client import PacsClient
from stran.resources import PRETRAINED_FILE


class ScarConfig(TaskConfig):
    """Paths ``[<app>/model/pretrained_scar.pt, <model_dir>/<name>.pt]``: the last one that exists is served,
    so a retrained model supersedes the shipped one without a restart."""

    @staticmethod
    def task_name(network: str) -> str:
        return "scar" if network == "stran" else f"scar_{network}"

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.network_name: str = kwargs["network"]
        self.mc_samples = int(conf.get("mc_samples", "8"))
        self.published_path = os.path.join(model_dir, f"{name}.pt")
        self.path = [self.published_path]
        if self.network_name == "stran":
            self.path.insert(0, os.path.join(kwargs["pretrained_dir"], PRETRAINED_FILE))
        self.pacs: PacsClient | None = kwargs.get("pacs")  # results of PACS studies are stored back through it
        self._detector: Detector | None = None
        self._detector_key: tuple[str, int] | None = None
        self._lock = threading.Lock()

    def current_checkpoint(self) -> str | None:
        """The checkpoint being served now, or None when the network has never been trained."""
        existing = [p for p in self.path if os.path.exists(p)]
        return existing[-1] if existing else None

    def detector(self) -> Detector:
        """The served model, reloaded when a new checkpoint is published (path or modification time changed)."""
        path = self.current_checkpoint()
        if path is None:
            raise FileNotFoundError(f"model '{self.name}' has no trained weights yet; train it first")
        key = (path, os.stat(path).st_mtime_ns)
        with self._lock:
            if self._detector_key != key:
                self._detector = Detector(path, mc_samples=self.mc_samples)
                self._detector_key = key
            assert self._detector is not None
            return self._detector

    def infer(self) -> ScarInfer:
        return ScarInfer(self)

    def trainer(self) -> ScarTrainer:
        return ScarTrainer(self)
