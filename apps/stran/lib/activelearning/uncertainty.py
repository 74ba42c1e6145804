"""Strategy ``most_uncertain``: serve the unlabelled study the current model is least sure about.

The answer says why (``reason``: one line a reader can take in) and under which model; the pick is remembered in
the study's info (``picked``: strategy, score, model SHA-256, time, client), so the datastore knows which studies
were chosen by which strategy and model version.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.strategy import Strategy

from lib.scoring.uncertainty import INFO_KEY, SCORES, ScarUncertaintyScoring

SCORE_WORDS = {"entropy": "predictive entropy", "mutual_information": "mutual information (BALD)",
               "std": "spread of the MC-dropout probabilities"}


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
        candidates = len(datastore.get_unlabeled_images(DefaultLabelTag.FINAL.value))
        sha = str(scoring["model_sha256"])
        picked = {"strategy": "most_uncertain", "score_name": key, "score": best[0], "model_sha256": sha,
                  "ts": int(time.time()), "client_id": request.get("client_id", "")}
        datastore.update_image_info(best[1], {"picked": picked})
        return {
            "id": best[1],
            "score": best[0],
            "score_name": key,
            "probability": info["probability"],
            "strategy": "most_uncertain",
            "model_sha256": sha,
            "reason": (f"the model is least sure about this study among {candidates} without a review: "
                       f"{SCORE_WORDS[key]} {best[0]:.3f}, scar probability {info['probability']:.2f} "
                       f"(model {sha[:12]})"),
            "scored": len(scoring["scored"]),  # studies (re)scored for this request; 0 when the model is unchanged
        }
