"""Does reviewing the studies the app picks help more than reviewing random ones? The review loop, replayed.

    python training/simulate_active_learning.py            # the full run (docs/active-learning.md)
    python training/simulate_active_learning.py --quick    # a smoke run on 24 studies (~1 min)

A phantom cohort (seed 16: studies no model of the project was trained, selected or reported on) is split once into
a fixed held-out set and the rest; every repeat draws from the rest a labelled seed set (half scar) and a pool. Each
strategy then starts from the seed set and, round after round, picks the next ``k`` pool studies, "reviews" them
(their truth labels join the labelled set: study, slice and AHA segment labels, as a reviewer submits them), refits
the decision stage and measures the held-out study AUC. The learner (``stran.engine.active_learning``): the shipped
network's maps stay fixed; a fresh wall reader is fitted on the labelled studies only (``reader_fit.fit_reader``);
uncertainty comes from MC-dropout passes of the map decoder scored by ``stran.engine.detect.mc_uncertainty``, the
function behind the app's ``most_uncertain``. Strategies: ``random`` (baseline), ``entropy`` (the shipped default),
``bald`` (mutual information, the same passes), ``diverse`` (uncertainty-weighted k-means on the reader's measures).

Writes ``learning_curves.png``, ``results.md`` and ``results.json`` under ``--out``; one progress line per round on
stderr. The cohort, its preprocessing and the frozen maps' measures are cached under ``--work``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP: no spinning on shared cores

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stran.atomic import atomic_write_text  # noqa: E402
from stran.engine import active_learning as al  # noqa: E402
from stran.engine.dataset import find_studies, split_records  # noqa: E402
from stran.models import load_checkpoint  # noqa: E402
from stran.phantom import GENERATOR_VERSION, generate_cohort  # noqa: E402

CHECKPOINT = REPO / "apps" / "stran" / "model" / "pretrained_scar.pt"
RESULTS = REPO / "training" / "results" / "active_learning"
MEASURES_VERSION = 1
QUICK = {"cohort_size": 24, "cohort_seed": 17, "held_out": 8, "pool": 12, "seed_size": 4, "k": 2, "rounds": 2,
         "repeats": 2, "samples": 2, "epochs": 10}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}, output under <work>/active_learning_quick")
    p.add_argument("--cohort-size", type=int, default=520, help="studies in the phantom cohort")
    p.add_argument("--cohort-seed", type=int, default=16)
    p.add_argument("--held-out", type=int, default=200, help="fixed held-out studies (same for every run)")
    p.add_argument("--pool", type=int, default=300, help="unlabelled pool studies per repeat")
    p.add_argument("--seed-size", type=int, default=10, help="labelled seed set per repeat (half scar)")
    p.add_argument("--k", type=int, default=10, help="studies reviewed per round")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="repeat r uses seed + r")
    p.add_argument("--strategies", default=",".join(al.STRATEGIES))
    p.add_argument("--labels", choices=al.LABEL_SETS, default="review",
                   help="what a review gives: study + slice + segment labels, or the study label only")
    p.add_argument("--samples", type=int, default=8, help="MC-dropout passes (the app's default is 8)")
    p.add_argument("--epochs", type=int, default=150, help="reader epochs per fit (reader_fit's default)")
    p.add_argument("--workers", type=int, default=2, help="processes for preprocessing and measuring")
    p.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="whose maps stay fixed")
    p.add_argument("--work", type=Path, default=REPO / "work", help="cohort, preprocessing and measures cache")
    p.add_argument("--out", type=Path, default=None, help=f"results folder (default {RESULTS.relative_to(REPO)})")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.out = args.out or (args.work / "active_learning_quick" if args.quick else RESULTS)
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if unknown := set(args.strategies) - set(al.STRATEGIES):
        p.error(f"unknown strategies {sorted(unknown)}; choose from {al.STRATEGIES}")
    if args.held_out + args.seed_size + args.pool > args.cohort_size:
        p.error("held-out + seed set + pool must fit in the cohort")
    return args


def cohort_records(args: argparse.Namespace) -> list:
    """The phantom cohort (generated once) as study records; a reviewer gives labels, not scar masks, so the truth
    masks are left out."""
    cohort = args.work / "cohorts" / f"active-s{args.cohort_seed}"
    manifest = cohort / "manifest.json"
    made = json.loads(manifest.read_text()) if manifest.exists() else {}
    if made.get("n") != args.cohort_size or made.get("generator_version") != GENERATOR_VERSION:
        log(f"generating {args.cohort_size} phantom studies (cohort seed {args.cohort_seed}) in {cohort}")
        generate_cohort(cohort, args.cohort_size, args.cohort_seed, workers=args.workers, progress=False)
    return [dataclasses.replace(r, mask_path=None) for r in find_studies(cohort, require_labels=True)]


def load_measures(args: argparse.Namespace, records: list) -> al.MCMeasures:
    """The frozen maps' measures of every study (preprocessing through the tensor cache), cached on disk."""
    sha = load_checkpoint(args.checkpoint)[1]["sha256"]
    key = hashlib.sha256(json.dumps([MEASURES_VERSION, [r.study_id for r in records], GENERATOR_VERSION, sha,
                                     args.samples, args.seed]).encode()).hexdigest()[:16]
    path = args.work / "active_learning" / f"measures-{key}.pt"
    if path.exists():
        log(f"measures from {path}")
        return al.MCMeasures(**torch.load(path, weights_only=False))
    t0 = time.perf_counter()
    m = al.measure_cohort(args.checkpoint, records, args.work / "cache", samples=args.samples, seed=args.seed,
                          workers=args.workers, progress=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(vars(m), path)
    log(f"measured {len(records)} studies in {time.perf_counter() - t0:.0f} s -> {path}")
    return m


def split(m: al.MCMeasures, records_order: list[str], args: argparse.Namespace,
          repeat_seed: int) -> tuple[list[int], list[int]]:
    """Seed set (half scar) and pool of one repeat, drawn from the studies outside the held-out set."""
    rng = np.random.default_rng(repeat_seed)
    rest = [m.ids.index(s) for s in records_order]
    rest = [rest[j] for j in rng.permutation(len(rest))]
    pos = [i for i in rest if m.study[i] == 1][: (args.seed_size + 1) // 2]
    neg = [i for i in rest if m.study[i] == 0][: args.seed_size - len(pos)]
    seed_set = sorted(pos + neg)
    pool = [i for i in rest if i not in set(seed_set)][: args.pool]
    return seed_set, pool


def held_out_split(m: al.MCMeasures, records: list, args: argparse.Namespace) -> tuple[list[int], list[str]]:
    """The fixed held-out set (stratified by label and scenario, split seed 0) and the ids of the rest."""
    f = args.held_out / len(records)
    held, rest = split_records(records, [f, 1 - f], seed=0)
    return sorted(m.ids.index(r.study_id) for r in held), [r.study_id for r in rest]


def summarise(runs: list[dict], strategies: list[str]) -> dict:
    """Mean / min / max curve per strategy and the labels each needs to reach random's final mean AUC."""
    out: dict = {"curves": {}, "labels_needed": {}}
    for s in strategies:
        auc = np.array([r["auc"] for r in runs if r["strategy"] == s])
        n = next(r["n_labels"] for r in runs if r["strategy"] == s)
        out["curves"][s] = {"n_labels": n, "mean": auc.mean(0).tolist(), "min": auc.min(0).tolist(),
                            "max": auc.max(0).tolist(), "repeats": len(auc)}
    if "random" in strategies:
        target = out["curves"]["random"]["mean"][-1]
        out["target_auc"] = target
        base = al.labels_to_reach(out["curves"]["random"]["n_labels"], out["curves"]["random"]["mean"], target)
        for s in strategies:
            c = out["curves"][s]
            need = al.labels_to_reach(c["n_labels"], c["mean"], target)
            out["labels_needed"][s] = {"labels": need, "ratio_to_random": None if need is None else need / base}
    return out


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"):
        fig = Figure(figsize=(7.5, 4.8), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for s, c in summary["curves"].items():
            line, = ax.plot(c["n_labels"], c["mean"], marker="o", ms=3, label=f"{al.STRATEGY_NAMES[s]}")
            ax.fill_between(c["n_labels"], c["min"], c["max"], color=line.get_color(), alpha=0.15, lw=0)
        if "target_auc" in summary:
            ax.axhline(summary["target_auc"], color="grey", ls="--", lw=0.8, label="random's final mean AUC")
        ax.set_xlabel("reviewed (labelled) studies")
        ax.set_ylabel("held-out study AUC")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, metadata={"Software": None})


def table(summary: dict) -> str:
    strategies = list(summary["curves"])
    n = summary["curves"][strategies[0]]["n_labels"]
    rows = ["| labels | " + " | ".join(strategies) + " |", "|---:|" + "---:|" * len(strategies)]
    for j, nj in enumerate(n):
        cells = [f"{c['mean'][j]:.3f} ({c['min'][j]:.3f}-{c['max'][j]:.3f})" for c in summary["curves"].values()]
        rows.append(f"| {nj} | " + " | ".join(cells) + " |")
    rows += ["", f"Labels needed to reach random's final mean AUC ({summary.get('target_auc', float('nan')):.3f}):", "",
             "| strategy | labels needed | ratio to random | final mean AUC |", "|---|---:|---:|---:|"]
    for s, need in summary["labels_needed"].items():
        labels = "not reached" if need["labels"] is None else f"{need['labels']:.1f}"
        ratio = "-" if need["ratio_to_random"] is None else f"{need['ratio_to_random']:.2f}"
        rows.append(f"| {al.STRATEGY_NAMES[s]} | {labels} | {ratio} | {summary['curves'][s]['mean'][-1]:.3f} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    records = cohort_records(args)
    m = load_measures(args, records)
    held_out, rest = held_out_split(m, records, args)
    t_measure = time.perf_counter() - t0
    runs = []
    for r in range(args.repeats):
        seed_set, pool = split(m, rest, args, args.seed + r)
        for s in args.strategies:
            runs.append(al.simulate(m, s, seed_set, pool, held_out, k=args.k, rounds=args.rounds, seed=args.seed + r,
                                    labels=args.labels, epochs=args.epochs, log=log))
    summary = summarise(runs, args.strategies)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result = {"config": config, "held_out": [m.ids[i] for i in held_out], "summary": summary, "runs": runs,
              "seconds": {"measures": round(t_measure, 1), "total": round(time.perf_counter() - t0, 1)}}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.json", json.dumps(result, indent=1))
    title = (f"{len(held_out)} held-out studies, pool {args.pool}, seed set {args.seed_size}, k {args.k}, "
             f"{args.repeats} repeats (mean, band = min-max); labels: {args.labels}")
    atomic_write_text(args.out / "results.md", f"# Active-learning simulation\n\n{title}\n\n{table(summary)}")
    plot(summary, args.out / "learning_curves.png", title)
    log(f"done in {time.perf_counter() - t0:.0f} s: {args.out}")
    return result


if __name__ == "__main__":
    main()
