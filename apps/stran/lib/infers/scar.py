"""Infer task ``scar``: detection result JSON + the map shown over the cine (4D NIfTI on the input study's grid,
uint8 with scale factor 1/255: ``stran.io.write_map``, docs/io.md "Maps"): the scar probability map for a network
with a map head (``result["map"] == "scar"``), else its attention map.

It subclasses MONAI Label's ``InferTask`` rather than ``BasicInferTask``: the
study loading (DICOM grouping, sidecar identity), preprocessing, the
multi-output network and MC dropout are the ``stran`` package's single
inference path (``stran.engine.detect``), which a single-tensor
pre/infer/post pipeline cannot express.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from stran.io import CineLoadError, load_study, write_map
from stran.pacs.client import PacsClient

if TYPE_CHECKING:
    from lib.contracts import DetectorConfig

logger = logging.getLogger(__name__)


class ScarInfer(InferTask):
    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(
            type=InferType.CLASSIFICATION,
            labels={"no scar": 0, "scar": 1},
            dimension=3,
            description=f"Scar probability per study, per slice and per AHA segment, with the scar map "
            f"({config.network_name})",
            config={"mc_samples": config.mc_samples, "with_attention": True},
        )
        self.scar_config = config

    def info(self) -> dict[str, Any]:
        info = super().info()
        path = self.scar_config.current_checkpoint()
        info["network"] = self.scar_config.network_name
        if path:
            info["model"] = self.scar_config.detector().model_info
        return info

    def is_valid(self) -> bool:
        return self.scar_config.current_checkpoint() is not None

    def __call__(self, request: dict[str, Any], callbacks: Any = None) -> tuple[str | None, dict[str, Any]]:
        detector = self.scar_config.detector()
        shown = request.get("image_id") or "the uploaded study"
        try:
            study = load_study(request["image"])
        except CineLoadError as exc:  # the message names the server's copy: name what the client sent instead
            raise HTTPException(422, f"cannot read {shown}: {str(exc).replace(request['image'], shown)}") from exc
        if not np.isfinite(np.sum(study.pixels, dtype=np.float64)):
            raise HTTPException(422, f"{shown} holds NaN or infinite pixel values; a cine has finite intensities")
        try:
            mc_samples = int(request.get("mc_samples", detector.mc_samples))
            if not 0 <= mc_samples <= 64:
                raise ValueError
        except (TypeError, ValueError):
            raise HTTPException(422, "mc_samples must be a whole number from 0 to 64") from None
        with_attention = str(request.get("with_attention", True)).lower() not in ("false", "0")
        detection = detector.detect(
            study, image_id=request.get("image_id", ""), with_attention=with_attention, mc_samples=mc_samples
        )
        result = detection.result
        logger.info(
            "scar %s: p=%.3f (%s) in %.0f ms",
            result["image_id"] or "upload",
            result["study_probability"],
            result["prediction_label"],
            result["timings"]["total_ms"],
        )
        if self.scar_config.pacs is not None and request.get("image_id"):
            store_if_from_pacs(self.scar_config.pacs, request, study, detection)
        if detection.attention is None:
            return None, result
        path = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        write_map(study, detection.attention, path)
        return path, result


def store_if_from_pacs(client: PacsClient, request: dict[str, Any], study: Any, detection: Any) -> None:
    """Store the SR and SEG on the PACS when the study was fetched from it; the outcome goes in ``result["pacs"]``
    (a failure there does not fail the detection: the reader still gets it, and is told)."""
    from stran.pacs.fetch import pacs_origin
    from stran.pacs.store import store_or_say_why

    cache = os.path.dirname(request["image"])
    origin = pacs_origin(cache, request["image_id"])
    if origin is None or origin.get("url") != client.url:
        return
    record = store_or_say_why(client, detection.result, study, detection.attention, cache)
    if record.get("error"):
        logger.error("results of %s not stored on the PACS: %s", request["image_id"], record["error"])
    detection.result["pacs"] = record
