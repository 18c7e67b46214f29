"""Status function, served as `functions.status.app:create_app()` by gunicorn.

- `GET /v1/users/<user_id>/status`: what the front end shows while a user's photos process.
- `POST /v1/dead-letter`: the Triggers' dead-letter sink; an event the broker gave up on marks
  its photo failed, so no user's status waits forever.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, request

from functions.common.config import StatusSettings
from functions.common.errors import TransientError
from functions.common.events import OBJECT_CREATED, THUMBNAIL_CREATED, PhotoRef, parse_event
from functions.common.status_store import Stage, StatusStore, UserStatus
from functions.common.telemetry import configure_tracing

MESSAGES = {
    "processing": "Processing your photos",
    "indexing": "Indexing with AI",
    "idle": "",
}

# The stage an undeliverable event was meant for, by the event's type.
_DEAD_LETTER_STAGE = {
    OBJECT_CREATED: Stage.THUMBNAIL_FAILED,
    THUMBNAIL_CREATED: Stage.EMBEDDING_FAILED,
}


def status_body(status: UserStatus) -> dict[str, Any]:
    return {
        "user_id": status.user_id,
        "phase": status.phase,
        "message": MESSAGES[status.phase],
        "counts": {
            "uploaded": status.uploaded,
            "thumbnails_done": status.thumbnails_done,
            "thumbnails_failed": status.thumbnails_failed,
            "thumbnails_pending": status.thumbnails_pending,
            "embeddings_done": status.embeddings_done,
            "embeddings_failed": status.embeddings_failed,
            "embeddings_pending": status.embeddings_pending,
            "faces": status.faces,
        },
        "timestamps": status.timestamps,
        "failures": status.failures,
    }


def create_app(store: StatusStore | None = None) -> Flask:
    configure_tracing("status")
    store = store or StatusStore.from_settings(StatusSettings.from_env())
    app = Flask("status")

    @app.errorhandler(TransientError)
    def unavailable(exc: TransientError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 503

    @app.get("/v1/users/<user_id>/status")
    def user_status(user_id: str) -> Response:
        response = jsonify(status_body(store.user_status(user_id)))
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.post("/v1/dead-letter")
    def dead_letter() -> tuple[Response, int]:
        try:
            event = parse_event(request.headers, request.get_data())
            photo = PhotoRef.from_data(event.data)
            stage = _DEAD_LETTER_STAGE[event["type"]]
        except (ValueError, KeyError, TypeError) as exc:
            return jsonify(error=f"bad dead-lettered event: {exc}"), 400
        error = event.get("knativeerrorcode") or "no response"
        destination = event.get("knativeerrordest") or "subscriber"
        store.record(
            photo.user_id,
            photo.photo_id,
            stage,
            reason="delivery_failed",
            detail=f"{destination} answered {error} after all retries",
        )
        return jsonify(recorded=stage.value), 200

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify(ok=True), 200

    return app
