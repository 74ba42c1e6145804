"""A MONAI Label client for the ST-RAN Scar app, with ``requests`` only (no ``cgi``, no Slicer).

Every failure is a :class:`MonaiLabelError` subclass whose message says in plain
words what failed, where, and what to try:

==========================  ==========================================================
``ServerUnreachable``       nothing answers at the address (connection refused, unknown host)
``ServerTimeout``           the server did not answer in time
``NotMonaiLabelServer``     something answered, but not a MONAI Label server (no /info JSON)
``ModelNotAvailable``       a MONAI Label server without the scar model (or without weights)
``RequestRejected``         HTTP 4xx, with the server's ``detail`` message
                            (``NotFound`` 404, ``Conflict`` 409, ``TrainingAlreadyRunning`` 429)
``ServerError``             HTTP 5xx
``InvalidResponse``         a 2xx answer this client cannot read
``Cancelled``               the user cancelled (not an error of the server)
==========================  ==========================================================

``ServerUnreachable``, ``ServerTimeout`` and 502/503/504 answers are "offline"
errors (:func:`is_offline`): the workflow keeps corrections for later instead
of failing.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests

DEFAULT_MODEL = "scar"
TOKEN_ENV = "STRAN_API_TOKEN"  # the server's shared access token, when it has one (docs/security.md)
ProgressCallback = Callable[[float | None, str], None]


# ----------------------------------------------------------------------------- errors


class MonaiLabelError(Exception):
    """Base class; ``str(error)`` is a complete sentence for the user."""

    def __init__(self, message: str, *, url: str = "", action: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.action = action


class ServerUnreachable(MonaiLabelError):
    """No server answers at the address."""


class ServerTimeout(MonaiLabelError):
    """The server did not answer in time."""


class NotMonaiLabelServer(MonaiLabelError):
    """Something answered, but it is not a MONAI Label server."""


class ModelNotAvailable(MonaiLabelError):
    """A MONAI Label server, but without the requested model."""


class InvalidResponse(MonaiLabelError):
    """A successful answer that cannot be read (bad JSON, bad multipart)."""


class HTTPStatusError(MonaiLabelError):
    """An HTTP error status; ``status`` and the server's ``detail`` text are kept."""

    def __init__(self, message: str, *, status: int, detail: str, url: str = "", action: str = "") -> None:
        super().__init__(message, url=url, action=action)
        self.status = status
        self.detail = detail


class RequestRejected(HTTPStatusError):
    """HTTP 4xx: the server refused the request; ``detail`` says why."""


class NotFound(RequestRejected):
    """HTTP 404."""


class Conflict(RequestRejected):
    """HTTP 409 (e.g. a model without trained weights)."""


class TrainingAlreadyRunning(RequestRejected):
    """HTTP 429 on POST /train: a training task is already running."""


class ServerError(HTTPStatusError):
    """HTTP 5xx: the server failed while handling the request."""


class Cancelled(Exception):
    """The user cancelled the operation."""


def is_offline(error: BaseException) -> bool:
    """True for failures that mean "the server is not there right now" (keep work for later)."""
    if isinstance(error, (ServerUnreachable, ServerTimeout)):
        return True
    return isinstance(error, ServerError) and error.status in (502, 503, 504)


# ----------------------------------------------------------------------------- cancellation


class CancelToken:
    """A thread-safe cancel flag shared by the GUI (sets it) and a worker (checks it)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if cancelled meanwhile."""
        return self._event.wait(seconds)


