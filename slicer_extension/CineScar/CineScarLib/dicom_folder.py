"""Open a DICOM folder: zip it for the server's ``PUT /datastore/dicom`` (standard library only) and read its answer.

Nothing is skipped here: every file under the folder goes into the zip, with its path relative to the folder, and
the server decides what to leave out (stray broken files) and says why. ``zip_files`` does the same for an explicit
list of files (a study in Slicer's DICOM database, see ``dicom_study``). A cine frame that cannot be read makes the
server refuse the study with a message naming the slice, the phase and the file.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

from .cancel import Progress


@dataclass
class DicomImport:
    """What the server imported: the datastore id, the stack size and the files it left out (path, reason)."""

    image_id: str
    slices: int
    phases: int
    study_uid: str = ""
    left_out: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    folder: str = ""

    @classmethod
    def from_answer(cls, answer: dict, folder: str = "") -> DicomImport:
        if not isinstance(answer, dict) or not answer.get("image"):
            raise ValueError(f"the server's answer to the DICOM import names no study: {str(answer)[:200]}")
        left_out = [(str(e.get("path", "")), str(e.get("reason", ""))) for e in answer.get("left_out") or []
                    if isinstance(e, dict)]
        return cls(str(answer["image"]), int(answer.get("slices") or 0), int(answer.get("phases") or 0),
                   str(answer.get("study_uid") or ""), left_out, [str(n) for n in answer.get("notes") or []], folder)

    def message(self, limit: int = 5) -> str:
        """One paragraph for the status line: what was imported and which files were left out, and why."""
        text = f"Imported '{self.image_id}' ({self.slices} slices x {self.phases} phases)"
        if not self.left_out:
            return text + "; no file left out."
        shown = "; ".join(f"{path} ({reason})" for path, reason in self.left_out[:limit])
        more = f"; and {len(self.left_out) - limit} more" if len(self.left_out) > limit else ""
        return f"{text}; {len(self.left_out)} file(s) left out: {shown}{more}."


def list_files(folder: str) -> list[str]:
    """Every file under ``folder`` (symbolic links followed, each real folder once), sorted."""
    found, seen = [], set()
    for base, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(base)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found.extend(os.path.join(base, n) for n in sorted(names) if os.path.isfile(os.path.join(base, n)))
    return found


def zip_folder(folder: str | os.PathLike, *, progress: Progress = None, cancel: Any = None) -> bytes:
    """A ZIP (in memory) of every file under ``folder``, named by its path relative to the folder.

    Raises ValueError when the folder does not exist, holds no file, or holds files that cannot be read here."""
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        raise ValueError(f"{folder} is not a folder: choose the folder that holds the DICOM study.")
    files = list_files(folder)
    if not files:
        raise ValueError(f"{folder} holds no files: choose the folder that holds the DICOM study.")
    return _zip([(path, os.path.relpath(path, folder)) for path in files], folder, progress, cancel)


def zip_files(files: list[str], base_name: str, *, progress: Progress = None, cancel: Any = None) -> bytes:
    """A ZIP (in memory) of the given files (e.g. every series of a study in Slicer's DICOM database), each named
    by its path relative to the folder all of them are in; a file listed twice goes in once. ``base_name`` names
    the set in messages.

    Raises ValueError when the list is empty, or files are missing or cannot be read here."""
    paths = list(dict.fromkeys(os.path.abspath(os.fspath(f)) for f in files if f))
    if not paths:
        raise ValueError(f"{base_name}: no files to send.")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"{base_name}: {len(missing)} of {len(paths)} file(s) are not on this computer: "
                         f"{_shown(missing)}. Nothing was sent.")
    try:
        root = os.path.commonpath([os.path.dirname(p) for p in paths])
        named = [(p, os.path.relpath(p, root)) for p in paths]
    except ValueError:  # e.g. files on different Windows drives: no common folder
        named = [(p, f"{index:05d}/{os.path.basename(p)}") for index, p in enumerate(paths)]
    return _zip(named, base_name, progress, cancel)


def _zip(named: list[tuple[str, str]], where: str, progress: Progress, cancel: Any) -> bytes:
    """The ZIP of ``(path, name in the zip)`` pairs; every unreadable file is listed in one ValueError."""
    buffer, unreadable = io.BytesIO(), []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for index, (path, name) in enumerate(named):
            if cancel is not None:
                cancel.raise_if_cancelled()
            if progress and index % 50 == 0:
                progress(0.3 * index / len(named), f"packing {len(named)} files of {os.path.basename(where) or where}")
            name = name.replace(os.sep, "/")
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                unreadable.append(f"{name} ({exc.strerror or exc})")
                continue
            archive.writestr(zipfile.ZipInfo.from_file(path, name, strict_timestamps=False), data, zipfile.ZIP_DEFLATED, 1)
    if unreadable:
        raise ValueError(f"Cannot read {len(unreadable)} file(s) in {where}: {_shown(unreadable)}. Fix their "
                         "permissions or move them out of the folder; nothing was sent.")
    return buffer.getvalue()


def _shown(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")
