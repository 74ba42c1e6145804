"""Interactive retraining: seconds from ``POST /train/scar`` to a decision (new model live, or kept aside).

    python training/bench_retrain.py [--studies 20] [--runs 3] [--options '{"lr": 1e-4}']

Starts the real server (apps/stran, shipped model, ``OMP_WAIT_POLICY=PASSIVE``) over a fresh phantom datastore
of ``--studies`` studies, submits every study's truth label as a reviewer would (study, slice and segment labels),
then retrains ``--runs`` times with the default options (fine-tuning the served model with its 45 s training
budget, validated against it on the held-out reviewed studies) and prints one row per run and the median. The
time includes starting MONAI Label's training process and reading the studies; the first run also fills the
preprocessing cache, later runs reuse it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import server_fixture as sf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=41)
    parser.add_argument("--options", default="{}", help="training options (JSON) on top of the defaults")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stran-bench-retrain-"))
    rows = []
    try:
        print(f"making {args.studies} phantom studies ...", flush=True)
        cohort = sf.make_phantom_cohort(work / "cohort", args.studies, args.seed)
        server = sf.start_server(sf.make_datastore(cohort, work / "datastore"), work, conf={"mc_samples": "0"},
                                 env={"OMP_WAIT_POLICY": "PASSIVE"})
        try:
            for label in sorted((cohort / "labels").glob("*.scar.json")):
                image = label.name[: -len(".scar.json")]
                requests.put(f"{server.url}/datastore/label", params={"image": image, "tag": "final"},
                             files={"label": (label.name, label.read_bytes())}, timeout=60).raise_for_status()
            for run in range(args.runs):
                t0 = time.perf_counter()
                options = {"seed": run, **json.loads(args.options)}
                requests.post(f"{server.url}/train/scar", json=options, timeout=60).raise_for_status()
                stats = sf.wait_for_training(server.url)
                rows.append((run + 1, time.perf_counter() - t0, stats))
                print(f"run {run + 1}: {rows[-1][1]:.1f} s, {stats.get('status')}", flush=True)
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.studies} reviewed studies, options {args.options} on the defaults; load average {os.getloadavg()[0]:.2f}\n")
    print("| run | s to decision | decision | epochs | stopped by budget | val loss served -> new | train / val studies |")
    print("|---:|---:|---|---:|---|---|---|")
    for run, seconds, s in rows:
        losses = f"{s.get('served_val_loss') or float('nan'):.3f} -> {s.get('best_val_loss') or float('nan'):.3f}"
        print(f"| {run} | {seconds:.1f} | {s.get('status')} | {s.get('epoch')} | {s.get('stopped_by_budget')} "
              f"| {losses} | {s.get('train_studies')} / {s.get('val_studies')} |")
    print(f"\nmedian {statistics.median(r[1] for r in rows):.1f} s from POST /train/scar to the decision")


if __name__ == "__main__":
    main()
