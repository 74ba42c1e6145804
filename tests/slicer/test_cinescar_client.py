"""CineScarLib.client (with .errors, .multipart, .cancel): plain-words errors (refused port, timeout, not MONAI Label), multipart parsing, status mapping.

The error cases that a real MONAI Label server cannot produce on demand run
against a stdlib ``http.server`` on 127.0.0.1 started here; everything else is
tested against the real server in test_cinescar_server.py.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import urllib3

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "slicer_extension" / "CineScar"))

from CineScarLib import client as C  # noqa: E402
from CineScarLib import errors as E  # noqa: E402
from CineScarLib.cancel import CancelToken, run_cancellable  # noqa: E402
from CineScarLib.jobs import Job  # noqa: E402
from CineScarLib.multipart import parse_multipart  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Handler(BaseHTTPRequestHandler):
    mode = "html"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.mode == "slow":
            time.sleep(3)
        if self.mode == "html":
            body = b"<html><body>Welcome to nginx!</body></html>"
            ctype = "text/html"
        elif self.mode == "other-json":
            body = json.dumps({"status": "ok", "service": "something else"}).encode()
            ctype = "application/json"
        elif self.mode == "404":
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"Not Found")
            return
        else:
            body, ctype = b"{}", "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def fake_server():
    servers = []

    def start(mode: str) -> str:
        handler = type("H", (Handler,), {"mode": mode})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_connection_refused_says_so() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(E.ServerUnreachable) as info:
        C.MonaiLabelClient(url).info()
    text = str(info.value)
    assert "connection refused" in text and url in text and "start the server" in text
    assert E.is_offline(info.value)


def test_unknown_host_says_so() -> None:
    with pytest.raises(E.ServerUnreachable, match="unknown|Could not connect"):
        C.MonaiLabelClient("http://no-such-host.invalid:8000", connect_timeout=2).info()


def test_read_timeout_says_so(fake_server) -> None:
    url = fake_server("slow")
    client = C.MonaiLabelClient(url, read_timeout=0.5)
    with pytest.raises(E.ServerTimeout) as info:
        client.info()
    assert "did not answer within 0.5 s" in str(info.value) and "GET /info/" in str(info.value)
    assert E.is_offline(info.value)


@pytest.mark.parametrize("mode,words", [("html", "text/html, not JSON"), ("other-json", "has no 'models'"),
                                        ("404", "does not exist (HTTP 404)")])
def test_not_a_monai_label_server(fake_server, mode: str, words: str) -> None:
    url = fake_server(mode)
    with pytest.raises(E.NotMonaiLabelServer) as info:
        C.MonaiLabelClient(url).check()
    assert "not a MONAI Label server" in str(info.value) and words in str(info.value)
    assert not E.is_offline(info.value)


def test_url_normalisation() -> None:
    assert C.normalise_url("127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert C.normalise_url(" http://0.0.0.0:8000 ") == "http://127.0.0.1:8000"  # a bind address, not a host
    assert C.normalise_url("https://scar.example.org/api/") == "https://scar.example.org/api"
    for bad in ("", "ftp://x", "http://"):
        with pytest.raises(ValueError):
            C.normalise_url(bad)


def _response(status: int, body: bytes, ctype: str = "application/json") -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body
    r.headers["Content-Type"] = ctype
    r.reason = {404: "Not Found", 422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error",
                503: "Service Unavailable", 409: "Conflict", 415: "Unsupported Media Type"}.get(status, "")
    return r


def test_status_mapping_keeps_the_servers_detail() -> None:
    err = E.status_error(_response(422, b'{"detail": "invalid label: slice_labels has 3 entries"}'), "http://h", "saving X")
    assert isinstance(err, E.RequestRejected) and err.status == 422
    assert str(err) == "The server refused saving X (HTTP 422): invalid label: slice_labels has 3 entries"
    assert isinstance(E.status_error(_response(404, b'{"detail": "no"}'), "u", "a"), E.NotFound)
    assert isinstance(E.status_error(_response(409, b'{"detail": "no"}'), "u", "a"), E.Conflict)
    assert isinstance(E.status_error(_response(429, b'{"detail": "busy"}'), "u", "a"), E.TrainingAlreadyRunning)
    five = E.status_error(_response(500, b"Internal Server Error", "text/plain"), "http://h", "running X")
    assert isinstance(five, E.ServerError) and "HTTP 500" in str(five) and "server's log" in str(five)
    assert not E.is_offline(five)
    assert E.is_offline(E.status_error(_response(503, b""), "u", "a"))
    fastapi = b'{"detail": [{"loc": ["body", "epochs"], "msg": "value is not a valid integer"}]}'
    assert "body.epochs: value is not a valid integer" in str(E.status_error(_response(422, fastapi), "u", "a"))
    html = E.status_error(_response(502, b"<html>bad gateway</html>", "text/html"), "u", "a")
    assert "<html" not in str(html)


def test_multipart_parsing_is_byte_exact() -> None:
    payload = bytes(range(256)) * 64 + b"\r\n--not-the-boundary\r\n\r\n" + b"\x1f\x8b\x08"
    result = {"study_probability": 0.73, "slice_probabilities": [0.1, None]}
    body, ctype = urllib3.encode_multipart_formdata(
        {"params": (None, json.dumps(result), "application/json"),
         "image": ("attention.nii.gz", payload, "application/octet-stream")}
    )
    parts = parse_multipart(body, ctype)
    assert json.loads(parts["params"].data) == result
    assert parts["image"].data == payload and parts["image"].filename == "attention.nii.gz"
    assert parts["params"].content_type == "application/json"
    with pytest.raises(E.InvalidResponse, match="no boundary"):
        parse_multipart(body, "multipart/form-data")
    with pytest.raises(E.InvalidResponse, match="truncated"):
        parse_multipart(body[: len(body) // 2], ctype)


def test_run_cancellable_reports_and_cancels() -> None:
    token = CancelToken()
    seen = []

    def slow():
        time.sleep(2)
        return 42

    def progress(fraction, message):
        seen.append((fraction, message))
        if len(seen) >= 2:
            token.cancel()

    start = time.monotonic()
    with pytest.raises(E.Cancelled):
        run_cancellable(slow, cancel=token, progress=progress, message="waiting", expected_s=10, tick_s=0.05)
    assert time.monotonic() - start < 1.5
    assert seen and 0 <= seen[0][0] < 0.1 and seen[0][1].startswith("waiting (")
    assert run_cancellable(lambda: 7, cancel=CancelToken(), progress=lambda f, m: None) == 7
    with pytest.raises(KeyError):
        run_cancellable(lambda: {}["x"], cancel=CancelToken())


def test_job_delivers_events_on_the_polling_thread() -> None:
    events = []
    main = threading.get_ident()

    def work(n, *, progress, cancel):
        for i in range(n):
            progress(i / n, f"step {i}")
        return n * 2

    job = Job(work, 3).start(on_progress=lambda f, m: events.append((threading.get_ident(), m)),
                             on_done=lambda v: events.append((threading.get_ident(), v)))
    assert job.wait(timeout=5) == 6
    assert [e[1] for e in events] == ["step 0", "step 1", "step 2", 6]
    assert all(e[0] == main for e in events) and job.finished and not job.running

    def fail(*, progress, cancel):
        raise E.ServerUnreachable("Could not connect: connection refused.")

    errors = []
    job = Job(fail).start(on_error=lambda e, tb: errors.append((e, tb)))
    with pytest.raises(E.ServerUnreachable):
        job.wait(timeout=5)
    assert errors and "connection refused" in str(errors[0][0]) and "Traceback" in errors[0][1]

    def waits(*, progress, cancel):
        while not cancel.wait(0.01):
            pass
        return "too late"

    cancelled = []
    job = Job(waits).start(on_cancelled=lambda: cancelled.append(True), on_done=lambda v: cancelled.append(v))
    job.cancel()
    with pytest.raises(E.Cancelled):
        job.wait(timeout=5)
    assert cancelled == [True] and job.cancelled
