"""``PUT /datastore/dicom``: a zipped DICOM study folder into the datastore (annotator role, like ``PUT /datastore/image``).

The work is ``stran.io.zip_import.import_zip_study`` (archive checks, extraction into a temporary folder deleted
afterwards, ``load_study``, atomic ``write_datastore_study``); this module maps its outcomes to HTTP answers and
registers the new study with the datastore:

- 200 ``{"image", "slices", "phases", "study_uid", "left_out": [{"path", "reason"}], "notes"}``, paths relative to
  the archive's root;
- 409 the id is taken (without ``overwrite=true``), or the study to overwrite has reviewer labels;
- 413 more files or bytes than ``STRAN_MAX_UPLOAD_FILES`` / ``STRAN_MAX_UPLOAD_BYTES``;
- 415 not a ZIP archive;
- 422 an unsafe archive (absolute or ``..`` member names, symbolic links), a corrupt one, bad ``params``, or a study
  the loader cannot read (its message, e.g. ``MissingPhaseError`` naming the slice, the phase and the file).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from typing import TYPE_CHECKING, Any

from fastapi import Depends, File, Form, HTTPException, UploadFile
from fastapi.routing import APIRoute
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User

from stran.io.errors import CineLoadError
from stran.io.limits import max_upload_bytes
from stran.io.nifti import sidecar_path
from stran.io.zip_import import (
    ArchiveTooLargeError,
    NotAZipError,
    StudyExistsError,
    ZipImportError,
    copy_limited,
    import_zip_study,
)

if TYPE_CHECKING:
    from lib.contracts import ServerApp

logger = logging.getLogger(__name__)
ROUTE_NAME = "stran_dicom_import"
_LOCK = threading.Lock()  # one import at a time: the id check and the write must not interleave

STATUS = {NotAZipError: 415, ArchiveTooLargeError: 413, StudyExistsError: 409}


def _status(exc: ZipImportError) -> int:
    return next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 422)


def import_dicom_zip(app: ServerApp, upload: Any, filename: str, *, image: str | None = None,
                     overwrite: bool = False, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Import the zipped study in the binary stream ``upload``; returns the answer JSON or raises HTTPException."""
    store = app.datastore()
    zip_name = os.path.basename(filename or "") or "upload.zip"

    existed: dict[str, bool] = {}

    def check_id(image_id: str) -> None:
        uri = store.get_image_uri(image_id)
        existed[image_id] = bool(uri)
        if not uri:
            return
        if not overwrite:
            raise StudyExistsError(f"the datastore already holds a study '{image_id}'; choose another id (image=...) "
                                   "or ask to overwrite it (overwrite=true)")
        if not uri.endswith(".nii.gz"):
            raise StudyExistsError(f"'{image_id}' is stored as {os.path.basename(uri)}; remove it first")
        if store.get_labels_by_image_id(image_id):
            raise StudyExistsError(f"'{image_id}' has reviewer labels, which describe the stored study; remove them "
                                   "first (admin) or import under another id")

    try:
        with tempfile.TemporaryDirectory(prefix="stran-upload-") as tmp, _LOCK:
            zip_path = os.path.join(tmp, "upload.zip")
            copy_limited(upload, zip_path, max_upload_bytes())
            result = import_zip_study(zip_path, store.image_dir, image_id=image, overwrite=overwrite,
                                      zip_name=zip_name, before_write=check_id, work_dir=tmp)
            answer = result.to_json()
            facts = {"source": "dicom", "upload": zip_name, "study_uid": result.study.study_uid,
                     "slices": result.study.n_slices, "phases": result.study.n_phases,
                     "left_out": len(result.study.left_out)}
            try:
                store.register_image(result.image_id, {**(info or {}), **facts})
            except Exception:
                if not existed.get(result.image_id):  # a new study the datastore could not record: take it back
                    for path in (result.nifti, sidecar_path(result.nifti)):
                        path.unlink(missing_ok=True)
                raise
    except ZipImportError as exc:
        logger.info("refused %s: %s", zip_name, exc)
        raise HTTPException(_status(exc), f"cannot import '{zip_name}': {exc}; nothing was stored") from None
    except CineLoadError as exc:
        logger.info("cannot import %s: %s", zip_name, exc)
        raise HTTPException(422, f"cannot import the DICOM study in '{zip_name}': {exc} (nothing was stored)") from None
    logger.info("imported %s from %s: %d slices x %d phases, %d files left out", answer["image"], zip_name,
                answer["slices"], answer["phases"], len(answer["left_out"]))
    return answer


def install_dicom_import_route(app: ServerApp) -> None:
    """Put ``PUT /datastore/dicom`` into MONAI Label's running FastAPI application (again after ``/reload``)."""
    from monailabel.app import app as api

    def import_dicom(
        image: str | None = None,
        overwrite: bool = False,
        params: str = Form("{}"),
        file: UploadFile = File(...),  # noqa: B008 - FastAPI parameter
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),  # noqa: B008 - FastAPI dependency
    ) -> dict[str, Any]:
        try:
            info = json.loads(params or "{}")
        except ValueError as exc:
            raise HTTPException(422, f"params is not JSON ({exc}); nothing was stored") from None
        if not isinstance(info, dict):
            raise HTTPException(422, "params must be a JSON object; nothing was stored")
        if user and getattr(user, "username", None):
            info["user"] = user.username
        return import_dicom_zip(app, file.file, file.filename or "", image=image, overwrite=overwrite, info=info)

    path = f"{settings.MONAI_LABEL_API_STR}/datastore/dicom"
    api.router.routes[:] = [r for r in api.router.routes if getattr(r, "name", "") != ROUTE_NAME]
    api.router.routes.insert(
        0,
        APIRoute(path, import_dicom, methods=["PUT"], name=ROUTE_NAME, tags=["Datastore"],
                 summary="Import a zipped DICOM study folder into the datastore (stray broken files are left out)"),
    )
