"""A private Orthanc (Debian's package with its DICOMweb plugin) for tests, benchmarks and a user's try-out.

    with LocalOrthanc() as pacs:                      # or LocalOrthanc(users={"reader": "pw"}) for HTTP basic auth
        pacs.upload(files)                            # Orthanc instance ids
        client = PacsClient(pacs.dicomweb_url)        # http://127.0.0.1:PORT/dicom-web

Its configuration, storage and log live in a temporary folder (deleted on exit) or a given one (kept); it listens on
free ports and answers local requests only. The process is stopped on exit, when the start fails, when the object is
garbage-collected or the interpreter exits, and (Linux, PR_SET_PDEATHSIG) when the thread that started it dies.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

INSTALL_HINT = "apt-get install -y orthanc orthanc-dicomweb (make setup-pacs)"
DEBIAN_BINARY = "/usr/sbin/Orthanc"
DEBIAN_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class OrthancNotInstalledError(RuntimeError):
    """The Orthanc binary or its DICOMweb plugin is missing; the message says how to install them."""


class OrthancStartError(RuntimeError):
    """Orthanc exited or did not answer in time; the message ends with the last lines of its log."""


def find_orthanc() -> tuple[Path, Path]:
    """The Orthanc binary (``$STRAN_ORTHANC``, PATH, /usr/sbin) and DICOMweb plugin (``$STRAN_ORTHANC_PLUGIN``)."""
    binary = os.environ.get("STRAN_ORTHANC") or shutil.which("Orthanc") or DEBIAN_BINARY
    plugin = os.environ.get("STRAN_ORTHANC_PLUGIN") or DEBIAN_PLUGIN
    for what, path in (("binary", binary), ("DICOMweb plugin", plugin)):
        if not Path(path).is_file():
            raise OrthancNotInstalledError(f"Orthanc {what} not found at {path}; install it: {INSTALL_HINT}")
    return Path(binary), Path(plugin)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send SIGTERM to the child when the starting thread dies (PR_SET_PDEATHSIG)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)


def _stop(process: subprocess.Popen[bytes], folder: Path | None) -> None:
    """Terminate, wait, kill; then delete the temporary folder (None: a given folder, kept)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


class LocalOrthanc:
    """Orthanc with the DICOMweb plugin at ``/dicom-web/`` on free 127.0.0.1 ports; a context manager."""

    def __init__(self, folder: str | os.PathLike[str] | None = None, *, users: dict[str, str] | None = None,
                 name: str = "STRAN-TEST", timeout: float = 20.0) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.users = dict(users or {})
        self.name = name
        self.timeout = timeout
        self.http_port = 0
        self.dicom_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.session = requests.Session()
        self.session.auth = next(iter(self.users.items()), None)  # the first user for the fixtures' own requests
        self._finalizer: weakref.finalize | None = None

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return self.rest_url + "/dicom-web"

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of Orthanc's log (stdout and stderr)."""
        text = self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def start(self) -> LocalOrthanc:
        """Write the configuration, start Orthanc and wait until ``GET /system`` answers."""
        if self.process is not None:
            raise RuntimeError("this LocalOrthanc is already started")
        binary, plugin = find_orthanc()
        owned = self.folder is None
        folder = Path(tempfile.mkdtemp(prefix="stran-orthanc-")) if owned else self.folder
        assert folder is not None
        (folder / "db").mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port = _free_ports(2)
        config: dict[str, Any] = {
            "Name": self.name, "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users), "RegisteredUsers": self.users,
            "Plugins": [str(plugin)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        config_path = folder / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        self.log_path = folder / "orthanc.log"
        try:
            with self.log_path.open("wb") as log:
                self.process = subprocess.Popen([str(binary), str(config_path)], cwd=folder, stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent())
        except OSError as exc:
            if owned:
                shutil.rmtree(folder, ignore_errors=True)
            raise OrthancStartError(f"could not start {binary}: {exc}") from exc
        self._finalizer = weakref.finalize(self, _stop, self.process, folder if owned else None)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.timeout
        while True:
            if self.process.poll() is not None:
                raise OrthancStartError(f"Orthanc exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self.session.get(f"{self.rest_url}/system", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise OrthancStartError(f"Orthanc did not answer {self.rest_url}/system within "
                                        f"{self.timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop Orthanc (terminate, wait, kill) and delete its temporary folder; safe to call twice."""
        if self._finalizer is not None:
            self._finalizer()  # runs _stop once
        self.session.close()

    def __enter__(self) -> LocalOrthanc:
        return self.start() if self.process is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _request(self, method: str, path: str, what: str = "", **kwargs: Any) -> requests.Response:
        response = self.session.request(method, self.rest_url + path, timeout=60, **kwargs)
        if not response.ok:
            raise RuntimeError(f"Orthanc {method} {path}{what}: HTTP {response.status_code} {response.text[:300]}")
        return response

    def upload(self, paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[str]:
        """Store DICOM files (``POST /instances``); returns their Orthanc instance ids, in order."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        ids = []
        for path in paths:
            response = self._request("POST", "/instances", f" ({path})", data=Path(path).read_bytes(),
                                     headers={"Content-Type": "application/dicom"})
            ids.append(response.json()["ID"])
        return ids

    def delete_all(self) -> None:
        """Delete every study (so a test starts from an empty PACS)."""
        for study in self._request("GET", "/studies").json():
            self._request("DELETE", f"/studies/{study}")

    def count_instances(self) -> int:
        """How many DICOM instances Orthanc holds."""
        return int(self._request("GET", "/statistics").json()["CountInstances"])

    def __repr__(self) -> str:
        state = "running" if self.process is not None and self.process.poll() is None else "stopped"
        return f"LocalOrthanc({self.rest_url}, {state})"
