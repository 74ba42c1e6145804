"""Command-line start-up benchmark: cold-start wall time of ``stran`` commands and the import time of heavy modules.

    python training/bench_cli.py [--repeats 5] [--study STUDY.nii.gz] [--model CKPT] [--reference DETECTION.json]

Every row is a fresh process (``subprocess``, ``OMP_WAIT_POLICY=PASSIVE``), timed from start to exit; the table
gives the median and minimum of ``repeats`` runs after one untimed warm-up run (the files are in the OS cache:
"cold" means a new interpreter, not a cold disk). Baselines in the same run: ``python -c pass`` and
``python -c "import torch"``. Without ``--study`` one phantom study is generated into a temporary folder.
With ``--reference`` (a ``stran detect`` JSON of the same study) the detection's probabilities are compared with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stran.resources import SHIPPED_MODEL

PYTHON = sys.executable
STRAN = str(Path(sys.executable).with_name("stran"))
MODEL = SHIPPED_MODEL
IMPORTS = [  # (row name, Python code)
    ("import stran.cli (parser modules)", "import stran.cli"),
    ("import stran.engine.detect", "import stran.engine.detect"),
    ("import stran.engine.detect (lean MONAI, as `stran detect`)",
     "from stran.cli import import_monai_lean; import_monai_lean(); import stran.engine.detect"),
    ("import monai", "import monai"),
    ("import monai (lean: without stran.cli.MONAI_EXTRAS)",
     "from stran.cli import import_monai_lean; import_monai_lean()"),
    ("import torch", "import torch"),
    ("import numpy", "import numpy"),
    ("import scipy.signal", "import scipy.signal"),
    ("import sqlalchemy", "import sqlalchemy"),
    ("import matplotlib.pyplot", "import matplotlib.pyplot"),
    ("import ignite", "import ignite"),
    ("import monailabel.interfaces.app", "import monailabel.interfaces.app"),
]
# Probabilities that must not change (MC-dropout statistics are random; everything else is deterministic).
SAME_RESULT_KEYS = ("study_probability", "slice_probabilities", "segment_probabilities", "prediction", "threshold")


def time_process(cmd: list[str], repeats: int, cwd: Path) -> list[float]:
    """Wall-clock seconds of ``repeats`` runs of ``cmd`` (after one untimed warm-up run); fails on a non-zero exit."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}")
        if i:
            times.append(elapsed)
    return times


def make_study(folder: Path) -> Path:
    """One phantom study (scenario A) as a datastore NIfTI in ``folder``."""
    from stran.io import write_datastore_study
    from stran.phantom import generate_study, sample_config

    phantom = generate_study(sample_config(900000, scenario="A"))
    return write_datastore_study(phantom.cine, folder, "BENCH-STUDY")


def run_benchmark(study: Path, repeats: int, work: Path, model: Path = MODEL) -> list[dict[str, Any]]:
    """Time the baselines, the three commands and the imports; returns the table rows. ``detect`` gets ``--model``
    explicitly, so that the same command runs on versions that looked the default model up elsewhere."""
    out = work / "detections"
    rows_spec: list[tuple[str, list[str]]] = [
        ("baseline: python -c pass", [PYTHON, "-c", "pass"]),
        ("baseline: python -c 'import torch'", [PYTHON, "-c", "import torch"]),
        ("stran --help", [STRAN, "--help"]),
        ("stran inspect STUDY", [STRAN, "inspect", str(study)]),
        ("stran detect STUDY --out TMP", [STRAN, "detect", str(study), "--model", str(model), "--out", str(out)]),
        *[(name, [PYTHON, "-c", code]) for name, code in IMPORTS],
    ]
    rows = []
    for name, cmd in rows_spec:
        try:
            times = time_process(cmd, repeats, work)
        except RuntimeError as exc:  # e.g. an optional package that is not installed
            print(f"{name}: skipped ({str(exc).splitlines()[0]})", file=sys.stderr)
            continue
        rows.append({"name": name, "median_s": statistics.median(times), "min_s": min(times), "runs": len(times)})
        print(f"{name}: median {rows[-1]['median_s']:.2f} s", file=sys.stderr, flush=True)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| what (a new process each run) | median s | min s | runs |", "|---|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['runs']} |" for r in rows]
    return "\n".join(lines)


def compare(result_path: Path, reference_path: Path) -> str:
    """One line: whether the detection's probabilities equal the reference's."""
    result, reference = (json.loads(p.read_text()) for p in (result_path, reference_path))
    differ = [k for k in SAME_RESULT_KEYS if result.get(k) != reference.get(k)]
    return f"same result as {reference_path}: " + ("yes" if not differ else f"NO ({', '.join(differ)} differ)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--study", help="a study to detect on (default: one generated phantom study)")
    parser.add_argument("--model", default=str(MODEL), help="checkpoint for detect (default: the shipped model)")
    parser.add_argument("--reference", help="a `stran detect` JSON of the same study to compare with")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stran-bench-cli-") as tmp:
        work = Path(tmp)
        study = Path(args.study).absolute() if args.study else make_study(work / "study")
        load = os.getloadavg()
        rows = run_benchmark(study, max(1, args.repeats), work, Path(args.model).absolute())
        print(f"\n{os.cpu_count()} CPU cores, load average {load[0]:.2f} at the start, "
              f"{os.getloadavg()[0]:.2f} at the end; Python {sys.version.split()[0]}\n")
        print(format_table(rows))
        result = work / "detections" / f"{study.name.removesuffix('.gz').removesuffix('.nii')}.json"
        if args.reference and result.is_file():
            print("\n" + compare(result, Path(args.reference)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