def run_cancellable(
    fn: Callable[[], Any],
    *,
    cancel: CancelToken | None = None,
    progress: ProgressCallback | None = None,
    message: str = "waiting for the server",
    expected_s: float | None = None,
    tick_s: float = 0.25,
) -> Any:
    """Run a blocking call in a helper thread; report elapsed time and stop waiting on cancel.

    A cancelled HTTP request cannot be withdrawn from the server: it runs to its
    end there and its answer is dropped here.
    """
    if cancel is None and progress is None:
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="cinescar-request", daemon=True)
    start = time.monotonic()
    thread.start()
    while thread.is_alive():
        thread.join(tick_s)
        if cancel is not None and cancel.cancelled:
            raise Cancelled(f"cancelled while {message}")
        if progress is not None and thread.is_alive():
            elapsed = time.monotonic() - start
            fraction = min(0.95, elapsed / expected_s) if expected_s else None
            progress(fraction, f"{message} ({elapsed:.0f} s)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


# ----------------------------------------------------------------------------- multipart


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> dict[str, Part]:
    """Split a ``multipart/form-data`` body into its parts, by name (stdlib only, byte-exact)."""
    boundary = _header_param(content_type, "boundary")
    if not boundary:
        raise InvalidResponse(f"the multipart answer has no boundary (Content-Type: {content_type})")
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise InvalidResponse("the multipart answer does not contain its boundary")
    parts: dict[str, Part] = {}
    pos = start + len(delimiter)
    while True:
        if body[pos : pos + 2] == b"--":
            break  # closing delimiter
        if body[pos : pos + 2] == b"\r\n":
            pos += 2
        end = body.find(b"\r\n" + delimiter, pos)
        if end < 0:
            raise InvalidResponse("the multipart answer is truncated (no closing boundary)")
        chunk = body[pos:end]
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise InvalidResponse("a part of the multipart answer has no header block")
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = _header_param(disposition, "name") or f"part{len(parts)}"
        parts[name] = Part(name, _header_param(disposition, "filename"), headers.get("content-type", ""), data)
        pos = end + 2 + len(delimiter)
    return parts


def _header_param(header: str, key: str) -> str | None:
    for item in header.split(";")[1:]:
        k, sep, v = item.strip().partition("=")
        if sep and k.strip().lower() == key:
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] == '"':
                v = v[1:-1]
            return v
    return None


# ----------------------------------------------------------------------------- client


@dataclass
class InferResponse:
    """What ``POST /infer`` returned: the result JSON and, if any, the attention image bytes."""

    result: dict
    image: bytes | None = None
    image_name: str | None = None
    elapsed_s: float = 0.0


