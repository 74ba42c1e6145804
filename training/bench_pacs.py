"""A cine study from a PACS against the same study from a local folder: pulling, grouping and detecting.

    python training/bench_pacs.py [--runs 5] [--layout series-per-slice] [--threads 1]

Starts a private Orthanc (Debian's package, DICOMweb plugin; ``stran.pacs.orthanc.LocalOrthanc``), sends it one
phantom study of 10 slices x 25 phases (250 images), and times, in alternating rounds, the median of ``--runs``:

- ``local folder``: ``load_study`` on the DICOM folder (the baseline of the ratios);
- ``PACS pull + group``: QIDO-RS + WADO-RS of every image into an empty cache, grouped by the same loader, written
  as the cached 4-D NIfTI + sidecar + source headers (``stran.pacs.fetch.fetch_study``);
- ``PACS cached``: ``load_study`` of that cached study (what every later request costs);
- ``SR + SEG built and stored``: the results of one detection as DICOM (highdicom) and STOW-RS;
- ``detect, local folder``: load + detection (MC dropout as ``stran detect``'s default);
- ``detect from PACS, end to end``: pull + group + detection + SR and SEG built and stored with STOW-RS.

PyTorch runs with ``--threads`` threads and ``OMP_WAIT_POLICY=PASSIVE`` (set before torch is imported).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def timed(work: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--layout", default="series-per-slice")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mc-samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=4267, help="phantom seed (4267: 10 slices x 25 phases, 250 images)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from stran.engine.detect import Detector
    from stran.io import load_study, write_dicom
    from stran.pacs.client import PacsClient
    from stran.pacs.fetch import fetch_study, source_headers
    from stran.pacs.orthanc import LocalOrthanc, OrthancNotInstalledError, find_orthanc
    from stran.pacs.store import store_detection
    from stran.phantom import generate_study, sample_config
    from stran.resources import resolve_model

    try:
        find_orthanc()
    except OrthancNotInstalledError as exc:
        sys.exit(f"bench_pacs: {exc}")
    work = Path(tempfile.mkdtemp(prefix="stran-bench-pacs-"))
    phantom = generate_study(sample_config(args.seed, scenario="A")).cine
    files = write_dicom(phantom, work / "dcm", args.layout)
    detector = Detector(resolve_model(None), mc_samples=args.mc_samples)
    times: dict[str, list[float]] = {}
    try:
        with LocalOrthanc() as orthanc:
            orthanc.upload([str(f) for f in files])
            client = PacsClient(orthanc.dicomweb_url)
            uid = phantom.study_uid

            def pull() -> Path:
                cache = work / "cache"
                shutil.rmtree(cache, ignore_errors=True)
                return fetch_study(client, uid, cache)

            def detect_from_pacs() -> None:
                study = load_study(pull())
                detection = detector.detect(study, image_id=uid)
                store_detection(client, detection.result, study, detection.attention, source_headers(work / "cache", uid))

            cached = load_study(pull())
            done = detector.detect(cached, image_id=uid)

            def store() -> None:
                store_detection(client, done.result, cached, done.attention, source_headers(work / "cache", uid))

            cases: dict[str, Callable[[], object]] = {
                "local folder": lambda: load_study(work / "dcm"),
                "PACS pull + group": pull,
                "PACS cached": lambda: load_study(work / "cache" / f"{uid}.nii.gz"),
                "SR + SEG built and stored": store,
                "detect, local folder": lambda: detector.detect(load_study(work / "dcm")),
                "detect from PACS, end to end": detect_from_pacs,
            }
            for run in range(args.runs):
                for name, work_fn in cases.items():
                    times.setdefault(name, []).append(timed(work_fn))
                print(f"round {run + 1} of {args.runs} done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(times["local folder"])
    print(f"\n{len(files)} files ({args.layout}), {phantom.n_slices} slices x {phantom.n_phases} phases, "
          f"{phantom.matrix[0]}x{phantom.matrix[1]}; torch threads {args.threads}, OMP_WAIT_POLICY="
          f"{os.environ['OMP_WAIT_POLICY']}, MC samples {args.mc_samples}; median of {args.runs} runs\n")
    print(f"| {'case':<30} | {'median s':>9} | {'min s':>7} | {'max s':>7} | {'x local folder':>14} |")
    print(f"|{'-' * 32}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 16}|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name:<30} | {median:>9.3f} | {min(values):>7.3f} | {max(values):>7.3f} | {median / base:>14.2f} |")


if __name__ == "__main__":
    main()
