"""A zipped DICOM study into the datastore, safely: what the server's ``PUT /datastore/dicom`` runs (no web framework).

``import_zip_study(zip_path, datastore_dir)`` checks the archive's directory before anything is written (member
names that are absolute or contain ``..``, symbolic links, more than ``STRAN_MAX_UPLOAD_FILES`` members, more than
``STRAN_MAX_UPLOAD_BYTES`` uncompressed), extracts it into a temporary folder (the limits enforced again while
extracting, in case the directory lies), loads it with ``load_study`` (stray broken files left out, a broken cine
frame raises ``MissingPhaseError``) and writes it with ``write_datastore_study``. The temporary folder is deleted in
every outcome. Paths in the result, the sidecar and error messages are relative to the archive's root, as the user
zipped them, never the server's temporary folder.
"""

from __future__ import annotations

import copy
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from stran.io.errors import CineLoadError
from stran.io.limits import (
    ENV_MAX_UPLOAD_BYTES,
    ENV_MAX_UPLOAD_FILES,
    human_bytes,
    max_upload_bytes,
    max_upload_files,
)
from stran.io.study import CineStudy, LeftOutFile
from stran.names import safe_id

CHUNK = 1 << 20


class ZipImportError(Exception):
    """The archive cannot be imported; nothing was written to the datastore."""


class NotAZipError(ZipImportError):
    """The upload is not a ZIP archive."""


class CorruptZipError(ZipImportError):
    """A ZIP archive whose content cannot be read (truncated, CRC mismatch, encrypted, unknown compression)."""


class UnsafeArchiveError(ZipImportError):
    """A member would land outside the extraction folder (absolute name, ``..``) or is a symbolic link."""


class ArchiveTooLargeError(ZipImportError):
    """More members or more uncompressed bytes than the configured limits."""


class StudyExistsError(ZipImportError):
    """The datastore already holds a study with that id (and overwriting was not asked for)."""


@dataclass
class ZipImport:
    """What was imported: the datastore id and the study (its paths relative to the archive's root)."""

    image_id: str
    study: CineStudy
    nifti: Path

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image_id,
            "slices": self.study.n_slices,
            "phases": self.study.n_phases,
            "study_uid": self.study.study_uid,
            "left_out": [{"path": e.path, "reason": e.reason} for e in self.study.left_out],
            "notes": list(self.study.notes),
        }


def _unsafe_reason(name: str) -> str | None:
    """Why a member name may not be extracted, or None when it is a plain relative path."""
    if "\x00" in name:
        return "its name contains a NUL byte"
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        return "its name is an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "its name contains '..'"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _is_dir(info: zipfile.ZipInfo) -> bool:
    return info.is_dir() or stat.S_ISDIR(info.external_attr >> 16)


def check_members(archive: zipfile.ZipFile, *, max_bytes: int | None = None,
                  max_files: int | None = None) -> list[zipfile.ZipInfo]:
    """The file members to extract, after checking every member's name and type and the totals (from the directory)."""
    limit_bytes, limit_files = max_upload_bytes(max_bytes), max_upload_files(max_files)
    members = archive.infolist()
    problems = []
    for info in members:
        reason = _unsafe_reason(info.filename) or ("it is a symbolic link" if _is_symlink(info) else None)
        if reason:
            problems.append(f"'{info.filename}' ({reason})")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise UnsafeArchiveError(f"the archive has members that may not be extracted: {shown}. Zip the study folder "
                                 "itself (paths relative to it, no links)")
    files = [info for info in members if not _is_dir(info)]
    if len(files) > limit_files:
        raise ArchiveTooLargeError(f"the archive has {len(files)} files; the limit is {limit_files} "
                                   f"(set {ENV_MAX_UPLOAD_FILES} on the server to change it)")
    total = sum(info.file_size for info in files)
    if total > limit_bytes:
        raise ArchiveTooLargeError(f"the archive holds {human_bytes(total)} uncompressed; the limit is "
                                   f"{human_bytes(limit_bytes)} (set {ENV_MAX_UPLOAD_BYTES} on the server to change it)")
    return files


