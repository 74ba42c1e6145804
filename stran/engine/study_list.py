"""The studies of a ``stran detect`` run: cohort folders, study ids, and resume (which results are already done,
which temporary files a killed run left)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stran.io.load import is_dicom_file
from stran.io.nifti import NIFTI_SUFFIXES, sidecar_path, study_id_of

#: What ``stran detect`` writes per study, besides ``<id>.json`` (never a study in a cohort folder).
OUTPUT_SUFFIXES = (".attention.nii.gz", ".report.png", ".report.pdf")


@dataclass(frozen=True)
class Job:
    """One study to detect: a local ``path`` (loadable in a worker) or a ``load`` callable (main process only:
    a PACS fetch)."""

    image_id: str
    path: Path | None = None
    load: Callable[[], Any] | None = None


def _is_nifti(name: str) -> bool:
    return name.endswith(NIFTI_SUFFIXES) and not name.endswith(OUTPUT_SUFFIXES) and not name.startswith(".")


def _first_dicom(folder: Path, limit: int = 64) -> Path | None:
    """The first DICOM file under ``folder`` (sorted walk; gives up after ``limit`` files that are not DICOM)."""
    seen = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if is_dicom_file(path):
                return path
            seen += 1
            if seen >= limit:
                return None
    return None


def _study_uid(path: Path) -> str:
    import pydicom

    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
                   .get("StudyInstanceUID", ""))
    except Exception:  # noqa: BLE001 - an unreadable header only means "no study UID known"
        return ""


def cohort_members(folder: Path) -> list[Path] | None:
    """The studies in a cohort folder, or None when ``folder`` is one study (a DICOM folder, as before).

    A cohort folder holds NIfTI studies (``.nii``/``.nii.gz``, with or without their ``.cine.json`` sidecars) and/or
    DICOM study sub-folders, and no DICOM file of its own. Without NIfTI files it counts as a cohort only when its
    sub-folders hold at least two different Study Instance UIDs (a study whose series sit in sub-folders is one
    study). Our own outputs (``*.attention.nii.gz``) and hidden files are not studies."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return None
    files = [e for e in entries if e.is_file()]
    nifti = [f for f in files if _is_nifti(f.name)]
    if any(is_dicom_file(f) for f in files if not f.name.endswith((".nii", ".nii.gz", ".json"))):
        return None
    dicom_dirs: list[Path] = []
    uids: set[str] = set()
    for sub in (e for e in entries if e.is_dir() and not e.name.startswith(".")):
        first = _first_dicom(sub)
        if first is None:
            continue
        dicom_dirs.append(sub)
        if len(uids) < 2:
            uids.add(_study_uid(first))
    if nifti:
        return nifti + dicom_dirs
    if len(uids) >= 2:
        return dicom_dirs
    return None


def find_studies(sources: Sequence[str], say: Callable[[str], object]) -> tuple[list[Job], int]:
    """A ``Job`` per study named by ``sources`` (files, DICOM study folders, cohort folders), in the order given
    (a cohort folder's studies sorted by name); a source that does not exist or a second study with the same id
    is reported through ``say`` and counted."""
    jobs: list[Job] = []
    seen: dict[str, Path] = {}
    skipped = 0
    for source in sources:
        path = Path(source)
        if not path.exists():
            say(f"stran detect: skipped {source}: no such file or folder (give a DICOM folder, a DICOM file or a "
                f".nii/.nii.gz study)")
            skipped += 1
            continue
        members = cohort_members(path) if path.is_dir() else None
        for member in members or [path]:
            image_id = study_id_of(member)
            if image_id in seen and seen[image_id].resolve() != member.resolve():
                say(f"stran detect: skipped {member}: another study, {seen[image_id]}, has the same id {image_id} "
                    f"(their results would overwrite each other: rename one)")
                skipped += 1
                continue
            if image_id not in seen:
                seen[image_id] = member
                jobs.append(Job(image_id, member))
    return jobs, skipped


def _changed_since(source: Path | None, when: float) -> bool:
    """Whether the study file (and its sidecar) or folder was modified after ``when`` (a timestamp)."""
    if source is None:
        return False
    paths = [source]
    if source.name.endswith(NIFTI_SUFFIXES):
        paths.append(sidecar_path(source))
    try:
        return any(p.stat().st_mtime > when for p in paths if p.exists())
    except OSError:
        return True


def finished_result(out: Path, image_id: str, sha256: str, needs: Sequence[str],
                    source: Path | None = None) -> dict[str, Any] | None:
    """The result already in ``out`` for ``image_id`` when it is complete: ``<id>.json`` parses, was made by the
    model with this ``sha256``, the files ``needs`` (suffixes) lie beside it, and the study ``source`` (file or
    folder) has not been modified since. The JSON is written last."""
    path = out / f"{image_id}.json"
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        if _changed_since(source, path.stat().st_mtime):
            return None
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or (result.get("model") or {}).get("sha256") != sha256:
        return None
    if any(not (out / f"{image_id}{suffix}").exists() for suffix in needs):
        return None
    return result


def remove_stale_temporaries(out: Path, jobs: Sequence[Job]) -> int:
    """Delete the temporary files (``.<name>.XXXXXXXX.tmp``, stran.atomic) a killed run left for these studies'
    outputs: only this process's studies (another torchrun rank may be writing its own now)."""
    names = {f"{job.image_id}{suffix}" for job in jobs for suffix in (".json", *OUTPUT_SUFFIXES)}
    removed = 0
    for entry in os.scandir(out):
        name = entry.name
        if name.startswith(".") and name.endswith(".tmp") and name[1:].rsplit(".", 2)[0] in names:
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed
