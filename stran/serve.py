"""``stran serve``: start the MONAI Label server for 3D Slicer users on the sample datastore (or yours)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

HELP = "Start the MONAI Label server (apps/stran) on 127.0.0.1 for the Slicer module."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--studies", default=str(REPO / "work" / "datastore"),
                        help="datastore folder (default: work/datastore, filled with the sample studies on first use)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="app option, e.g. --conf models stran,cnn3d (see apps/stran/main.py)")


def run(args: argparse.Namespace) -> int:
    studies = Path(args.studies)
    if not studies.exists():
        from stran.demo import SAMPLES, ensure_samples

        samples = ensure_samples(SAMPLES)
        studies.mkdir(parents=True)
        for f in sorted((samples / "images").iterdir()):
            (studies / f.name).write_bytes(f.read_bytes())
        print(f"new datastore {studies} with the {len(list(studies.glob('*.nii.gz')))} sample studies")
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(REPO / "apps" / "stran"),
           "--studies", str(studies), "--host", args.host, "--port", str(args.port)]
    for key, value in args.conf:
        cmd += ["--conf", key, value]
    print(f"serving on http://{args.host}:{args.port} (Ctrl+C stops)")
    env = {**os.environ, "MONAI_LABEL_TRACKING_ENABLED": os.environ.get("MONAI_LABEL_TRACKING_ENABLED", "false")}
    return subprocess.call(cmd, cwd=REPO, env=env)
