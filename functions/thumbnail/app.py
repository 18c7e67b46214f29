"""Thumbnail function, served as `functions.thumbnail.app:create_app()` by gunicorn."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from functions.common.config import (
    LambdaSettings,
    StatusSettings,
    StorageSettings,
    ThumbnailSettings,
)
from functions.common.events import THUMBNAIL_CREATED, THUMBNAIL_FAILED, PhotoRef
from functions.common.lambda_client import DatabaseLambda
from functions.common.photo_store import PhotoState, PhotoStore
from functions.common.stage_app import StageResult, StageSpec, create_stage_app
from functions.common.storage import ObjectStore
from functions.common.telemetry import configure_tracing
from functions.thumbnail.service import ThumbnailService


def create_app() -> Flask:
    configure_tracing("thumbnail")
    service = ThumbnailService(
        ThumbnailSettings.from_env(),
        ObjectStore(StorageSettings.from_env()),
        DatabaseLambda(LambdaSettings.from_env()),
    )
    return create_stage_app(
        stage_spec(service.process), PhotoStore.from_settings(StatusSettings.from_env())
    )


def stage_spec(process: Callable[[PhotoRef], StageResult]) -> StageSpec:
    """The thumbnail stage's place in the pipeline, doing `process` to each photo."""
    return StageSpec(
        name="thumbnail",
        done=PhotoState.THUMBNAIL,
        failed=PhotoState.THUMBNAIL_FAILED,
        created_type=THUMBNAIL_CREATED,
        failed_type=THUMBNAIL_FAILED,
        process=process,
    )
