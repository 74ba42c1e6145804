"""A MONAI Label client for the ST-RAN Scar app, with ``requests`` only (no ``cgi``, no Slicer).

Every failure is a :class:`~.errors.MonaiLabelError` subclass whose message says in plain words what failed,
where, and what to try (the table is in :mod:`.errors`); long calls take ``progress`` and ``cancel``
(:mod:`.cancel`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from .cancel import CancelToken, Progress, run_cancellable
from .errors import (
    TOKEN_ENV,
    Cancelled,
    InvalidResponse,
    ModelNotAvailable,
    NotFound,
    NotMonaiLabelServer,
    ServerTimeout,
    ServerUnreachable,
    connection_message,
    root_reason,
    status_error,
)
from .multipart import parse_multipart

DEFAULT_MODEL = "scar"


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

    def download_image(self, image_id: str, *, progress: Progress = None,
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
                            params: dict | None = None, progress: Progress = None,
                            cancel: CancelToken | None = None) -> dict:
        """``PUT /datastore/dicom``: every file under ``folder`` zipped (paths relative to it); the server leaves
        stray broken files out, stores the study and answers ``{image, slices, phases, study_uid, left_out, notes}``."""
        from .dicom_folder import zip_folder

        name = os.path.basename(os.path.normpath(folder)) or "study"
        data = zip_folder(folder, progress=progress, cancel=cancel)
        return self.upload_dicom_zip(data, name, f"the DICOM folder '{name}'", image_id=image_id, overwrite=overwrite,
                                     params=params, progress=progress, cancel=cancel)

    def upload_dicom_files(self, files: list[str], name: str, *, image_id: str | None = None, overwrite: bool = False,
                           params: dict | None = None, progress: Progress = None,
                           cancel: CancelToken | None = None) -> dict:
        """``PUT /datastore/dicom`` with the given files (e.g. every series of a study in Slicer's DICOM database),
        named relative to their common folder; ``name`` names the upload. Answers as ``upload_dicom_folder``."""
        from .dicom_folder import zip_files

        data = zip_files(files, name, progress=progress, cancel=cancel)
        return self.upload_dicom_zip(data, name, f"the DICOM study '{name}'", image_id=image_id, overwrite=overwrite,
                                     params=params, progress=progress, cancel=cancel)

    def upload_dicom_zip(self, data: bytes, name: str, what: str, *, image_id: str | None = None,
                         overwrite: bool = False, params: dict | None = None,
                         progress: Progress = None, cancel: CancelToken | None = None) -> dict:
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
        progress: Progress = None,
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

    def next_sample(self, strategy: str = "random", params: dict | None = None, *,
                    progress: Progress = None, cancel: CancelToken | None = None) -> dict | None:
        """``POST /activelearning/<strategy>``; None when nothing is left.

        ``random`` (the default: the best strategy in docs/active-learning.md) answers at once; the app's
        ``most_uncertain`` first scores every unreviewed study the current model has not
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
                f"Could not talk to {self.url} while {action}: TLS/SSL error ({root_reason(exc)}).",
                url=self.url, action=action,
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise ServerUnreachable(connection_message(self.url, action, exc), url=self.url, action=action) from None
        except requests.exceptions.RequestException as exc:
            raise ServerUnreachable(f"Request to {self.url} failed while {action}: {exc}", url=self.url,
                                    action=action) from None
        if response.status_code >= 400:
            raise status_error(response, self.url, action)
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

    def _read_body(self, response: requests.Response, action: str, progress: Progress,
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
            raise ServerUnreachable(f"The connection to {self.url} broke while {action} ({root_reason(exc)}).",
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

