"""Strategy ``most_uncertain``: serve the unlabelled study the current model is least sure about."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.strategy import Strategy

from lib.scoring.uncertainty import INFO_KEY, SCORES, ScarUncertaintyScoring


class MostUncertain(Strategy):
    """Scores what is missing or stale first (``ScarUncertaintyScoring``), then picks the highest score
    (``params.score``: ``entropy`` (default), ``mutual_information`` or ``std``); ties go to the first id."""

    def __init__(self, scoring: ScarUncertaintyScoring) -> None:
        super().__init__("Most uncertain unlabelled study (MC-dropout predictive entropy)")
        self.scoring = scoring

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        key = request.get("score", "entropy")
        if key not in SCORES:
            raise HTTPException(422, f"score must be one of {list(SCORES)}, got {key!r}")
        scoring = self.scoring(request, datastore)
        best: tuple[float, str] | None = None
        for image_id in sorted(datastore.get_unlabeled_images(DefaultLabelTag.FINAL.value)):
            info = datastore.get_image_info(image_id).get(INFO_KEY) or {}
            if key in info and (best is None or info[key] > best[0]):
                best = (float(info[key]), image_id)
        if best is None:
            return None
        info = datastore.get_image_info(best[1])[INFO_KEY]
        return {
            "id": best[1],
            "score": best[0],
            "score_name": key,
            "probability": info["probability"],
            "scored": len(scoring["scored"]),  # studies (re)scored for this request; 0 when the model is unchanged
        }
