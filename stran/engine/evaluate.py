"""Held-out evaluation: metrics with bootstrap CIs, calibration, subgroup breakdowns, JSON/markdown/PNG reports."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from stran.atomic import atomic_path, atomic_write_text
from stran.engine.dataset import IGNORE, UNKNOWN, StudyRecord, build_dataset
from stran.engine.metrics import (
    bootstrap_ci,
    expected_calibration_error,
    reliability_curve,
    roc_auc,
    roc_curve,
    scenario_aucs,
    threshold_metrics,
)
from stran.models import load_checkpoint, run_model
from stran.transforms.preprocess import PreprocessConfig

SCENARIO_NAMES = {
    "A": "ischemic scar with WMA",
    "B": "scar without WMA",
    "C": "WMA without scar",
    "D": "normal",
}


class HeldOutOverlapError(ValueError):
    """The test set shares studies with the data the model was trained or validated on."""


@dataclass
class Predictions:
    ids: list[str]
    y: np.ndarray  # (N,) study labels
    probs: np.ndarray  # (N,)
    slice_y: np.ndarray  # (M,) known slice labels over all studies
    slice_probs: np.ndarray  # (M,)
    meta: list[dict[str, str]]
    segment_y: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # known AHA segment labels
    segment_probs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scar_dice: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per network slice with truth scar
    myo_dice: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per study with a label map


def check_no_overlap(meta: dict[str, Any], records: Sequence[StudyRecord]) -> None:
    """Refuse a test set that overlaps the checkpoint's training or validation studies."""
    extra = meta.get("extra") or {}
    seen = set(extra.get("train_ids", [])) | set(extra.get("val_ids", []))
    overlap = sorted(seen & {r.study_id for r in records})
    if overlap:
        raise HeldOutOverlapError(
            f"{len(overlap)} test studies were used to train or validate this model (e.g. {overlap[:5]}); "
            "evaluate on held-out studies only"
        )


