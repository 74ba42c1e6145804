"""The MONAI Label server over a real PACS (Orthanc with basic auth): ``--conf dicomweb URL``.

The datastore fills with the PACS's cine studies (keyed by Study Instance UID), a study sent to the PACS later is
fetched when asked for by its UID, each detection is stored back as an SR and a SEG, and the password is in no
answer and no log line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import requests

from stran.io import write_dicom
from stran.pacs.client import Credentials, PacsClient
from stran.pacs.report import read_detection_sr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import server_fixture as sf  # noqa: E402

PASSWORD = "s3cret-pacs-pw"
pytestmark = pytest.mark.slow


def infer(url: str, image: str) -> requests.Response:
    return requests.post(f"{url}/infer/scar", params={"image": image, "output": "json"},
                         data={"params": json.dumps({"mc_samples": 2})}, timeout=300)


def test_server_serves_pacs_studies_and_stores_results_back(orthanc_auth, tmp_path) -> None:
    from stran.phantom import generate_study, sample_config

    orthanc_auth.delete_all()
    first = generate_study(sample_config(4243, scenario="A")).cine
    later = generate_study(sample_config(4244, scenario="B")).cine
    orthanc_auth.upload([str(f) for f in write_dicom(first, tmp_path / "a", "series-per-slice")])
    server = sf.start_server(tmp_path / "cache", tmp_path, conf={"dicomweb": orthanc_auth.dicomweb_url},
                             env={"STRAN_PACS_USER": "reader", "STRAN_PACS_PASSWORD": PASSWORD})
    try:
        deadline = time.monotonic() + 120
        objects: dict = {}
        while time.monotonic() < deadline and first.study_uid not in objects:
            objects = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
            time.sleep(0.5)
        assert first.study_uid in objects, server.log()[-3000:]
        assert objects[first.study_uid]["image"]["info"]["pacs_url"] == orthanc_auth.dicomweb_url

        answer = infer(server.url, first.study_uid)
        assert answer.status_code == 200, answer.text
        result = answer.json()
        record = result["pacs"]
        assert "error" not in record and record["study_uid"] == first.study_uid
        client = PacsClient(orthanc_auth.dicomweb_url, Credentials("reader", PASSWORD))
        sr = read_detection_sr(client.instance(first.study_uid, record["sr_series_uid"], record["sr_sop_uid"]))
        assert sr["study_probability"] == pytest.approx(result["study_probability"], abs=1e-9)

        # Sent to the PACS after the server listed it: fetched when asked for by its UID.
        orthanc_auth.upload([str(f) for f in write_dicom(later, tmp_path / "b", "enhanced")])
        answer = infer(server.url, later.study_uid)
        assert answer.status_code == 200, answer.text
        assert answer.json()["study"]["study_uid"] == later.study_uid and "error" not in answer.json()["pacs"]
        assert infer(server.url, "1.2.3.4.5.6").status_code == 404  # on neither
        assert PASSWORD not in server.log()
    finally:
        server.stop()
    assert PASSWORD not in server.log()
    for path in (tmp_path / "cache").rglob("*"):
        assert path.is_dir() or PASSWORD.encode() not in path.read_bytes(), path


def test_stopping_stran_serve_stops_its_server(pacs, tmp_path) -> None:
    """``stran serve --dicomweb`` started by a service manager and stopped with SIGTERM leaves no server behind."""
    import os
    import signal
    import subprocess

    port = sf.free_port()
    stran = Path(sys.executable).with_name("stran")
    serve = subprocess.Popen([str(stran), "serve", "--dicomweb", pacs.dicomweb_url, "--studies", str(tmp_path / "c"),
                              "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "MONAI_LABEL_TRACKING_ENABLED": "false"})
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/info/", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            pytest.fail("stran serve did not answer")
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{port}/info/", timeout=2)
            except requests.RequestException:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the MONAI Label server still answers after stran serve was stopped")
    finally:
        if serve.poll() is None:
            serve.kill()
