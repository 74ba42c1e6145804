"""ST-RAN Scar: a MONAI Label app that detects myocardial scar on short-axis cine MRI without contrast.

Start it with::

    python -m monailabel.main start_server --app apps/stran --studies <datastore folder> \\
        --host 127.0.0.1 --conf models stran

``--conf`` keys (all optional):

- ``models``: comma-separated networks of the zoo (``stran`` default; ``all`` for every one).
  ST-RAN is served as model ``scar``; another network ``<net>`` as ``scar_<net>``.
- ``model_dir``: where trained models are published (default ``<app>/model``); the shipped demo
  model ``<app>/model/pretrained_scar.pt`` is always the fallback for ``scar``.
- ``mc_samples``: MC-dropout passes for uncertainty (default 8; 0 disables).
- ``auto_train_after``: retrain automatically after this many new reviewer labels (default 0 = off).
- ``auto_train_epochs``: epochs of such an automatic retraining (default 5).
- ``dicomweb``: a PACS's DICOMweb root; the datastore then serves its cine studies, cached in the ``--studies``
  folder (``lib.pacs_datastore``). Credentials from $STRAN_PACS_USER + $STRAN_PACS_PASSWORD or $STRAN_PACS_TOKEN.
- ``dicomweb_store``: store each detection of a PACS study back on the PACS as an SR and a SEG (default true).

The app is a thin adapter: loading, preprocessing, the networks, training and
uncertainty all live in the ``stran`` package.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from fastapi import HTTPException
from lib.activelearning import MostUncertain, RandomPick
from lib.configs import ScarConfig
from lib.datastore import ScarDatastore, check_study_upload, removed_on_refusal
from lib.dicom_import import install_dicom_import_route
from lib.guard import install_request_guard
from lib.pacs_datastore import PacsDatastore
from lib.routes import (
    install_active_learning_route,
    install_validated_infer_route,
    install_validated_training_route,
    install_validated_upload_routes,
)
from lib.scoring import ScarUncertaintyScoring
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask

import stran
from stran.memory import keep_freed_memory
from stran.models import available_models
from stran.pacs.client import Credentials, PacsClient

logger = logging.getLogger(__name__)


def _selected_networks(conf: dict[str, str]) -> list[str]:
    requested = conf.get("models", "stran").strip()
    zoo = available_models()
    if requested == "all":
        return list(zoo)
    names = [n.strip() for n in requested.split(",") if n.strip()]
    unknown = [n for n in names if n not in zoo]
    if unknown:
        raise ValueError(f"--conf models: unknown network(s) {unknown}; choose from {list(zoo)} or 'all'")
    return names


class STRANScarApp(MONAILabelApp):
    """Detect (infer), correct (labels), pick the next study (active learning) and retrain, over REST."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        keep_freed_memory()  # stran.memory: inference and training reuse freed memory instead of new page faults
        self.pretrained_dir = os.path.join(app_dir, "model")
        self.model_dir = conf.get("model_dir") or self.pretrained_dir
        os.makedirs(self.model_dir, exist_ok=True)
        self.auto_train_after = int(conf.get("auto_train_after", "0"))
        self.auto_train_epochs = int(conf.get("auto_train_epochs", "5"))
        self.pacs = PacsClient(conf["dicomweb"], Credentials.from_options()) if conf.get("dicomweb") else None
        store_back = self.pacs if conf.get("dicomweb_store", "true").lower() not in ("false", "0", "no") else None
        self.configs: dict[str, ScarConfig] = {}
        for network in _selected_networks(conf):
            config = ScarConfig()
            config.init(ScarConfig.task_name(network), self.model_dir, conf, None, network=network,
                        pretrained_dir=self.pretrained_dir, pacs=store_back)
            self.configs[config.name] = config
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="ST-RAN Scar",
            description="Contrast-free myocardial scar detection from short-axis cine MRI (research use only)",
            version=stran.__version__,
        )
        # The strategy scores stale studies itself (in this process); MONAI Label's default would also start a
        # scoring subprocess after every training and every next-sample request.
        self._auto_update_scoring = False

    def init_datastore(self) -> Datastore:
        if self.pacs is not None:
            return PacsDatastore(self.studies, self.pacs)
        return ScarDatastore(self.studies)

    def init_infers(self) -> dict[str, InferTask]:
        return {name: c.infer() for name, c in self.configs.items()}

    def init_trainers(self) -> dict[str, TrainTask]:
        return {name: c.trainer() for name, c in self.configs.items()}

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        first = next(iter(self.configs.values()))
        return {"scar_uncertainty": ScarUncertaintyScoring(first)}

    def init_strategies(self) -> dict[str, Strategy]:
        first = next(iter(self.configs.values()))
        return {"random": RandomPick(first), "most_uncertain": MostUncertain(ScarUncertaintyScoring(first))}

    def on_init_complete(self) -> None:
        super().on_init_complete()
        if self._server_mode:
            install_request_guard()  # origins, token, names, body sizes: before every route (docs/security.md)
            install_validated_training_route(self)
            install_validated_infer_route(self)
            install_validated_upload_routes()
            install_dicom_import_route(self)  # PUT /datastore/dicom
            install_active_learning_route()  # the answer keeps its strategy name

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Refuse an unknown model or image with a 4xx answer before running anything."""
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(404, f"no model '{model}' on this server; available: {sorted(self._infers)}")
        if not self._infers[model].is_valid():
            raise HTTPException(409, f"model '{model}' has no trained weights yet; train it first (POST /train/{model})")
        image = request.get("image")
        upload = None
        store = self.datastore()
        if isinstance(store, PacsDatastore) and isinstance(image, str):
            store.pull_for_request(image)  # a study on the PACS that is not cached yet is fetched now
        if isinstance(image, str) and image in store.list_images():
            request = {**request, "image_id": image}
        elif isinstance(image, str) and os.path.dirname(image) == tempfile.gettempdir():
            upload = image  # MONAI Label's copy of an uploaded study: removed here if the request fails
        else:
            raise HTTPException(404, f"image '{str(image)[:80]}' is not in the datastore")
        if upload is None:
            return super().infer(request, datastore)
        with removed_on_refusal(upload):
            check_study_upload(upload)
            return super().infer(request, datastore)

    def on_save_label(self, image_id: str, label_id: str) -> dict[str, Any]:
        """Count new reviewer labels; retrain automatically every ``auto_train_after`` labels when enabled."""
        result: dict[str, Any] = {}
        if self.auto_train_after > 0:
            store = self.datastore()
            n_final = len(store.get_labeled_images(DefaultLabelTag.FINAL.value))
            if n_final and n_final % self.auto_train_after == 0:
                model = next(iter(self.configs))
                logger.info("%d reviewer labels: starting automatic retraining of %s", n_final, model)
                self.async_training(model, params={model: {"epochs": self.auto_train_epochs}}, enqueue=True)
                result["auto_training"] = model
        return result
