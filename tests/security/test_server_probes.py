"""The server probed as an attacker and as an unlucky user would probe it (issue 12), against a real server.

Each probe of the original report is a test: paths outside the datastore, a web page of another origin, a missing
token, bad uploads and labels (4xx, never 500; no temporary file left behind; memory bounded), a server killed
during training. The server runs with its own TMPDIR so that what it leaves there can be counted.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import server_fixture as sf  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
UPLOAD_LIMIT = 40 << 20  # STRAN_MAX_UPLOAD_BYTES of the probed server


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("security")
    cohort = sf.make_phantom_cohort(work / "cohort", 5, 23)
    tmp = work / "server-tmp"
    tmp.mkdir()
    outside = work / "outside.txt"
    outside.write_text("precious")
    server = sf.start_server(sf.make_datastore(cohort, work / "datastore"), work, conf={"mc_samples": "0"},
                             env={"TMPDIR": str(tmp), "STRAN_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)})
    ids = sorted(p.name[: -len(".nii.gz")] for p in (cohort / "images").glob("*.nii.gz"))
    yield {"url": server.url, "server": server, "work": work, "tmp": tmp, "outside": outside, "ids": ids,
           "cohort": cohort}
    server.stop()


def _detail(resp: requests.Response) -> str:
    return resp.json()["detail"]


def _no_server_paths(env, resp: requests.Response) -> None:
    text = resp.text
    assert str(env["work"]) not in text and "/tmp" not in text, f"the answer names a server path: {text[:300]}"


def _nifti_gz(data: np.ndarray, *, dtype=np.float32) -> bytes:
    img = nib.Nifti1Image(data.astype(dtype), np.eye(4))
    return gzip.compress(img.to_bytes(), compresslevel=1)


def _cine(shape=(32, 32, 4, 6)) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32) * 100


# ----------------------------------------------------------------------------- nothing outside the datastore


@pytest.mark.parametrize("image", ["/etc/passwd", "../outside.txt", "/root", "/usr", "a/../../b", ".."])
def test_infer_takes_only_datastore_ids(env, image):
    t0 = time.monotonic()
    resp = requests.post(f"{env['url']}/infer/scar", params={"image": image}, data={"params": "{}"}, timeout=30)
    assert resp.status_code == 400 and "not a valid name" in _detail(resp)
    assert time.monotonic() - t0 < 5
    _no_server_paths(env, resp)


def test_params_cannot_name_a_server_file(env):
    params = json.dumps({"image": str(env["outside"])})
    resp = requests.post(f"{env['url']}/infer/scar", params={"image": env["ids"][0]}, data={"params": params}, timeout=30)
    assert resp.status_code == 422 and "unknown option" in _detail(resp)


def test_unknown_id_answers_the_same_whether_or_not_a_file_exists(env):
    a = requests.post(f"{env['url']}/infer/scar", params={"image": "nosuchstudy"}, data={"params": "{}"}, timeout=30)
    b = requests.post(f"{env['url']}/infer/scar", params={"image": "outside.txt"}, data={"params": "{}"}, timeout=30)
    assert a.status_code == b.status_code == 404


@pytest.mark.parametrize("tag", ["../../../x", "../..", "/abs", "final/../../y"])
def test_label_tags_cannot_leave_the_datastore(env, tag):
    before = {p for p in env["work"].rglob("*")}
    label = json.dumps({"study_label": 0}).encode()
    put = requests.put(f"{env['url']}/datastore/label", params={"image": env["ids"][0], "tag": tag},
                       files={"label": ("x.scar.json", label)}, timeout=30)
    delete = requests.delete(f"{env['url']}/datastore/label", params={"id": env["ids"][0], "tag": tag}, timeout=30)
    assert put.status_code == 400 and delete.status_code == 400
    assert {p for p in env["work"].rglob("*")} - before == set()
    assert env["outside"].read_text() == "precious"


def test_image_ids_cannot_leave_the_datastore(env):
    for method in ("PUT", "DELETE", "GET"):
        key = "id" if method == "DELETE" else "image"
        files = {"file": ("x.nii.gz", _nifti_gz(_cine()))} if method == "PUT" else None
        resp = requests.request(method, f"{env['url']}/datastore/image", params={key: "../outside"}, files=files,
                                timeout=30)
        assert resp.status_code == 400, (method, resp.text)
    assert env["outside"].read_text() == "precious"


def test_model_weights_cannot_be_replaced(env):
    resp = requests.put(f"{env['url']}/model/scar", files={"file": ("scar.pt", b"not a model")}, timeout=30)
    assert resp.status_code == 403


# ----------------------------------------------------------------------------- who may ask


def test_a_page_of_another_origin_is_refused(env):
    preflight = requests.options(f"{env['url']}/datastore/label", timeout=30, headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "PUT"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
    simple = requests.post(f"{env['url']}/train/scar", json={}, headers={"Origin": "http://evil.example"}, timeout=30)
    assert simple.status_code == 403
    assert requests.get(f"{env['url']}/info/", timeout=30).status_code == 200  # no Origin: Slicer, scripts


def _lan_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_token_origins_and_remote_clients(tmp_path, env):
    """A second server bound to all interfaces: without a token it answers only local clients; with one, every
    route needs it; an allowed origin gets CORS answers."""
    address = _lan_address()
    store = sf.make_datastore(env["cohort"], tmp_path / "datastore")
    open_server = sf.start_server(store, tmp_path, env={"STRAN_CORS_ORIGINS": "http://lab.example"})
    try:
        preflight = requests.options(f"{open_server.url}/datastore/label", timeout=30, headers={
            "Origin": "http://lab.example", "Access-Control-Request-Method": "PUT"})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "http://lab.example"
        assert "access-control-allow-credentials" not in preflight.headers
    finally:
        open_server.stop()
    server = sf.start_server(store, tmp_path, env={"STRAN_API_TOKEN": "s3cret-token"}, host="0.0.0.0",
                             ready_headers={"Authorization": "Bearer s3cret-token"})
    try:
        assert requests.get(f"{server.url}/info/", timeout=30).status_code == 401
        wrong = requests.get(f"{server.url}/info/", headers={"Authorization": "Bearer nope"}, timeout=30)
        assert wrong.status_code == 401
        right = requests.get(f"{server.url}/info/", headers={"Authorization": "Bearer s3cret-token"}, timeout=30)
        assert right.status_code == 200
        assert requests.get(f"{server.url}/datastore/", timeout=30).status_code == 401
    finally:
        server.stop()
    if address is None:
        pytest.skip("no non-loopback address to probe remote clients from")
    local_only = sf.start_server(store, tmp_path, host="0.0.0.0")
    try:
        port = local_only.url.rsplit(":", 1)[1]
        remote = requests.get(f"http://{address}:{port}/info/", timeout=30)
        assert remote.status_code == 403 and "STRAN_API_TOKEN" in _detail(remote)
    finally:
        local_only.stop()


# ----------------------------------------------------------------------------- bad uploads and labels


def _tmp_files(env) -> set[Path]:
    return set(env["tmp"].rglob("*"))


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _bomb() -> bytes:
    """A 32 x 32 x 4 x 6 float32 header followed by ~400 MB of zeros, gzip: under 0.5 MB on the wire."""
    head = nib.Nifti1Image(np.zeros((32, 32, 4, 6), np.float32), np.eye(4)).to_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as gz:
        gz.write(head)
        zeros = bytes(1 << 22)
        for _ in range(100):
            gz.write(zeros)
    return buf.getvalue()


def _header_bomb() -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 100, 100))
    header.set_data_dtype(np.float32)
    return gzip.compress(header.binaryblock + b"\0\0\0\0")


BAD_STUDIES = {
    "all NaN": (_nifti_gz(np.full((32, 32, 4, 6), np.nan)), 422),
    "truncated": (_nifti_gz(_cine())[:3000], 422),
    "not NIfTI": (gzip.compress(b"hello" * 1000), 422),
    "3-D": (_nifti_gz(_cine((32, 32, 4))), 422),
    "header bomb": (_header_bomb(), 413),
    "decompression bomb": (_bomb(), 422),
    "text file": (b"just text", 415),
}


@pytest.mark.parametrize("case", list(BAD_STUDIES))
def test_bad_study_uploads_get_4xx_and_leave_nothing(env, case):
    data, status = BAD_STUDIES[case]
    name = "x.txt" if case == "text file" else "x.nii.gz"
    before_tmp, before_images = _tmp_files(env), requests.get(f"{env['url']}/datastore/", timeout=30).json()
    pid = env["server"].process.pid
    rss_before = _vm_hwm_mb(pid)
    put = requests.put(f"{env['url']}/datastore/image", params={"image": "probe"}, files={"file": (name, data)},
                       timeout=120)
    assert put.status_code == status, put.text
    _no_server_paths(env, put)
    if case != "text file":
        infer = requests.post(f"{env['url']}/infer/scar", files={"file": (name, data)}, data={"params": "{}"},
                              timeout=120)
        assert 400 <= infer.status_code < 500, infer.text
        _no_server_paths(env, infer)
    assert requests.get(f"{env['url']}/datastore/", timeout=30).json() == before_images
    time.sleep(0.2)
    assert _tmp_files(env) - before_tmp == set()
    assert _vm_hwm_mb(pid) - rss_before < 300, "memory grew by more than 300 MB on a refused upload"


def test_an_upload_over_the_limit_is_refused_while_it_streams(env):
    def body():  # a real multipart upload, sent in chunks with no Content-Length
        yield (b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.nii.gz"\r\n'
               b"Content-Type: application/octet-stream\r\n\r\n")
        chunk = bytes(1 << 20)
        for _ in range(UPLOAD_LIMIT // (1 << 20) + 8):
            yield chunk

    before = _tmp_files(env)
    resp = requests.put(f"{env['url']}/datastore/image?image=big", data=body(),
                        headers={"Content-Type": "multipart/form-data; boundary=x"}, timeout=120)
    assert resp.status_code == 413
    assert _tmp_files(env) - before == set()


LABEL_CASES = {
    "not UTF-8": (b"\xff\xfe{\"study_label\": 1}", "x.scar.json", {}, 422),
    "nested 50k deep": (b"[" * 50000 + b"]" * 50000, "x.scar.json", {}, 422),
    "malformed params": (json.dumps({"study_label": 0}).encode(), "x.scar.json", {"params": "{not json"}, 422),
    "2 MB comment": (json.dumps({"study_label": 0, "comment": "x" * (2 << 20)}).encode(), "x.scar.json", {}, 413),
    "study_label 1.0": (json.dumps({"study_label": 1.0}).encode(), "x.scar.json", {}, 422),
    "wrong extension": (json.dumps({"study_label": 0}).encode(), "x.json", {}, 415),
}


def test_labels_under_other_tags_are_refused(env):
    before = _tmp_files(env)
    resp = requests.put(f"{env['url']}/datastore/label", params={"image": env["ids"][1], "tag": "original"},
                        files={"label": ("x.nii.gz", b"anything at all")}, timeout=60)
    assert resp.status_code == 422 and "final" in _detail(resp)
    assert _tmp_files(env) - before == set()


@pytest.mark.parametrize("case", list(LABEL_CASES))
def test_bad_labels_get_4xx_and_leave_nothing(env, case):
    data, filename, form, status = LABEL_CASES[case]
    before = _tmp_files(env)
    resp = requests.put(f"{env['url']}/datastore/label", params={"image": env["ids"][1], "tag": "final"},
                        files={"label": (filename, data)}, data=form, timeout=60)
    assert resp.status_code == status, resp.text
    _no_server_paths(env, resp)
    assert "tmp" not in _detail(resp), "the answer names the server's temporary copy"
    time.sleep(0.2)
    assert _tmp_files(env) - before == set()


def test_detection_without_uncertainty_imports_into_the_results_database(env, tmp_path):
    from stran.resultsdb import ResultsDB

    resp = requests.post(f"{env['url']}/infer/scar", params={"image": env["ids"][0], "output": "json"},
                         data={"params": json.dumps({"mc_samples": 0})}, timeout=120)
    assert resp.status_code == 200, resp.text
    with ResultsDB(f"sqlite:///{tmp_path / 'r.sqlite'}") as db:
        assert db.record_detection(resp.json())


# ----------------------------------------------------------------------------- faults


def _training_processes() -> set[int]:
    """PIDs of MONAI Label training processes (and of the workers they fork, which share their command line)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"monailabel.interfaces.utils.app" in (proc / "cmdline").read_bytes():
                found.add(int(proc.name))
        except OSError:
            continue
    return found


