"""Python packages the module installs into Slicer's Python on first use, after asking (SQLAlchemy for the results
database, matplotlib for the study report), as SlicerTotalSegmentator does for its own. GUI-free: Slicer is imported
only to ask (``slicer.util.confirmOkCancelDisplay``) and to install (``slicer.util.pip_install``); tests give both.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def ensure(module: str, requirement: str, question: str, *, ask: bool = True,
           confirm: Callable[[str], bool] | None = None, install: Callable[[], None] | None = None,
           check: Callable[[], bool] | None = None) -> bool:
    """True when ``module`` can be imported, installing ``requirement`` first if the user agrees to ``question``;
    False when it is missing and the user declined (or ``ask`` is False). RuntimeError when an install did not
    make it importable. ``check`` replaces the import check (tests)."""
    check = check or (lambda: available(module))
    if check():
        return True
    if not ask:
        return False
    if confirm is None:
        import slicer

        confirm = slicer.util.confirmOkCancelDisplay
    if not confirm(question):
        return False
    if install is None:
        import slicer

        slicer.util.pip_install(requirement)
    else:
        install()
    importlib.invalidate_caches()
    if not check():
        raise RuntimeError(f"{requirement} was installed but {module} cannot be imported; restart Slicer and try again.")
    return True
