"""``PUT /datastore/dicom`` on a real server: one stray broken file must not sink a study (issue 10).

One server (subprocess, 127.0.0.1) over an empty datastore, with TMPDIR pointing at a folder of the test (so that
what the import leaves behind can be seen) and small upload limits (so that a "zip bomb" is cheap to make).
"""

from __future__ import annotations

import io
import json
import stat
import sys
import zipfile
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dicom_fixture as df  # noqa: E402
import server_fixture as sf  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
MAX_UPLOAD_BYTES = 4 * 1024**2
MAX_UPLOAD_FILES = 100


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("dicom-import")
    tmp = work / "tmp"
    tmp.mkdir()
    datastore = work / "datastore"
    datastore.mkdir()
    server = sf.start_server(datastore, work, env={"TMPDIR": str(tmp), "STRAN_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
                                                   "STRAN_MAX_UPLOAD_FILES": str(MAX_UPLOAD_FILES)})
    yield {"url": server.url, "server": server, "work": work, "tmp": tmp, "datastore": datastore}
    server.stop()


@pytest.fixture
def temp_watch(env):
    """The server's TMPDIR holds nothing more after the test than before it (the import cleans up in every outcome)."""
    before = set(env["tmp"].rglob("*"))
    yield
    after = set(env["tmp"].rglob("*"))
    assert after <= before, sorted(str(p) for p in after - before)


def put_zip(url: str, data: bytes, name: str = "study.zip", **query: str) -> requests.Response:
    return requests.put(f"{url}/datastore/dicom", params=query, files={"file": (name, data, "application/zip")},
                        data={"params": json.dumps({"client": "test"})}, timeout=300)


def images(url: str) -> set[str]:
    return set(requests.get(f"{url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"])


def files_in(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() and p.name not in ("datastore_v2.json", ".lock")}


def test_a_study_with_stray_files_is_imported_and_the_strays_listed(env, tmp_path, temp_watch):
    made = df.make_messy_study(tmp_path)
    resp = put_zip(env["url"], df.zip_folder(made["folder"], top="patient-1"), "patient-1.zip")
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["image"] == made["patient_id"] and answer["study_uid"] == made["study_uid"]
    assert (answer["slices"], answer["phases"]) == (made["slices"], made["phases"])
    reasons = {e["path"]: e["reason"] for e in answer["left_out"]}
    assert set(reasons) == {f"patient-1/{p}" for p in made["strays"]}
    for path, words in made["strays"].items():
        assert words in reasons[f"patient-1/{path}"]
    assert str(env["tmp"]) not in resp.text and "stran-dicom-" not in resp.text
    assert made["patient_id"] in images(env["url"])
    info = requests.get(f"{env['url']}/datastore/image/info", params={"image": made["patient_id"]}, timeout=30).json()
    assert info["source"] == "dicom" and info["left_out"] == len(made["strays"]) and info["client"] == "test"
    assert info["study_uid"] == made["study_uid"]
    sidecar = json.loads((env["datastore"] / f"{made['patient_id']}.cine.json").read_text())
    assert {e["path"] for e in sidecar["left_out"]} == set(reasons) and sidecar["source"] == "upload:patient-1.zip"
    download = requests.get(f"{env['url']}/datastore/image", params={"image": made["patient_id"]}, timeout=60)
    assert download.status_code == 200 and download.content[:2] == b"\x1f\x8b"


def test_the_same_id_again_is_refused_unless_overwrite(env, tmp_path, temp_watch):
    made = df.make_messy_study(tmp_path)
    data = df.zip_folder(made["folder"])
    resp = put_zip(env["url"], data, image="second copy")
    assert resp.status_code == 200 and resp.json()["image"] == "second_copy"  # made safe as stran import does
    before = files_in(env["datastore"]), {p: p.stat().st_mtime_ns for p in files_in(env["datastore"])}
    resp = put_zip(env["url"], data, image="second copy")
    assert resp.status_code == 409 and "overwrite=true" in resp.json()["detail"]
    assert (files_in(env["datastore"]), {p: p.stat().st_mtime_ns for p in files_in(env["datastore"])}) == before
    resp = put_zip(env["url"], data, image="second copy", overwrite="true")
    assert resp.status_code == 200 and resp.json()["image"] == "second_copy"
    assert "second_copy" in images(env["url"])


def test_a_broken_cine_frame_names_slice_phase_and_file_and_nothing_is_stored(env, tmp_path, temp_watch):
    made = df.make_messy_study(tmp_path, broken=True, patient_id="BROKEN-1")
    before_files, before_images = files_in(env["datastore"]), images(env["url"])
    resp = put_zip(env["url"], df.zip_folder(made["folder"], top="exam"), "exam.zip")
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert "slice 2 of 3" in detail and "lacks phase 3 of 4" in detail and f"exam/{made['broken']}" in detail
    assert str(env["tmp"]) not in detail and "stran-dicom-" not in detail
    assert images(env["url"]) == before_images and files_in(env["datastore"]) == before_files


def _zip(members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            archive.writestr(info, data)
    return buffer.getvalue()


def _symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


HOSTILE = {
    "dot-dot": ([("study/ok.txt", b"x"), ("../evil", b"owned")], 422, "'..'"),
    "absolute": ([(zipfile.ZipInfo("/tmp/evil"), b"owned")], 422, "absolute"),
    "symlink": ([_symlink("evil", "/etc/passwd")], 422, "symbolic link"),
    "size-bomb": ([("bomb.dcm", bytes(MAX_UPLOAD_BYTES + 1))], 413, "STRAN_MAX_UPLOAD_BYTES"),
    "too-many-files": ([(f"f{i}.dcm", b"") for i in range(MAX_UPLOAD_FILES + 1)], 413, "STRAN_MAX_UPLOAD_FILES"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_archives_are_refused_before_anything_is_written(env, kind, temp_watch):
    members, status, words = HOSTILE[kind]
    before = files_in(env["datastore"]), images(env["url"])
    resp = put_zip(env["url"], _zip(members), f"{kind}.zip")
    assert resp.status_code == status, resp.text
    assert words in resp.json()["detail"] and "nothing was stored" in resp.json()["detail"]
    assert (files_in(env["datastore"]), images(env["url"])) == before
    assert not [p for p in env["work"].rglob("evil")] and not Path("/tmp/evil").exists()


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [(b"this is not a zip", 415, "not a readable ZIP"), (b"PK\x03\x04" + bytes(40), 415, "not a readable ZIP")],
    ids=["text", "zip-header-only"],
)
def test_not_a_zip(env, data, status, words, temp_watch):
    resp = put_zip(env["url"], data, "study.zip")
    assert resp.status_code == status and words in resp.json()["detail"]


def test_a_zip_without_a_cine_gets_the_loaders_message(env, temp_watch):
    resp = put_zip(env["url"], _zip([("notes.txt", b"hello"), ("empty.dcm", b"")]), "notes.zip")
    assert resp.status_code == 422 and "nothing was stored" in resp.json()["detail"]
    assert "notes.txt" in resp.json()["detail"] or "cine" in resp.json()["detail"]
