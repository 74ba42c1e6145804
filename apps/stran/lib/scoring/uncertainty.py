"""Scoring ``scar_uncertainty``: MC-dropout uncertainty of every unlabelled study, kept in the datastore.

Each score is stored in the image's info together with the SHA-256 of the
model that produced it; a study is rescored only when the served model has
changed (or it was never scored).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.scoring import ScoringMethod

from stran.io import CineLoadError, load_study

if TYPE_CHECKING:
    from lib.contracts import DetectorConfig

logger = logging.getLogger(__name__)

INFO_KEY = "scar_uncertainty"
SCORES = ("entropy", "mutual_information", "std")


class ScarUncertaintyScoring(ScoringMethod):
    def __init__(self, config: DetectorConfig, *, min_samples: int = 8) -> None:
        super().__init__(f"MC-dropout uncertainty of unlabelled studies ({config.name})")
        self.scar_config = config
        self.min_samples = min_samples

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        detector = self.scar_config.detector()
        sha = detector.model_info["sha256"]
        samples = max(int(request.get("mc_samples", detector.mc_samples)), self.min_samples)
        datastore.refresh()
        scored, skipped, failed = [], [], []
        for image_id in sorted(datastore.get_unlabeled_images(DefaultLabelTag.FINAL.value)):
            previous = datastore.get_image_info(image_id).get(INFO_KEY) or {}
            if previous.get("model_sha256") == sha:
                skipped.append(image_id)
                continue
            try:
                study = load_study(datastore.get_image_uri(image_id))
            except CineLoadError as exc:
                logger.warning("cannot score %s: %s", image_id, exc)
                datastore.update_image_info(image_id, {INFO_KEY: {"model_sha256": sha, "error": str(exc)}})
                failed.append(image_id)
                continue
            result = detector.detect(study, image_id=image_id, with_attention=False, mc_samples=samples).result
            u = result["uncertainty"]
            datastore.update_image_info(
                image_id,
                {INFO_KEY: {"model_sha256": sha, "probability": result["study_probability"], "samples": samples,
                            **{k: u[k] for k in SCORES}}},
            )
            scored.append(image_id)
        logger.info("scar uncertainty: %d scored, %d unchanged, %d unreadable", len(scored), len(skipped), len(failed))
        return {"model_sha256": sha, "scored": scored, "skipped": skipped, "failed": failed}
