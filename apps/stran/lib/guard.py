"""Every request passes here before any route, MONAI Label's stock ones included.

In order, a request is refused (with one JSON sentence, ``{"detail": ...}``) when:

1. it comes from a web page of another origin (an ``Origin`` header not in ``STRAN_CORS_ORIGINS``; none by default:
   Slicer and scripts send no ``Origin``), so a page open in the user's browser cannot drive the server; allowed
   origins get CORS answers, without credentials;
2. it comes from another machine while no shared token is set (``STRAN_API_TOKEN``) and remote calls are not
   allowed otherwise (``STRAN_ALLOW_REMOTE=1``, for MONAI Label's own authentication), or lacks that token when one
   is set (``Authorization: Bearer <token>``, every route);
3. it asks for a route this app does not offer (uploading or deleting model weights, MONAI Label's DICOMweb proxy
   and sessions), or for the server's log from another machine;
4. a query parameter that names a datastore entry (``image``, ``id``, ``label``, ``tag``) is not a name
   (``stran.names``): ids and tags can never be paths (``PUT /datastore/dicom`` makes any wanted id safe itself);
5. its body is larger than the route's limit (``Content-Length``, then counted while it streams in).

Inputs that a route cannot parse (a malformed ``params`` form field, bytes that are not UTF-8, JSON nested too
deep) get 422 instead of 500; any other failure gets a 500 that names no server path (the details go to the log).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from stran.io.limits import human_bytes, max_upload_bytes
from stran.names import UnsafeNameError, check_name

logger = logging.getLogger(__name__)

ENV_TOKEN = "STRAN_API_TOKEN"
ENV_ORIGINS = "STRAN_CORS_ORIGINS"
ENV_ALLOW_REMOTE = "STRAN_ALLOW_REMOTE"  # "1": other machines may call without the token (MONAI Label's own auth)
ENV_MAX_LABEL_BYTES = "STRAN_MAX_LABEL_BYTES"
DEFAULT_MAX_LABEL_BYTES = 1 << 20  # a .scar.json is a few kB
NAMED_PARAMS = {"image": "image id", "id": "id", "label": "label id", "tag": "label tag"}
BLOCKED = (("PUT", "/model/"), ("DELETE", "/model/"), (None, "/proxy/"), (None, "/session"))
BLOCKED_EXACT = {("PUT", "/datastore/"), ("DELETE", "/datastore/")}  # MONAI Label's deprecated aliases
MADE_SAFE = {"/datastore/dicom"}  # routes that turn any wanted id into a name themselves (``stran.names.safe_id``)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a body streams past its limit."""