class MonaiLabelClient:
    """Talks to one MONAI Label server. Thread-safe for one call at a time per thread."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        infer_timeout: float = 900.0,
        transfer_timeout: float = 120.0,
        client_id: str | None = None,
        session: requests.Session | None = None,
        token: str | None = None,
    ) -> None:
        """``token``: the server's shared access token (docs/security.md); None reads ``$STRAN_API_TOKEN``."""
        self.url = normalise_url(url)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.infer_timeout = infer_timeout
        self.transfer_timeout = transfer_timeout
        self.client_id = client_id or f"cinescar-{uuid.uuid4().hex[:8]}"
        self._session = session or requests.Session()
        self._session.headers.setdefault("User-Agent", "CineScar-Slicer/1.0")
        token = token if token is not None else os.environ.get(TOKEN_ENV, "").strip()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self._session.close()

    # ---------------------------------------------------------------- info

    def info(self) -> dict:
        """``GET /info/``; raises NotMonaiLabelServer if the answer is not MONAI Label's."""
        action = "asking the server what it offers (GET /info/)"
        try:
            response = self._request("GET", "/info/", action=action)
        except NotFound as exc:
            raise NotMonaiLabelServer(
                f"{self.url} answered, but it is not a MONAI Label server: /info/ does not exist (HTTP 404). "
                "Check the address and the port.",
                url=self.url,
                action=action,
            ) from exc
        try:
            info = response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "unknown content") or "unknown content"
            raise NotMonaiLabelServer(
                f"{self.url} answered, but it is not a MONAI Label server: /info/ returned {kind}, not JSON. "
                "Check the address and the port.",
                url=self.url,
                action=action,
            ) from None
        if not isinstance(info, dict) or not isinstance(info.get("models"), dict):
            raise NotMonaiLabelServer(
                f"{self.url} answered, but it is not a MONAI Label server: its /info/ JSON has no 'models'. "
                "Check the address and the port.",
                url=self.url,
                action=action,
            )
        return info

    def check(self, model: str = DEFAULT_MODEL) -> dict:
        """``info()`` plus a check that ``model`` is served; returns the info."""
        info = self.info()
        if model not in info["models"]:
            offered = ", ".join(sorted(info["models"])) or "none"
            raise ModelNotAvailable(
                f"The MONAI Label server at {self.url} ({info.get('name', 'unnamed app')}) has no '{model}' model "
                f"(models offered: {offered}). Start the ST-RAN Scar app (--app apps/stran); if it is running, "
                "the model has no trained weights yet.",
                url=self.url,
                action="checking the server",
            )
        return info

    # ---------------------------------------------------------------- datastore

    def datastore(self) -> dict:
        """``GET /datastore/?output=all``."""
        return self._json(self._request("GET", "/datastore/", params={"output": "all"}, action="listing the studies"),
                          "listing the studies")

    def download_image(self, image_id: str, *, progress: ProgressCallback | None = None,
                       cancel: CancelToken | None = None) -> bytes:
        """``GET /datastore/image?image=<id>``: the study file (4D NIfTI) as bytes."""
        action = f"downloading study '{image_id}'"
        response = self._request("GET", "/datastore/image", params={"image": image_id}, action=action,
                                 stream=True, read_timeout=self.transfer_timeout)
        return self._read_body(response, action, progress, cancel)

    def upload_image(self, image_id: str, data: bytes, *, filename: str | None = None,
                     params: dict | None = None) -> dict:
        """``PUT /datastore/image?image=<id>`` with the study file as multipart ``file``."""
        action = f"uploading study '{image_id}'"
        files = {"file": (filename or f"{image_id}.nii.gz", data, "application/gzip")}
        form = {"params": json.dumps(params or {})}
        response = self._request("PUT", "/datastore/image", params={"image": image_id}, files=files, data=form,
                                 action=action, read_timeout=self.transfer_timeout)
        return self._json(response, action, allow_empty=True)

    def upload_dicom_folder(self, folder: str, *, image_id: str | None = None, overwrite: bool = False,
                            params: dict | None = None, progress: ProgressCallback | None = None,
                            cancel: CancelToken | None = None) -> dict:
        """``PUT /datastore/dicom``: every file under ``folder`` zipped (paths relative to it); the server leaves
        stray broken files out, stores the study and answers ``{image, slices, phases, study_uid, left_out, notes}``."""
        from .dicom_folder import zip_folder

        name = os.path.basename(os.path.normpath(folder)) or "study"
        data = zip_folder(folder, progress=progress, cancel=cancel)
        return self.upload_dicom_zip(data, name, f"the DICOM folder '{name}'", image_id=image_id, overwrite=overwrite,
                                     params=params, progress=progress, cancel=cancel)

    def upload_dicom_files(self, files: list[str], name: str, *, image_id: str | None = None, overwrite: bool = False,
                           params: dict | None = None, progress: ProgressCallback | None = None,
                           cancel: CancelToken | None = None) -> dict:
        """``PUT /datastore/dicom`` with the given files (e.g. every series of a study in Slicer's DICOM database),
        named relative to their common folder; ``name`` names the upload. Answers as ``upload_dicom_folder``."""
        from .dicom_folder import zip_files

        data = zip_files(files, name, progress=progress, cancel=cancel)
        return self.upload_dicom_zip(data, name, f"the DICOM study '{name}'", image_id=image_id, overwrite=overwrite,
                                     params=params, progress=progress, cancel=cancel)

    def upload_dicom_zip(self, data: bytes, name: str, what: str, *, image_id: str | None = None,
                         overwrite: bool = False, params: dict | None = None,
                         progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> dict:
        """``PUT /datastore/dicom`` with a ZIP of DICOM files (``name``.zip; ``what`` it is, for messages)."""
        action = f"importing {what}"
        query: dict[str, Any] = {"overwrite": "true"} if overwrite else {}
        if image_id:
            query["image"] = image_id
        files = {"file": (f"{name}.zip", data, "application/zip")}

        def call() -> requests.Response:
            return self._request("PUT", "/datastore/dicom", params=query, files=files,
                                 data={"params": json.dumps(params or {})}, action=action,
                                 read_timeout=max(self.transfer_timeout, self.infer_timeout))

        response = run_cancellable(call, cancel=cancel, progress=progress,
                                   message=f"the server is importing '{name}' ({len(data) / 2**20:.1f} MiB zipped)")
        if cancel is not None:
            cancel.raise_if_cancelled()
        return self._json(response, action)

    def save_label(self, image_id: str, label: dict, *, tag: str = "final", params: dict | None = None) -> dict:
        """``PUT /datastore/label?image=<id>&tag=<tag>`` with ``<id>.scar.json``."""
        action = f"saving the label of study '{image_id}'"
        body = json.dumps(label, sort_keys=True).encode("utf-8")
        files = {"label": (f"{image_id}.scar.json", body, "application/json")}
        form = {"params": json.dumps(params or {})}
        response = self._request("PUT", "/datastore/label", params={"image": image_id, "tag": tag}, files=files,
                                 data=form, action=action)
        return self._json(response, action, allow_empty=True)

    # ---------------------------------------------------------------- inference

    def infer(
        self,
        model: str = DEFAULT_MODEL,
        *,
        image_id: str | None = None,
        file: bytes | None = None,
        filename: str = "study.nii.gz",
        params: dict | None = None,
        output: str = "all",
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        expected_s: float | None = None,
    ) -> InferResponse:
        """``POST /infer/<model>``: by datastore id, or on an uploaded 4-D NIfTI (``file``)."""
        if (image_id is None) == (file is None):
            raise ValueError("give either image_id or file")
        what = f"study '{image_id}'" if image_id is not None else "the uploaded study"
        action = f"running {model} detection on {what}"
        query = {"output": output}
        if image_id is not None:
            query["image"] = image_id
        form = {"params": json.dumps(params or {})}
        files = {"file": (filename, file, "application/gzip")} if file is not None else None
        start = time.monotonic()

        def call() -> requests.Response:
            return self._request("POST", f"/infer/{quote(model, safe='')}", params=query, data=form, files=files,
                                 action=action, read_timeout=self.infer_timeout)

        response = run_cancellable(call, cancel=cancel, progress=progress, message=f"detecting scar on {what}",
                                   expected_s=expected_s)
        if cancel is not None:
            cancel.raise_if_cancelled()
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("multipart/"):
            parts = parse_multipart(response.content, content_type)
            if "params" not in parts:
                raise InvalidResponse(f"the answer to {action} has no 'params' part", url=self.url, action=action)
            try:
                result = json.loads(parts["params"].data.decode("utf-8"))
            except ValueError as exc:
                raise InvalidResponse(f"the result JSON of {action} is not valid JSON ({exc})", url=self.url,
                                      action=action) from None
            image = parts.get("image")
            return InferResponse(result, image.data if image else None, image.filename if image else None,
                                 time.monotonic() - start)
        if content_type.startswith("application/json"):
            return InferResponse(self._json(response, action), None, None, time.monotonic() - start)
        if output == "image":
            return InferResponse({}, response.content, None, time.monotonic() - start)
        raise InvalidResponse(f"unexpected answer to {action}: Content-Type '{content_type}'", url=self.url,
                              action=action)

    # ---------------------------------------------------------------- active learning, training

    def next_sample(self, strategy: str = "most_uncertain", params: dict | None = None, *,
                    progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> dict | None:
        """``POST /activelearning/<strategy>``; None when nothing is left.

        The app's ``most_uncertain`` first scores every unreviewed study the current model has not
        scored yet (MC dropout), which can take minutes: the inference timeout applies."""
        action = f"asking for the next study ({strategy})"
        body = {"client_id": self.client_id, **(params or {})}

        def call() -> requests.Response:
            return self._request("POST", f"/activelearning/{quote(strategy, safe='')}", json=body, action=action,
                                 read_timeout=self.infer_timeout)

        response = run_cancellable(call, cancel=cancel, progress=progress,
                                   message="the server is ranking the unreviewed studies")
        result = self._json(response, action, allow_empty=True)
        return result if result and result.get("id") else None

    def train_start(self, model: str = DEFAULT_MODEL, options: dict | None = None) -> dict:
        """``POST /train/<model>`` with the options as JSON body."""
        action = f"starting the training of '{model}'"
        response = self._request("POST", f"/train/{quote(model, safe='')}", json=options or {}, action=action)
        return self._json(response, action, allow_empty=True)

    def train_status(self) -> dict | None:
        """``GET /train/``: the last training task, or None when there never was one."""
        try:
            response = self._request("GET", "/train/", action="reading the training status")
        except NotFound:
            return None
        return self._json(response, "reading the training status", allow_empty=True) or None

    def train_running(self) -> bool:
        """``GET /train/?check_if_running=true``: 200 while a task runs, 404 when none."""
        try:
            self._request("GET", "/train/", params={"check_if_running": "true"}, action="checking the training")
        except NotFound:
            return False
        return True

    def train_stop(self) -> dict:
        """``DELETE /train/``."""
        return self._json(self._request("DELETE", "/train/", action="stopping the training"), "stopping the training",
                          allow_empty=True)

    # ---------------------------------------------------------------- plumbing

    def _request(self, method: str, path: str, *, action: str, read_timeout: float | None = None,
                 **kwargs: Any) -> requests.Response:
        url = self.url + path
        timeout = (self.connect_timeout, read_timeout if read_timeout is not None else self.read_timeout)
        try:
            response = self._session.request(method, url, timeout=timeout, **kwargs)
        except requests.exceptions.ConnectTimeout:
            raise ServerTimeout(
                f"Could not connect to {self.url} within {self.connect_timeout:g} s while {action}: the host does not "
                "answer (wrong address, a firewall, or the machine is off).",
                url=self.url,
                action=action,
            ) from None
        except requests.exceptions.ReadTimeout:
            raise ServerTimeout(
                f"The server at {self.url} did not answer within {timeout[1]:g} s while {action}. It may be busy "
                "(one inference or training blocks it) or stuck; see its log.",
                url=self.url,
                action=action,
            ) from None
        except requests.exceptions.SSLError as exc:
            raise ServerUnreachable(
                f"Could not talk to {self.url} while {action}: TLS/SSL error ({_root_reason(exc)}).",
                url=self.url, action=action,
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise ServerUnreachable(_connection_message(self.url, action, exc), url=self.url, action=action) from None
        except requests.exceptions.RequestException as exc:
            raise ServerUnreachable(f"Request to {self.url} failed while {action}: {exc}", url=self.url,
                                    action=action) from None
        if response.status_code >= 400:
            raise _status_error(response, self.url, action)
        return response

    def _json(self, response: requests.Response, action: str, *, allow_empty: bool = False) -> Any:
        if allow_empty and not response.content.strip():
            return {}
        try:
            return response.json()
        except ValueError:
            raise InvalidResponse(
                f"The server at {self.url} answered {action} with something that is not JSON "
                f"({response.headers.get('Content-Type', 'no content type')}).",
                url=self.url,
                action=action,
            ) from None

    def _read_body(self, response: requests.Response, action: str, progress: ProgressCallback | None,
                   cancel: CancelToken | None) -> bytes:
        total = int(response.headers.get("Content-Length") or 0)
        chunks: list[bytes] = []
        received = 0
        try:
            for chunk in response.iter_content(chunk_size=1 << 18):
                if cancel is not None and cancel.cancelled:
                    raise Cancelled(f"cancelled while {action}")
                chunks.append(chunk)
                received += len(chunk)
                if progress is not None:
                    fraction = received / total if total else None
                    progress(fraction, f"{action}: {received / 2**20:.1f} MiB")
        except requests.exceptions.RequestException as exc:
            raise ServerUnreachable(f"The connection to {self.url} broke while {action} ({_root_reason(exc)}).",
                                    url=self.url, action=action) from None
        finally:
            response.close()
        if total and received != total:
            raise InvalidResponse(f"{action}: got {received} of {total} bytes", url=self.url, action=action)
        return b"".join(chunks)


def normalise_url(url: str) -> str:
    """``host:8000`` -> ``http://host:8000``; no trailing slash; 0.0.0.0 (a bind address) -> 127.0.0.1."""
    text = (url or "").strip()
    if not text:
        raise ValueError("the server address is empty; e.g. http://127.0.0.1:8000")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) address: {url!r}; e.g. http://127.0.0.1:8000")
    if parts.hostname == "0.0.0.0":
        text = text.replace("0.0.0.0", "127.0.0.1", 1)
    return text.rstrip("/")


def _status_error(response: requests.Response, url: str, action: str) -> HTTPStatusError:
    status = response.status_code
    detail = _detail(response)
    if status >= 500:
        hint = "The server may be starting or stopping; try again." if status in (502, 503, 504) else \
            "See the server's log (the terminal running it, or GET /logs/)."
        return ServerError(f"The server at {url} failed while {action} (HTTP {status}): {detail}. {hint}",
                           status=status, detail=detail, url=url, action=action)
    if status == 401:
        detail += f" (set {TOKEN_ENV} to the server's token before starting Slicer, or ask its operator for it)"
    cls = {404: NotFound, 409: Conflict, 429: TrainingAlreadyRunning}.get(status, RequestRejected)
    return cls(f"The server refused {action} (HTTP {status}): {detail}", status=status, detail=detail, url=url,
               action=action)


def _detail(response: requests.Response) -> str:
    """The server's own words: FastAPI's ``{"detail": ...}``, else a short text body, else the reason."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):  # FastAPI validation errors
            detail = "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg', d)}" if isinstance(d, dict) else str(d)
                for d in detail
            )
        return str(detail)
    text = response.text.strip() if response.content else ""
    if text and len(text) <= 300 and "<html" not in text.lower():
        return text
    return response.reason or "no details"


def _root_reason(exc: BaseException) -> str:
    seen = exc
    while seen.__cause__ or seen.__context__:
        seen = seen.__cause__ or seen.__context__
    return str(seen) or type(seen).__name__


def _connection_message(url: str, action: str, exc: BaseException) -> str:
    text = str(exc)
    chain = []
    node: BaseException | None = exc
    while node is not None:
        chain.append(node)
        node = node.__cause__ or node.__context__
    refused = any(isinstance(e, ConnectionRefusedError) for e in chain) or "Connection refused" in text
    if refused:
        return (f"Could not connect to {url} while {action}: connection refused. Nothing listens on that port: "
                "start the server (python -m monailabel.main start_server --app apps/stran --studies <folder>) "
                "or fix the address and port.")
    if any(s in text for s in ("Name or service not known", "nodename nor servname", "getaddrinfo failed",
                               "Temporary failure in name resolution", "No address associated")):
        host = urlsplit(url).hostname
        return f"Could not connect to {url} while {action}: the host name '{host}' is unknown. Check the address."
    if any(s in text for s in ("Connection reset", "Connection aborted", "RemoteDisconnected")):
        return (f"The connection to {url} was closed by the other side while {action}. The server may have "
                "stopped or crashed; see its log.")
    return f"Could not connect to {url} while {action}: {_root_reason(exc)}."
