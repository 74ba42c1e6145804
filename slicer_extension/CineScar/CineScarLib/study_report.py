"""The one-click study report of the module: the same page as ``stran detect --report`` (PNG and PDF).

The page is drawn by ``CineScarLib.report``, which is the project's ``stran/report/render.py`` (one source for
the command line and the module, loaded or copied as ``CineScarLib.aha`` is: see ``CineScarLib/__init__.py``).
It needs matplotlib, which Slicer does not bundle: :func:`matplotlib_available` says whether it can be imported,
and the logic offers to install it on first use (:mod:`.packages`, ``INSTALL_QUESTION``), as for SQLAlchemy.

Inputs are what a detection brings to the module: the result JSON, the cine and the map as ``Volume4D``
(``array[t, k, j, i]``); the page wants ``(S, T, H, W)``. Both files are drawn before either is written, and
each is written to a temporary file in the target folder and renamed over the old one, so a reader sees the old
report or the whole new one, never half a file.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import packages
from .volume import Volume4D

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MATPLOTLIB_REQUIREMENT = "matplotlib>=3.7"
INSTALL_QUESTION = ("The study report needs the Python package matplotlib, which is not installed in Slicer's "
                    f"Python. Install it now ({MATPLOTLIB_REQUIREMENT}, about 30 MB from PyPI)?")


class ReportError(ValueError):
    """The report cannot be written (nothing was): the message says why and what to do."""


def matplotlib_available() -> bool:
    return packages.available("matplotlib")


def report_stem(result: Mapping[str, Any], image_id: str = "") -> str:
    """``<id>.report``: the image id (else the study UID, else the detection id) made safe as a file name."""
    study = result.get("study") or {}
    name = image_id or str(result.get("image_id") or study.get("study_uid") or result.get("detection_id") or "study")
    return (UNSAFE.sub("_", name).strip("._") or "study") + ".report"


def page_arrays(cine: Volume4D | None, scar_map: Volume4D | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The cine and the map as the page wants them, ``(S, T, H, W)``; the map is left out (the page then shows
    the key frames without it) when it is not on the cine's grid."""
    pixels = None if cine is None else np.ascontiguousarray(cine.array.transpose(1, 0, 2, 3))
    map_ = None if scar_map is None else np.ascontiguousarray(scar_map.array.transpose(1, 0, 2, 3))
    if pixels is not None and map_ is not None and map_.shape != pixels.shape:
        map_ = None
    return pixels, map_


def write_study_report(result: Mapping[str, Any], cine: Volume4D | None, scar_map: Volume4D | None,
                       folder: str | Path, *, image_id: str = "") -> list[Path]:
    """Write ``<id>.report.png`` and ``<id>.report.pdf`` into ``folder`` (which must exist); returns both paths."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"The report folder {folder} does not exist: choose an existing folder.")
    if not isinstance(result.get("study_probability"), (int, float)):
        raise ReportError("There is no detection to report: click Detect first.")
    if not matplotlib_available():
        raise ReportError("The report needs matplotlib, which is not installed in this Python: install it "
                          "(in Slicer: slicer.util.pip_install('matplotlib')) and try again.")
    from . import report

    pixels, map_ = page_arrays(cine, scar_map)
    try:
        png, pdf = report.report_bytes(result, pixels, map_)
    except ValueError as exc:
        raise ReportError(f"The report cannot be drawn: {exc}") from None
    stem = report_stem(result, image_id)
    paths = [folder / f"{stem}.png", folder / f"{stem}.pdf"]
    for path, data in zip(paths, (png, pdf), strict=True):
        _write_atomically(path, data)
    return paths


def _write_atomically(path: Path, data: bytes) -> None:
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
