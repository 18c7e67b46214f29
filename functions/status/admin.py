"""The admin API: login for the dashboard, the pipeline overview, and the thresholds."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from functions.common.config import AdminSettings
from functions.common.status_model import PipelineSnapshot
from functions.status.admin_store import LoginBrake, ThresholdStore, client_address
from functions.status.auth import ADMIN_COOKIE, Authenticator, Unauthorized
from functions.status.overview import overview_body
from functions.status.status_reader import StatusReader
from functions.status.thresholds import Thresholds, in_force, validate_change

_COOKIE_PATH = "/v1/admin"
_PUBLIC_ENDPOINTS = {"admin.login", "admin.logout"}


def read_pipeline(
    reader: StatusReader, settings: AdminSettings
) -> tuple[PipelineSnapshot, Thresholds]:
    """A fresh snapshot of the pipeline, and the thresholds in force."""
    snapshot = reader.snapshot(settings.idle_user_retention_s)
    return snapshot, in_force(settings.default_thresholds, snapshot.thresholds)


def create_admin_blueprint(
    reader: StatusReader, auth: Authenticator, settings: AdminSettings
) -> Blueprint:
    admin = Blueprint("admin", __name__, url_prefix="/v1/admin")
    # The session cookie's scope, the same when it is set and when it is cleared.
    cookie = {
        "path": _COOKIE_PATH,
        "secure": settings.cookie_secure,
        "httponly": True,
        "samesite": "Strict",
    }

    @admin.before_request
    def require_admin() -> None:
        if request.endpoint not in _PUBLIC_ENDPOINTS:
            auth.admin(request)

    brake = LoginBrake(reader.client, settings)
    thresholds = ThresholdStore(reader.client)

    @admin.post("/login")
    def login() -> Response | tuple[Response, int]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("password"), str):
            return jsonify(error='send {"password": "..."} as JSON'), 400
        address = client_address(request, settings.trusted_proxies)
        verdict = brake.attempt(address)  # counted before the password is checked
        if not verdict.allowed:
            response = jsonify(error="too many wrong passwords; try again later")
            response.headers["Retry-After"] = str(verdict.retry_after_s)
            return response, 429
        try:
            token = auth.sessions.login(body["password"])
        except Unauthorized:
            brake.failed(address)
            raise
        brake.succeeded(address)
        response = jsonify(role="admin", expires_in_s=auth.sessions.ttl_s)
        response.set_cookie(ADMIN_COOKIE, token, max_age=auth.sessions.ttl_s, **cookie)
        return response

    @admin.post("/logout")
    def logout() -> Response:
        if ADMIN_COOKIE in request.cookies:
            auth.sessions.logout(request.cookies[ADMIN_COOKIE])
        response = jsonify(logged_out=True)
        response.delete_cookie(ADMIN_COOKIE, **cookie)
        return response

    @admin.get("/overview")
    def overview() -> Response:
        snapshot, in_effect = read_pipeline(reader, settings)
        return _no_store(jsonify(overview_body(snapshot, in_effect, settings.users_shown)))

    def thresholds_in_force() -> Response:
        return _no_store(jsonify(in_force(settings.default_thresholds, thresholds.thresholds())))

    @admin.get("/thresholds")
    def get_thresholds() -> Response:
        return thresholds_in_force()

    @admin.put("/thresholds")
    def put_thresholds() -> Response | tuple[Response, int]:
        try:
            change = validate_change(request.get_json(silent=True))
        except ValueError as exc:
            return jsonify(error=str(exc)), 400
        thresholds.set_thresholds(change)
        return thresholds_in_force()

    return admin


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response
