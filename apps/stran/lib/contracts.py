"""What the app's tasks and routes use of the objects that create them, as typing Protocols.

Every module of the app imports only downward (docs/server.md "Files"): ``main`` builds the configs, the datastore,
the scoring and the routes; a config (``lib.configs``) builds its infer task and its trainer. The tasks and the
routes are typed against these Protocols rather than against ``ScarConfig`` or ``STRANScarApp``, which import them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from monailabel.interfaces.datastore import Datastore

    from lib.datastore import ScarDatastore
    from stran.engine.detect import Detector
    from stran.pacs.client import PacsClient


class DetectorConfig(Protocol):
    """What the infer task and the uncertainty scoring use of their model's config (``lib.configs.ScarConfig``)."""

    name: str
    network_name: str
    mc_samples: int
    pacs: PacsClient | None

    def current_checkpoint(self) -> str | None: ...

    def detector(self) -> Detector: ...


class TrainerConfig(Protocol):
    """What the trainer uses of its model's config (``lib.configs.ScarConfig``)."""

    name: str
    model_dir: str
    network_name: str
    published_path: str

    def current_checkpoint(self) -> str | None: ...


class HeldLock(Protocol):
    """What the training route reads of a trainer's lock (``lib.trainers.lifetime.TrainingLock``)."""

    def holder(self) -> dict[str, Any] | None: ...


class CheckedTrainer(Protocol):
    """What the training route uses of a trainer (``lib.trainers.ScarTrainer``) before MONAI Label starts it."""

    def lock(self) -> HeldLock: ...

    def validate(self, request: dict[str, Any], datastore: Datastore) -> object: ...


class ServerApp(Protocol):
    """What the routes (``lib.routes``, ``lib.dicom_import``) use of the app (``main.STRANScarApp``)."""

    _trainers: Mapping[str, CheckedTrainer]

    def datastore(self) -> ScarDatastore: ...
