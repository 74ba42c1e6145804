"""Cine loading benchmark: DICOM (each layout) and the datastore NIfTI, then the shared preprocessing.

    python training/bench_io.py [--slices 12 --phases 25 --size 256 --repeats 5]

Prints, per source, the median and minimum load time of ``repeats`` runs
and the ratio of the median against the datastore NIfTI load (the baseline).
Importable: ``time_it(fn, repeats)`` and ``run_benchmark(...)`` return the
numbers, so other rows (e.g. preprocessing) can be added by calling
``time_it`` and appending to the rows.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def time_it(fn: Callable[[], Any], repeats: int = 5) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` (after one untimed warm-up call)."""
    fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def format_table(rows: list[dict[str, Any]], baseline: str) -> str:
    base = next(r for r in rows if r["name"] == baseline)["median_s"]
    header = f"{'source':<34} {'files':>6} {'median s':>9} {'min s':>8} {'x baseline':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['name']:<34} {r['files']:>6} {r['median_s']:>9.3f} {r['min_s']:>8.3f} {r['median_s'] / base:>10.2f}"
        )
    return "\n".join(lines)


def run_benchmark(
    slices: int = 12, phases: int = 25, size: int = 256, repeats: int = 5, workdir: str | Path | None = None
) -> list[dict[str, Any]]:
    """Write one synthetic study in every layout and time ``load_study`` on each; returns the table rows."""
    import numpy as np

    from stran.io import DicomLayout, load_study, write_datastore_study, write_dicom
    from stran.io.synthetic import make_cine_study

    study = make_cine_study(slices, phases, size, size, rr_jitter=0.05, trigger_jitter_ms=2.0, series="single")
    root = Path(workdir or tempfile.mkdtemp(prefix="stran-bench-io-"))
    rows: list[dict[str, Any]] = []
    try:
        sources: list[tuple[str, Path, int]] = []
        nii = write_datastore_study(study, root / "datastore", "bench")
        sources.append(("datastore NIfTI (.nii.gz + sidecar)", nii, 2))
        for layout in DicomLayout:
            files = write_dicom(study, root / layout.value, layout)
            sources.append((f"DICOM {layout.value}", root / layout.value, len(files)))
        for name, path, n_files in sources:
            loaded = load_study(path)
            if loaded.pixels.shape != study.pixels.shape or not np.array_equal(loaded.pixels, study.pixels):
                raise RuntimeError(f"{name}: loaded study differs from the written one")
            times = time_it(lambda p=path: load_study(p), repeats)
            rows.append(
                {
                    "name": name,
                    "files": n_files,
                    "median_s": statistics.median(times),
                    "min_s": min(times),
                    "times_s": times,
                }
            )
        from stran.transforms import preprocess_study

        times = time_it(lambda: preprocess_study(study), repeats)
        rows.append({"name": "preprocess (-> 1x10x20x64x64)", "files": 0, "median_s": statistics.median(times),
                     "min_s": min(times), "times_s": times})
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--phases", type=int, default=25)
    parser.add_argument("--size", type=int, default=256, help="rows = columns")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = run_benchmark(args.slices, args.phases, args.size, args.repeats)
    print(
        f"load_study: {args.slices} slices x {args.phases} phases x {args.size}x{args.size}, {args.repeats} runs each"
    )
    print(format_table(rows, baseline=rows[0]["name"]))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
