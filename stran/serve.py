"""``stran serve``: start the MONAI Label server for 3D Slicer users on the sample datastore (or yours)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from stran.resources import APP_DIR, REPO, SAMPLES

HELP = "Start the MONAI Label server (apps/stran) on 127.0.0.1 for the Slicer module."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stran.pacs.options import add_pacs_arguments

    parser.add_argument("--studies", help="datastore folder (default: work/datastore, filled with the sample studies "
                        "on first use; with --dicomweb: work/pacs-datastore, the cache of the PACS's studies)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="app option, e.g. --conf models stran,cnn3d (see apps/stran/main.py)")
    add_pacs_arguments(parser, studies=False)
    parser.add_argument("--no-store", action="store_true", help="with --dicomweb: do not store results on the PACS")


def ensure_samples(samples: Path = SAMPLES) -> Path:
    """The sample studies, (re)generated when missing or made by another generator version."""
    from stran.phantom import GENERATOR_VERSION

    manifest = samples / "manifest.json"
    if not manifest.exists() or json.loads(manifest.read_text()).get("generator_version") != GENERATOR_VERSION:
        subprocess.run([sys.executable, "-m", "sample_data", "--out", str(samples)], cwd=REPO, check=True)
    return samples


def fill_datastore(samples: Path, datastore: Path) -> list[str]:
    """Copy the sample studies (images and sidecars, no labels) into ``datastore``; returns the image ids."""
    datastore.mkdir(parents=True, exist_ok=True)
    for f in sorted((samples / "images").iterdir()):
        shutil.copy2(f, datastore / f.name)
    return sorted(p.name[: -len(".nii.gz")] for p in datastore.glob("*.nii.gz"))


def server_command(studies: Path, host: str, port: int, conf: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The MONAI Label command line serving apps/stran over ``studies``, and its environment (no usage tracking)."""
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR), "--studies", str(studies),
           "--host", host, "--port", str(port)]
    for key, value in conf.items():
        cmd += ["--conf", key, value]
    env = {**os.environ, "MONAI_LABEL_TRACKING_ENABLED": os.environ.get("MONAI_LABEL_TRACKING_ENABLED", "false")}
    return cmd, env


def studies_folder(args: argparse.Namespace) -> Path:
    """``--studies``, else the default: work/datastore, or work/pacs-datastore (the PACS cache) with --dicomweb."""
    if args.studies:
        return Path(args.studies)
    return REPO / "work" / ("pacs-datastore" if args.dicomweb else "datastore")


def run(args: argparse.Namespace) -> int:
    conf = dict(args.conf)
    env_extra: dict[str, str] = {}
    if args.dicomweb:
        from stran.pacs.client import PacsClient, split_url
        from stran.pacs.options import pacs_client

        client: PacsClient = pacs_client(args)  # type: ignore[assignment]
        conf["dicomweb"], _ = split_url(args.dicomweb)
        conf["dicomweb_store"] = "false" if args.no_store else conf.get("dicomweb_store", "true")
        creds = client.credentials  # to the server by its environment: MONAI Label logs its --conf values
        env_extra = {k: v for k, v in (("STRAN_PACS_USER", creds.user), ("STRAN_PACS_PASSWORD", creds.password),
                                       ("STRAN_PACS_TOKEN", creds.token)) if v}
        studies = studies_folder(args)
        studies.mkdir(parents=True, exist_ok=True)
        print(f"studies from the PACS {client.url}, cached in {studies}")
    else:
        studies = studies_folder(args)
        if not studies.exists():
            ids = fill_datastore(ensure_samples(), studies)
            print(f"new datastore {studies} with the {len(ids)} sample studies")
    cmd, env = server_command(studies, args.host, args.port, conf)
    env.update(env_extra)
    print(f"serving on http://{args.host}:{args.port} (Ctrl+C stops)")
    server = subprocess.Popen(cmd, cwd=REPO, env=env)
    # Ctrl+C reaches both processes; a SIGTERM or SIGHUP sent to this one alone is passed on, so that stopping
    # `stran serve` (a service manager, `kill`) never leaves the server running without it.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: server.send_signal(signum))
    return server.wait()
