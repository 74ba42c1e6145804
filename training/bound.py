"""The bound: a reader with perfect contours (``stran.phantom.reader``) plus a simple classifier.

Measures every (slice, AHA sector) unit of the training, test and fresh cohorts from the truth masks and the
pixels, fits a classifier on the training split of the training cohort (logistic regression and gradient-boosted
trees; the one with the better validation study AUC is the bound), and scores units -> slices (max over the
slice's units) -> segments (max over the segment's units) -> studies (max over all units). Reports per-scenario
study AUCs, slice and segment AUCs with bootstrap CIs on the test and fresh cohorts; and, for the scar map's Dice, a
per-pixel counterpart (a threshold on the wall-relative signal, the same perfect contours).

    python training/bound.py                  # writes training/results/bound.md and bound.json

Measurements are cached in work/bound/ (about 10 minutes for 1,560 studies on 2 cores the first time).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiment import CACHE as CACHE_DIR  # noqa: E402
from experiment import (  # noqa: E402
    FRESH_COHORT,
    TEST_COHORT,
    TRAIN_COHORT,
    WORK,
    ensure_cohort,
    fresh_records,
    test_records,
    train_val_records,
)

from stran.atomic import atomic_write_text  # noqa: E402
from stran.engine.metrics import bootstrap_ci, roc_auc, scenario_aucs  # noqa: E402
from stran.phantom.reader import FEATURES, ReaderUnits, measure_units  # noqa: E402

RESULTS = REPO / "training" / "results"
CACHE = WORK / "bound"


def _measure(args: tuple[str, str]) -> ReaderUnits:
    from stran.io import load_study
    from stran.phantom.truth import load_masks

    cohort, study_id = args
    root = Path(cohort)
    study = load_study(root / "images" / f"{study_id}.nii.gz")
    masks = load_masks(root / "truth" / f"{study_id}.masks.npz")
    truth = json.loads((root / "truth" / f"{study_id}.truth.json").read_text())
    return measure_units(study_id, study.pixels, masks, truth)


def measure_cohort(root: Path, workers: int = 2) -> dict[str, ReaderUnits]:
    """Units of every study of a cohort, cached in work/bound/<cohort>.pkl."""
    cache = CACHE / f"{root.name}.pkl"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    ids = sorted(p.name[: -len(".nii.gz")] for p in (root / "images").glob("*.nii.gz"))
    print(f"measuring {len(ids)} studies of {root.name} ...", flush=True)
    with ProcessPoolExecutor(workers) as pool:
        units = list(pool.map(_measure, [(str(root), i) for i in ids], chunksize=8))
    out = {u.study_id: u for u in units}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(out))
    return out


def _stack(units: list[ReaderUnits]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([u.features for u in units])
    y = np.concatenate([u.scar for u in units]).astype(int)
    return x, y


def _classifiers() -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "logistic regression": make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                                             LogisticRegression(max_iter=2000, C=1.0)),
        "gradient-boosted trees": HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=0),
    }


def score_levels(clf: Any, units: list[ReaderUnits]) -> dict[str, np.ndarray]:
    """Study, slice and segment scores (max over units) and their truths."""
    study_p, study_y, scen = [], [], []
    slice_p, slice_y, seg_p, seg_y = [], [], [], []
    for u in units:
        p = clf.predict_proba(u.features)[:, 1] if len(u.features) else np.zeros(0)
        study_p.append(p.max() if p.size else 0.0)
        study_y.append(u.study_label)
        scen.append(u.scenario)
        for s in sorted(set(u.slice_index.tolist())):
            slice_p.append(p[u.slice_index == s].max())
            slice_y.append(u.slice_labels[s])
        for k in range(1, 18):
            m = u.segment == k
            if m.any():
                seg_p.append(p[m].max())
                seg_y.append(u.segment_labels[k - 1])
    return {
        "study_p": np.array(study_p), "study_y": np.array(study_y), "scenario": np.array(scen),
        "slice_p": np.array(slice_p), "slice_y": np.array(slice_y),
        "segment_p": np.array(seg_p), "segment_y": np.array(seg_y),
    }


def _ci(y: np.ndarray, p: np.ndarray, n_boot: int) -> dict[str, float]:
    lo, hi = bootstrap_ci(roc_auc, y, p, n_boot=n_boot)
    return {"value": roc_auc(y, p), "ci_low": lo, "ci_high": hi, "n": int(y.size)}


def report_cohort(clf: Any, units: list[ReaderUnits], n_boot: int) -> dict[str, Any]:
    s = score_levels(clf, units)
    return {
        "n_studies": int(s["study_y"].size),
        "study_auc": _ci(s["study_y"], s["study_p"], n_boot),
        "slice_auc": _ci(s["slice_y"], s["slice_p"], n_boot),
        "segment_auc": _ci(s["segment_y"], s["segment_p"], n_boot),
        "by_scenario": scenario_aucs(s["study_y"], s["study_p"], s["scenario"], n_boot=n_boot),
    }


def _fmt(m: dict[str, float]) -> str:
    return f"{m['value']:.3f} ({m['ci_low']:.2f}-{m['ci_high']:.2f})"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# The bound: a reader with perfect contours",
        "",
        "What a careful reader could reach on this generator's cine if the exact endocardial and epicardial contours",
        "were given (not the scar): per (slice, AHA sector) wall signal relative to remote, its 10th percentile and",
        "core, wall/blood ratio, ED thickness and systolic thickening (`stran/phantom/reader.py`), a "
        f"{result['classifier']} fitted on the {result['n_train']} training studies (chosen over the other on the "
        f"{result['n_val']} validation studies: study AUC {', '.join(f'{k} {v:.3f}' for k, v in result['validation_auc'].items())}).",
        "Scores: a slice is its highest sector, a segment its highest unit, a study its highest unit.",
        f"Command: `python training/bound.py` (generator {result['generator_version']}). 95 % bootstrap CIs.",
        "",
        "| cohort | studies | study AUC | A | B | C | D | A vs C | B vs D | slice AUC | segment AUC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["cohorts"].items():
        sc = r["by_scenario"]
        cells = [_fmt(sc[k]) if k in sc else "n/a" for k in ("A", "B", "C", "D", "A vs C", "B vs D")]
        lines.append(f"| {name} | {r['n_studies']} | {_fmt(r['study_auc'])} | " + " | ".join(cells)
                     + f" | {_fmt(r['slice_auc'])} | {_fmt(r['segment_auc'])} |")
    lines += ["", "Scenario columns: that scenario against every study of the other class; pairs: the two alone.", ""]
    px = result.get("pixel_reference")
    if px:
        dice = ", ".join(f"{name} {v:.3f}" for name, v in px["dice"].items())
        lines += [
            "## The scar map's counterpart",
            "",
            f"With the same perfect contours, marking every wall pixel darker than {px['tau']} x the median of its "
            "slice and phase's wall (threshold chosen on 60 training studies with scar), on the network's grid, "
            f"gives a mean Dice with the truth scar, over the slices with scar, of: {dice}.",
            "",
        ]
    return "\n".join(lines)


def _wall_relative(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each pixel over the median of its slice-phase's wall, the wall and the scar (truth label map)."""
    wall = (labels == 2) | (labels == 4)
    ref = np.ones(x.shape[:2])
    for s in range(x.shape[0]):
        for t in range(x.shape[1]):
            if wall[s, t].any():
                ref[s, t] = np.median(x[s, t][wall[s, t]])
    return x / ref[:, :, None, None], wall, labels == 4


