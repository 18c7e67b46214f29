"""A thumbnail-shaped stage whose worker dies (SIGKILL, as the kernel's OOM killer does) on any
photo whose key holds `poison`, for tests of poison photos under gunicorn."""

import os
import signal

from flask import Flask

from functions.common.config import StatusSettings
from functions.common.events import PhotoRef
from functions.common.photo_store import PhotoStore
from functions.common.stage_app import StageResult, create_stage_app
from functions.thumbnail.app import STAGE


def _work(photo: PhotoRef) -> StageResult:
    if "poison" in photo.key:
        os.kill(os.getpid(), signal.SIGKILL)
    return StageResult(data={})


def create_app() -> Flask:
    store = PhotoStore.from_settings(StatusSettings.from_env())
    return create_stage_app(STAGE, _work, store)