def _dice(pred: torch.Tensor, truth: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    inter = (pred & truth).sum(dim=dims).float()
    return 2.0 * inter / (pred.sum(dim=dims) + truth.sum(dim=dims)).float().clamp_min(1.0)


def map_dice(maps: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Scar Dice of every slice with truth scar (gated scar map > 0.5 against label 4, all phases) and myocardium
    Dice of every study, on the network's grid; ``labels`` (B, S, T, H, W), 255 = unlabelled."""
    from stran.models.maps import scar_probability

    valid = labels != IGNORE
    truth_scar = (labels == 4) & valid
    pred_scar = (scar_probability(maps) > 0.5) & valid
    has_scar = truth_scar.sum(dim=(2, 3, 4)) > 0  # (B, S)
    scar = _dice(pred_scar, truth_scar, (2, 3, 4))[has_scar]
    truth_myo = ((labels == 2) | (labels == 4)) & valid
    myo = _dice((torch.sigmoid(maps[:, 1]) > 0.5) & valid, truth_myo, (1, 2, 3, 4))
    return scar.numpy(), myo.numpy()


@torch.no_grad()
def predict(model: torch.nn.Module, records: Sequence[StudyRecord], config: PreprocessConfig, *, cache_dir=None, batch_size=4) -> Predictions:
    """Study, slice and segment probabilities for labelled records (deterministic pass), and map Dice where the
    records have label maps."""
    model.eval()
    ds = build_dataset(records, config, cache_dir=cache_dir)
    probs, ys, sp, sy, gp, gy, ids, scar_d, myo_d = [], [], [], [], [], [], [], [], []
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0):
        out = run_model(model, batch["image"], batch["geometry"])
        probs.append(torch.sigmoid(out["study_logit"]).numpy())
        ys.append(batch["study_target"].numpy())
        for logits, target, p_out, y_out in (
            (out["slice_logits"], batch["slice_target"], sp, sy),
            (out.get("segment_logits"), batch["segment_target"], gp, gy),
        ):
            if logits is None:
                continue
            known = (target != UNKNOWN).numpy()
            p_out.append(torch.sigmoid(logits).numpy()[known])
            y_out.append(target.numpy()[known])
        has = batch["has_labels"]
        if "maps" in out and bool(has.any()):
            d_scar, d_myo = map_dice(out["maps"][has], batch["labels"][has])
            scar_d.append(d_scar)
            myo_d.append(d_myo)
        ids.extend(batch["id"])
    by_id = {r.study_id: r for r in records}

    def cat(parts: list, dtype=float) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    return Predictions(
        ids=list(ids),
        y=cat(ys, int),
        probs=cat(probs),
        slice_y=cat(sy, int),
        slice_probs=cat(sp),
        meta=[by_id[i].meta for i in ids],
        segment_y=cat(gy, int),
        segment_probs=cat(gp),
        scar_dice=cat(scar_d),
        myo_dice=cat(myo_d),
    )


def _with_ci(metric, y, p, n_boot, seed) -> dict[str, float]:
    value = metric(y, p)
    lo, hi = bootstrap_ci(metric, y, p, n_boot=n_boot, seed=seed)
    return {"value": float(value), "ci_low": lo, "ci_high": hi}


def summarize(pred: Predictions, threshold: float, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """All study-level metrics (with 95 % CIs), slice AUC, calibration and subgroup breakdowns."""
    y, p = pred.y, pred.probs

    def at(name: str):
        return lambda yy, pp: getattr(threshold_metrics(yy, pp, threshold), name)

    report: dict[str, Any] = {
        "n_studies": int(y.size),
        "n_scar": int(y.sum()),
        "threshold": threshold,
        "auc": _with_ci(roc_auc, y, p, n_boot, seed),
        **{m: _with_ci(at(m), y, p, n_boot, seed) for m in ("accuracy", "sensitivity", "specificity", "f1")},
        "confusion": {k: getattr(threshold_metrics(y, p, threshold), k) for k in ("tp", "fp", "tn", "fn")},
        "ece": expected_calibration_error(y, p),
        "reliability": reliability_curve(y, p),
        "slice_auc": _with_ci(roc_auc, pred.slice_y, pred.slice_probs, n_boot, seed) if pred.slice_y.size else None,
        "n_slices_labelled": int(pred.slice_y.size),
        "segment_auc": _with_ci(roc_auc, pred.segment_y, pred.segment_probs, n_boot, seed)
        if pred.segment_y.size else None,
        "n_segments_labelled": int(pred.segment_y.size),
        "scar_dice": _mean_with_ci(pred.scar_dice, n_boot, seed),
        "myocardium_dice": _mean_with_ci(pred.myo_dice, n_boot, seed),
    }
    report["by_scenario"] = _by_scenario(pred, threshold, n_boot, seed)
    report["by_profile"] = _by_key(pred, threshold, n_boot, seed, key=lambda m: f"{m.get('vendor', '?')} {m.get('field_strength', '?')}T")
    return report


def _mean_with_ci(values: np.ndarray, n_boot: int, seed: int) -> dict[str, float] | None:
    """Mean and percentile-bootstrap 95 % CI of per-item values (None when there are none)."""
    if values.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, values.size, values.size)].mean() for _ in range(n_boot)]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"value": float(values.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(values.size)}


