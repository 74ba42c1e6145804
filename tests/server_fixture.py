"""A real MONAI Label server (apps/stran) on a free 127.0.0.1 port, over a temporary datastore of phantom studies.

Used by the server-side integration tests and by the Slicer-side tests (which
run in the Slicer venv: this module needs only the standard library and
``requests``). The phantom studies and the server run in the server venv.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
SERVER_PYTHON = Path(os.environ.get("STRAN_SERVER_PYTHON", REPO / ".venv" / "bin" / "python"))
APP_DIR = REPO / "apps" / "stran"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_phantom_cohort(out_dir: Path, n: int, seed: int) -> Path:
    """Write ``n`` phantom studies (datastore format, labels and truth beside) with the server venv's generator."""
    subprocess.run(
        [str(SERVER_PYTHON), "-m", "sample_data", "--out", str(out_dir), "--n", str(n), "--seed", str(seed), "--quiet"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return out_dir


def make_datastore(cohort: Path, dest: Path) -> Path:
    """A MONAI Label datastore folder holding the cohort's images (and sidecars) only: no reviewer labels."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted((cohort / "images").iterdir()):
        shutil.copy2(f, dest / f.name)
    return dest


def copy_app(dest: Path) -> Path:
    """A private copy of the app (MONAI Label writes model/, logs/ and bin/ into the app folder)."""
    shutil.copytree(
        APP_DIR, dest, ignore=shutil.ignore_patterns("__pycache__", "logs", "bin", "runs", "cache", "scar*.pt", "*.train_stats.json")
    )
    return dest


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    app_dir: Path
    studies: Path
    log_path: Path
    conf: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(studies: Path, workdir: Path, *, conf: dict[str, str] | None = None, timeout: float = 180,
                 env: dict[str, str] | None = None, host: str = "127.0.0.1",
                 ready_headers: dict[str, str] | None = None) -> RunningServer:
    """Start ``python -m monailabel.main start_server`` on a free port and wait until ``/info`` answers.

    ``env``: extra environment variables for the server process (e.g. TMPDIR, STRAN_MAX_UPLOAD_BYTES); ``host``:
    the bind address (the URL is always 127.0.0.1); ``ready_headers``: sent with the readiness check (a token)."""
    conf = dict(conf or {})
    app_dir = workdir / "app"
    if not app_dir.exists():
        copy_app(app_dir)
    port = free_port()
    log_path = workdir / f"server-{port}.log"
    cmd = [str(SERVER_PYTHON), "-m", "monailabel.main", "start_server", "--app", str(app_dir), "--studies", str(studies),
           "--host", host, "--port", str(port)]
    for k, v in conf.items():
        cmd += ["--conf", k, v]
    environment = {**os.environ, "MONAI_LABEL_TRACKING_ENABLED": "false", "PYTHONUNBUFFERED": "1", **(env or {})}
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=environment)
    server = RunningServer(f"http://127.0.0.1:{port}", proc, app_dir, studies, log_path, conf)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()[-4000:]}")
        try:
            if requests.get(f"{server.url}/info/", headers=ready_headers, timeout=5).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.stop()
    raise TimeoutError(f"server did not answer /info within {timeout} s:\n{server.log()[-4000:]}")


def wait_for_training(url: str, timeout: float = 900) -> dict:
    """Poll MONAI Label's latest training task until it ends (``GET /train/`` status DONE, ERROR or STOPPED; the
    task is SUBMITTED before its process starts, so ``check_if_running`` alone races); then the app's statistics."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = requests.get(f"{url}/train/", timeout=30).json()
        if task["status"] in ("DONE", "ERROR", "STOPPED"):
            return requests.get(f"{url}/info/", timeout=30).json()["train_stats"]["scar"]
        time.sleep(1)
    raise TimeoutError(f"training did not finish within {timeout:.0f} s")


def truth_label(cohort: Path, image_id: str) -> dict:
    """The generator's ground-truth label for a study (what a reviewer with LGE would submit)."""
    return json.loads((cohort / "labels" / f"{image_id}.scar.json").read_text())


if __name__ == "__main__":  # manual use: python tests/server_fixture.py WORKDIR
    work = Path(sys.argv[1])
    cohort = make_phantom_cohort(work / "cohort", 6, 7)
    s = start_server(make_datastore(cohort, work / "datastore"), work)
    print(s.url)