def safe_extract(zip_path: str | Path, dest: str | Path, *, max_bytes: int | None = None,
                 max_files: int | None = None) -> list[str]:
    """Extract the file members of ``zip_path`` under ``dest`` (created); returns their names.

    Everything is checked from the archive's directory first (nothing is written if a check fails), and the byte
    limit is enforced again while extracting. On failure ``dest`` may hold partial files: extract into a temporary
    folder and delete it."""
    limit_bytes = max_upload_bytes(max_bytes)
    root = Path(dest)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise NotAZipError(f"the upload is not a readable ZIP archive ({exc}); send the study folder as a .zip") from None
    with archive:
        files = check_members(archive, max_bytes=limit_bytes, max_files=max_files)
        root.mkdir(parents=True, exist_ok=True)
        written = 0
        names = []
        for info in files:
            target = root.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
            if not target.resolve().is_relative_to(root.resolve()):  # belt and braces: _unsafe_reason covers this
                raise UnsafeArchiveError(f"'{info.filename}' would be written outside the extraction folder")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "xb") as out:
                    while chunk := src.read(CHUNK):
                        written += len(chunk)
                        if written > limit_bytes:
                            raise ArchiveTooLargeError(
                                f"the archive holds more than {human_bytes(limit_bytes)} uncompressed (its directory "
                                f"said less); set {ENV_MAX_UPLOAD_BYTES} on the server to change the limit")
                        out.write(chunk)
            except ZipImportError:
                raise
            except FileExistsError:
                raise CorruptZipError(f"the archive holds '{info.filename}' twice") from None
            except (IsADirectoryError, NotADirectoryError, FileNotFoundError):
                raise CorruptZipError(f"'{info.filename}' clashes with a folder or file of the same name in the "
                                      "archive") from None
            except OSError as exc:
                raise CorruptZipError(f"cannot extract '{info.filename}' from the archive: {exc.strerror or exc}") from None
            except (zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
                raise CorruptZipError(f"cannot extract '{info.filename}' from the archive: {exc}") from None
            names.append(info.filename)
    return names


def _top_folder(names: list[str]) -> str:
    """The single folder every member is in (a zipped study folder), else ''."""
    tops = {PurePosixPath(n.replace("\\", "/")).parts[0] for n in names if "/" in n.replace("\\", "/")}
    flat = any("/" not in n.replace("\\", "/") for n in names)
    return next(iter(tops)) if len(tops) == 1 and not flat else ""


def _strip(text: str, roots: list[str], zip_name: str) -> str:
    for root in roots:
        text = text.replace(root + os.sep, "").replace(root, zip_name)
    return text


def _relocated_error(exc: CineLoadError, roots: list[str], zip_name: str) -> CineLoadError:
    """The same error with the temporary folder stripped from its message and file lists."""
    new = copy.copy(exc)
    new.args = (_strip(str(exc), roots, zip_name),)
    new.files = [_strip(f, roots, zip_name) for f in exc.files]
    if hasattr(exc, "missing"):
        new.missing = [(s, t, _strip(f, roots, zip_name)) for s, t, f in exc.missing]
    return new


def _relocated_study(study: CineStudy, roots: list[str], zip_name: str) -> CineStudy:
    return study.replace(
        source=f"upload:{zip_name}",
        left_out=[LeftOutFile(_strip(e.path, roots, zip_name), _strip(e.reason, roots, zip_name)) for e in study.left_out],
        notes=[_strip(n, roots, zip_name) for n in study.notes],
    )


def import_zip_study(
    zip_path: str | Path,
    datastore_dir: str | Path,
    *,
    image_id: str | None = None,
    overwrite: bool = False,
    zip_name: str | None = None,
    before_write: Callable[[str], None] | None = None,
    work_dir: str | Path | None = None,
    max_bytes: int | None = None,
    max_files: int | None = None,
) -> ZipImport:
    """Import the DICOM study in ``zip_path`` into ``datastore_dir`` as ``<id>.nii.gz`` + ``<id>.cine.json``.

    ``image_id`` (made safe with ``safe_id``) defaults to the study's PatientID, else the archive's top folder,
    else the archive's name. An existing study of that id raises ``StudyExistsError`` unless ``overwrite``.
    ``before_write(id)`` may refuse (raise) just before writing. Raises ``ZipImportError`` subclasses for the
    archive, the loader's ``CineLoadError`` (paths relative to the archive) for the study; in every failure
    nothing is left in the datastore or in ``work_dir``."""
    from stran.io.load import load_study
    from stran.io.nifti import sidecar_path, write_datastore_study

    zip_name = os.path.basename(zip_name or str(zip_path)) or "upload.zip"
    datastore = Path(datastore_dir)
    with tempfile.TemporaryDirectory(prefix="stran-dicom-", dir=work_dir) as tmp:
        root = Path(tmp) / "study"
        names = safe_extract(zip_path, root, max_bytes=max_bytes, max_files=max_files)
        roots = list(dict.fromkeys([str(root), os.path.realpath(root), str(root.resolve())]))
        roots.sort(key=len, reverse=True)
        if not names:
            raise ZipImportError("the archive holds no files")
        try:
            study = load_study(root.resolve())
        except CineLoadError as exc:
            raise _relocated_error(exc, roots, zip_name) from None
        study = _relocated_study(study, roots, zip_name)
    stem = zip_name[: -len(".zip")] if zip_name.lower().endswith(".zip") else zip_name
    wanted = image_id or study.patient_id or _top_folder(names) or stem
    image_id = safe_id(wanted)
    nifti = datastore / f"{image_id}.nii.gz"
    existing = [p for p in (nifti, datastore / f"{image_id}.nii") if p.exists()]
    if existing and not overwrite:
        raise StudyExistsError(f"the datastore already holds a study '{image_id}'; choose another id (image=...) "
                               "or ask to overwrite it (overwrite=true)")
    if before_write is not None:
        before_write(image_id)
    datastore.mkdir(parents=True, exist_ok=True)
    side = sidecar_path(nifti)
    new = {p: not p.exists() for p in (nifti, side)}
    try:
        write_datastore_study(study, datastore, image_id)
    except BaseException:
        for path, was_new in new.items():  # the NIfTI is written before the sidecar: take a lone new file back
            if was_new and path.exists():
                path.unlink()
        raise
    return ZipImport(image_id, study, nifti)


def copy_limited(src: Any, dest: str | Path, limit: int) -> int:
    """Copy a binary stream to ``dest``, refusing (``ArchiveTooLargeError``) more than ``limit`` bytes."""
    size = 0
    with open(dest, "wb") as out:
        while chunk := src.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise ArchiveTooLargeError(f"the upload is larger than {human_bytes(limit)}; set "
                                           f"{ENV_MAX_UPLOAD_BYTES} on the server to change the limit")
            out.write(chunk)
    return size


__all__ = [
    "ArchiveTooLargeError",
    "CorruptZipError",
    "NotAZipError",
    "StudyExistsError",
    "UnsafeArchiveError",
    "ZipImport",
    "ZipImportError",
    "check_members",
    "copy_limited",
    "import_zip_study",
    "safe_extract",
]