class RequestGuard:
    """ASGI middleware: the checks in the module docstring, then the app."""

    def __init__(self, app: Callable, token: str | None = None, origins: list[str] | None = None) -> None:
        self.app = app
        self.token = token if token is not None else os.environ.get(ENV_TOKEN, "").strip() or None
        env_origins = [o.strip().rstrip("/") for o in os.environ.get(ENV_ORIGINS, "").split(",") if o.strip()]
        self.origins = set(origins if origins is not None else env_origins)
        self.allow_remote = os.environ.get(ENV_ALLOW_REMOTE, "").strip() == "1"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/") not in self.origins:
            await _answer(send, 403, f"requests from web pages of other origins ({origin[:80]}) are refused; "
                                     f"the server's operator can allow an origin with {ENV_ORIGINS}")
            return
        cors = _cors_headers(origin) if origin is not None else []
        if scope["method"] == "OPTIONS" and origin is not None:
            await _answer(send, 204, None, cors + [(b"access-control-allow-methods", b"GET, POST, PUT, DELETE, HEAD"),
                                                   (b"access-control-allow-headers", b"authorization, content-type"),
                                                   (b"access-control-max-age", b"600")])
            return
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, message = refusal
            extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
            await _answer(send, status, message, cors + extra)
            return
        limit = _body_limit(scope["path"])
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _answer(send, 413, _too_large(limit), cors)
            return
        state = {"over": False}
        await self._forward(scope, _counting(receive, limit, state), send, limit, cors, state)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        """(status, sentence) when the request must not reach the app, else None."""
        if self.token is None and not self.allow_remote and not _is_loopback(scope.get("client")):
            return 403, (f"this server answers only requests from its own machine; to open it to a network, start "
                         f"it with a shared token in {ENV_TOKEN} (docs/security.md)")
        if self.token is not None:
            given = headers.get("authorization", "")
            if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].strip().encode(), self.token.encode()):
                return 401, "this server needs its access token: send 'Authorization: Bearer <token>'"
        path, method = scope["path"], scope["method"]
        if path.startswith("/logs") and not _is_loopback(scope.get("client")):
            return 403, "the server's log (it names server paths) is only for its own machine"
        if (method, path) in BLOCKED_EXACT:
            return 403, f"{method} {path} is not offered by this app (use {path}image)"
        for blocked_method, prefix in BLOCKED:
            if path.startswith(prefix) and blocked_method in (None, method):
                return 403, f"{method} {prefix}... is not offered by this app"
        for key, value in _query(scope):
            if key in NAMED_PARAMS and value and path not in MADE_SAFE:
                try:
                    check_name(value, NAMED_PARAMS[key])
                except UnsafeNameError as exc:
                    return 400, str(exc)
        return None

    async def _forward(self, scope: Scope, receive: Receive, send: Send, limit: int, cors: list,
                       state: dict[str, bool]) -> None:
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if state["over"]:  # the framework turned the aborted body into its own 400: answer 413 instead
                if message["type"] == "http.response.start":
                    started = True
                    await _answer(send, 413, _too_large(limit), cors)
                return
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": list(message.get("headers", [])) + cors}
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _answer(send, 413, _too_large(limit), cors)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            if started:
                raise
            await _answer(send, 422, f"the request holds text the server cannot read ({_kind(exc)}); send UTF-8 "
                                     "and a JSON object in 'params'", cors)
        except Exception:
            logger.exception("request %s %s failed", scope["method"], scope["path"])
            if started:
                raise
            await _answer(send, 500, "the server failed on this request; the details are in its log", cors)


def _kind(exc: Exception) -> str:
    return {json.JSONDecodeError: "not valid JSON", UnicodeDecodeError: "bytes that are not UTF-8",
            RecursionError: "JSON nested too deeply"}.get(type(exc), type(exc).__name__)


def _query(scope: Scope) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def _is_loopback(client: tuple[str, int] | None) -> bool:
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


def _cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]


def max_label_bytes() -> int:
    """Largest reviewer label upload: $STRAN_MAX_LABEL_BYTES, else 1 MiB."""
    env = os.environ.get(ENV_MAX_LABEL_BYTES, "").strip()
    return int(float(env)) if env else DEFAULT_MAX_LABEL_BYTES


def _body_limit(path: str) -> int:
    """Bytes a request body may hold on ``path``: labels and info are small; studies up to the upload limit."""
    if path.startswith("/datastore/label") or path.endswith("/info") or path.startswith(("/train", "/activelearning")):
        return max_label_bytes()
    return max_upload_bytes() + (1 << 20)  # the multipart framing around the file


def _too_large(limit: int) -> str:
    return f"the request body is larger than this route accepts ({human_bytes(limit)}); nothing was stored"


def _counting(receive: Receive, limit: int, state: dict[str, bool]) -> Receive:
    """``receive`` that raises ``BodyTooLarge`` (and sets ``state["over"]``) once more than ``limit`` body bytes
    have come in."""
    seen = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                state["over"] = True
                raise BodyTooLarge
        return message

    return wrapped


async def _answer(send: Send, status: int, detail: str | None, headers: list | None = None) -> None:
    body = b"" if detail is None else json.dumps({"detail": detail}).encode()
    base = [(b"content-type", b"application/json")] if detail is not None else []
    await send({"type": "http.response.start", "status": status,
                "headers": base + [(b"content-length", str(len(body)).encode())] + list(headers or [])})
    await send({"type": "http.response.body", "body": body})


def install_request_guard() -> None:
    """Put ``RequestGuard`` in place of MONAI Label's CORS middleware (which allows every origin) on the running
    FastAPI application; called again after ``/reload``, it leaves one guard."""
    from fastapi.middleware import Middleware
    from monailabel.app import app as api

    api.user_middleware[:] = [Middleware(RequestGuard)]
    api.middleware_stack = api.build_middleware_stack()
    guard = RequestGuard(lambda *a: None)
    logger.info("request guard: token %s, allowed origins %s", "set" if guard.token else "not set (local requests only)",
                sorted(guard.origins) or "none")
