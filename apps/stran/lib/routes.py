"""Validate training and inference requests before MONAI Label acts on them.

MONAI Label's ``POST /train/{model}`` launches a subprocess at once and
reports bad options only as a failed task afterwards. This app puts a route in
front of it (same path, same permissions) that checks the options and the
labelled data first and answers 4xx with a message; valid requests go on to
MONAI Label's own handler unchanged.

``POST /infer/{model}`` merges the ``params`` form field into the request, so a client could set ``image`` or
``label`` there to a server path; the route in front of it accepts only a JSON object of detection options.
``PUT /datastore/label`` and ``PUT /datastore/image`` copy the upload to a temporary file before they parse
``params`` and remove it only on success; the routes in front of them check ``params`` first.
``POST /activelearning/{strategy}`` merges the study's stored info into the strategy's answer, and MONAI Label keeps
its own per-strategy record there under the same key, ``strategy``, as the answer's strategy name: the route in
front of it keeps the answer's name (the record goes to ``strategies_used``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import BackgroundTasks, Depends, File, Form, HTTPException, UploadFile
from fastapi.routing import APIRoute
from monailabel.config import settings
from monailabel.endpoints.activelearning import sample
from monailabel.endpoints.datastore import add_image, save_label
from monailabel.endpoints.infer import ResultType, run_inference
from monailabel.endpoints.train import run_model
from monailabel.endpoints.user.auth import RBAC, User

if TYPE_CHECKING:
    from lib.contracts import ServerApp

ROUTE_NAME = "stran_validated_train"
INFER_ROUTE_NAME = "stran_validated_infer"
INFER_OPTIONS = {"mc_samples", "with_attention", "client_id"}


def install_validated_training_route(app: ServerApp) -> None:
    from monailabel.app import app as api  # the running FastAPI application

    async def validated_train(
        model: str,
        params: dict[str, Any] | None = None,
        run_sync: bool = False,
        enqueue: bool = False,
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)),  # noqa: B008 - FastAPI dependency
    ) -> Any:
        trainer = app._trainers.get(model)
        if trainer is None:
            raise HTTPException(404, f"no trainer '{model}' on this server; available: {sorted(app._trainers)}")
        holder = trainer.lock().holder()
        if holder is not None:
            raise HTTPException(429, f"a training of '{model}' is already running (process {holder.get('pid')}, "
                                     f"started {holder.get('started', '?')}); wait for it or stop it (DELETE /train/)")
        try:
            trainer.validate(params or {}, app.datastore())
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return run_model(model, params, run_sync, enqueue)

    _put_first(api, APIRoute(f"{settings.MONAI_LABEL_API_STR}/train/{{model}}", validated_train, methods=["POST"],
                             name=ROUTE_NAME, tags=["Train"],
                             summary="Validate options and data, then run training for a model"))


def infer_options(params: str) -> dict[str, Any]:
    """The ``params`` form field of a detection request as a dict of known options; ValueError says what is wrong."""
    try:
        options = json.loads(params) if params else {}
    except ValueError as exc:
        raise ValueError(f"'params' is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(options, dict):
        raise ValueError("'params' must be a JSON object of options")
    unknown = sorted(set(options) - INFER_OPTIONS)
    if unknown:
        raise ValueError(f"'params' holds unknown option(s) {unknown[:5]}; detection accepts {sorted(INFER_OPTIONS)}")
    return options


def install_validated_infer_route(app: ServerApp) -> None:
    """``POST /infer/{model}`` with ``params`` checked by ``infer_options`` before MONAI Label's handler runs."""
    from monailabel.app import app as api

    async def validated_infer(
        background_tasks: BackgroundTasks,
        model: str,
        image: str = "",
        params: str = Form("{}"),  # noqa: B008 - FastAPI form field
        file: UploadFile = File(None),  # noqa: B008 - FastAPI upload
        output: ResultType | None = None,
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),  # noqa: B008 - FastAPI dependency
    ) -> Any:
        try:
            infer_options(params)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        if not image and file is None:
            raise HTTPException(422, "give a datastore study (?image=<id>) or upload one (form field 'file')")
        return run_inference(background_tasks, model, image, "", params, file, None, output)

    _put_first(api, APIRoute(f"{settings.MONAI_LABEL_API_STR}/infer/{{model}}", validated_infer, methods=["POST"],
                             name=INFER_ROUTE_NAME, tags=["Infer"],
                             summary="Validate the options, then detect scar on a datastore or uploaded study"))


def _json_object(params: str) -> None:
    """422 unless ``params`` is a JSON object (checked before any upload is written to disk)."""
    try:
        value = json.loads(params) if params else {}
    except ValueError:
        raise HTTPException(422, "'params' is not valid JSON; send a JSON object (or leave it out)") from None
    if not isinstance(value, dict):
        raise HTTPException(422, "'params' must be a JSON object")


def install_validated_upload_routes() -> None:
    """``PUT /datastore/label`` and ``PUT /datastore/image`` with ``params`` checked before MONAI Label's handlers."""
    from monailabel.app import app as api

    async def validated_label(
        background_tasks: BackgroundTasks,
        image: str,
        params: str = Form("{}"),  # noqa: B008 - FastAPI form field
        tag: str = "final",
        label: UploadFile = File(...),  # noqa: B008 - FastAPI upload
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),  # noqa: B008 - FastAPI dependency
    ) -> Any:
        _json_object(params)
        return save_label(background_tasks, image, params, tag, label, user.username)

    async def validated_image(
        background_tasks: BackgroundTasks,
        image: str | None = None,
        params: str = Form("{}"),  # noqa: B008 - FastAPI form field
        file: UploadFile = File(...),  # noqa: B008 - FastAPI upload
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),  # noqa: B008 - FastAPI dependency
    ) -> Any:
        _json_object(params)
        return add_image(background_tasks, image, params, file, user.username)

    prefix = f"{settings.MONAI_LABEL_API_STR}/datastore"
    _put_first(api, APIRoute(f"{prefix}/label", validated_label, methods=["PUT"], name="stran_validated_label",
                             tags=["Datastore"], summary="Save a reviewer label (validated before it is stored)"))
    _put_first(api, APIRoute(f"{prefix}/image", validated_image, methods=["PUT"], name="stran_validated_image",
                             tags=["Datastore"], summary="Upload a 4-D cine NIfTI (validated before it is stored)"))


def install_active_learning_route() -> None:
    from monailabel.app import app as api

    async def next_sample(
        strategy: str,
        params: dict[str, Any] | None = None,
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),  # noqa: B008 - FastAPI dependency
    ) -> Any:
        result = sample(strategy, params, user.username)
        if result and isinstance(result.get("strategy"), dict):  # the study's info overwrote the answer's name
            result["strategies_used"] = result["strategy"]
            result["strategy"] = strategy
        return result

    _put_first(api, APIRoute(f"{settings.MONAI_LABEL_API_STR}/activelearning/{{strategy}}", next_sample,
                             methods=["POST"], name="stran_next_sample", tags=["ActiveLearning"],
                             summary="Run an active-learning strategy to get the next study to review"))


def _put_first(api: Any, route: APIRoute) -> None:
    """``route`` ahead of MONAI Label's own route for the same path (replacing ours after ``/reload``)."""
    api.router.routes[:] = [r for r in api.router.routes if getattr(r, "name", "") != route.name]
    api.router.routes.insert(0, route)
