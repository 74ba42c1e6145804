"""Binary classification metrics with bootstrap confidence intervals (numpy only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if one class is absent."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), thresholds descending, starting at +inf."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    tpr = np.array([(s[y] >= t).mean() if y.any() else np.nan for t in thresholds])
    fpr = np.array([(s[~y] >= t).mean() if (~y).any() else np.nan for t in thresholds])
    return fpr, tpr, thresholds


@dataclass(frozen=True)
class ThresholdMetrics:
    accuracy: float
    sensitivity: float
    specificity: float
    precision: float
    f1: float
    tp: int
    fp: int
    tn: int
    fn: int


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def threshold_metrics(y_true: np.ndarray, probs: np.ndarray, threshold: float) -> ThresholdMetrics:
    """Confusion-matrix metrics for ``probs >= threshold`` as positive."""
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(probs, dtype=np.float64) >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    tn, fn = int((~pred & ~y).sum()), int((~pred & y).sum())
    sens, prec = _safe_div(tp, tp + fn), _safe_div(tp, tp + fp)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    return ThresholdMetrics(
        accuracy=_safe_div(tp + tn, y.size),
        sensitivity=sens,
        specificity=_safe_div(tn, tn + fp),
        precision=prec,
        f1=f1,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
    )


def youden_threshold(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (chosen on validation data, never on test data)."""
    fpr, tpr, thresholds = roc_curve(y_true, probs)
    j = tpr - fpr
    best = int(np.nanargmax(j[1:])) + 1  # skip +inf
    return float(thresholds[best])


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """ECE with equal-width bins: sum over bins of |accuracy - confidence| weighted by bin size."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


def reliability_curve(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Per non-empty bin: mean predicted probability, observed frequency, count."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    return [
        {"bin": b, "mean_probability": float(p[bins == b].mean()), "observed": float(y[bins == b].mean()), "count": int((bins == b).sum())}
        for b in range(n_bins)
        if (bins == b).any()
    ]


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI, resampling positives and negatives separately (stratified) so every
    replicate has both classes. Returns (low, high); NaN when the metric is undefined."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    pos, neg = np.nonzero(y)[0], np.nonzero(~y)[0]
    values = []
    for _ in range(n_boot):
        idx = np.concatenate(
            [rng.choice(pos, pos.size, replace=True) if pos.size else pos, rng.choice(neg, neg.size, replace=True) if neg.size else neg]
        )
        v = metric(y[idx], s[idx])
        if np.isfinite(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


SCENARIO_PAIRS = (("A", "C"), ("B", "D"), ("A", "D"), ("B", "C"))


def scenario_aucs(
    y: np.ndarray, scores: np.ndarray, scenarios: np.ndarray, *, n_boot: int = 2000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Study AUCs by phantom scenario, with bootstrap CIs.

    ``"A"`` etc.: the scenario's studies against every study of the other class (a scar scenario against all
    scar-free studies and vice versa); ``"A vs C"`` etc.: the stress pairs (C copies A's wall motion without scar,
    B has scar without wall motion abnormality, D is normal). Scenarios absent from ``scenarios`` are skipped.
    """
    y = np.asarray(y).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    scen = np.asarray(scenarios).astype(str)

    def entry(mask: np.ndarray) -> dict[str, float]:
        lo, hi = bootstrap_ci(roc_auc, y[mask], s[mask], n_boot=n_boot, seed=seed)
        return {"value": roc_auc(y[mask], s[mask]), "ci_low": lo, "ci_high": hi, "n": int(mask.sum())}

    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(scen) - {""}):
        m = scen == name
        positive = y[m].mean() >= 0.5
        out[name] = entry(m | (y == (0 if positive else 1)))
    for a, b in SCENARIO_PAIRS:
        m = (scen == a) | (scen == b)
        if (scen == a).any() and (scen == b).any() and len(set(y[m])) == 2:
            out[f"{a} vs {b}"] = entry(m)
    return out
