"""The paper's comparison on our phantom cohort: every network of the zoo and the ablations, one recipe, one budget.

    python training/compare.py                      # everything (resumes: finished runs are kept)
    python training/compare.py --networks stran,cnn3d --epochs 12
    python training/compare.py --train-studies 256 --epochs 6   # the budget of training/results/comparison.md

Every run uses the recipe of training/experiment.py (``recipe``): the networks with a scar-map head (the ST family
on the true 4-D layout) learn from every target; the others (the authors' layout, 3D CNN, CNN-LSTM, R(2+1)D) from
the study and slice labels their heads can take. Ablations of ST-RAN: without attention (= ``spatiotemporal``), without
the map head, with the map head but study labels only, 10 input phases instead of 20, 48 x 48 px at 2 mm instead of
64 x 64 at 1.5 mm. The bound (a reader with perfect contours,
training/bound.py) is printed beside the table.

Writes training/results/comparison.md (+ comparison.json and one report folder per run).
Model weights stay in work/runs/compare/<run>/ (not committed).
"""

from __future__ import annotations

import argparse
import json
import time

from bound import load_bound
from experiment import CACHE, REPO, TEST_COHORT, TRAIN_COHORT, WORK, recipe, test_records, train_val_records

from stran.atomic import atomic_write_text
from stran.engine.dataset import StudyRecord, split_records
from stran.engine.evaluate import evaluate_checkpoint
from stran.engine.trainer import TrainConfig, Trainer
from stran.models import build_model
from stran.transforms.preprocess import PreprocessConfig

RESULTS = REPO / "training" / "results"
RUNS = WORK / "runs" / "compare"
# run name -> (network, recipe overrides, group)
RUNS_SPEC: dict[str, tuple[str, dict, str]] = {
    "spatial": ("spatial", {}, "ablation"),
    "temporal": ("temporal", {}, "ablation"),
    "spatiotemporal": ("spatiotemporal", {}, "ablation: ST-RAN without attention"),
    "st_dual_attention": ("st_dual_attention", {}, "ablation"),
    "stran": ("stran", {}, "ST-RAN"),
    "stran_no_map_head": ("stran", {"model_config": {"map_head": "none"}}, "ablation: ST-RAN without the map head"),
    "stran_study_labels_only": (
        "stran",
        {"pixel_loss_weight": 0.0, "unit_loss_weight": 0.0, "segment_loss_weight": 0.0, "slice_loss_weight": 0.0},
        "ablation: ST-RAN, study labels only",
    ),
    "stran_10_phases": ("stran", {"preprocess": PreprocessConfig(n_phases=10)}, "ablation: ST-RAN, 10 phases"),
    "stran_48px_2mm": ("stran", {"preprocess": PreprocessConfig(size=48, spacing_mm=2.0)},
                       "ablation: ST-RAN, 48 x 48 px at 2 mm"),
    "stran_paper_layout": ("stran_paper_layout", {}, "ST-RAN (authors' layout)"),
    "cnn3d": ("cnn3d", {}, "state of the art"),
    "cnn_lstm": ("cnn_lstm", {}, "state of the art"),
    "r2plus1d": ("r2plus1d", {}, "state of the art"),
}
ORDER = list(RUNS_SPEC)


def budget(args: argparse.Namespace, run: str) -> TrainConfig:
    network, overrides, _ = RUNS_SPEC[run]
    return recipe(network, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                  patience=args.patience, **overrides)


def training_subset(train: list[StudyRecord], n: int | None) -> list[StudyRecord]:
    """A stratified subset of ``n`` training studies (label x scenario), the same for every network."""
    if not n or n >= len(train):
        return train
    return split_records(train, [n / len(train), 1 - n / len(train)], seed=0)[0]


def run_network(network: str, args: argparse.Namespace, train, val, test) -> dict:
    out = RUNS / network
    config = budget(args, network)
    group = RUNS_SPEC[network][2]
    started = time.perf_counter()
    result = Trainer(config, train, val, out, cache_dir=CACHE, trained_on=f"compare: {TRAIN_COHORT.describe()}").fit()
    train_seconds = time.perf_counter() - started
    report = evaluate_checkpoint(result.best_checkpoint, test, RESULTS / "compare" / network, cache_dir=CACHE,
                                 title=f"{network}: held-out test cohort")
    params = sum(p.numel() for p in build_model(config.model, **config.model_config).parameters())
    return {"network": network, "group": group, "params": params, "epochs_run": len(result.history),
            "best_epoch": result.best_epoch + 1, "train_seconds": round(train_seconds, 1),
            "seconds_per_epoch": round(sum(h.seconds for h in result.history) / len(result.history), 1),
            "val_auc": result.best_val_auc, "report": report, "config": config.to_dict()}


def fmt(m: dict | None) -> str:
    if not m or m["value"] != m["value"]:
        return "n/a"
    return f"{m['value']:.3f} ({m['ci_low']:.2f}-{m['ci_high']:.2f})"


