"""Thumbnail function, served as `functions.thumbnail.app:create_app()` by gunicorn."""

from __future__ import annotations

from flask import Flask

from functions.common.config import LambdaSettings, StatusSettings, StorageSettings
from functions.common.lambda_client import DatabaseLambda
from functions.common.photo_store import PhotoStore
from functions.common.pipeline import PIPELINE
from functions.common.stage_app import create_stage_app
from functions.common.storage import ObjectStore
from functions.common.telemetry import configure_tracing
from functions.thumbnail.service import ThumbnailService
from functions.thumbnail.settings import ThumbnailSettings

STAGE = PIPELINE["thumbnail"]


def create_app() -> Flask:
    configure_tracing(STAGE.name)
    service = ThumbnailService(
        ThumbnailSettings.from_env(),
        ObjectStore(StorageSettings.from_env()),
        DatabaseLambda(LambdaSettings.from_env()),
    )
    store = PhotoStore.from_settings(StatusSettings.from_env())
    return create_stage_app(STAGE, service.process, store)
