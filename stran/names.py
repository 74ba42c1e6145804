"""Names that become file names in a datastore (image ids, label tags): names, never paths.

One rule, used by ``stran import``, the server's request guard and its datastore alike: a name starts with a
letter or digit, holds only letters, digits and ``_ . -``, and is at most 128 characters long. So it has no
separator, cannot be ``.`` or ``..`` and cannot be absolute, and ``folder / name`` stays inside ``folder``;
``inside`` checks that for any path after resolving links.
"""

from __future__ import annotations

import re
from pathlib import Path

NAME_RULE = "a letter or digit, then up to 127 letters, digits, '_', '.' or '-'"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class UnsafeNameError(ValueError):
    """A name that could reach outside its folder, or could not be a file name."""


def check_name(value: object, what: str) -> str:
    """``value`` when it is a valid name; raises ``UnsafeNameError`` naming ``what`` (e.g. "image id") otherwise."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        shown = repr(value)[:60] + ("..." if len(repr(value)) > 60 else "")
        raise UnsafeNameError(f"{what} {shown} is not a valid name: use {NAME_RULE}")
    return value


def safe_id(name: str) -> str:
    """A valid name made from any text: other characters become ``_`` (``stran import``'s study ids)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")[:128]
    return cleaned or "study"


def inside(root: str | Path, path: str | Path) -> bool:
    """Whether ``path``, with links and ``..`` resolved, lies in the folder ``root`` (or is it)."""
    base = Path(root).resolve()
    target = Path(path).resolve()
    return target == base or base in target.parents
