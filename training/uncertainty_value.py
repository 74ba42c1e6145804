"""Is the detector's MC-dropout uncertainty worth its time? Which studies does each uncertainty flag as likely wrong?

    python training/uncertainty_value.py          # after simulate_active_learning.py built its cached measures

With 8 samples, MC dropout is ~85 % of a detection's time (docs/models.md, "One detection with MC-dropout
uncertainty"). This measures what it buys. On the active-learning phantom cohort (seed 16, 520 studies that no model
of the project was trained, selected or reported on; its cached measures of the shipped network's deterministic
and MC-dropout maps, ``training/simulate_active_learning.py``), an uncertainty is useful when it ranks the studies
the detector gets wrong above those it gets right: the score is the AUROC of that ranking (0.5: no better than
chance), with a 95 % stratified bootstrap interval, and the paired bootstrap interval of its difference to the free
baseline, the binary entropy of the deterministic probability itself.

A. The shipped model (all 520 studies, its own threshold): MC-dropout std, predictive entropy and mutual information
   (``stran.engine.detect.mc_uncertainty``, what ``stran detect`` reports) against the deterministic entropy.
B. A committee of wall readers, the alternative that costs no second pass through the maps: on ``--splits`` random
   splits (320 studies to fit, 200 to test), ``--members`` readers fitted with different seeds on the same frozen
   measures (``stran.engine.reader_fit.fit_reader``, study + slice + segment labels); errors are member 0's, scored
   by member 0's entropy, member 0's MC-dropout std and the committee's spread (std of the members' probabilities).

Writes ``results.md`` and ``results.json`` to ``training/results/uncertainty/``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulate_active_learning import CHECKPOINT, REPO, cohort_records, load_measures, log, parse_args  # noqa: E402

from stran.atomic import atomic_write_text  # noqa: E402
from stran.engine import active_learning as al  # noqa: E402
from stran.engine.detect import mc_uncertainty  # noqa: E402
from stran.engine.metrics import bootstrap_ci, roc_auc, youden_threshold  # noqa: E402
from stran.models import load_checkpoint  # noqa: E402

OUT = REPO / "training" / "results" / "uncertainty"
N_BOOT = 2000


def entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)  # float32 rounds 1 - 1e-12 to 1
    return -(q * np.log(q) + (1 - q) * np.log(1 - q))


def paired_difference(err: np.ndarray, a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """AUROC(a) - AUROC(b) for ranking ``err`` and its 95 % interval, resampling studies (stratified) for both."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(err == 1), np.flatnonzero(err == 0)
    diffs = []
    for _ in range(N_BOOT):
        i = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        diffs.append(roc_auc(err[i], a[i]) - roc_auc(err[i], b[i]))
    return roc_auc(err, a) - roc_auc(err, b), float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def score_rows(err: np.ndarray, scores: dict[str, np.ndarray], baseline: str) -> list[dict[str, float | str]]:
    rows = []
    for name, s in scores.items():
        lo, hi = bootstrap_ci(roc_auc, err, s, n_boot=N_BOOT, seed=0)
        d = paired_difference(err, s, scores[baseline]) if name != baseline else (0.0, 0.0, 0.0)
        rows.append({"score": name, "auroc": roc_auc(err, s), "ci_low": lo, "ci_high": hi, "vs_baseline": d[0],
                     "vs_low": d[1], "vs_high": d[2]})
    return rows


def shipped(m: al.MCMeasures) -> dict:
    """Part A: the shipped reader's MC-dropout uncertainty on every study."""
    model, meta = load_checkpoint(CHECKPOINT)
    threshold = float(meta["extra"]["threshold"])
    p = al.probabilities(model.reader, m, range(len(m.ids)))
    y = m.study.numpy().astype(int)
    err = ((p[:, 0] >= threshold) != y).astype(int)
    u = [mc_uncertainty(row[1:]) for row in p]
    scores = {"deterministic entropy (free)": entropy(p[:, 0]),
              "MC-dropout std": np.array([s["std"] for s in u]),
              "MC-dropout predictive entropy": np.array([s["entropy"] for s in u]),
              "MC-dropout mutual information": np.array([s["mutual_information"] for s in u])}
    return {"n": len(y), "errors": int(err.sum()), "threshold": threshold, "study_auc": roc_auc(y, p[:, 0]),
            "median_mc_std": float(np.median(scores["MC-dropout std"])),
            "rows": score_rows(err, scores, "deterministic entropy (free)")}


