"""Embed function, served as `functions.embed.app:create_app()` by gunicorn (one worker).

The app exists only once the model pack is loaded and every model has run once (warm-up), so
`/healthz`, the readiness probe, answers only then. A missing or broken pack raises
ModelPackError from create_app: gunicorn's worker fails to boot, gunicorn exits, and the pod
never becomes ready.
"""

from __future__ import annotations

from flask import Flask
from prometheus_client import Gauge

from functions.common.config import LambdaSettings, StatusSettings, StorageSettings
from functions.common.lambda_client import DatabaseLambda
from functions.common.photo_store import PhotoStore
from functions.common.pipeline import PIPELINE
from functions.common.stage_app import create_stage_app
from functions.common.storage import ObjectStore
from functions.common.telemetry import configure_tracing
from functions.embed.models import FaceAnalyzer
from functions.embed.service import EmbedService
from functions.embed.settings import EmbedSettings

STAGE = PIPELINE["embed"]
MODEL_LOAD_SECONDS = Gauge(
    "embed_model_load_seconds",
    "Seconds the embed function took to load its model pack at start-up.",
    ["pack"],
    multiprocess_mode="livemax",
)


def create_app() -> Flask:
    configure_tracing(STAGE.name)
    settings = EmbedSettings.from_env()
    analyzer = FaceAnalyzer(settings)
    with MODEL_LOAD_SECONDS.labels(settings.model_pack).time():
        analyzer.load()
    service = EmbedService(
        settings,
        analyzer,
        ObjectStore(StorageSettings.from_env()),
        DatabaseLambda(LambdaSettings.from_env()),
    )
    store = PhotoStore.from_settings(StatusSettings.from_env())
    return create_stage_app(STAGE, service.process, store)
