"""The local datastore, with reviewer labels validated before anything is stored."""

from __future__ import annotations

import os
import time
from typing import Any

import nibabel as nib
from fastapi import HTTPException
from filelock import FileLock
from monailabel.config import settings
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag

from stran.engine.labels import LABEL_SUFFIX, LabelError, read_label_file

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

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        if image_id not in self._datastore.objects:
            raise HTTPException(404, f"image '{image_id}' is not in the datastore; nothing was saved")
        is_review = label_tag == DefaultLabelTag.FINAL.value or label_filename.endswith(LABEL_SUFFIX)
        if is_review:
            if not label_filename.endswith(LABEL_SUFFIX):
                raise HTTPException(
                    415,
                    f"reviewer labels must be '{LABEL_SUFFIX}' files (got '{os.path.basename(label_filename)}'); "
                    "nothing was saved",
                )
            try:
                label = read_label_file(label_filename, n_slices=self.n_slices(image_id))
            except LabelError as exc:
                message = str(exc).split(": ", 1)[-1]  # drop the server's temporary file name
                raise HTTPException(422, f"invalid label for '{image_id}': {message}; nothing was saved") from exc
            label_info = {**(label_info or {}), "scar_label": label.to_json()}
        return super().save_label(image_id, label_filename, label_tag, label_info)
