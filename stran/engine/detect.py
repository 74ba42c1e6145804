"""Scar detection on one study: preprocessing, the network, MC-dropout uncertainty, outputs on the study grid.

The single inference path behind ``stran detect``, the evaluation and the
MONAI Label infer task. The result follows DESIGN.md "Detection result".
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stran.io.study import CineStudy
from stran.models import enable_mc_dropout, load_checkpoint, run_model
from stran.models.maps import myocardial_segments
from stran.report.aha import encode_segment_map
from stran.transforms.inverse import attention_to_study, segments_to_study, slice_scores_to_study
from stran.transforms.preprocess import PrepInfo, PreprocessConfig, preprocess_study


@dataclass
class Detection:
    """The JSON-ready result and the map shown over the cine, on the study grid (S, T, H, W), float32 in [0, 1]:
    the scar probability map for networks with a map head (``result["map"] == "scar"``), else the attention map."""

    result: dict[str, Any]
    attention: np.ndarray | None


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def mc_uncertainty(probs: np.ndarray) -> dict[str, float]:
    """Spread of MC-dropout study probabilities: std, predictive entropy, mutual information (BALD)."""
    mean = float(probs.mean())
    entropy = float(_entropy(np.array(mean)))
    return {
        "std": float(probs.std()),
        "entropy": entropy,
        "mutual_information": float(max(entropy - _entropy(probs).mean(), 0.0)),
    }


class Detector:
    """A loaded model ready to detect scar; thread-safe for sequential calls."""

    def __init__(self, checkpoint: str | Path, *, mc_samples: int = 8, num_threads: int | None = None) -> None:
        self.checkpoint = Path(checkpoint)
        self.model, self.meta = load_checkpoint(self.checkpoint)
        self.model.eval()
        extra = self.meta.get("extra") or {}
        train_config = extra.get("train_config") or {}
        self.preprocess = PreprocessConfig(**train_config.get("preprocess", {}))
        self.threshold = float(extra.get("threshold", 0.5))
        self.mc_samples = int(mc_samples)
        if num_threads:
            torch.set_num_threads(num_threads)

    @property
    def model_info(self) -> dict[str, Any]:
        extra = self.meta.get("extra") or {}
        return {
            "name": self.meta["model_name"],
            "version": self.meta.get("stran_version", ""),
            "sha256": self.meta["sha256"],
            "trained_on": extra.get("trained_on", ""),
        }

    @torch.no_grad()
    def forward(
        self, image: torch.Tensor, mc_samples: int, geometry: np.ndarray | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Deterministic pass on (1, 1, S', T', H, W), plus ``mc_samples`` MC-dropout study probabilities;
        ``geometry`` (3,) is the study's ``PrepInfo.geometry`` (places the AHA segments)."""
        self.model.eval()
        g = None if geometry is None else torch.as_tensor(np.asarray(geometry, np.float32))[None]
        out = run_model(self.model, image, g)
        det = {k: v.float().numpy()[0] for k, v in out.items() if k not in ("maps", "aha_ids")}
        if "maps" in out and g is not None:  # the segments the forward pass placed (its aha_ids)
            det["segment_ids"] = myocardial_segments(out["maps"], out["aha_ids"]).numpy()[0]
        mc = None
        if mc_samples > 0:
            enable_mc_dropout(self.model, True)
            try:
                shared = getattr(self.model, "mc_study_logits", None)  # one trunk pass for all samples, if it can
                logits = None if shared is None or g is None else shared(image, g, mc_samples)
                if logits is None:
                    batch = image.expand(mc_samples, *image.shape[1:])
                    logits = run_model(self.model, batch, None if g is None else g.expand(mc_samples, 3))["study_logit"]
                mc = torch.sigmoid(logits).numpy()
            finally:
                enable_mc_dropout(self.model, False)
        return det, mc

    def detect(
        self, study: CineStudy, *, image_id: str = "", with_attention: bool = True, mc_samples: int | None = None
    ) -> Detection:
        """Detect scar on one study; ``mc_samples`` overrides the detector's default number of MC-dropout passes."""
        t0 = time.perf_counter()
        image, prep = preprocess_study(study, self.preprocess)
        preprocess_ms = (time.perf_counter() - t0) * 1e3
        return self.detect_prepared(study, image, prep, preprocess_ms=preprocess_ms, image_id=image_id,
                                    with_attention=with_attention, mc_samples=mc_samples)

    def detect_prepared(
        self, study: CineStudy, image: torch.Tensor, prep: PrepInfo, *, preprocess_ms: float = 0.0,
        image_id: str = "", with_attention: bool = True, mc_samples: int | None = None,
    ) -> Detection:
        """``detect`` on a study already preprocessed with this detector's ``preprocess`` configuration (``image``,
        ``prep`` from ``preprocess_study``, e.g. in a worker process: ``stran.engine.cohort_loading``); the study's pixels
        are not read (their shape, the geometry and the identity are)."""
        samples = self.mc_samples if mc_samples is None else int(mc_samples)
        t1 = time.perf_counter()
        out, mc = self.forward(image[None], samples, prep.geometry)
        t2 = time.perf_counter()
        prob = float(1.0 / (1.0 + np.exp(-out["study_logit"])))
        slice_probs = 1.0 / (1.0 + np.exp(-out["slice_logits"]))
        attention = attention_to_study(out["attention"], prep, study.phase_fractions) if with_attention else None
        segment_map = None if "segment_ids" not in out else encode_segment_map(segments_to_study(out["segment_ids"],
                                                                                                 prep))
        t3 = time.perf_counter()
        uncertainty: dict[str, Any] = {"method": "mc_dropout" if mc is not None else "none", "samples": samples}
        if mc is not None:
            uncertainty.update(mc_uncertainty(mc))
        s = study.summary()
        result = {
            "detection_id": uuid.uuid4().hex,
            "image_id": image_id,
            "study": {
                "study_uid": study.study_uid,
                "patient_id": study.patient_id,
                "series_uids": s["series_uids"],
                "vendor": study.acquisition.vendor,
                "field_strength_t": study.acquisition.field_strength,
                "slices": study.n_slices,
                "phases": study.n_phases,
                "pixel_spacing_mm": s["pixel_spacing_mm"],
                "slice_spacing_mm": s["slice_spacing_mm"],
                "rr_interval_ms": s["rr_interval_ms"],
            },
            "study_probability": prob,
            "threshold": self.threshold,
            "prediction": int(prob >= self.threshold),
            "prediction_label": "scar" if prob >= self.threshold else "no scar",
            "slice_probabilities": slice_scores_to_study(slice_probs, prep),
            "segment_probabilities": None if "segment_logits" not in out
            else [float(v) for v in 1.0 / (1.0 + np.exp(-out["segment_logits"]))],
            "segment_map": segment_map,
            "map": "scar" if "scar_logits" in out else "attention",
            "uncertainty": uncertainty,
            "model": self.model_info,
            "input": {
                "slices": study.n_slices,
                "phases": study.n_phases,
                "matrix": list(study.matrix),
                "pixel_spacing_mm": s["pixel_spacing_mm"],
                "network_input": list(image.shape[1:]),
                "lv_slices": [int(k) for k in np.nonzero(prep.lv_slices)[0]],
                "left_out": s["left_out"],
            },
            "timings": {
                "preprocess_ms": round(preprocess_ms, 1),
                "inference_ms": round((t2 - t1) * 1e3, 1),
                "postprocess_ms": round((t3 - t2) * 1e3, 1),
                "total_ms": round(preprocess_ms + (t3 - t1) * 1e3, 1),
            },
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        return Detection(result=result, attention=attention)