def _by_scenario(pred: Predictions, threshold: float, n_boot: int, seed: int) -> dict[str, Any]:
    """Per scenario: positives of a scar scenario against every scar-free study (and vice versa), so each AUC
    asks "does this kind of case separate from the other class"; plus the share classified correctly; and the
    stress pairs ("A vs C": same wall motion, scar or not; "B vs D": scar without wall-motion abnormality)."""
    scen = np.array([m.get("scenario", "") for m in pred.meta])
    aucs = scenario_aucs(pred.y, pred.probs, scen, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {}
    for s in sorted(set(scen) - {""}):
        m = scen == s
        correct = (pred.probs[m] >= threshold) == pred.y[m].astype(bool)
        out[s] = {
            "name": SCENARIO_NAMES.get(s, s),
            "n": int(m.sum()),
            "auc_vs_other_class": aucs[s],
            "correct_fraction": float(correct.mean()),
        }
    for pair in (k for k in aucs if " vs " in k):
        out[pair] = {"name": pair, "n": aucs[pair]["n"], "auc_vs_other_class": aucs[pair], "correct_fraction": None}
    return out


def _by_key(pred: Predictions, threshold: float, n_boot: int, seed: int, key) -> dict[str, Any]:
    groups = np.array([key(m) for m in pred.meta])
    out = {}
    for g in sorted(set(groups)):
        m = groups == g
        out[g] = {
            "n": int(m.sum()),
            "auc": _with_ci(roc_auc, pred.y[m], pred.probs[m], n_boot, seed),
            "accuracy": float(threshold_metrics(pred.y[m], pred.probs[m], threshold).accuracy),
        }
    return out


def _fmt(m: dict[str, float] | None) -> str:
    if not m or not np.isfinite(m["value"]):
        return "n/a"
    return f"{m['value']:.3f} ({m['ci_low']:.3f}-{m['ci_high']:.3f})"


def markdown_report(report: dict[str, Any], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"{report['n_studies']} held-out studies ({report['n_scar']} with scar); threshold {report['threshold']:.3f} "
        "chosen on validation data. Values with bootstrap 95 % confidence intervals.",
        "",
        "| metric | value (95 % CI) |",
        "|---|---|",
    ]
    for k in ("auc", "accuracy", "sensitivity", "specificity", "f1", "slice_auc", "segment_auc", "scar_dice",
              "myocardium_dice"):
        lines.append(f"| {k.replace('_', ' ')} | {_fmt(report.get(k))} |")
    lines.append(f"| ECE (10 bins) | {report['ece']:.3f} |")
    lines += ["", "Scar Dice: mean over network slices with truth scar (gated scar map > 0.5, all phases).", ""]
    lines += ["## By scenario", "", "| scenario | n | AUC vs other class (95 % CI) | correctly classified |", "|---|---|---|---|"]
    for s, r in report["by_scenario"].items():
        correct = "" if r["correct_fraction"] is None else f"{r['correct_fraction']:.2f}"
        name = r["name"] if s == r["name"] else f"{s}: {r['name']}"
        lines.append(f"| {name} | {r['n']} | {_fmt(r['auc_vs_other_class'])} | {correct} |")
    lines += ["", "## By vendor / field strength", "", "| profile | n | AUC (95 % CI) | accuracy |", "|---|---|---|---|"]
    for g, r in report["by_profile"].items():
        lines.append(f"| {g} | {r['n']} | {_fmt(r['auc'])} | {r['accuracy']:.2f} |")
    return "\n".join(lines) + "\n"


def _save_png(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def plot_roc_and_reliability(pred: Predictions, report: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc_curve(pred.y, pred.probs)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, lw=2, label=f"AUC {_fmt(report['auc'])}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC, held-out test set")
    ax.legend(loc="lower right", fontsize=8)
    roc_path = out_dir / "roc.png"
    _save_png(fig, roc_path)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4, 4))
    rel = report["reliability"]
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.plot([r["mean_probability"] for r in rel], [r["observed"] for r in rel], "o-")
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title=f"Reliability (ECE {report['ece']:.3f})")
    rel_path = out_dir / "reliability.png"
    _save_png(fig, rel_path)
    plt.close(fig)
    return [roc_path, rel_path]


def evaluate_checkpoint(
    checkpoint: str | Path,
    records: Sequence[StudyRecord],
    out_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    n_boot: int = 2000,
    title: str = "Held-out evaluation",
) -> dict[str, Any]:
    """Evaluate a checkpoint on labelled held-out records; writes metrics.json, metrics.md, predictions.csv, PNGs."""
    out_dir = Path(out_dir)
    model, meta = load_checkpoint(checkpoint)
    check_no_overlap(meta, records)
    unlabeled = [r.study_id for r in records if r.label is None]
    if unlabeled:
        raise ValueError(f"{len(unlabeled)} test studies have no label (e.g. {unlabeled[:3]})")
    extra = meta.get("extra") or {}
    config = PreprocessConfig(**(extra.get("train_config") or {}).get("preprocess", {}))
    pred = predict(model, records, config, cache_dir=cache_dir)
    report = summarize(pred, float(extra.get("threshold", 0.5)), n_boot=n_boot)
    report["model"] = {"name": meta["model_name"], "sha256": meta["sha256"], "checkpoint": str(checkpoint)}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(report, indent=1))
    atomic_write_text(out_dir / "metrics.md", markdown_report(report, title))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "study_label", "probability", "scenario", "vendor", "field_strength"])
    for i, yy, pp, m in zip(pred.ids, pred.y, pred.probs, pred.meta, strict=True):
        w.writerow([i, int(yy), f"{pp:.6f}", m.get("scenario", ""), m.get("vendor", ""), m.get("field_strength", "")])
    atomic_write_text(out_dir / "predictions.csv", buf.getvalue())
    plot_roc_and_reliability(pred, report, out_dir)
    return report
