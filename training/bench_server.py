"""REST detection latency against the in-process model call on the same study, and a demo-size retraining.

    python training/bench_server.py [--requests 10] [--samples DIR]

Starts the real server (apps/stran, shipped model) on a copy of the sample studies on 127.0.0.1,
times POST /infer/scar (JSON only, and JSON + attention NIfTI) against stran's Detector.detect in this
process on the same study with the same settings (median, 95th percentile, ratio to in-process),
then times a 2-epoch retraining on 6 reviewed studies from POST /train/scar until the new model is live.
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

import numpy as np
import requests
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import server_fixture as sf  # noqa: E402

from stran.engine.detect import Detector  # noqa: E402
from stran.io import load_study  # noqa: E402
from stran.resources import SHIPPED_MODEL  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--samples", default=str(REPO / "sample_data" / "studies"))
    args = parser.parse_args()
    samples = Path(args.samples)
    if not (samples / "images").is_dir():
        sys.exit(f"no sample studies in {samples}: run `python -m sample_data` first")
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="stran-bench-"))
    try:
        datastore = sf.make_datastore(samples, work / "datastore")
        image_id = sorted(p.name[:-7] for p in datastore.glob("*.nii.gz"))[0]
        detector = Detector(SHIPPED_MODEL)
        study_path = datastore / f"{image_id}.nii.gz"
        rows = []
        server = sf.start_server(datastore, work)
        try:
            url = server.url
            for mc in (0, 8):
                for output in ("json", "all"):
                    def rest(mc=mc, output=output):
                        r = requests.post(f"{url}/infer/scar", params={"image": image_id, "output": output},
                                          data={"params": json.dumps({"mc_samples": mc})}, timeout=600)
                        r.raise_for_status()

                    def local(mc=mc, output=output):
                        detector.detect(load_study(study_path), with_attention=output == "all", mc_samples=mc)

                    # interleave so that machine load hits both alike
                    rest_ms, local_ms = [], []
                    rest()  # warm-up
                    local()
                    for _ in range(args.requests):
                        for fn, sink in ((rest, rest_ms), (local, local_ms)):
                            t0 = time.perf_counter()
                            fn()
                            sink.append((time.perf_counter() - t0) * 1e3)
                    rows.append((mc, output, statistics.median(local_ms), percentile(local_ms, 95),
                                 statistics.median(rest_ms), percentile(rest_ms, 95)))

            labels = sorted((samples / "labels").glob("*.scar.json"))[:6]
            for label in labels:
                image = label.name[: -len(".scar.json")]
                requests.put(f"{url}/datastore/label", params={"image": image, "tag": "final"},
                             files={"label": (label.name, label.read_bytes(), "application/json")},
                             data={"params": "{}"}, timeout=60).raise_for_status()
            t0 = time.perf_counter()
            requests.post(f"{url}/train/scar", json={"epochs": 2, "batch_size": 2}, timeout=60).raise_for_status()
            stats = sf.wait_for_training(url)
            train_s = time.perf_counter() - t0
        finally:
            server.stop()
        load = os.getloadavg()[0]
        print(f"\nStudy {image_id}: {study_path.stat().st_size / 1e6:.1f} MB NIfTI; {args.requests} interleaved runs each; "
              f"load average {load:.2f}; torch {torch.__version__}, 2 threads.\n")
        print("| MC samples | output | in-process median ms | in-process p95 ms | REST median ms | REST p95 ms | REST / in-process |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for mc, output, lm, lp, rm, rp in rows:
            label = "JSON" if output == "json" else "JSON + attention NIfTI"
            print(f"| {mc} | {label} | {lm:.0f} | {lp:.0f} | {rm:.0f} | {rp:.0f} | {rm / lm:.2f} |")
        print(f"\nRetraining, 6 reviewed studies, 2 epochs, from the served model: {train_s:.1f} s from POST /train/scar "
              f"to the published model (status {stats.get('status')}, includes starting the training process).")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
