"""A datastore backed by a PACS: the cine studies on a DICOMweb server, cached in the local datastore folder.

``--conf dicomweb URL`` (``stran serve --dicomweb URL``) selects it; credentials come from the environment only
(``STRAN_PACS_USER`` + ``STRAN_PACS_PASSWORD`` or ``STRAN_PACS_TOKEN``: MONAI Label prints its ``--conf`` values in
its log). MONAI Label's own DICOMweb datastore makes one 3-D volume of a series, which destroys a cine study; this one
groups each study with the project's cine loader (``stran.pacs.fetch``), keyed by its Study Instance UID.

On start a background thread fetches every cine study of the PACS that is not cached yet (the listing fills as they
arrive); a study asked for by its UID that is on the PACS but not cached is fetched on demand. Studies already in
the folder (imported or uploaded) are served as by ``ScarDatastore``; labels stay local.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fastapi import HTTPException

from lib.datastore import ScarDatastore
from stran.names import UnsafeNameError, check_name
from stran.pacs.client import PacsClient, PacsError, PacsNotFoundError, PacsStudyError
from stran.pacs.fetch import fetch_study, is_cached, pacs_origin

logger = logging.getLogger(__name__)


class PacsDatastore(ScarDatastore):
    """``ScarDatastore`` over ``path`` (the cache), filled from the PACS behind ``client``."""

    def __init__(self, path: str, client: PacsClient, *, sync: bool = True) -> None:
        super().__init__(path)
        self.client = client
        self._remote: list[str] = []  # the PACS's cine studies at the last sync (no request per listing)
        self._study_lock = threading.Lock()
        self.last_error = ""
        if sync:
            threading.Thread(target=self.sync, name="pacs-sync", daemon=True).start()

    def sync(self) -> list[str]:
        """Fetch every cine study of the PACS that is not cached yet; returns the ones fetched. A study that
        fails is logged with the reason and left out; the others go on."""
        fetched: list[str] = []
        try:
            remote = [s.uid for s in self.client.cine_studies()]
        except PacsError as exc:
            self.last_error = f"{exc} ({exc.hint})"
            logger.error("PACS listing failed: %s", self.last_error)
            return fetched
        self._remote, self.last_error = remote, ""
        for uid in remote:
            if uid in self._datastore.objects and is_cached(self.image_dir, uid):
                continue
            try:
                self.pull(uid)
                fetched.append(uid)
            except PacsError as exc:
                logger.error("PACS study %s left out: %s (%s)", uid, exc, exc.hint)
        if remote:
            logger.info("PACS %s: %d cine studies, %d fetched now", self.client.url, len(remote), len(fetched))
        return fetched

    def pull(self, study_uid: str) -> str:
        """Fetch one study (unless cached) and register it as an image; returns its path."""
        with self._study_lock:
            path = fetch_study(self.client, study_uid, self.image_dir)
            origin = pacs_origin(self.image_dir, study_uid) or {}
            self.register_image(study_uid, {"source": "dicomweb", "pacs_url": self.client.url,
                                            "series_uids": origin.get("series_uids", [])})
            return str(path)

    def pull_for_request(self, image_id: str) -> None:
        """Before an infer request: fetch ``image_id`` when it is the UID of a PACS study not cached yet (also one
        sent to the PACS after the last listing). Failures become HTTP answers that say why."""
        if image_id in self._datastore.objects or not _is_name(image_id):
            return
        try:
            self.pull(image_id)
        except PacsNotFoundError:
            return  # not on the PACS either: the caller answers 404
        except PacsStudyError as exc:
            raise HTTPException(422, f"{exc} ({exc.hint})") from None
        except PacsError as exc:
            raise HTTPException(502, f"{exc} ({exc.hint})") from None

    def list_images(self) -> list[str]:
        local = super().list_images()
        return local + [uid for uid in self._remote if uid not in local]

    def get_image_uri(self, image_id: str) -> str:
        """The cached study; a study on the PACS that is not cached yet is fetched first."""
        if image_id not in self._datastore.objects and image_id in self._remote:
            self.pull(image_id)
        return super().get_image_uri(image_id)

    def status(self) -> dict[str, Any]:
        answer = super().status()
        answer["pacs"] = {"url": self.client.url, "cine_studies": len(self._remote), "error": self.last_error}
        return answer


def _is_name(value: str) -> bool:
    try:
        check_name(value, "image id")
    except UnsafeNameError:
        return False
    return True
