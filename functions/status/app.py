"""Status function, served as `functions.status.app:create_app()` by gunicorn.

- `GET /v1/status`: what the front end shows while the caller's photos process (bearer JWT;
  a valid poll is answered before it reaches Flask, see poll.py);
  `GET /v1/users/<user_id>/status`: the same for one user (that user, or an admin).
- `POST /v1/uploads`: the front end declares how many photos it is about to upload.
- `/v1/admin/...`: the admin API (admin.py); `GET /admin`: the dashboard page.
- `POST /v1/dead-letter`: the Triggers' dead-letter sink; an event the broker gave up on marks
  its photo failed, so no user's status waits forever. Only where STATUS_DEAD_LETTER_ENABLED is
  on (the cluster-local `status-dead-letter` Service): elsewhere it is 404, and left out of
  `/openapi.json`.
- `GET /openapi.json`, `GET /metrics`, `GET /healthz`.

Bodies are bounded (RequestLimits: the login's MAX_LOGIN_BYTES, the dead-letter sink's
MAX_EVENT_BYTES, every other MAX_API_BODY_BYTES; over it, 413 before it is read), every answer
carries the security headers (security_headers.py), and a 500 or 503 answers a generic error
with a trace id, its details going to the log.

Each process also runs the sweeper (sweeper.py), which fails photos pending past a deadline.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError

from functions.common.config import (
    AdminSettings,
    AuthSettings,
    DeadLetterSettings,
    RequestLimits,
    StatusSettings,
)
from functions.common.errors import TransientError
from functions.common.event_auth import EventVerifier
from functions.common.events import PhotoRef, parse_event
from functions.common.logs import photo_context
from functions.common.metrics import instrument
from functions.common.photo_store import PhotoStore
from functions.common.pipeline import PIPELINE, Stage
from functions.common.request_limits import limit_request_bodies
from functions.common.stage_app import authenticate_sender
from functions.common.telemetry import configure_tracing, instrument_app, public_error
from functions.status.admin import create_admin_blueprint, read_pipeline
from functions.status.admin_store import SessionStore
from functions.status.auth import (
    AdminSessions,
    Authenticator,
    Forbidden,
    TokenVerifier,
    Unauthorized,
)
from functions.status.cors import CorsPolicy, add_cors
from functions.status.metrics import StageHealthCollector
from functions.status.poll import POLL_ERROR, STATUS_PATH, FastPoll, status_answer
from functions.status.security_headers import add_security_headers
from functions.status.status_reader import StatusReader
from functions.status.sweeper import Sweeper

log = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
DEAD_LETTER_PATH = "/v1/dead-letter"
MAX_DECLARED_UPLOAD = 100_000


@cache
def openapi_document() -> dict[str, Any]:
    """Every operation the status image can serve, the dead-letter sink included."""
    return yaml.safe_load(OPENAPI_PATH.read_text())


def served_openapi_document(dead_letter: DeadLetterSettings) -> dict[str, Any]:
    """The document of the routes this process serves."""
    document = openapi_document()
    if dead_letter.enabled:
        return document
    paths = {path: item for path, item in document["paths"].items() if path != DEAD_LETTER_PATH}
    return {**document, "paths": paths}


def create_app(
    photos: PhotoStore | None = None,
    auth_settings: AuthSettings | None = None,
    admin_settings: AdminSettings | None = None,
    dead_letter: DeadLetterSettings | None = None,
    limits: RequestLimits | None = None,
) -> Flask:
    configure_tracing("status")
    limits = limits or RequestLimits.from_env()
    auth_settings = auth_settings or AuthSettings.from_env()
    admin_settings = admin_settings or AdminSettings.from_env()
    dead_letter = dead_letter or DeadLetterSettings.from_env()
    if photos is None:
        # The store this process owns is the deployed one: its photos are swept here.
        settings = StatusSettings.from_env()
        photos = PhotoStore.from_settings(settings)
        if settings.sweep_interval_s > 0:
            Sweeper(photos, settings.sweep_interval_s).start()
    # Reads what the stages wrote, over the writer's connections (which the status function
    # uses itself for upload declarations and dead letters).
    reader = StatusReader(photos.client, photos.settings)
    tokens = TokenVerifier(auth_settings)
    sessions = AdminSessions(admin_settings, auth_settings.jwt_secret, SessionStore(reader.client))
    auth = Authenticator(tokens, sessions)
    cors = CorsPolicy(auth_settings.cors_origins)
    app = Flask(__name__, static_folder="static", static_url_path="/admin/static")
    # Before FastPoll wraps it: a fast-path poll gets no span, everything Flask answers does.
    instrument_app(app)
    _register_error_handlers(app)

    def status_response(user_id: str) -> Response:
        answer = status_answer(reader.user_status(user_id), request.headers.get("If-None-Match"))
        return Response(answer.body, answer.status, answer.headers)

    @app.get(STATUS_PATH)
    def own_status() -> Response:
        if POLL_ERROR in request.environ:
            raise request.environ[POLL_ERROR]  # the fast path's poll failed: answer its error
        return status_response(auth.user(request).user_id)

    @app.get("/v1/users/<user_id>/status")
    def user_status(user_id: str) -> Response:
        if not auth.user(request).may_read(user_id):
            raise Forbidden("a token may read only its own user's status")
        return status_response(user_id)

    @app.post("/v1/uploads")
    def declare_upload() -> Response | tuple[Response, int]:
        principal = auth.user(request)
        body = request.get_json(silent=True)
        expected = _whole_number(body.get("expected") if isinstance(body, dict) else None)
        if expected is None or not 1 <= expected <= MAX_DECLARED_UPLOAD:
            return jsonify(
                error=f'send {{"expected": N}} with N a whole number, 1 to {MAX_DECLARED_UPLOAD}'
            ), 400
        photos.declare_upload(principal.user_id, expected)
        return status_response(principal.user_id)

    if dead_letter.enabled:
        _add_dead_letter_sink(app, photos)

    app.register_blueprint(create_admin_blueprint(reader, auth, admin_settings))

    @app.get("/admin")
    def dashboard() -> Response:
        response = app.send_static_file("dashboard.html")
        response.headers["X-Frame-Options"] = "DENY"
        return response

    served_document = served_openapi_document(dead_letter)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(served_document)

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify(ok=True), 200

    add_cors(app, cors)
    add_security_headers(app)
    health = StageHealthCollector(lambda: read_pipeline(reader, admin_settings))
    request_metrics = instrument(app, [health])
    limit_request_bodies(
        app,
        limits.api_body_bytes,
        {"admin.login": limits.login_bytes, "dead_letter": limits.event_bytes},
    )
    app.wsgi_app = FastPoll(app.wsgi_app, reader, tokens, cors, request_metrics)
    return app


def _add_dead_letter_sink(app: Flask, photos: PhotoStore) -> None:
    # Only the broker may mark a photo failed: its OIDC token, when EVENT_AUTH_ISSUER is set.
    senders = EventVerifier.from_env()

    @app.post(DEAD_LETTER_PATH)
    def dead_letter() -> tuple[Response, ...]:
        refused = authenticate_sender(senders, "dead-letter sink")
        if refused is not None:
            return refused
        try:
            event = parse_event(request.headers, request.get_data())
            photo = PhotoRef.from_data(event.data)
            stages = PIPELINE.dead_letter_stages(event["type"])
        except (ValueError, KeyError, TypeError) as exc:
            return jsonify(error=f"bad dead-lettered event: {exc}"), 400
        error = event.get("knativeerrorcode") or "no response"
        # The destination is an in-cluster address: the log gets it, the user's status does not.
        destination = event.get("knativeerrordest") or "subscriber"
        with photo_context(photo.user_id, photo.key):
            failed_at = _mark_failed(photos, photo, stages, error)
            if failed_at is None:  # a duplicate dead letter, or the stage did finish
                log.info("dead letter for a photo that ended already: %s", destination)
                return jsonify(recorded=stages[0].failed), 200
            # The photo's one failure line.
            failure = {"reason": "delivery_failed"}
            message = "%s failed: delivery_failed: %s answered %s after all retries"
            log.warning(message, failed_at.name, destination, error, extra=failure)
        return jsonify(recorded=failed_at.failed), 200


def _mark_failed(
    photos: PhotoStore, photo: PhotoRef, stages: tuple[Stage, ...], error: str
) -> Stage | None:
    """Fail the photo at the first of `stages` it has not passed (a photo whose stage finished
    but whose reply was lost fails at the next); None when it ended already."""
    for stage in stages:
        detail = f"the {stage.name} stage answered {error} after all retries"
        if photos.record(
            photo.user_id, photo.photo_id, stage.failed, reason="delivery_failed", detail=detail
        ):
            return stage
    return None


def _whole_number(value: Any) -> int | None:
    """An integer, or a float with no fraction (JSON does not tell 3 from 3.0); else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(TransientError)
    def unavailable(exc: TransientError) -> tuple[Response, int]:
        return jsonify(public_error(log, "temporarily unavailable; retry later", exc)), 503

    @app.errorhandler(InternalServerError)
    def internal_error(exc: InternalServerError) -> tuple[Response, int]:
        # Flask logged the original exception's traceback already.
        return jsonify(public_error(log, "internal error", exc.original_exception or exc)), 500

    @app.errorhandler(Unauthorized)
    def unauthorized(exc: Unauthorized) -> tuple[Response, int, dict[str, str]]:
        return jsonify(error=str(exc)), 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}

    @app.errorhandler(Forbidden)
    def forbidden(exc: Forbidden) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 403

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        """Werkzeug's errors (404, 405, ...) as JSON, keeping their headers (Allow)."""
        response = exc.get_response()
        response.set_data(json.dumps({"error": exc.description}))
        response.content_type = "application/json"
        return response