def write_markdown(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "# Comparison of the zoo on the synthetic phantom cohort",
        "",
        f"Training: {TRAIN_COHORT.describe()}, split 80/20 into training/validation (split seed 0); "
        f"{args.n_train} training studies used (stratified subset, seed 0), {args.n_val} for validation. "
        f"Test: {TEST_COHORT.describe()}, never seen in training or model selection. "
        f"Same recipe and budget for every run (training/experiment.py `recipe`): {args.epochs} epochs max (early "
        f"stopping patience {args.patience} on validation loss), batch {args.batch_size}, Adam lr {args.lr} with cosine "
        f"decay, augmentation on, seed {args.seed}; every target the network can take (study, slice, AHA segment and "
        "pixel labels with a map head; study and slice labels without). "
        "Threshold chosen on validation data (Youden). Bracketed: bootstrap 95 % confidence intervals (2000 replicates). "
        "Segment AUC and scar Dice exist only for networks with a map head.",
        "",
        "Synthetic phantoms only: these numbers compare architectures on our generator; they are not clinical performance. "
        "Train time is wall-clock on the shared 2-core machine and includes time taken by other jobs (and, for the first "
        "network, a pause); per-study training costs measured without load are in docs/models.md.",
        "",
        "| run | group | params | study AUC | A vs C | B vs D | slice AUC | segment AUC | scar Dice | ECE | "
        "sens. / spec. | train time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rep = r["report"]
        by = rep["by_scenario"]
        lines.append(
            f"| {r['network']} | {r['group']} | {r['params'] / 1e6:.2f} M | {fmt(rep['auc'])} | "
            f"{fmt(by.get('A vs C', {}).get('auc_vs_other_class'))} | {fmt(by.get('B vs D', {}).get('auc_vs_other_class'))} | "
            f"{fmt(rep['slice_auc'])} | {fmt(rep.get('segment_auc'))} | {fmt(rep.get('scar_dice'))} | {rep['ece']:.3f} | "
            f"{rep['sensitivity']['value']:.2f} / {rep['specificity']['value']:.2f} | "
            f"{r['train_seconds'] / 60:.1f} min ({r['epochs_run']} ep, best {r['best_epoch']}) |"
        )
    bound = (load_bound() or {}).get("cohorts", {}).get("test")
    if bound:
        sc = bound["by_scenario"]
        lines.append(f"| **bound** | reader with perfect contours | - | {fmt(bound['study_auc'])} | {fmt(sc.get('A vs C'))} | "
                     f"{fmt(sc.get('B vs D'))} | {fmt(bound['slice_auc'])} | {fmt(bound['segment_auc'])} | - | - | - | - |")
    scen = ["A", "B", "C", "D"]
    lines += ["", "## By scenario: AUC of each scenario against the other class (95 % CI)", "",
              "A = ischemic scar with WMA, B = scar without WMA, C = WMA without scar, D = normal.", "",
              "| run | " + " | ".join(scen) + " |", "|---|" + "---|" * len(scen)]
    for r in rows:
        by = r["report"]["by_scenario"]
        lines.append(f"| {r['network']} | " + " | ".join(fmt(by.get(s, {}).get("auc_vs_other_class")) for s in scen) + " |")
    if bound:
        lines.append("| **bound** | " + " | ".join(fmt(bound["by_scenario"].get(s)) for s in scen) + " |")
    lines += ["", "Per-network reports (ROC, reliability, by vendor/field): `training/results/compare/<network>/`.",
              f"Reproduce: `python training/compare.py --train-studies {args.n_train} --epochs {args.epochs} "
              f"--batch-size {args.batch_size} --lr {args.lr} --seed {args.seed}`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", default=",".join(ORDER), help=f"comma-separated subset of {', '.join(ORDER)}")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--train-studies", type=int, default=None,
                        help="train on a stratified subset of this many studies (default: the whole training split)")
    args = parser.parse_args()
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = set(networks) - set(ORDER)
    if unknown:
        parser.error(f"unknown networks {sorted(unknown)}")
    train, val = train_val_records()
    train = training_subset(train, args.train_studies)
    args.n_train, args.n_val = len(train), len(val)
    test = test_records()
    results_path = RESULTS / "comparison.json"
    done = json.loads(results_path.read_text()) if results_path.exists() else {}
    def key(network: str) -> str:
        return json.dumps({**budget(args, network).to_dict(), "n_train": args.n_train}, sort_keys=True, default=str)

    for network in networks:
        if network in done and done[network].get("key") == key(network):
            print(f"{network}: already done, kept")
            continue
        print(f"=== {network} ===", flush=True)
        row = run_network(network, args, train, val, test)
        done[network] = {**row, "key": key(network)}
        atomic_write_text(results_path, json.dumps(done, indent=1, default=str))
    rows = [done[n] for n in ORDER if n in done and done[n].get("key") == key(n)]  # this budget only
    atomic_write_text(RESULTS / "comparison.md", write_markdown(rows, args))
    print((RESULTS / "comparison.md").read_text())


if __name__ == "__main__":
    main()
