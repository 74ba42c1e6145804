"""A study from Slicer's DICOM database (e.g. pulled from the PACS in the DICOM browser): find it, detect on it.

``database`` is the application's ``slicer.dicomDatabase`` (a ``ctkDICOMDatabase``); only these of its methods are
used: ``isOpen``, ``instanceValue(sopInstanceUID, tag)``, ``fileValue(fileName, tag)``, ``fileForInstance``,
``seriesForFile``, ``studyForSeries``, ``seriesForStudy``, ``filesForSeries``. It is a Qt object bound to the GUI
thread: call ``study_of_volume`` and ``study_files`` there, and give ``detect_dicom_study`` the file list.

The server is asked for the study by its Study Instance UID first: a server started with ``--conf dicomweb URL``
serves the PACS's studies under that id (fetching one it has not cached yet) and stores the results back on the
PACS as a DICOM SR and SEG. Only when the server has no such study (404) are the study's files uploaded
(``PUT /datastore/dicom``, image id = the Study UID), once: the next detection finds them there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from .cancel import CancelToken, Progress
from .errors import Conflict, NotFound, WorkflowError
from .records import Detection
from .session import ScarSession

STUDY_UID_TAG = "0020,000D"
INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"  # set by Slicer's DICOM plugins: SOP Instance UIDs, space-separated
FRAME_FILES_ATTRIBUTE = "MultiVolume.FrameFileList"  # MultiVolumeImporter: the frames' files, comma-separated


class DicomStudyError(WorkflowError):
    """The node, or its study in Slicer's DICOM database, cannot be used; the message says why and what to do."""


class NotFromDicom(DicomStudyError):
    """The node was not loaded from Slicer's DICOM database."""


# ----------------------------------------------------------------------------- Slicer's DICOM database


