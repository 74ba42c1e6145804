"""The demo model's card and the issue's targets, measured on the held-out cohorts beside the bound."""

from __future__ import annotations

from typing import Any

from experiment import FRESH_COHORT, TEST_COHORT, TRAIN_COHORT, VAL_FRACTION

from stran.engine.evaluate import markdown_report
from stran.engine.trainer import TrainConfig
from stran.models import build_model

SCENARIOS = ("A", "B", "C", "D")


def _v(m: dict | None) -> float:
    return float("nan") if not m else float(m["value"])


def target_rows(report: dict[str, Any], bound: dict[str, Any] | None) -> list[tuple[str, str, str, bool]]:
    """(target, required, measured, met) for one cohort's report; ``bound`` is that cohort's entry of bound.json."""
    rows = []
    auc = _v(report["auc"])
    rows.append(("study AUC", ">= 0.90 (goal 0.95)", f"{auc:.3f}", auc >= 0.90))
    for s in SCENARIOS:
        got = _v(report["by_scenario"].get(s, {}).get("auc_vs_other_class"))
        ceiling = _v(bound["by_scenario"].get(s)) if bound else float("nan")
        ok = got >= 0.80 or (ceiling == ceiling and got >= ceiling - 0.05)
        rows.append((f"scenario {s} AUC", f">= 0.80 or within 0.05 of the bound ({ceiling:.3f})", f"{got:.3f}", ok))
    for key, name, need, ref in (("slice_auc", "slice AUC", 0.90, "slice_auc"),
                                 ("segment_auc", "segment AUC", 0.90, "segment_auc"),
                                 ("scar_dice", "scar-map Dice on slices with scar", 0.50, None)):
        got = _v(report.get(key))
        ceiling = _v(bound.get(ref)) if bound and ref else (bound or {}).get("pixel_dice", float("nan"))
        rows.append((name, f">= {need:.2f} (bound {ceiling:.3f})", f"{got:.3f}", got >= need))
    rows.append(("ECE", "<= 0.05", f"{report['ece']:.3f}", report["ece"] <= 0.05))
    return rows


def targets_markdown(reports: dict[str, dict[str, Any]], bound: dict[str, Any] | None) -> str:
    lines = ["| target | required | " + " | ".join(f"{name} cohort" for name in reports) + " |",
             "|---|---|" + "---|" * len(reports)]
    def cohort_bound(name: str) -> dict[str, Any] | None:
        entry = (bound or {}).get("cohorts", {}).get(name)
        pixel = (bound or {}).get("pixel_reference", {}).get("dice", {}).get(name)
        return None if entry is None else {**entry, "pixel_dice": float("nan") if pixel is None else pixel}

    per = {name: target_rows(r, cohort_bound(name)) for name, r in reports.items()}
    first = next(iter(per.values()))
    for i, (target, required, _, _) in enumerate(first):
        cells = [f"{rows[i][2]} {'met' if rows[i][3] else '**not met**'}" for rows in per.values()]
        lines.append(f"| {target} | {required} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bound_markdown(bound: dict[str, Any] | None) -> str:
    if not bound:
        return "(the bound has not been computed: `python training/bound.py`)"
    lines = ["| cohort | study AUC | A | B | C | D | A vs C | B vs D | slice AUC | segment AUC |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in bound["cohorts"].items():
        sc = r["by_scenario"]
        cells = [f"{_v(sc.get(k)):.3f}" for k in ("A", "B", "C", "D", "A vs C", "B vs D")]
        lines.append(f"| {name} | {_v(r['study_auc']):.3f} | " + " | ".join(cells)
                     + f" | {_v(r['slice_auc']):.3f} | {_v(r['segment_auc']):.3f} |")
    pixel = bound.get("pixel_reference")
    if pixel:
        dice = ", ".join(f"{k} {v:.3f}" for k, v in pixel["dice"].items())
        lines += ["", f"For the scar map: marking the wall pixels darker than {pixel['tau']} x their slice and phase's "
                  f"wall median, with the same perfect contours, gives a Dice of {dice} (the bound of the Dice row)."]
    return "\n".join(lines)


def model_card(meta: dict, reports: dict[str, dict[str, Any]], bound: dict | None, config: TrainConfig,
               minutes: float, n_train: int, n_val: int) -> str:
    params = sum(p.numel() for p in build_model(meta["model_name"], **meta["config"]).parameters())
    test_body = markdown_report(reports["test"], "Held-out test metrics").split("\n", 1)[1]
    fresh_body = markdown_report(reports["fresh"], "Fresh-seed metrics").split("\n", 1)[1]
    return f"""# Model card: ST-RAN scar detector (demo model)

**Research use only. Not for clinical use.** This model was trained only on synthetic phantoms made by this
project's generator. It has never seen a real patient's images; its figures say how well it separates the
generator's scenarios, not how it would perform on clinical cine MRI.

| | |
|---|---|
| file | `apps/stran/model/pretrained_scar.pt` |
| network | `{meta['model_name']}` (true factorized 4D convolution, dual attention, residual attention blocks, scar-map head; docs/models.md) |
| parameters | {params:,} |
| SHA-256 (weights + config) | `{meta['sha256']}` |
| stran version | {meta.get('stran_version', '')} |
| created (UTC) | {meta.get('created_utc', '')} |
| input | short-axis cine, preprocessed to {config.preprocess.n_slices} slices x {config.preprocess.n_phases} phases x {config.preprocess.size} x {config.preprocess.size} px at {config.preprocess.spacing_mm} mm (stran.transforms) |
| output | per-pixel scar probability map (shown over the cine), study, per-slice and 17 AHA-segment probabilities read off that map; MC-dropout uncertainty |
| decision threshold | {meta['extra']['threshold']:.3f} (Youden on the validation set) |

## Training data
- {TRAIN_COHORT.describe()}: {n_train} for training, {n_val} for validation (stratified by label and scenario,
  split seed 0, validation fraction {VAL_FRACTION}).
- Scenarios in equal shares: A ischemic scar with wall-motion abnormality, B non-ischemic scar without WMA,
  C WMA without scar, D normal; six scanner profiles (Siemens, GE, Philips at 1.5 T and 3 T). See docs/phantom.md.
- Targets: every truth the generator writes: study and slice labels, the 17 AHA segments (scar extent > 0 in the
  segment table) and the pixel masks (LV blood, myocardium, RV blood, scar), through the same preprocessing as the
  images.

## Training procedure
The recipe of docs/training.md: Adam (lr {config.lr}, weight decay {config.weight_decay}), cosine decay, batch
{config.batch_size}, {config.epochs} epochs (the best epoch by validation loss kept), augmentation (same in-plane
transform for every phase and its label map, intensity, noise up to {config.augment_config.noise_std}, circular phase
shift, slice dropout), seed {config.seed}. Loss: BCE on the study label + {config.slice_loss_weight} x BCE on slice
labels + {config.segment_loss_weight} x BCE on segment labels + {config.pixel_loss_weight} x (per-pixel BCE on the
four maps + soft Dice on the myocardium and on the gated scar map); the map is decoded for 5 of the 20 phases per
training step. Training took {minutes:.1f} min on a 2-core CPU (torch 2.13, 2 threads; sum of the epoch times,
which grow when other jobs share the cores).

## Targets (issue 11) on the held-out cohorts
{TEST_COHORT.describe()} ("test") and {FRESH_COHORT.describe()} ("fresh", a seed no training, selection or earlier
report used). The bound is a reader with perfect contours (`training/results/bound.md`).

{targets_markdown(reports, bound)}

## The bound on the same cohorts
{bound_markdown(bound)}

## Held-out test cohort
{test_body}
## Fresh-seed cohort
{fresh_body}
ROC and reliability plots, per-study predictions: `training/results/demo_model/<cohort>/`.

## Intended use and limits
- Intended: demonstrating and testing the ST-RAN Scar pipeline (MONAI Label app, Slicer module, active learning,
  retraining); a starting point to fine-tune on a group's own labelled cine data.
- Not intended: any diagnostic or clinical decision. Real scar (especially non-ischemic scar without wall-motion
  abnormality) is often invisible on cine; the generator makes scenario B's trace deliberately visible.
- Never seen: real patients, arrhythmia, motion artefacts beyond breath-hold shifts, slice gaps or tilted stacks
  beyond the generator's ranges, contrast-enhanced cine, pediatric hearts, other pathologies (e.g. hypertrophic
  cardiomyopathy, amyloid), scanner software or sequences outside the six profiles.
- The AHA segments are placed from the LV and RV maps and the DICOM orientation (docs/models.md); segment 17
  (apex cap) is approximated by the most apical slice.

## Reproduce
`make demo-model` (= `python training/train_demo_model.py`): regenerates the cohorts from their seeds if missing,
trains, evaluates on both cohorts, and rewrites this card.
"""
