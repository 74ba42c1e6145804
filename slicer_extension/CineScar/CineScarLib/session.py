"""The review workflow over REST, without any GUI: connect, pick a study, detect, correct, next, retrain, export.

One :class:`ScarSession` per server. Long calls take ``progress`` (a callable
``(fraction or None, message)``) and ``cancel`` (a :class:`~.cancel.CancelToken`)
so that the Slicer widget can run them in a :class:`~.jobs.Job`; the command
line (``stran demo``) calls the same methods directly.

Here: the server connection, the studies, upload and DICOM import, detection and
the results database. The corrections and their offline queue are
:mod:`.corrections`, retraining :mod:`.training` (mixins of :class:`ScarSession`);
the records it returns are in :mod:`.records`.

Results database (optional, needs SQLAlchemy): every detection can be exported
automatically, corrections are recorded with their ``sent_utc`` (:mod:`.corrections`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cancel import CancelToken, Progress
from .client import DEFAULT_MODEL, MonaiLabelClient
from .corrections import CorrectionsMixin
from .dicom_folder import DicomImport
from .errors import DatabaseUnavailable, NotFound, WorkflowError
from .records import Detection, ServerStatus, StudyEntry, fill_study_uid, study_score
from .training import TrainingMixin
from .volume import Volume4D, VolumeCodec, normalised_slice_order


class ScarSession(CorrectionsMixin, TrainingMixin):
    """The workflow against one MONAI Label server running the ST-RAN Scar app.

    ``db``: a results database (a path or URL, or an open ``ResultsDB``), or None.
    ``auto_export``: store every detection in the database as it arrives.
    ``volumes``: reads and writes the 4-D NIfTI files the server sends and takes (``readVolume4D(bytes)``,
    ``volume4DBytes(volume)``); by default Slicer's own reader and writer (:mod:`.volumefile`, needs ``slicer``),
    imported on first use, so that a session that never reads an image runs without Slicer.
    """

    def __init__(
        self,
        server_url: str,
        *,
        db: Any = None,
        model: str = DEFAULT_MODEL,
        auto_export: bool = False,
        client: MonaiLabelClient | None = None,
        log: Callable[[str], None] | None = None,
        volumes: VolumeCodec | None = None,
        **client_options: Any,
    ) -> None:
        self._volumes = volumes
        self.client = client or MonaiLabelClient(server_url, **client_options)
        self.model = model
        self.auto_export = auto_export
        self.log = log or (lambda message: None)
        self.status: ServerStatus | None = None
        self.last_pick: dict | None = None  # the last next-study answer (id, score, reason, model)
        self._db = None
        self._db_location: str | None = None
        self._owns_db = False
        self._expected_infer_s: float | None = None
        if db is not None:
            self.set_database(db)

    @property
    def volumes(self) -> VolumeCodec:
        if self._volumes is None:
            from . import volumefile

            self._volumes = volumefile
        return self._volumes

    # ---------------------------------------------------------------- database

    def set_database(self, db: Any) -> None:
        """Use a results database: a path/URL (opened lazily) or an open ``ResultsDB``; None to stop using one."""
        self.close_database()
        if db is None:
            return
        if isinstance(db, (str, Path)):
            self._db_location = str(db)
        else:
            self._db, self._owns_db = db, False

    @property
    def has_database(self) -> bool:
        return self._db is not None or self._db_location is not None

    @property
    def db(self):
        """The open ``ResultsDB`` (opened on first use); raises DatabaseUnavailable when there is none."""
        if self._db is None:
            if self._db_location is None:
                raise DatabaseUnavailable("No results database is set: choose a database file in the settings.")
            try:
                from .resultsdb import ResultsDB
            except ImportError as exc:
                raise DatabaseUnavailable(
                    f"The results database needs SQLAlchemy, which is not installed in this Python ({exc})."
                ) from exc
            try:
                self._db = ResultsDB(self._db_location)
            except Exception as exc:
                raise DatabaseUnavailable(f"Could not open the results database {self._db_location}: {exc}") from exc
            self._owns_db = True
        return self._db

    def close_database(self) -> None:
        if self._db is not None and self._owns_db:
            self._db.close()
        self._db, self._db_location, self._owns_db = None, None, False

    def close(self) -> None:
        self.close_database()
        self.client.close()

    # ---------------------------------------------------------------- server

    def connect(self) -> ServerStatus:
        """Check the server and its scar model; remembers and returns what it offers."""
        info = self.client.check(self.model)
        self.status = ServerStatus(
            url=self.client.url,
            name=str(info.get("name") or "MONAI Label app"),
            version=str(info.get("version") or ""),
            model=self.model,
            model_info=dict(info["models"][self.model]),
            info=info,
        )
        self.log(f"connected: {self.status.summary()}")
        return self.status

    def list_studies(self) -> list[StudyEntry]:
        """The datastore's studies, not-yet-reviewed first, most uncertain first within each group."""
        store = self.client.datastore()
        objects = store.get("objects") if isinstance(store, dict) else None
        if not isinstance(objects, dict):
            raise WorkflowError("The server's datastore listing has no 'objects': is this the ST-RAN Scar app?")
        entries = []
        for image_id, obj in objects.items():
            image_info = ((obj or {}).get("image") or {}).get("info") or {}
            labels = (obj or {}).get("labels") or {}
            score = study_score(image_info)
            entries.append(StudyEntry(str(image_id), "final" in labels, score, image_info))
        entries.sort(key=lambda e: (e.labeled, -(e.score if e.score is not None else -1.0), e.image_id))
        return entries

    def download_cine(self, image_id: str, *, progress: Progress = None, cancel: CancelToken | None = None) -> Volume4D:
        """The study's 4-D cine from the datastore."""
        data = self.client.download_image(image_id, progress=progress, cancel=cancel)
        return self.volumes.readVolume4D(data)

    def upload_cine(self, volume: Volume4D, image_id: str | None = None, *, name_hint: str = "slicer-cine",
                    progress: Progress = None) -> str:
        """Put a cine (e.g. the one loaded in Slicer) in the datastore; returns its image id.

        Slices are first put in the order the server's loader uses, so slice
        indices in results and labels match the uploaded file.
        """
        volume, _ = normalised_slice_order(volume)
        image_id = image_id or make_image_id(name_hint)
        if progress:
            progress(None, f"uploading the cine as '{image_id}'")
        self.client.upload_image(image_id, self.volumes.volume4DBytes(volume), filename=f"{image_id}.nii.gz",
                                 params={"client": "CineScar"})
        self.log(f"uploaded cine as {image_id}")
        return image_id

    def import_dicom_folder(self, folder: str | Path, image_id: str | None = None, *, overwrite: bool = False,
                            progress: Progress = None, cancel: CancelToken | None = None) -> DicomImport:
        """Send a DICOM study folder to the server's datastore (``PUT /datastore/dicom``); logs what it left out.

        The server's refusals (``RequestRejected``) are passed on as they are: e.g. HTTP 422 naming the slice,
        the phase and the file when a cine frame cannot be read; 409 when ``image_id`` is taken."""
        return self._import_dicom(lambda: self.client.upload_dicom_folder(
            str(folder), image_id=image_id, overwrite=overwrite, params={"client": "CineScar"}, progress=progress,
            cancel=cancel), str(folder), progress)

    def import_dicom_files(self, files: list[str], name: str, image_id: str | None = None, *, progress: Progress = None,
                           cancel: CancelToken | None = None) -> DicomImport:
        """``import_dicom_folder`` for an explicit list of files (a study in Slicer's DICOM database)."""
        return self._import_dicom(lambda: self.client.upload_dicom_files(
            files, name, image_id=image_id, params={"client": "CineScar"}, progress=progress, cancel=cancel),
            name, progress)

    def _import_dicom(self, upload: Callable[[], dict], source: str, progress: Progress) -> DicomImport:
        try:
            answer = upload()
        except ValueError as exc:  # the files themselves (missing, empty, unreadable): nothing was sent
            raise WorkflowError(str(exc)) from None
        imported = DicomImport.from_answer(answer, source)
        self.log(f"imported {source} as '{imported.image_id}': {imported.slices} slices x {imported.phases} phases, "
                 f"{len(imported.left_out)} file(s) left out")
        for path, reason in imported.left_out:
            self.log(f"left out {path}: {reason}")
        if progress:
            progress(1.0, imported.message())
        return imported

    # ---------------------------------------------------------------- detection

    def detect(
        self,
        image_id: str | None = None,
        *,
        volume: Volume4D | None = None,
        mc_samples: int | None = None,
        fetch_cine: bool = True,
        with_attention: bool = True,
        progress: Progress = None,
        cancel: CancelToken | None = None,
    ) -> Detection:
        """Scar detection on a datastore study (``image_id``) or on a local cine (``volume``, uploaded first).

        Returns the result JSON, the attention map and the cine it was made on
        (downloaded when ``fetch_cine`` and not given). With ``auto_export`` the
        result is stored in the results database; an export failure is kept in
        ``Detection.export_error``, the detection itself still counts.
        """
        cancel = cancel or CancelToken()
        report = progress or (lambda fraction, message: None)
        if (image_id is None) == (volume is None):
            raise ValueError("give either image_id or volume")
        cine = None
        if volume is not None:
            volume, _ = normalised_slice_order(volume)
            image_id = self.upload_cine(volume, progress=report)
            cine = volume
        assert image_id is not None
        cancel.raise_if_cancelled()
        if cine is None and fetch_cine:
            report(0.02, f"downloading study '{image_id}'")
            cine = self.download_cine(image_id, cancel=cancel,
                                      progress=lambda f, m: report(None if f is None else 0.02 + 0.13 * f, m))
        cancel.raise_if_cancelled()
        params: dict[str, Any] = {"with_attention": bool(with_attention)}
        if mc_samples is not None:
            params["mc_samples"] = int(mc_samples)
        report(0.15, f"detecting scar on '{image_id}'")
        response = self.client.infer(
            self.model,
            image_id=image_id,
            params=params,
            output="all" if with_attention else "json",
            cancel=cancel,
            expected_s=self._expected_infer_s,
            progress=lambda f, m: report(None if f is None else 0.15 + 0.75 * f, m),
        )
        self._expected_infer_s = max(response.elapsed_s, 0.5)
        result = dict(response.result)
        if not isinstance(result.get("study_probability"), (int, float)):
            raise WorkflowError(f"The server's answer for '{image_id}' has no study probability: {str(result)[:200]}")
        fill_study_uid(result, image_id)
        attention = None
        if response.image is not None:
            report(0.92, "reading the attention map")
            attention = self.volumes.readVolume4D(response.image, what="scar map")
        detection = Detection(result, image_id, attention, cine, response.elapsed_s)
        if self.auto_export and self.has_database:
            report(0.97, "storing the result in the results database")
            try:
                self.export_detection(detection)
            except Exception as exc:  # noqa: BLE001 - the detection is still good
                detection.export_error = str(exc)
        report(1.0, detection.summary())
        self.log(f"detected: {detection.summary()}")
        return detection

    def export_detection(self, detection: Detection | dict) -> str:
        """Store a detection result in the results database (idempotent); returns its id."""
        result = detection.result if isinstance(detection, Detection) else detection
        detection_id = self.db.record_detection(result)
        if isinstance(detection, Detection):
            detection.exported, detection.export_error = True, None
        return detection_id

    def export_csv(self, out_dir: str | Path) -> list[Path]:
        """One CSV per table plus manifest.json (see docs/results-database.md)."""
        return self.db.export_csv(out_dir)

    # ---------------------------------------------------------------- active learning

    def next_study(self, strategy: str = "random", *, progress: Progress = None,
                   cancel: CancelToken | None = None) -> str | None:
        """The id of the next study to review (None when every study has a label); the server's whole answer, with
        its ``reason``, is kept in ``last_pick``."""
        answer = self.client.next_sample(strategy, progress=progress, cancel=cancel)
        self.last_pick = answer
        if answer is None:
            return None
        if answer.get("reason"):
            self.log(f"next study {answer['id']}: {answer['reason']}")
        return str(answer["id"])


def make_image_id(name_hint: str) -> str:
    """A datastore id from a node name: letters, digits, - and _ only, plus a short unique suffix."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name_hint or "cine").strip("_-")[:40] or "cine"
    return f"{stem}-{uuid.uuid4().hex[:6]}"


def is_missing_study(error: BaseException) -> bool:
    return isinstance(error, NotFound)