def dicom_references(node: Any) -> tuple[list[str], list[str]]:
    """(SOP Instance UIDs, files) that Slicer's DICOM plugins recorded on ``node`` (a volume, a sequence of volumes
    (its first items are looked at too) or a multivolume); both empty for a node not loaded from DICOM."""
    nodes = [node]
    if hasattr(node, "GetNumberOfDataNodes"):  # a sequence: the plugins may have tagged its items only
        nodes += [node.GetNthDataNode(i) for i in range(min(node.GetNumberOfDataNodes(), 3))]
    uids: list[str] = []
    files: list[str] = []
    for item in nodes:
        if item is None:
            continue
        uids += [u for u in (item.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split() if u != "Unknown"]
        files += [f for f in (item.GetAttribute(FRAME_FILES_ATTRIBUTE) or "").split(",") if f.strip()]
    return list(dict.fromkeys(uids)), list(dict.fromkeys(files))


def is_from_dicom(node: Any) -> bool:
    """Whether ``node`` was loaded from DICOM (attributes only: no database look-up; cheap enough for a button)."""
    return node is not None and any(dicom_references(node))


def study_of_volume(database: Any, node: Any) -> str:
    """The Study Instance UID of a volume (or volume sequence) loaded from Slicer's DICOM database."""
    name = node.GetName() if node is not None and hasattr(node, "GetName") else "(no node)"
    uids, files = dicom_references(node) if node is not None else ([], [])
    if not uids and not files:
        raise NotFromDicom(
            f"'{name}' was not loaded from Slicer's DICOM database (it has no {INSTANCE_UIDS_ATTRIBUTE} attribute). "
            "Load the study with the DICOM browser (e.g. after retrieving it from the PACS), or use Detect scar, "
            "which uploads the cine itself.")
    _require_open(database)
    for uid in uids[:10]:
        study = database.instanceValue(uid, STUDY_UID_TAG) or _study_of_file(database, database.fileForInstance(uid))
        if study:
            return str(study).strip()
    for path in files[:10]:
        study = database.fileValue(path, STUDY_UID_TAG) or _study_of_file(database, path)
        if study:
            return str(study).strip()
    raise DicomStudyError(
        f"The DICOM instances '{name}' was loaded from are no longer in Slicer's DICOM database (removed since?). "
        "Import the study into the DICOM database again and reload it.")


def study_files(database: Any, study_uid: str, *, missing_ok: bool = False) -> list[str]:
    """Every file of every series of the study (a cine is often one series per slice), as the database lists them.

    Raises DicomStudyError when the study is not in the database or has no files; also when files are not on
    this computer (deleted, or not retrieved yet), unless ``missing_ok`` (then ``check_on_disk`` says it later)."""
    _require_open(database)
    series = list(database.seriesForStudy(study_uid) or [])
    if not series:
        raise DicomStudyError(f"Study {study_uid} is not in Slicer's DICOM database.")
    files = list(dict.fromkeys(str(f) for s in series for f in (database.filesForSeries(s) or [])))
    if not files:
        raise DicomStudyError(f"Slicer's DICOM database lists no files for study {study_uid} ({len(series)} series).")
    if not missing_ok:
        check_on_disk(files, study_uid)
    return files


def check_on_disk(files: Sequence[str], study_uid: str) -> None:
    """Raise DicomStudyError naming the files of the study that are not on this computer (an empty name: an
    instance the DICOM browser knows of but has not retrieved)."""
    missing = [f or "(not retrieved)" for f in files if not f or not os.path.isfile(f)]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DicomStudyError(
            f"{len(missing)} of {len(files)} files of study {study_uid} are not on this computer ({shown}). Retrieve "
            "the whole study in the DICOM browser (or import it again), then try again; nothing was sent.")


def _require_open(database: Any) -> None:
    is_open = getattr(database, "isOpen", None) if database is not None else False
    if callable(is_open):
        is_open = is_open()
    if database is None or is_open is False:
        raise DicomStudyError("Slicer's DICOM database is not open: open the DICOM module once (it creates or opens "
                              "the database), then try again.")


def _study_of_file(database: Any, path: str) -> str:
    return database.studyForSeries(database.seriesForFile(path)) if path else ""


# ----------------------------------------------------------------------------- detection


def detect_dicom_study(
    session: ScarSession,
    database_or_files: Any,
    study_uid: str,
    *,
    mc_samples: int | None = None,
    fetch_cine: bool = True,
    progress: Progress = None,
    cancel: CancelToken | None = None,
) -> Detection:
    """Detect on a DICOM study by its Study Instance UID; upload its files first only if the server lacks it.

    ``database_or_files``: Slicer's DICOM database (its files are looked up only when needed), the study's file
    list, or a callable returning it. The Detection's ``pacs`` says where the server stored the results on its
    PACS, ``imported`` is the upload when one was made; ``pacs_message(detection)`` is one line for the user."""
    cancel = cancel or CancelToken()
    report = _monotonic(progress)
    study_uid = (study_uid or "").strip()
    if not study_uid:
        raise DicomStudyError("No Study Instance UID: choose a volume loaded from Slicer's DICOM database.")

    def detect(start: float) -> Detection:
        return session.detect(study_uid, mc_samples=mc_samples, fetch_cine=False, cancel=cancel,
                              progress=lambda f, m: report(None if f is None else start + (0.85 - start) * f, m))

    report(0.0, f"asking the server for study {study_uid}")
    imported = None
    try:
        detection = detect(0.0)
    except NotFound:
        cancel.raise_if_cancelled()
        session.log(f"study {study_uid} is not on the server: uploading it from Slicer's DICOM database")
        files = _files(database_or_files, study_uid)
        report(0.05, f"the server does not have study {study_uid}: uploading its {len(files)} files")
        try:
            imported = session.import_dicom_files(files, study_uid, image_id=study_uid, cancel=cancel,
                                                  progress=lambda f, m: report(None if f is None else 0.05 + 0.3 * f, m))
        except Conflict as exc:
            raise DicomStudyError(
                f"The server's datastore already holds another study under the id {study_uid}, so this study was "
                f"not uploaded and not detected ({exc.detail}). Ask the server's operator to remove or rename it."
            ) from None
        if imported.study_uid and imported.study_uid != study_uid:
            session.log(f"the files of study {study_uid} were stored as study {imported.study_uid}")
        cancel.raise_if_cancelled()
        detection = detect(0.35)
    detection.imported = imported
    found = detection.study_uid
    if imported is None and found and not found.startswith(("image:", "detection:")) and found != study_uid:
        raise DicomStudyError(
            f"The server's study '{study_uid}' is another study (Study Instance UID {found}): its id was given to "
            "other data. Ask the server's operator to rename it; the result was not shown.")
    if fetch_cine:
        report(0.85, f"downloading study '{study_uid}'")
        detection.cine = session.download_cine(study_uid, cancel=cancel,
                                               progress=lambda f, m: report(None if f is None else 0.85 + 0.14 * f, m))
    message = pacs_message(detection)
    session.log(message)
    report(1.0, f"{detection.summary()}. {message}")
    return detection


def pacs_message(detection: Detection) -> str:
    """One line for the status bar: where the results were stored (or why not)."""
    record = detection.pacs
    uploaded = " (uploaded from Slicer's DICOM database)" if detection.imported is not None else ""
    if record is None:
        return (f"Results are on the server only (study '{detection.image_id}'{uploaded}): they were not stored on "
                "a PACS, as the study did not come from one the server is connected to.")
    where = record.get("url") or "the PACS"
    if record.get("error"):
        return f"Results were NOT stored on the PACS ({where}): {record['error']}"
    stored = f"SR series {record.get('sr_series_uid')}"
    if record.get("map_series_uid"):
        stored += f", {record.get('map_kind') or 'map'} series {record['map_series_uid']}"
    return f"Results stored on the PACS ({where}) in study {record.get('study_uid') or detection.study_uid}: {stored}."


def _files(database_or_files: Any, study_uid: str) -> list[str]:
    if callable(database_or_files):
        files = list(database_or_files())
    elif hasattr(database_or_files, "seriesForStudy"):
        return study_files(database_or_files, study_uid)
    else:
        files = [str(f) for f in database_or_files or []]
    if not files:
        raise DicomStudyError(f"The server does not have study {study_uid} and there are no files of it to upload.")
    check_on_disk(files, study_uid)
    return files


def _monotonic(progress: Progress) -> Callable[[float | None, str], None]:
    """``progress`` whose fraction never goes back (a first attempt that ends in 404 is followed by the upload)."""
    last = [0.0]

    def report(fraction: float | None, message: str) -> None:
        if fraction is not None:
            last[0] = fraction = max(last[0], min(1.0, fraction))
        if progress:
            progress(fraction, message)

    return report
