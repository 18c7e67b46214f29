"""Every setting of every component, typed, read from the environment in one place.

Each component reads only its own section (`StorageSettings.from_env()`, ...). Each section is
a pydantic-settings model: a field's `validation_alias` is its environment variable and its
`description` is what docs/configuration.md says of it (`python -m scripts.gen_config_docs`
regenerates the tables there; tests/test_config_docs.py fails when they are stale).

`XSettings.from_env()` reads the environment; `XSettings(field=...)` does not (the tests build
settings by field name, and only what they pass differs from the defaults). Either way a value
that is not valid is a `ValueError` of one line naming the variable, so a component refuses to
start with that line.
"""

from __future__ import annotations

import ipaddress
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from functions.common.pipeline import PIPELINE

# -- how a variable's text becomes a value -----------------------------------------------------
# Exactly as this module's hand-written parsing did: an empty number or boolean is its default,
# an empty optional string is unset, a list is comma-separated (blanks dropped), and a string
# is taken as it is. The messages leave out the variable: `_one_line` puts it in front.


def _integer(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value == "":
        raise PydanticUseDefault()
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"must be an integer, got {value!r}") from None


def _number(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value == "":
        raise PydanticUseDefault()
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"must be a number, got {value!r}") from None


def _boolean(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    raw = value.strip().lower()
    if raw == "":
        raise PydanticUseDefault()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _unset_if_empty(value: Any) -> Any:
    return (value or None) if isinstance(value, str) else value


def _comma_separated(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _hex_colour(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    raw = value.lstrip("#")
    if not re.fullmatch(r"[0-9a-fA-F]{6}", raw):
        raise ValueError(f"must be a hex colour like #ffffff, got {raw!r}")
    return (int(raw[0:2], 16), int(raw[2:4], 16), int(raw[4:6], 16))


def _lowercase_set(value: Any) -> Any:
    value = _comma_separated(value)
    return frozenset(item.lower() for item in value) if isinstance(value, tuple) else value


Int = Annotated[int, BeforeValidator(_integer)]
Float = Annotated[float, BeforeValidator(_number)]
Bool = Annotated[bool, BeforeValidator(_boolean)]
OptionalStr = Annotated[str | None, BeforeValidator(_unset_if_empty)]
StrList = Annotated[tuple[str, ...], BeforeValidator(_comma_separated)]
Rgb = Annotated[tuple[int, int, int], BeforeValidator(_hex_colour)]
Extensions = Annotated[frozenset[str], BeforeValidator(_lowercase_set)]


def env(
    variable: str, default: Any = ..., description: str = "", *, doc_default: str | None = None
) -> Any:
    """A field read from `variable`. `doc_default` is what the docs show as its default where
    the value itself would say it badly."""
    extra = {"doc_default": doc_default} if doc_default is not None else None
    return Field(
        default, validation_alias=variable, description=description, json_schema_extra=extra
    )


# -- the settings models ------------------------------------------------------------------------

# Set while `from_env()` builds settings, so the sections it builds meanwhile (`limits`) read
# the environment too.
_READING_ENV: ContextVar[bool] = ContextVar("_READING_ENV", default=False)


class _Environment(PydanticBaseSettingsSource):
    """Each field's variable as the process environment holds it; an unset one is left out.
    Looked up one by one (`os.environ.get`), as tests/test_manifests.py records."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        variable = field.validation_alias
        if not isinstance(variable, str):
            return None, field_name, False
        return os.environ.get(variable), variable, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, name)
            if value is not None:
                values[name] = value
        values.update(self.settings_cls._other_variables())  # type: ignore[attr-defined]
        return values


def _variable(settings: type[BaseSettings], name: object) -> object:
    field = settings.model_fields.get(str(name))
    alias = field.validation_alias if field else None
    return alias if isinstance(alias, str) else name


def _one_line(settings: type[BaseSettings], exc: ValidationError) -> str:
    """A ValidationError as the one line a component refuses to start with."""
    lines = []
    for error in exc.errors(include_url=False):
        variable = _variable(settings, error["loc"][0]) if error["loc"] else None
        if error["type"] == "value_error":
            message = str(error["ctx"]["error"])
            lines.append(f"{variable} {message}" if variable else message)
        else:
            lines.append(f"{variable}: {error['msg']}" if variable else error["msg"])
    return "; ".join(lines)


class Settings(BaseSettings):
    """A settings section: frozen, read from the environment only by `from_env()` (through
    `_Environment` instead of pydantic-settings' own env source, which would read it on every
    construction and parse lists as JSON)."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ValueError(_one_line(type(self), exc)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _READING_ENV.get():
            return (init_settings, _Environment(settings_cls))
        return (init_settings,)

    @classmethod
    def _other_variables(cls) -> dict[str, Any]:
        """Values of variables that are not one field's each (AdminSettings' thresholds)."""
        return {}

    @classmethod
    def from_env(cls) -> Self:
        """These settings as the environment sets them; ValueError (one line) when invalid."""
        token = _READING_ENV.set(True)
        try:
            return cls()
        finally:
            _READING_ENV.reset(token)

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes`, validated again (what `dataclasses.replace` did)."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**(values | changes))


class StorageSettings(Settings):
    """The S3-compatible object store (Backblaze B2 in production)."""

    endpoint_url: OptionalStr = env(
        "S3_ENDPOINT_URL",
        None,
        "S3 endpoint (B2: `https://s3.<region>.backblazeb2.com`)",
        doc_default="AWS default",
    )
    region: str = env("S3_REGION", "us-west-004", "region")
    access_key_id: OptionalStr = env(
        "S3_ACCESS_KEY_ID", None, "B2 application key ID", doc_default="boto3 chain"
    )
    secret_access_key: OptionalStr = Field(
        None,
        validation_alias="S3_SECRET_ACCESS_KEY",
        description="B2 application key",
        json_schema_extra={"doc_default": "boto3 chain"},
        repr=False,
    )
    connect_timeout_s: Float = env("S3_CONNECT_TIMEOUT_S", 3.0, "client connect timeout (s)")
    read_timeout_s: Float = env("S3_READ_TIMEOUT_S", 20.0, "client read timeout (s)")
    max_attempts: Int = env("S3_MAX_ATTEMPTS", 3, "attempts per request (client retries)")


class LambdaSettings(Settings):
    """The existing database-update Lambda ("Lambda 2"), invoked synchronously."""

    function_name: str = env(
        "DB_LAMBDA_FUNCTION", "photo-db-update", "name of the database-update Lambda"
    )
    endpoint_url: OptionalStr = env(
        "DB_LAMBDA_ENDPOINT_URL",
        None,
        "Lambda endpoint (only for the local stand-in)",
        doc_default="AWS default",
    )
    region: str = env("DB_LAMBDA_REGION", "us-east-1", "region")
    timeout_s: Float = env("DB_LAMBDA_TIMEOUT_S", 10.0, "read timeout (s)")
    max_attempts: Int = env("DB_LAMBDA_MAX_ATTEMPTS", 2, "attempts per invoke")


class StatusSettings(Settings):
    """The Redis status store, written by every stage and read by the status function."""

    redis_url: str = env(
        "REDIS_URL", "redis://127.0.0.1:6379/0", "status store (`rediss://` for TLS)"
    )
    failures_kept: Int = env("STATUS_FAILURES_KEPT", 50, "newest failures kept per user")
    upload_declaration_ttl_s: Float = env(
        "UPLOAD_DECLARATION_TTL_S",
        900.0,
        "a declared upload stops holding the run open this long after it or the latest arrival",
    )
    eta_completions: Int = env(
        "ETA_COMPLETIONS", 20, "newest stage completions the ETA's rate is measured over"
    )
    latency_window_s: Float = env(
        "LATENCY_WINDOW_S", 300.0, "per-stage sliding window of the admin overview"
    )
    samples_kept: Int = env(
        "LATENCY_SAMPLES_KEPT", 20_000, "cap on the latency samples kept per stage"
    )
    lease_s: Float = env(
        "STAGE_LEASE_S",
        30.0,
        "how long a stage holds a photo it works on: a duplicate delivery meanwhile is answered "
        "503 (retried later), and a dead worker's hold lapses after it",
    )
    max_crashes: Int = env(
        "STAGE_MAX_CRASHES",
        2,
        "attempts on one photo whose worker died (segfault, OOM kill) before the photo fails as "
        "`crashed` instead of taking down the next worker too",
    )
    reply_ttl_s: Float = env(
        "STAGE_REPLY_TTL_S",
        86_400.0,
        "how long a stage keeps the reply event it sent, to answer a duplicate delivery with it",
    )
    retention_s: Float = env(
        "PHOTO_RECORD_RETENTION_S",
        7 * 86_400.0,
        "a finished photo's own record (what makes a repeat a duplicate) is dropped after this; "
        "the user's counts and history stay",
    )
    pending_deadline_s: Float = env(
        "PENDING_DEADLINE_S",
        1800.0,
        "a photo waiting longer than this for one stage fails as `timed_out` (a later completion "
        "still counts as done)",
    )
    sweep_interval_s: Float = env(
        "SWEEP_INTERVAL_S", 30.0, "how often the status function's sweeper looks for those"
    )


class DeadLetterSettings(Settings):
    """The Triggers' dead-letter sink (`POST /v1/dead-letter`, which marks a photo failed). Off
    by default: only the cluster-local `status-dead-letter` Service turns it on, so nobody
    outside the cluster can reach it through the public `status` Service."""

    enabled: Bool = env(
        "STATUS_DEAD_LETTER_ENABLED",
        False,
        "serve the Triggers' dead-letter sink `POST /v1/dead-letter`; on only in the "
        "cluster-local `status-dead-letter` Service, never the public one",
    )


class EventAuthSettings(Settings):
    """Who may deliver events to the stages and the dead-letter sink. With Knative Eventing's
    `authentication-oidc` on, the broker sends each delivery with `Authorization: Bearer`, a
    Kubernetes service-account token of the Trigger's OIDC identity (`sub`
    `system:serviceaccount:<namespace>:<trigger>-oidc-eventing.knative.dev-trigger`) for the
    subscriber's audience (the Trigger's `subscriber.audience`, `deadLetterSink.audience`).

    Off by default (the local stack and the tests run without OIDC); on when EVENT_AUTH_ISSUER
    is set, and then fail closed: the audience, the JWKS and the allowed subjects are required.
    A subject ending with `*` allows every `sub` that starts with what precedes it.
    """

    issuer: OptionalStr = env(
        "EVENT_AUTH_ISSUER",
        None,
        "the `iss` of the broker's OIDC tokens (Knative Eventing's `authentication-oidc`: the "
        "cluster's service-account issuer); set = every event and dead letter needs a valid "
        "token, else `401`",
        doc_default="unset (off)",
    )
    audience: OptionalStr = env(
        "EVENT_AUTH_AUDIENCE",
        None,
        "the `aud` the Trigger names for this Service; required with the issuer",
    )
    jwks_url: OptionalStr = env(
        "EVENT_AUTH_JWKS_URL",
        None,
        "the issuer's key set (the in-cluster `https://kubernetes.default.svc/openid/v1/jwks` is "
        "read with the pod's service-account token); required with the issuer",
    )
    subjects: StrList = env(
        "EVENT_AUTH_SUBJECTS",
        (),
        "comma-separated allowed `sub`s (a trailing `*` allows a prefix), the Triggers' OIDC "
        "service accounts `system:serviceaccount:<namespace>:<trigger>-oidc-eventing.knative."
        "dev-trigger`; required with the issuer",
    )
    leeway_s: float = Field(5.0, description="clock skew allowed on the tokens' time claims")

    @model_validator(mode="after")
    def _fail_closed(self) -> Self:
        if not self.enabled:
            return self
        missing = [
            name
            for name, value in (
                ("EVENT_AUTH_AUDIENCE", self.audience),
                ("EVENT_AUTH_JWKS_URL", self.jwks_url),
                ("EVENT_AUTH_SUBJECTS", self.subjects),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"EVENT_AUTH_ISSUER is set: set {', '.join(missing)} too")
        if any(subject in {"*", ""} for subject in self.subjects):
            raise ValueError("EVENT_AUTH_SUBJECTS: `*` alone would allow every sender")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)

    def allows(self, subject: str) -> bool:
        return any(
            subject.startswith(allowed[:-1]) if allowed.endswith("*") else subject == allowed
            for allowed in self.subjects
        )


# Pinned: a token's own `alg` header never chooses how it is verified.
JWT_HMAC_ALGORITHM = "HS256"
JWT_JWKS_ALGORITHM = "RS256"


# The most clock skew a token's time claims are allowed (JWT_LEEWAY_S).
MAX_LEEWAY_S = 60.0


def _secret(variable: str, description: str, doc_default: str = "unset") -> Any:
    return Field(
        None,
        validation_alias=variable,
        description=description,
        json_schema_extra={"doc_default": doc_default},
        repr=False,
    )


class AuthSettings(Settings):
    """Bearer tokens of the status API: HS256 JWTs from the app's backend, or RS256 via JWKS.

    Fail closed: a token is accepted only from `issuer` for `audience` (JWT_ISSUER,
    JWT_AUDIENCE); without either the status function refuses to start.
    """

    jwt_secret: OptionalStr = _secret(
        "JWT_SECRET",
        "HS256 key of user tokens (≥ 32 bytes); never grants the admin role",
        "none (this or `JWT_JWKS_URL` required)",
    )
    jwks_url: OptionalStr = env("JWT_JWKS_URL", None, "RS256 key set of user tokens")
    issuer: OptionalStr = env(
        "JWT_ISSUER",
        None,
        "the `iss` every user token must carry; the status function refuses to start without it",
        doc_default="none (required)",
    )
    audience: OptionalStr = env(
        "JWT_AUDIENCE",
        None,
        "the `aud` every user token must carry; the status function refuses to start without it",
        doc_default="none (required)",
    )
    leeway_s: Float = env(
        "JWT_LEEWAY_S", 5.0, f"clock skew allowed on `exp`/`nbf`/`iat` (at most {MAX_LEEWAY_S:g})"
    )
    cors_origins: StrList = env(
        "CORS_ORIGINS", (), "comma-separated front-end origins allowed on `/v1/` user endpoints"
    )

    @model_validator(mode="after")
    def _fail_closed(self) -> Self:
        if not (self.jwt_secret or self.jwks_url):
            raise ValueError("set JWT_SECRET (HS256) or JWT_JWKS_URL (RS256): no token verifier")
        if self.jwt_secret is not None and len(self.jwt_secret.encode()) < 32:
            raise ValueError("JWT_SECRET must be at least 32 bytes (HS256 wants a 256-bit key)")
        if not self.issuer:
            raise ValueError("set JWT_ISSUER: the `iss` every user token must carry")
        if not self.audience:
            raise ValueError("set JWT_AUDIENCE: the `aud` every user token must carry")
        if not 0 <= self.leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"JWT_LEEWAY_S must be 0 to {MAX_LEEWAY_S:g} seconds")
        return self


def threshold_variable(stage: str, key: str) -> str:
    """The variable of one default threshold, e.g. THRESHOLD_EMBED_P95_MS."""
    return f"THRESHOLD_{stage.upper()}_{key.upper()}"


class AdminSettings(Settings):
    """The admin API and dashboard: login, sessions, admin tokens, and the default acceptable
    delay per stage.

    Admin authority never comes from the user tokens' JWT_SECRET: sessions are signed with
    ADMIN_SESSION_SECRET (required with ADMIN_PASSWORD), admin bearer tokens with
    ADMIN_JWT_SECRET (unset: none are accepted), each with an issuer and audience of its own.
    """

    password: OptionalStr = _secret(
        "ADMIN_PASSWORD", "dashboard login; unset = login off (admin bearer tokens only)"
    )
    session_secret: OptionalStr = _secret(
        "ADMIN_SESSION_SECRET",
        "HS256 key of admin sessions (≥ 32 bytes, not `JWT_SECRET`); required with "
        "`ADMIN_PASSWORD`",
    )
    session_ttl_s: Int = env(
        "ADMIN_SESSION_TTL_S",
        1800,
        "admin session maximum age (from its `iat`, checked server-side); positive",
    )
    cookie_secure: Bool = env(
        "ADMIN_COOKIE_SECURE",
        True,
        "`Secure` flag of the session cookie (off only for plain-http local use)",
    )
    jwt_secret: OptionalStr = _secret(
        "ADMIN_JWT_SECRET",
        'key of admin bearer tokens (with `role: "admin"`; ≥ 32 bytes, not `JWT_SECRET`); '
        "unset = no admin bearer tokens",
    )
    jwt_issuer: str = env("ADMIN_JWT_ISSUER", "photo-pipeline-admin", "`iss` of admin tokens")
    jwt_audience: str = env("ADMIN_JWT_AUDIENCE", "status-admin-api", "`aud` of admin tokens")
    default_thresholds: dict[str, dict[str, Float]] = Field(
        default_factory=PIPELINE.default_thresholds,
        description="default thresholds until an admin sets them (they persist in Redis)",
    )
    users_shown: Int = env(
        "ADMIN_USERS_SHOWN", 50, "users listed in the overview (most recently active first)"
    )
    idle_user_retention_s: Float = env(
        "ADMIN_IDLE_USER_RETENTION_S", 3600.0, "how long an idle user stays listed"
    )
    login_window_s: Int = env(
        "ADMIN_LOGIN_WINDOW_S",
        900,
        "the login brake's window (functions/status/admin_store.py); at least 1",
    )
    login_failures_per_client: Int = env(
        "ADMIN_LOGIN_FAILURES_PER_CLIENT",
        5,
        "after this many wrong passwords in a window from one client address, that address "
        "gets `429` until the window ends; at least 1",
    )
    login_failures_per_account: Int = env(
        "ADMIN_LOGIN_FAILURES_PER_ACCOUNT",
        100,
        "after this many wrong passwords in a window from all addresses together, only "
        "addresses that logged in before may still try; at least 1",
    )
    trusted_proxies: StrList = env(
        "ADMIN_TRUSTED_PROXIES",
        (),
        "comma-separated networks of the proxies in front that append to `X-Forwarded-For`; the "
        "login brake's client address is the first entry outside them, read from the right "
        "(empty: the connection's peer; the Knative ConfigMap lists loopback and a pod CIDR "
        "placeholder to replace with the cluster's own, never node addresses; see "
        "docs/security.md)",
    )
    token_max_age_s: Int = env(
        "ADMIN_TOKEN_MAX_AGE_S",
        3600,
        "admin bearer tokens must carry `iat` and are refused once it is older than this, "
        "whatever their `exp`; at least 1",
    )

    @classmethod
    def _other_variables(cls) -> dict[str, Any]:
        thresholds = {}
        for stage, values in PIPELINE.default_thresholds().items():
            thresholds[stage] = {}
            for key, default in values.items():
                variable = threshold_variable(stage, key)
                try:
                    value = _number(os.environ.get(variable, ""))
                except PydanticUseDefault:
                    value = default
                except ValueError as exc:
                    raise ValueError(f"{variable} {exc}") from None
                thresholds[stage][key] = value
        return {"default_thresholds": thresholds}

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name, value in (
            ("ADMIN_LOGIN_WINDOW_S", self.login_window_s),
            ("ADMIN_LOGIN_FAILURES_PER_CLIENT", self.login_failures_per_client),
            ("ADMIN_LOGIN_FAILURES_PER_ACCOUNT", self.login_failures_per_account),
            ("ADMIN_TOKEN_MAX_AGE_S", self.token_max_age_s),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1 (got {value})")
        if self.password and not self.session_secret:
            raise ValueError("set ADMIN_SESSION_SECRET: ADMIN_PASSWORD is set (sessions' key)")
        for name, secret in (
            ("ADMIN_SESSION_SECRET", self.session_secret),
            ("ADMIN_JWT_SECRET", self.jwt_secret),
        ):
            if secret is not None and len(secret.encode()) < 32:
                raise ValueError(f"{name} must be at least 32 bytes")
        if self.session_ttl_s <= 0:
            raise ValueError("ADMIN_SESSION_TTL_S must be positive")
        for network in self.trusted_proxies:
            try:
                ipaddress.ip_network(network)
            except ValueError as exc:
                raise ValueError(f"ADMIN_TRUSTED_PROXIES: {exc}") from exc
        return self


MIB = 1024 * 1024


class InputLimits(Settings):
    """The most an uploaded photo may weigh, in bytes and in pixels (read from its header),
    before any stage decodes it; over either it fails as `too_large`. And the memory the photos
    a pod decodes at once may take together (functions/common/memory_budget.py): a photo whose
    decoding alone would take more than a worker's share fails as `too_large` too."""

    max_bytes: Int = env(
        "MAX_INPUT_BYTES",
        100 * MIB,
        "largest photo in bytes, checked before decoding",
        doc_default="104857600 (100 MiB)",
    )
    max_pixels: Int = env(
        "MAX_INPUT_PIXELS",
        100_000_000,
        "most pixels of a photo (read from its header), checked before decoding",
    )
    # Sized for a 1 GiB pod: gunicorn and two idle workers take ~180 MiB; the rest holds the
    # downloaded originals, encoded results and what the estimates leave out.
    memory_budget_mb: Int = env(
        "DECODE_MEMORY_BUDGET_MB",
        640,
        "memory (MiB) the photos a pod decodes at once may take together, split equally "
        "between its `WEB_CONCURRENCY` worker processes (they share no memory). Each photo's "
        "peak is estimated from its header: it waits up to 20 s for room (then fails "
        "transiently and is redelivered), and fails as `too_large` when it needs more than a "
        "worker's share",
        doc_default="640 (the Services: thumbnail 1024 of 1536Mi, so 512 a worker; embed 1280 "
        "of 3Gi)",
    )
    # 2 as in gunicorn_conf.py. Memory is not shared between processes, so each gets an equal
    # share of the pod's budget to spend on its own threads' photos without asking the others.
    workers: Int = env(
        "WEB_CONCURRENCY",
        2,
        "gunicorn's worker processes (also read by gunicorn_conf.py); each gets an equal share "
        "of the decode memory budget",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.memory_budget_mb <= 0 or self.workers < 1:
            raise ValueError(
                "DECODE_MEMORY_BUDGET_MB must be positive and WEB_CONCURRENCY at least 1, got "
                f"{self.memory_budget_mb} MiB and {self.workers}"
            )
        return self

    @property
    def memory_budget_bytes(self) -> int:
        return self.memory_budget_mb * MIB

    @property
    def process_memory_budget_bytes(self) -> int:
        return self.memory_budget_bytes // self.workers


KIB = 1024


class RequestLimits(Settings):
    """The largest request body each HTTP endpoint reads, in bytes; a larger one is answered
    413 before it is read (Content-Length over it) or once it passes it (chunked)."""

    webhook_bytes: Int = env(
        "MAX_WEBHOOK_BYTES",
        1024 * KIB,
        "largest webhook body (B2's batch of 50 events takes ~30 KiB); over it (or over B2's "
        "50 events) `413` before it is read",
    )
    login_bytes: Int = env(
        "MAX_LOGIN_BYTES", 4 * KIB, "largest `POST /v1/admin/login` body (`413` over it)"
    )
    event_bytes: Int = env(
        "MAX_EVENT_BYTES",
        64 * KIB,
        "largest CloudEvent body, to a stage or to the dead-letter sink (`413` over it)",
    )
    api_body_bytes: Int = env(
        "MAX_API_BODY_BYTES",
        16 * KIB,
        "largest body of any other status API request (uploads, thresholds)",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        sizes = (self.webhook_bytes, self.login_bytes, self.event_bytes, self.api_body_bytes)
        if min(sizes) < 1:
            raise ValueError(
                "MAX_WEBHOOK_BYTES, MAX_LOGIN_BYTES, MAX_EVENT_BYTES and "
                "MAX_API_BODY_BYTES must be positive"
            )
        return self


IMAGE_EXTENSIONS = "jpg,jpeg,png,webp,heic,heif,avif,tif,tiff,gif,bmp"
# `{key}`, not `{key_stem}`: IMG_1.HEIC and IMG_1.JPG must not share a thumbnail.
THUMBNAIL_KEY_TEMPLATE = "thumbnails/{key}.jpg"


def fixed_prefix(template: str) -> str:
    """The part of a key template before its first `{field}`."""
    return template.split("{", 1)[0]


class ReceiverSettings(Settings):
    """The B2 event-notification webhook receiver. It fails closed: it refuses to start
    without B2_WEBHOOK_SECRETS (`require_signed_webhooks`) unless local tooling opts out with
    B2_WEBHOOK_ALLOW_UNSIGNED=true."""

    signing_secrets: StrList = Field(
        (),
        validation_alias="B2_WEBHOOK_SECRETS",
        description="comma-separated signing secrets (rotation); required: without one the "
        "receiver refuses to start",
        json_schema_extra={"doc_default": "none"},
        repr=False,
    )
    sink_url: str = env("K_SINK", "http://127.0.0.1:8080", "broker URL (set by the SinkBinding)")
    user_id_pattern: re.Pattern[str] = env(
        "USER_ID_PATTERN",
        re.compile(r"^(?P<user_id>[^/]+)/"),
        "regex with group `user_id`, applied to the object key",
    )
    image_extensions: Extensions = env(
        "IMAGE_EXTENSIONS",
        frozenset(IMAGE_EXTENSIONS.split(",")),
        "comma-separated extensions of the keys processed (any case)",
        doc_default=f"`{IMAGE_EXTENSIONS}`",
    )
    # The receiver's loop guard: keys under the fixed prefix of the thumbnail stage's
    # THUMBNAIL_KEY_TEMPLATE are what the pipeline wrote, never uploads.
    thumbnail_key_template: str = env(
        "THUMBNAIL_KEY_TEMPLATE",
        THUMBNAIL_KEY_TEMPLATE,
        "the thumbnail stage's key template (functions/thumbnail/settings.py): keys under its "
        "fixed prefix are ignored",
    )
    publish_timeout_s: Float = env("PUBLISH_TIMEOUT_S", 2.0, "per-event publish timeout (s)")
    answer_within_s: Float = env(
        "WEBHOOK_ANSWER_WITHIN_S",
        2.5,
        "a webhook not fully accepted by then is answered 503 (B2 retries; duplicates count "
        "once): B2 gives up after about 3 s, and an answered 503 makes it retry where a timeout "
        "might not",
    )
    sink_ca_certs: OptionalStr = env(
        "K_CA_CERTS",
        None,
        "PEM CA certificates of an HTTPS broker, trusted besides requests' default CAs (set by "
        "the SinkBinding under transport encryption)",
    )
    sink_token_file: Path = env(
        "K_SINK_TOKEN_FILE",
        Path("/oidc/token"),
        "where the SinkBinding mounts the OIDC token the broker's ingress requires under "
        "Eventing's `authentication-oidc` (the kubelet rotates it); sent as "
        "`Authorization: Bearer` at each publish while the file exists",
    )
    dedup_window_s: Float = env(
        "WEBHOOK_DEDUP_WINDOW_S",
        86400.0,
        "a B2 `eventId` accepted this many seconds ago or less is dropped when B2 delivers it "
        "again (Redis key `b2event:<eventId>`, at `REDIS_URL`); at least 0.001",
    )
    lane_interactive_backlog: Int = env(
        "LANE_INTERACTIVE_BACKLOG",
        10,
        "a user's uploads go in the `bulk` lane once they have this many photos waiting at any "
        "stage, and until none is (functions/common/lanes.py); before, in the `interactive` "
        "lane",
    )
    allow_unsigned: Bool = env(
        "B2_WEBHOOK_ALLOW_UNSIGNED",
        False,
        "local tooling only: with no secret set, accept unsigned webhooks instead of refusing "
        "to start",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.thumbnail_prefix:
            raise ValueError(
                "THUMBNAIL_KEY_TEMPLATE must start with a fixed prefix such as `thumbnails/` (the "
                f"receiver's loop guard); got {self.thumbnail_key_template!r}"
            )
        if self.dedup_window_s < 0.001:
            raise ValueError(
                f"WEBHOOK_DEDUP_WINDOW_S must be at least 0.001 s, got {self.dedup_window_s}"
            )
        return self

    @property
    def thumbnail_prefix(self) -> str:
        """Keys under it are the thumbnails the pipeline wrote: ignored."""
        return fixed_prefix(self.thumbnail_key_template)

    def require_signed_webhooks(self) -> None:
        """ValueError, so the receiver does not start, when it would accept unsigned webhooks
        without having been told to (B2_WEBHOOK_ALLOW_UNSIGNED)."""
        if not (self.signing_secrets or self.allow_unsigned):
            raise ValueError(
                "set B2_WEBHOOK_SECRETS (the B2 rule's signing secret): the receiver refuses "
                "unsigned webhooks (B2_WEBHOOK_ALLOW_UNSIGNED=true for local tooling only)"
            )
