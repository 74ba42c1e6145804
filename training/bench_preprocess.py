"""Preprocessing cost against the study's size: the whole chain, its stages, the map back on the study grid.

    python training/bench_preprocess.py [--sizes 192x168,288x252,384x336 --phases 50,20 --repeats 3 --rounds 2]
    python training/bench_preprocess.py --spacing fixed     # a larger matrix is a wider field of view

Sizes are columns x rows (NIfTI x, y) of 10-slice phantom studies (``stran.phantom``, seed 7, scenario A). By
default the field of view stays that of the 192 x 168 study at 1.8 mm, so a larger matrix is a finer spacing
(the scanner's interpolation, the usual way to get 384 x 336); ``--spacing fixed`` keeps 1.8 mm instead.

Each study is measured in its own process (``OMP_WAIT_POLICY=PASSIVE``, one torch thread), so that its peak RSS
(``resource.getrusage``) is its own: once the libraries are loaded and the study is read, after the preprocessing
runs, and after the map write. Per study: ``preprocess_study`` (median of ``repeats`` runs after a warm-up, in each
of ``rounds`` rounds that visit every study in turn so that load from other processes spreads over all of them),
each transform of the chain alone, and the shipped model's map put back on the study grid
(``attention_to_study``) and written as the app writes it (``stran.io.write_map``: time and size on disk). The
ratio is against the 192 x 168 study with the same number of phases, measured in the same run; on a shared
machine read the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "apps" / "stran" / "model" / "pretrained_scar.pt"
BASE_COLS, BASE_SPACING = 192, 1.8


def make_study(cols: int, rows: int, phases: int, spacing: float, slices: int = 10):
    """The benchmark's phantom cine: seed 7, scenario A, the given matrix, spacing, slices and phases."""
    from stran.phantom import generate_study, sample_config

    cfg = sample_config(7, scenario="A")
    a = cfg.acquisition
    acq = dataclasses.replace(
        a, rows=rows, cols=cols, pixel_spacing=spacing, n_slices=slices, n_phases=phases,
        rr_per_slice=(a.rr_per_slice * 2)[:slices], misregistration=(a.misregistration * 2)[:slices],
        depth_jitter=(a.depth_jitter * 2)[:slices],
    )
    return generate_study(dataclasses.replace(cfg, acquisition=acq)).cine


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(study_path: Path, repeats: int, with_map: bool) -> dict[str, Any]:
    """In a fresh process: times and peak RSS of one study (the ``--child`` mode)."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from stran.io import write_map
    from stran.io.synthetic import make_cine_study
    from stran.transforms import attention_to_study, build_preprocessing, preprocess_study

    preprocess_study(make_cine_study(6, 8, 96, 96))  # imports and one-time set-up, before the study is read
    meta = pickle.loads(study_path.with_suffix(".pkl").read_bytes())
    study = meta.replace(pixels=np.load(study_path))
    loaded_mb = _peak_rss_mb()
    preprocess_study(study)  # warm-up
    totals = [_timed(lambda: preprocess_study(study)) for _ in range(repeats)]
    stages: dict[str, list[float]] = {}
    for _ in range(repeats):
        d: dict[str, Any] = {"study": study}
        for t in build_preprocessing().transforms:
            t0 = time.perf_counter()
            d = t(d)
            stages.setdefault(type(t).__name__, []).append(time.perf_counter() - t0)
    out: dict[str, Any] = {
        "times_s": totals,
        "stages_s": {k: statistics.median(v) for k, v in stages.items()},
        "loaded_rss_mb": loaded_mb,
        "preprocess_rss_mb": _peak_rss_mb(),
        "study_mb": study.pixels.nbytes / 2**20,
    }
    if with_map:
        from stran.engine.detect import Detector

        image, prep = preprocess_study(study)
        det, _ = Detector(MODEL, mc_samples=0).forward(image[None], 0, prep.geometry)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "map.nii.gz"
            t0 = time.perf_counter()
            heat = attention_to_study(det["attention"], prep, study.phase_fractions)
            t1 = time.perf_counter()
            write_map(study, heat, path)
            t2 = time.perf_counter()
            out.update(map_grid_s=t1 - t0, map_write_s=t2 - t1, map_mb=path.stat().st_size / 2**20)
        out["map_rss_mb"] = _peak_rss_mb()
    return out


def _child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _run(args: list[str]) -> str:
    """This script in a fresh process; its stdout. (A process inherits the peak RSS of the one that started it,
    so the benchmark's own process stays small: it never imports numpy or torch.)"""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], env=_child_env(),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark step {args[:2]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def generate(folder: Path, specs: list[dict[str, Any]]) -> None:
    """Write each study as ``<name>.npy`` (pixels) + ``<name>.pkl`` (the rest): the ``--generate`` mode."""
    import numpy as np

    for spec in specs:
        study = make_study(spec["cols"], spec["rows"], spec["phases"], spec["spacing"])
        path = folder / f"{spec['name']}.npy"
        np.save(path, study.pixels)
        path.with_suffix(".pkl").write_bytes(pickle.dumps(study.replace(pixels=np.zeros(study.pixels.shape[:2] + (1, 1)))))


def run_benchmark(
    sizes: list[tuple[int, int]], phases: list[int], repeats: int, rounds: int, fixed_spacing: bool
) -> list[dict[str, Any]]:
    """Generate every study once, then measure each in its own process, round after round; returns table rows."""
    rows: list[dict[str, Any]] = []
    for n_t in phases:
        for cols, n_rows in sizes:
            spacing = BASE_SPACING if fixed_spacing else round(BASE_SPACING * BASE_COLS / cols, 4)
            rows.append({"name": f"{cols}x{n_rows}x{n_t}", "cols": cols, "rows": n_rows, "phases": n_t,
                         "spacing": spacing, "runs": []})
    with tempfile.TemporaryDirectory(prefix="stran-bench-pre-") as tmp:
        specs = [{k: r[k] for k in ("name", "cols", "rows", "phases", "spacing")} for r in rows]
        _run(["--generate", tmp, json.dumps(specs)])
        for r in range(rounds):
            for row in rows:
                args = ["--child", str(Path(tmp) / f"{row['name']}.npy"), "--repeats", str(repeats)]
                row["runs"].append(json.loads(_run(args + ([] if r == 0 else ["--no-map"])).strip().splitlines()[-1]))
    for row in rows:
        first = row["runs"][0]
        times = [t for run in row["runs"] for t in run["times_s"]]
        row.update(
            median_s=statistics.median(times),
            min_s=min(times),
            stages_s={k: statistics.median(run["stages_s"][k] for run in row["runs"]) for k in first["stages_s"]},
            study_mb=first["study_mb"],
            preprocess_rss_mb=max(run["preprocess_rss_mb"] for run in row["runs"]),
            loaded_rss_mb=max(run["loaded_rss_mb"] for run in row["runs"]),
            **{k: first[k] for k in ("map_grid_s", "map_write_s", "map_mb", "map_rss_mb")},
        )
        del row["runs"]
    return rows


def format_tables(rows: list[dict[str, Any]]) -> str:
    """Markdown: the totals with ratios and memory, then the stages."""
    base = {r["phases"]: r["median_s"] for r in rows if r["cols"] == BASE_COLS}
    out = [
        "| study (x, y, slices, phases) | spacing mm | study MB | preprocess median s | min s | x 192x168 "
        "| peak RSS MB (loaded -> preprocess) | map to grid s | map write s | map MB | peak RSS with map MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["median_s"] / base[r["phases"]] if r["phases"] in base else float("nan")
        out.append(
            f"| {r['cols']} x {r['rows']} x 10 x {r['phases']} | {r['spacing']:g} | {r['study_mb']:.0f} "
            f"| {r['median_s']:.3f} | {r['min_s']:.3f} | {ratio:.2f} "
            f"| {r['loaded_rss_mb']:.0f} -> {r['preprocess_rss_mb']:.0f} | {r['map_grid_s']:.3f} "
            f"| {r['map_write_s']:.3f} | {r['map_mb']:.2f} | {r['map_rss_mb']:.0f} |"
        )
    names = list(rows[0]["stages_s"])
    out += ["", "| study | " + " | ".join(f"{n} s" for n in names) + " |", "|---|" + "---|" * len(names)]
    for r in rows:
        cells = " | ".join(f"{r['stages_s'][n]:.3f}" for n in names)
        out.append(f"| {r['cols']} x {r['rows']} x 10 x {r['phases']} | {cells} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="192x168,288x252,384x336", help="columns x rows, comma separated")
    parser.add_argument("--phases", default="50,20")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per study per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--spacing", choices=("fov", "fixed"), default="fov",
                        help="fov: keep the 192 x 168 field of view (finer spacing); fixed: keep 1.8 mm")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-map", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate:
        generate(Path(args.generate[0]), json.loads(args.generate[1]))
        return 0
    if args.child:
        print(json.dumps(measure(args.child, args.repeats, not args.no_map)))
        return 0
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    phases = [int(v) for v in args.phases.split(",")]
    if BASE_COLS not in [c for c, _ in sizes]:
        parser.error(f"--sizes must include the {BASE_COLS}-column baseline")
    rows = run_benchmark(sizes, phases, args.repeats, args.rounds, args.spacing == "fixed")  # type: ignore[arg-type]
    print(f"preprocess_study, 10 slices, spacing {args.spacing}; {args.rounds} rounds x {args.repeats} runs per study")
    print(format_tables(rows))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