def pixel_dice(records: list, tau: float) -> float:
    """Mean Dice, over the network's slices with scar, of "wall pixels darker than tau x their slice-phase's wall
    median" on the preprocessed grid, with the truth wall."""
    from stran.engine.dataset import build_dataset
    from stran.transforms.preprocess import PreprocessConfig

    ds = build_dataset(records, PreprocessConfig(), cache_dir=CACHE_DIR)
    scores = []
    for c in ds.cached:
        rel, wall, scar = _wall_relative(c["image"].float().numpy()[0], c["labels"].numpy())
        pred = wall & (rel < tau)
        for s in range(scar.shape[0]):
            if scar[s].any():
                scores.append(2 * (pred[s] & scar[s]).sum() / (pred[s].sum() + scar[s].sum()))
    return float(np.mean(scores))


def pixel_reference(train_recs: list, cohorts: dict[str, list]) -> dict[str, Any]:
    """The per-pixel counterpart of the bound for the scar map's Dice: a threshold on the wall-relative signal, with
    perfect contours, tau chosen on 60 training studies with scar."""
    with_scar = [r for r in train_recs if r.label.study_label == 1][:60]
    tau = max((0.7, 0.75, 0.8, 0.85, 0.9), key=lambda t: pixel_dice(with_scar, t))
    return {"tau": tau, "dice": {name: pixel_dice(recs, tau) for name, recs in cohorts.items()}}


def load_bound() -> dict[str, Any] | None:
    """The last bound result (training/results/bound.json), for the comparison tables; None if never run."""
    path = RESULTS / "bound.json"
    return json.loads(path.read_text()) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from stran.phantom import GENERATOR_VERSION

    train_recs, val_recs = train_val_records()
    train_units = measure_cohort(TRAIN_COHORT.path, args.workers)
    cohorts = {"test": ensure_cohort(TEST_COHORT), "fresh": ensure_cohort(FRESH_COHORT)}
    measured = {name: measure_cohort(path, args.workers) for name, path in cohorts.items()}
    tr = [train_units[r.study_id] for r in train_recs]
    va = [train_units[r.study_id] for r in val_recs]
    x, y = _stack(tr)
    fitted, val_auc = {}, {}
    for name, clf in _classifiers().items():
        clf.fit(x, y)
        s = score_levels(clf, va)
        fitted[name], val_auc[name] = clf, roc_auc(s["study_y"], s["study_p"])
        print(f"{name}: validation study AUC {val_auc[name]:.3f}", flush=True)
    best = max(val_auc, key=val_auc.get)
    pixel = pixel_reference(train_recs, {"test": test_records(), "fresh": fresh_records()})
    result = {
        "pixel_reference": pixel,
        "classifier": best,
        "features": list(FEATURES),
        "generator_version": GENERATOR_VERSION,
        "n_train": len(tr),
        "n_val": len(va),
        "validation_auc": val_auc,
        "cohorts": {name: report_cohort(fitted[best], list(units.values()), args.n_boot)
                    for name, units in measured.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "bound.json", json.dumps(result, indent=1))
    atomic_write_text(RESULTS / "bound.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