def committee(m: al.MCMeasures, splits: int, members: int, fit_size: int,
              say: Callable[[str], None]) -> dict:
    """Part B: member 0's errors on the test studies of each split, pooled over the splits."""
    errs, scores, aucs = [], {k: [] for k in ("deterministic entropy (free)", "MC-dropout std",
                                              f"committee std ({members} readers)")}, []
    for split in range(splits):
        order = np.random.default_rng(100 + split).permutation(len(m.ids))
        fit_idx, test_idx = sorted(order[:fit_size].tolist()), sorted(order[fit_size:].tolist())
        readers = [al.fit(m, fit_idx, labels="review", epochs=150, seed=1000 * split + k) for k in range(members)]
        threshold = youden_threshold(m.study[fit_idx].numpy().astype(int),
                                     al.probabilities(readers[0], m, fit_idx)[:, 0])
        probs = np.stack([al.probabilities(r, m, test_idx) for r in readers])  # (K, n, 1+M)
        y = m.study[test_idx].numpy().astype(int)
        errs.append(((probs[0, :, 0] >= threshold) != y).astype(int))
        aucs.append(roc_auc(y, probs[0, :, 0]))
        for key, s in zip(scores, (entropy(probs[0, :, 0]), probs[0, :, 1:].std(axis=1), probs[:, :, 0].std(axis=0)),
                          strict=True):
            scores[key].append(s)
        say(f"split {split + 1}/{splits}: member 0 test AUC {aucs[-1]:.3f}, {errs[-1].sum()} errors")
    err = np.concatenate(errs)
    pooled = {k: np.concatenate(v) for k, v in scores.items()}
    return {"splits": splits, "members": members, "fit_size": fit_size, "n": len(err), "errors": int(err.sum()),
            "member0_test_auc": aucs, "rows": score_rows(err, pooled, "deterministic entropy (free)")}


def table(rows: list[dict]) -> list[str]:
    lines = ["| uncertainty | error-ranking AUROC [95 % CI] | minus the free baseline [95 % CI] |", "|---|---|---|"]
    for r in rows:
        vs = "baseline" if r["vs_baseline"] == 0.0 and r["vs_low"] == 0.0 else \
            f"{r['vs_baseline']:+.3f} [{r['vs_low']:+.3f}, {r['vs_high']:+.3f}]"
        lines.append(f"| {r['score']} | {r['auroc']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {vs} |")
    return lines


def main() -> None:
    args = parse_args([])
    torch.set_num_threads(1)
    records = cohort_records(args)
    m = load_measures(args, records)
    a = shipped(m)
    log(f"A: {a['errors']} errors of {a['n']}")
    b = committee(m, splits=5, members=5, fit_size=320, say=log)
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "results.json", json.dumps({"shipped": a, "committee": b}, indent=1))
    md = ["# What the detector's uncertainty is worth", "",
          f"`python training/uncertainty_value.py`; cohort seed {args.cohort_seed}, {len(m.ids)} studies, "
          f"{m.features.shape[1] - 1} MC-dropout samples. An uncertainty is scored by how well it ranks the "
          "studies the detector gets wrong first (AUROC, 0.5 = chance).", "",
          f"## A. The shipped model ({a['n']} studies, threshold {a['threshold']:.3f}, study AUC "
          f"{a['study_auc']:.3f}, {a['errors']} errors; median MC-dropout std {a['median_mc_std']:.4f})", "",
          *table(a["rows"]), "",
          f"## B. A committee of {b['members']} wall readers ({b['splits']} splits, {b['fit_size']} studies to fit, "
          f"{b['n']} test studies pooled, {b['errors']} errors of member 0; member 0's test AUC "
          f"{min(b['member0_test_auc']):.3f}-{max(b['member0_test_auc']):.3f})", "", *table(b["rows"]), ""]
    atomic_write_text(OUT / "results.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
