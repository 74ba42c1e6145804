"""Validate training requests before MONAI Label starts a training process.

MONAI Label's ``POST /train/{model}`` launches a subprocess at once and
reports bad options only as a failed task afterwards. This app puts a route in
front of it (same path, same permissions) that checks the options and the
labelled data first and answers 4xx with a message; valid requests go on to
MONAI Label's own handler unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Depends, HTTPException
from fastapi.routing import APIRoute
from monailabel.config import settings
from monailabel.endpoints.train import run_model
from monailabel.endpoints.user.auth import RBAC, User

if TYPE_CHECKING:
    from main import STRANScarApp

ROUTE_NAME = "stran_validated_train"


def install_validated_training_route(app: STRANScarApp) -> None:
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
        try:
            trainer.validate(params or {}, app.datastore())
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return run_model(model, params, run_sync, enqueue)

    path = f"{settings.MONAI_LABEL_API_STR}/train/{{model}}"
    api.router.routes[:] = [r for r in api.router.routes if getattr(r, "name", "") != ROUTE_NAME]  # after /reload
    api.router.routes.insert(
        0,
        APIRoute(path, validated_train, methods=["POST"], name=ROUTE_NAME, tags=["Train"],
                 summary="Validate options and data, then run training for a model"),
    )