def test_a_killed_server_leaves_no_orphan_trainer_and_one_training_at_a_time(tmp_path, env):
    before = _training_processes()
    store = sf.make_datastore(env["cohort"], tmp_path / "datastore")
    server = sf.start_server(store, tmp_path, conf={"mc_samples": "0"})
    try:
        for image_id in env["ids"]:
            label = (env["cohort"] / "labels" / f"{image_id}.scar.json").read_bytes()
            put = requests.put(f"{server.url}/datastore/label", params={"image": image_id, "tag": "final"},
                               files={"label": (f"{image_id}.scar.json", label)}, timeout=60)
            assert put.status_code == 200, put.text
        start = requests.post(f"{server.url}/train/scar", json={"epochs": 200, "val_split": 0.4}, timeout=60)
        assert start.status_code == 200, start.text
        lock = tmp_path / "app" / "model" / "scar.training.lock"
        deadline = time.monotonic() + 180
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert lock.exists(), "the training never started"
        trainer_pid = json.loads(lock.read_text())["pid"]
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        deadline = time.monotonic() + 15
        while _alive(trainer_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(trainer_pid), "the trainer outlived its server"
    finally:
        server.stop()
    again = sf.start_server(store, tmp_path, conf={"mc_samples": "0"})
    try:
        first = requests.post(f"{again.url}/train/scar", json={"epochs": 200, "val_split": 0.4}, timeout=60)
        assert first.status_code == 200, first.text  # the stale lock did not block it
        deadline = time.monotonic() + 180
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        second = requests.post(f"{again.url}/train/scar", json={"epochs": 2}, timeout=60)
        assert second.status_code == 429
        requests.delete(f"{again.url}/train/", timeout=60)
    finally:
        again.stop()
    # Neither training, nor a preprocessing worker it forked, outlives its server.
    deadline = time.monotonic() + 20
    while _training_processes() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _training_processes() - before, "a training process outlived its server"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _label_state(store: Path, image_id: str) -> tuple[dict | None, dict | None]:
    """(label file content, the index's copy of it) of a study's reviewer label, read from disk."""
    path = store / "labels" / "final" / f"{image_id}.scar.json"
    content = json.loads(path.read_text()) if path.exists() else None
    index = json.loads((store / "datastore_v2.json").read_text())
    entry = index["objects"].get(image_id, {}).get("labels", {}).get("final")
    return content, (entry or {}).get("info", {}).get("scar_label")


def test_a_server_killed_while_labels_are_written_keeps_label_and_index_in_step(tmp_path, env):
    """Labels A and B are saved in turn while the server is killed (SIGKILL) at a random moment, three times; after
    each restart the label file and the index agree and hold A or B."""
    store = sf.make_datastore(env["cohort"], tmp_path / "datastore")
    image_id = env["ids"][2]
    n_slices = nib.load(str(store / f"{image_id}.nii.gz")).shape[2]
    labels = [{"study_label": v, "slice_labels": [v] * n_slices, "source": "LGE", "reviewer": f"r{v}",
               "comment": "c" * 200_000} for v in (0, 1)]
    rng = np.random.default_rng(5)
    for _ in range(3):
        server = sf.start_server(store, tmp_path, conf={"mc_samples": "0"})
        try:
            deadline = time.monotonic() + float(rng.uniform(0.5, 2.5))
            i = 0
            while time.monotonic() < deadline:
                body = json.dumps(labels[i % 2]).encode()
                requests.put(f"{server.url}/datastore/label", params={"image": image_id, "tag": "final"},
                             files={"label": (f"{image_id}.scar.json", body)}, timeout=30)
                i += 1
            killer = threading.Timer(float(rng.uniform(0.0, 0.05)), os.kill,
                                                   (server.process.pid, signal.SIGKILL))
            killer.start()
            try:
                requests.put(f"{server.url}/datastore/label", params={"image": image_id, "tag": "final"},
                             files={"label": (f"{image_id}.scar.json", json.dumps(labels[i % 2]).encode())},
                             timeout=30)
            except requests.RequestException:
                pass
            killer.join()
            server.process.wait(timeout=30)
        finally:
            server.stop()
        again = sf.start_server(store, tmp_path, conf={"mc_samples": "0"})
        try:
            content, indexed = _label_state(store, image_id)
            assert content in (labels[0], labels[1])
            assert indexed is not None and indexed["study_label"] == content["study_label"]
            assert indexed["reviewer"] == content["reviewer"]
        finally:
            again.stop()
    # the one window a kill can leave: the new label file in place, the index not yet written
    label_file = store / "labels" / "final" / f"{image_id}.scar.json"
    content, _ = _label_state(store, image_id)
    other = labels[1] if content == labels[0] else labels[0]
    label_file.write_text(json.dumps(other))
    assert _label_state(store, image_id)[1]["reviewer"] != other["reviewer"]
    restarted = sf.start_server(store, tmp_path, conf={"mc_samples": "0"})
    try:
        content, indexed = _label_state(store, image_id)
        assert content == other and indexed["reviewer"] == other["reviewer"]
        info = requests.get(f"{restarted.url}/datastore/label/info", params={"label": image_id, "tag": "final"},
                            timeout=30).json()
        assert info["scar_label"]["reviewer"] == other["reviewer"]
    finally:
        restarted.stop()
