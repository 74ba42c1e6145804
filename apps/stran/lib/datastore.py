"""The local datastore: ids and tags are names (``stran.names``), uploads and reviewer labels are validated before
anything is stored, refused uploads leave no temporary file, and label file and index change together.

A reviewer label is written beside its final name and moved into place (``os.replace``), then the index
(``datastore_v2.json``, also replaced atomically) records it with a copy of its content (``scar_label``). A server
killed between the two leaves the new label file and the old index entry; on start, ``_reconcile_labels`` makes
the index agree with the label files, so every reader sees the old label or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import nibabel as nib
from fastapi import HTTPException
from filelock import FileLock
from monailabel.config import settings
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag

from stran.atomic import atomic_path, atomic_write_text
from stran.engine.labels import LABEL_SUFFIX, LabelError, read_label_file
from stran.io.errors import CineLoadError, StudyTooLargeError
from stran.io.upload_check import check_nifti_upload
from stran.names import UnsafeNameError, check_name

IMAGE_EXTENSIONS = ("*.nii.gz", "*.nii")


class ScarDatastore(LocalDatastore):
    """Images: 4D cine NIfTI (+ ``.cine.json`` sidecar). Reviewer labels: ``<id>.scar.json`` under ``labels/final``.

    ``*.scar.json`` must be one of the datastore's file extensions so that the
    datastore keeps the label files when it reconciles with the disk (it lists
    labels with the same patterns as images); ``*.json`` would also match the
    ``.cine.json`` sidecars and turn them into images.
    """

    def __init__(self, path: str) -> None:
        super().__init__(
            path,
            extensions=(*IMAGE_EXTENSIONS, f"*{LABEL_SUFFIX}"),
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )
        self._reconcile_labels()

    @property
    def image_dir(self) -> str:
        """The folder the study files (``<id>.nii.gz`` + ``<id>.cine.json``) are in."""
        return self._datastore.image_path()

    def register_image(self, image_id: str, info: dict[str, Any]) -> None:
        """Record ``<image_dir>/<id>.nii.gz``, already written in place (atomically, by
        ``stran.io.write_datastore_study``), as an image with fresh ``info``.

        As ``add_image`` does, without its copy. The entry's info is replaced, not merged, so nothing computed on a
        previous study of the same id (its uncertainty score) outlives an overwrite; its labels are kept.
        """
        name = f"{image_id}.nii.gz"
        if not os.path.isfile(os.path.join(self.image_dir, name)):
            raise FileNotFoundError(f"{name} is not in the datastore folder")
        self._init_from_datastore_file()  # changes made by other processes first (takes the lock itself)
        with FileLock(self._lock_file):
            old = self._datastore.objects.get(image_id)
            image = DataModel(info={**info, "ts": int(time.time()), "name": name}, ext=".nii.gz")
            self._datastore.objects[image_id] = ImageLabelModel(image=image, labels=dict(old.labels) if old else {})
            self._update_datastore_file(lock=False)

    def n_slices(self, image_id: str) -> int:
        """Slice count of a stored study, from the NIfTI header (no pixel data read)."""
        return int(nib.load(self.get_image_uri(image_id)).shape[2])

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """Store an uploaded study after checking its id and that it is a 4-D cine NIfTI (``check_nifti_upload``)."""
        with removed_on_refusal(image_filename):
            name = os.path.basename(image_filename)
            if not name.endswith((".nii.gz", ".nii")):
                raise HTTPException(415, "a study upload must be a 4-D NIfTI file (.nii.gz or .nii); nothing was stored")
            _check(image_id or name.split(".")[0], "image id")
            check_study_upload(image_filename, "; nothing was stored")
            return super().add_image(image_id, image_filename, image_info)

    def remove_image(self, image_id: str) -> None:
        _check(image_id, "image id")
        super().remove_image(image_id)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        _check(label_id, "label id")
        _check(label_tag, "label tag")
        super().remove_label(label_id, label_tag)

    def _update_datastore_file(self, lock: bool = True) -> None:
        """MONAI Label's index write, made atomic: a kill leaves the old index or the new one."""

        def write() -> None:
            self._ignore_event_config = True
            text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            atomic_write_text(self._datastore_config_path, text)
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()

    def _reconcile_labels(self) -> None:
        """Make each reviewer label's index entry agree with its file (the file is written first)."""
        changed = False
        for image_id, obj in self._datastore.objects.items():
            model = obj.labels.get(DefaultLabelTag.FINAL.value)
            if model is None or not model.ext == LABEL_SUFFIX:
                continue
            path = os.path.join(self._datastore.label_path(DefaultLabelTag.FINAL.value), image_id + LABEL_SUFFIX)
            try:
                label = read_label_file(path, n_slices=self.n_slices(image_id)).to_json()
            except (OSError, LabelError, ValueError):
                continue
            if model.info.get("scar_label") != label:
                model.info["scar_label"] = label
                changed = True
        if changed:
            self._update_datastore_file()

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        with removed_on_refusal(label_filename):
            _check(image_id, "image id")
            _check(label_tag, "label tag")
            return self._save_label(image_id, label_filename, label_tag, label_info)

    def _save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        if image_id not in self._datastore.objects:
            raise HTTPException(404, f"image '{image_id}' is not in the datastore; nothing was saved")
        if label_tag != DefaultLabelTag.FINAL.value:  # a file under another tag would be stored unchecked
            raise HTTPException(422, f"this app stores reviewer labels under the tag '{DefaultLabelTag.FINAL.value}' "
                                     f"only (got '{label_tag}'); nothing was saved")
        if not label_filename.endswith(LABEL_SUFFIX):
            ext = self._to_id(os.path.basename(label_filename))[1]
            raise HTTPException(415, f"reviewer labels must be '{LABEL_SUFFIX}' files (got a '{ext}' file); "
                                     "nothing was saved")
        try:
            label = read_label_file(label_filename, n_slices=self.n_slices(image_id))
        except LabelError as exc:
            message = str(exc).split(": ", 1)[-1]  # drop the server's temporary file name
            raise HTTPException(422, f"invalid label for '{image_id}': {message}; nothing was saved") from exc
        label_info = {**(label_info or {}), "scar_label": label.to_json()}
        return self._store_label(image_id, label_filename, label_tag, label_info)

    def _store_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """MONAI Label's ``save_label`` with the label file moved into place atomically before the index changes."""
        _, ext = self._to_id(os.path.basename(label_filename))
        folder = self._datastore.label_path(label_tag)
        name = self._filename(image_id, ext)
        with FileLock(self._lock_file):
            with atomic_path(os.path.join(folder, name)) as tmp:
                shutil.copyfile(label_filename, tmp)
            info = {**label_info, "ts": int(time.time()), "name": name}
            self._datastore.objects[image_id].labels[label_tag] = DataModel(info=info, ext=ext)
            self._update_datastore_file(lock=False)
        return image_id


def check_study_upload(path: str, note: str = "") -> None:
    """An uploaded study must be a valid 4-D cine NIfTI (``check_nifti_upload``): 413 or 422 otherwise."""
    try:
        check_nifti_upload(path, shown="the uploaded study")
    except StudyTooLargeError as exc:
        raise HTTPException(413, f"cannot read the study: {exc}{note}") from None
    except CineLoadError as exc:
        raise HTTPException(422, f"cannot read the study: {exc}{note}") from None


def _check(value: str, what: str) -> str:
    """``check_name`` as a 400 answer."""
    try:
        return check_name(value, what)
    except UnsafeNameError as exc:
        raise HTTPException(400, f"{exc}; nothing was changed") from None


@contextlib.contextmanager
def removed_on_refusal(upload: str) -> Iterator[None]:
    """Delete MONAI Label's temporary copy of an upload when the request fails (it removes it only on success)."""
    try:
        yield
    except BaseException:
        if os.path.dirname(os.path.abspath(upload)) == tempfile.gettempdir() and os.path.isfile(upload):
            os.unlink(upload)
        raise
