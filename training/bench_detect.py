"""Detect one study end to end, in process: load, preprocess, network + MC dropout, map back; the MC-dropout passes
with the trunk shared (STNet.mc_study_logits, the detector's path) against the whole network re-run per sample
(the path before), alternating rounds, median of ``--runs``.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python training/bench_detect.py [--runs 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--study", default=str(REPO / "sample_data" / "studies" / "images" / "PHANTOM-900000.nii.gz"))
    parser.add_argument("--malloc-default", action="store_true",
                        help="keep glibc's default allocation (stran.memory is what the command line and the app use)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.malloc_default:
        from stran.memory import keep_freed_memory

        keep_freed_memory()
    from stran.engine.detect import Detector
    from stran.io import load_study
    from stran.models.stran import STNet
    from stran.resources import resolve_model

    detector = Detector(resolve_model(None), mc_samples=8)
    shared = STNet.mc_study_logits
    times: dict[str, list[float]] = {k: [] for k in ("load", "mc 0", "mc 8 shared trunk", "mc 8 whole network")}
    load_study(args.study)
    detector.detect(load_study(args.study))  # warm-up
    for _ in range(args.runs):
        t = time.perf_counter()
        study = load_study(args.study)
        times["load"].append(time.perf_counter() - t)
        for name, samples, method in (("mc 0", 0, shared), ("mc 8 shared trunk", 8, shared),
                                      ("mc 8 whole network", 8, lambda self, *a: None)):
            STNet.mc_study_logits = method
            t = time.perf_counter()
            detector.detect(study, mc_samples=samples)
            times[name].append(time.perf_counter() - t)
    STNet.mc_study_logits = shared
    base = statistics.median(times["mc 8 whole network"])
    print(f"study {Path(args.study).name}, torch {torch.__version__}, {args.threads} thread(s), "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, load average {os.getloadavg()[0]:.2f}, {args.runs} runs")
    print("| step | median s | min s | vs MC 8 before |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.3f} | {min(values):.3f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
