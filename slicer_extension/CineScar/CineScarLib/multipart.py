"""``multipart/form-data`` answers (MONAI Label's ``POST /infer`` with ``output=all``), split by part name
(stdlib only, byte-exact; no ``cgi``)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidResponse


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
