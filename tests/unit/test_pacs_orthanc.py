"""The test PACS itself: ``LocalOrthanc`` (a private Orthanc with DICOMweb), its fixtures and the cutting proxy.

Starts, answers, cleans up after itself (no process, no folder), also when the start fails; stores our generator's
DICOM and finds it through QIDO-RS; refuses a wrong password; and a WADO-RS retrieval through ``CuttingProxy``
really stops half way. One Orthanc per session (plus the authenticated one and one for the start/stop test).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import requests

from stran.io import write_dicom
from stran.pacs.orthanc import INSTALL_HINT, LocalOrthanc, OrthancNotInstalledError, OrthancStartError, find_orthanc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from net_faults import CuttingProxy  # noqa: E402
from pacs_fixture import AUTH_PASSWORD, AUTH_USER  # noqa: E402

WADO_ACCEPT = {"Accept": 'multipart/related; type="application/dicom"'}


def installed() -> bool:
    try:
        find_orthanc()
        return True
    except OrthancNotInstalledError:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not installed(), reason=f"Orthanc not installed: {INSTALL_HINT}")
def test_start_answers_and_stop_leaves_nothing() -> None:
    with LocalOrthanc() as server:
        pid, folder = server.process.pid, server.log_path.parent
        assert alive(pid) and (folder / "db").is_dir()
        assert requests.get(f"{server.rest_url}/system", timeout=10).json()["Name"] == "STRAN-TEST"
        assert requests.get(f"{server.dicomweb_url}/studies", timeout=10).status_code in (200, 204)
        assert server.count_instances() == 0
    assert server.process.poll() is not None and not alive(pid)
    assert not folder.exists()
    server.stop()  # twice is harmless


def test_a_start_that_fails_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRAN_ORTHANC_PLUGIN", "/bin/sh")  # any file: the fake servers below never load it
    dies = tmp_path / "dies.sh"
    dies.write_text("#!/bin/sh\necho 'E: could not bind the HTTP port' >&2\nexit 3\n")
    hangs = tmp_path / "hangs.sh"
    hangs.write_text("#!/bin/sh\necho starting\nexec sleep 60\n")
    for script in (dies, hangs):
        script.chmod(0o755)
    monkeypatch.setenv("STRAN_ORTHANC", str(dies))
    server = LocalOrthanc(timeout=5)
    with pytest.raises(OrthancStartError, match="(?s)exited with 3.*could not bind"):
        server.start()
    assert not server.log_path.parent.exists()
    monkeypatch.setenv("STRAN_ORTHANC", str(hangs))
    server = LocalOrthanc(timeout=1)
    with pytest.raises(OrthancStartError, match="(?s)did not answer.*starting"):
        server.start()
    assert server.process.poll() is not None and not alive(server.process.pid)
    assert not server.log_path.parent.exists()


@pytest.mark.parametrize("variable", ["STRAN_ORTHANC", "STRAN_ORTHANC_PLUGIN"])
def test_missing_orthanc_says_how_to_install(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "/nonexistent")
    with pytest.raises(OrthancNotInstalledError) as caught:
        LocalOrthanc().__enter__()
    assert "/nonexistent" in str(caught.value)
    assert "apt-get install -y orthanc orthanc-dicomweb (make setup-pacs)" in str(caught.value)


def test_upload_then_find_with_qido(pacs: LocalOrthanc, make_study, tmp_path: Path) -> None:
    assert pacs.count_instances() == 0  # the fixture empties the PACS
    study = make_study(n_slices=2, n_phases=3, seed=11)
    ids = pacs.upload([str(f) for f in write_dicom(study, tmp_path / "dcm", "series-per-slice")])
    assert len(ids) == len(set(ids)) == 6 and pacs.count_instances() == 6
    found = requests.get(f"{pacs.dicomweb_url}/studies", headers={"Accept": "application/dicom+json"}, timeout=10)
    found.raise_for_status()
    [entry] = found.json()
    assert entry["0020000D"]["Value"] == [study.study_uid]
    assert entry["00201208"]["Value"] == [6] and entry["00080061"]["Value"] == ["MR"]
    series = requests.get(f"{pacs.dicomweb_url}/studies/{study.study_uid}/series", timeout=10).json()
    assert len(series) == 2
    pacs.delete_all()
    assert pacs.count_instances() == 0


def test_basic_auth_refuses_a_wrong_password(orthanc_auth: LocalOrthanc) -> None:
    url = f"{orthanc_auth.dicomweb_url}/studies"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, auth=(AUTH_USER, "wrong"), timeout=10).status_code == 401
    assert requests.get(url, auth=(AUTH_USER, AUTH_PASSWORD), timeout=10).status_code in (200, 204)
    assert orthanc_auth.count_instances() >= 0  # the fixture's own requests carry the credentials


def test_cutting_proxy_stops_a_wado_retrieval_half_way(pacs: LocalOrthanc, make_study, tmp_path: Path) -> None:
    study = make_study(n_slices=3, n_phases=8, rows=64, cols=64, seed=12)
    pacs.upload([str(f) for f in write_dicom(study, tmp_path / "dcm", "series-per-slice")])
    path = f"/dicom-web/studies/{study.study_uid}"
    direct = requests.get(pacs.rest_url + path, headers=WADO_ACCEPT, timeout=30)
    direct.raise_for_status()
    assert len(direct.content) > 200_000  # 24 images of 64 x 64 x 16 bits

    with CuttingProxy("127.0.0.1", pacs.http_port) as whole:  # no cut: the proxy itself is a faithful pipe
        assert len(requests.get(whole.url_for(path), headers=WADO_ACCEPT, timeout=30).content) == len(direct.content)

    cut = 100_000
    with CuttingProxy("127.0.0.1", pacs.http_port, cut_after=cut) as proxy:
        body, error = b"", None
        try:
            with requests.get(proxy.url_for(path), headers=WADO_ACCEPT, timeout=30, stream=True) as response:
                assert response.status_code == 200
                boundary = response.headers["Content-Type"].split("boundary=")[1].strip('"').encode()
                for chunk in response.iter_content(8192):
                    body += chunk
        except requests.RequestException as exc:
            error = exc
        assert proxy.connections == 1 and proxy.cuts == 1 and proxy.bytes_to_client == cut
    assert 0 < len(body) < cut < len(direct.content)
    # Orthanc answers WADO-RS with "Connection: close" and no Content-Length: the cut is no HTTP error, only a short
    # read, which the multipart framing shows (no closing boundary) -- what a client must check.
    assert direct.content.rstrip().endswith(b"--" + direct.headers["Content-Type"].split("boundary=")[1].encode() + b"--")
    assert error is not None or not body.rstrip().endswith(b"--" + boundary + b"--"), (error, len(body))
