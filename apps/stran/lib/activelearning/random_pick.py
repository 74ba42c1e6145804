"""Strategy ``random``: an unreviewed study drawn uniformly at random, the Slicer module's default next study.

On the phantom cohort of the active-learning simulation (docs/active-learning.md) random picks reached a held-out
study AUC of 0.926 with 160 reviews; the uncertainty strategies (``most_uncertain``: MC-dropout entropy or BALD, and
a diverse batch) needed more reviews for less, because the shipped network's MC dropout says little about what the
decision stage does not know and its picks go to one class. The answer has ``most_uncertain``'s form (``score`` is
None, there is no score) and the pick is remembered in the study's info (``picked``), so the datastore and the
results database know which studies were chosen by which strategy and model version.
"""

from __future__ import annotations

import random
import time
from typing import Any

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.strategy import Strategy

from lib.contracts import DetectorConfig

REASON = ("drawn at random among {n} studies without a review: on phantoms random picks taught the model most per "
          "review (docs/active-learning.md)")


class RandomPick(Strategy):
    """An unreviewed study at random (``params.seed``: a seed for a reproducible pick; default: the system's)."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__("An unreviewed study at random (the best strategy in the active-learning simulation)")
        self.scar_config = config

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        ids = sorted(datastore.get_unlabeled_images(DefaultLabelTag.FINAL.value))
        if not ids:
            return None
        seed = request.get("seed")
        rng = random.Random(seed) if isinstance(seed, int) and not isinstance(seed, bool) else random.SystemRandom()
        image_id = rng.choice(ids)
        try:
            sha = str(self.scar_config.detector().model_info["sha256"])
        except FileNotFoundError:  # no trained model yet: the pick does not depend on one
            sha = ""
        picked = {"strategy": "random", "score_name": "random", "score": None, "model_sha256": sha,
                  "ts": int(time.time()), "client_id": request.get("client_id", "")}
        datastore.update_image_info(image_id, {"picked": picked})
        return {"id": image_id, "score": None, "score_name": "random", "probability": None, "strategy": "random",
                "model_sha256": sha, "reason": REASON.format(n=len(ids)), "scored": 0}
