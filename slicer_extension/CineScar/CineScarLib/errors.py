"""Every exception CineScarLib raises on purpose, and how an HTTP failure becomes one (stdlib only).

The server's failures, raised by :mod:`.client`, are :class:`MonaiLabelError` subclasses whose message says in
plain words what failed, where, and what to try:

==========================  ==========================================================
``ServerUnreachable``       nothing answers at the address (connection refused, unknown host)
``ServerTimeout``           the server did not answer in time
``NotMonaiLabelServer``     something answered, but not a MONAI Label server (no /info JSON)
``ModelNotAvailable``       a MONAI Label server without the scar model (or without weights)
``RequestRejected``         HTTP 4xx, with the server's ``detail`` message
                            (``NotFound`` 404, ``Conflict`` 409, ``TrainingAlreadyRunning`` 429)
``ServerError``             HTTP 5xx
``InvalidResponse``         a 2xx answer this client cannot read
``Cancelled``               the user cancelled (not an error of the server; see :mod:`.cancel`)
==========================  ==========================================================

``ServerUnreachable``, ``ServerTimeout`` and 502/503/504 answers are "offline"
errors (:func:`is_offline`): the workflow keeps corrections for later instead
of failing. The workflow's own refusals (:mod:`.session`, :mod:`.corrections`,
:mod:`.training`) are :class:`WorkflowError` subclasses.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

TOKEN_ENV = "STRAN_API_TOKEN"  # the server's shared access token, when it has one (docs/security.md)


# ----------------------------------------------------------------------------- the server's failures

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


# ----------------------------------------------------------------------------- the workflow's refusals


class WorkflowError(Exception):
    """A step of the workflow cannot be done; the message says why and what to do."""


class CorrectionNotSaved(WorkflowError):
    """The server is unreachable and there is no results database to keep the correction."""


class DatabaseUnavailable(WorkflowError):
    """The results database is not configured or cannot be opened (e.g. SQLAlchemy missing)."""


# ----------------------------------------------------------------------------- HTTP failures in plain words


def status_error(response: Any, url: str, action: str) -> HTTPStatusError:
    """The error for an HTTP error answer (a ``requests.Response``), with the server's own words."""
    status = response.status_code
    detail = response_detail(response)
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


def response_detail(response: Any) -> str:
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


def root_reason(exc: BaseException) -> str:
    """The innermost cause's text (what the operating system or TLS said)."""
    seen = exc
    while seen.__cause__ or seen.__context__:
        seen = seen.__cause__ or seen.__context__
    return str(seen) or type(seen).__name__


def connection_message(url: str, action: str, exc: BaseException) -> str:
    """Why a connection failed, in plain words: refused, unknown host, closed by the other side, else the cause."""
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
    return f"Could not connect to {url} while {action}: {root_reason(exc)}."
