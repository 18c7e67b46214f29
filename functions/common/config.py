"""Every setting of every component, typed, read from the environment in one place.

Each component reads only its own section (`StorageSettings.from_env()`, ...). The table in
docs/configuration.md lists each variable; keep the two in step.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path


def _str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _optional(name: str) -> str | None:
    return os.environ.get(name) or None


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _rgb(name: str, default: tuple[int, int, int]) -> tuple[int, int, int]:
    if name not in os.environ:
        return default
    raw = os.environ[name].lstrip("#")
    if not re.fullmatch(r"[0-9a-fA-F]{6}", raw):
        raise ValueError(f"{name} must be a hex colour like #ffffff, got {raw!r}")
    return (int(raw[0:2], 16), int(raw[2:4], 16), int(raw[4:6], 16))


def _list(name: str, default: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in _str(name, default).split(",") if item.strip())


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class StorageSettings:
    """The S3-compatible object store (Backblaze B2 in production)."""

    endpoint_url: str | None
    region: str
    access_key_id: str | None
    secret_access_key: str | None
    connect_timeout_s: float
    read_timeout_s: float
    max_attempts: int

    @classmethod
    def from_env(cls) -> StorageSettings:
        return cls(
            endpoint_url=_optional("S3_ENDPOINT_URL"),
            region=_str("S3_REGION", "us-west-004"),
            access_key_id=_optional("S3_ACCESS_KEY_ID"),
            secret_access_key=_optional("S3_SECRET_ACCESS_KEY"),
            connect_timeout_s=_float("S3_CONNECT_TIMEOUT_S", 3.0),
            read_timeout_s=_float("S3_READ_TIMEOUT_S", 20.0),
            max_attempts=_int("S3_MAX_ATTEMPTS", 3),
        )


@dataclass(frozen=True)
class LambdaSettings:
    """The existing database-update Lambda ("Lambda 2"), invoked synchronously."""

    function_name: str
    endpoint_url: str | None
    region: str
    timeout_s: float
    max_attempts: int

    @classmethod
    def from_env(cls) -> LambdaSettings:
        return cls(
            function_name=_str("DB_LAMBDA_FUNCTION", "photo-db-update"),
            endpoint_url=_optional("DB_LAMBDA_ENDPOINT_URL"),
            region=_str("DB_LAMBDA_REGION", "us-east-1"),
            timeout_s=_float("DB_LAMBDA_TIMEOUT_S", 10.0),
            max_attempts=_int("DB_LAMBDA_MAX_ATTEMPTS", 2),
        )


@dataclass(frozen=True)
class StatusSettings:
    """The Redis status store, written by every stage and read by the status function."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    failures_kept: int = 50
    # A declared upload whose photos stop arriving no longer holds the run open after this.
    upload_declaration_ttl_s: float = 900.0
    # The per-user ETA uses the rate of this many most recent completions.
    eta_completions: int = 20
    # Per-stage latency samples: sliding window for the admin API, and a hard cap.
    latency_window_s: float = 300.0
    samples_kept: int = 20_000
    # A stage holds a photo for this long while it works on it; a duplicate delivery meanwhile
    # is answered 503 (retried later), and a lease left by a dead worker lapses after it.
    lease_s: float = 30.0
    # Attempts on one photo that ended with their worker dead (segfault, OOM kill) before the
    # photo fails as `crashed` instead of taking down the next worker too.
    max_crashes: int = 2
    # How long a stage remembers the reply event it sent, to answer a duplicate with it.
    reply_ttl_s: float = 86_400.0
    # A finished photo's own record (what makes a repeat a duplicate) is dropped after this;
    # the user's counts and history are kept.
    retention_s: float = 7 * 86_400.0
    # The sweeper fails a photo waiting longer than this for one stage as `timed_out`.
    pending_deadline_s: float = 1800.0
    sweep_interval_s: float = 30.0

    @classmethod
    def from_env(cls) -> StatusSettings:
        defaults = cls()
        return cls(
            redis_url=_str("REDIS_URL", defaults.redis_url),
            lease_s=_float("STAGE_LEASE_S", defaults.lease_s),
            max_crashes=_int("STAGE_MAX_CRASHES", defaults.max_crashes),
            reply_ttl_s=_float("STAGE_REPLY_TTL_S", defaults.reply_ttl_s),
            retention_s=_float("PHOTO_RECORD_RETENTION_S", defaults.retention_s),
            pending_deadline_s=_float("PENDING_DEADLINE_S", defaults.pending_deadline_s),
            sweep_interval_s=_float("SWEEP_INTERVAL_S", defaults.sweep_interval_s),
            failures_kept=_int("STATUS_FAILURES_KEPT", defaults.failures_kept),
            upload_declaration_ttl_s=_float(
                "UPLOAD_DECLARATION_TTL_S", defaults.upload_declaration_ttl_s
            ),
            eta_completions=_int("ETA_COMPLETIONS", defaults.eta_completions),
            latency_window_s=_float("LATENCY_WINDOW_S", defaults.latency_window_s),
            samples_kept=_int("LATENCY_SAMPLES_KEPT", defaults.samples_kept),
        )


@dataclass(frozen=True)
class DeadLetterSettings:
    """The Triggers' dead-letter sink (`POST /v1/dead-letter`, which marks a photo failed). Off
    by default: only the cluster-local `status-dead-letter` Service turns it on, so nobody
    outside the cluster can reach it through the public `status` Service."""

    enabled: bool = False

    @classmethod
    def from_env(cls) -> DeadLetterSettings:
        return cls(enabled=_bool("STATUS_DEAD_LETTER_ENABLED", cls.enabled))


@dataclass(frozen=True)
class EventAuthSettings:
    """Who may deliver events to the stages and the dead-letter sink. With Knative Eventing's
    `authentication-oidc` on, the broker sends each delivery with `Authorization: Bearer`, a
    Kubernetes service-account token of the Trigger's OIDC identity (`sub`
    `system:serviceaccount:<namespace>:<trigger>-oidc-eventing.knative.dev-trigger`) for the
    subscriber's audience (the Trigger's `subscriber.audience`, `deadLetterSink.audience`).

    Off by default (the local stack and the tests run without OIDC); on when EVENT_AUTH_ISSUER
    is set, and then fail closed: the audience, the JWKS and the allowed subjects are required.
    A subject ending with `*` allows every `sub` that starts with what precedes it.
    """

    issuer: str | None = None
    audience: str | None = None
    jwks_url: str | None = None
    subjects: tuple[str, ...] = ()
    leeway_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.enabled:
            return
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

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)

    def allows(self, subject: str) -> bool:
        return any(
            subject.startswith(allowed[:-1]) if allowed.endswith("*") else subject == allowed
            for allowed in self.subjects
        )

    @classmethod
    def from_env(cls) -> EventAuthSettings:
        return cls(
            issuer=_optional("EVENT_AUTH_ISSUER"),
            audience=_optional("EVENT_AUTH_AUDIENCE"),
            jwks_url=_optional("EVENT_AUTH_JWKS_URL"),
            subjects=_list("EVENT_AUTH_SUBJECTS", ""),
        )


# Pinned: a token's own `alg` header never chooses how it is verified.
JWT_HMAC_ALGORITHM = "HS256"
JWT_JWKS_ALGORITHM = "RS256"


# The most clock skew a token's time claims are allowed (JWT_LEEWAY_S).
MAX_LEEWAY_S = 60.0


@dataclass(frozen=True)
class AuthSettings:
    """Bearer tokens of the status API: HS256 JWTs from the app's backend, or RS256 via JWKS.

    Fail closed: a token is accepted only from `issuer` for `audience` (JWT_ISSUER,
    JWT_AUDIENCE); without either the status function refuses to start.
    """

    jwt_secret: str | None = None
    jwks_url: str | None = None
    issuer: str | None = None  # required `iss` claim
    audience: str | None = None  # required `aud` claim
    leeway_s: float = 5.0
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
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

    @classmethod
    def from_env(cls) -> AuthSettings:
        return cls(
            jwt_secret=_optional("JWT_SECRET"),
            jwks_url=_optional("JWT_JWKS_URL"),
            issuer=_optional("JWT_ISSUER"),
            audience=_optional("JWT_AUDIENCE"),
            leeway_s=_float("JWT_LEEWAY_S", cls.leeway_s),
            cors_origins=_list("CORS_ORIGINS", ""),
        )


# The mission's acceptable delay per pipeline stage: the admin's thresholds until set.
DEFAULT_THRESHOLDS = {
    "thumbnail": {"p95_ms": 300.0, "backlog_age_s": 60.0},
    "embed": {"p95_ms": 500.0, "backlog_age_s": 120.0},
}
STAGES = tuple(DEFAULT_THRESHOLDS)
THRESHOLD_KEYS = tuple(DEFAULT_THRESHOLDS["thumbnail"])


@dataclass(frozen=True)
class AdminSettings:
    """The admin API and dashboard: login, sessions, admin tokens, and the default acceptable
    delay per stage.

    Admin authority never comes from the user tokens' JWT_SECRET: sessions are signed with
    ADMIN_SESSION_SECRET (required with ADMIN_PASSWORD), admin bearer tokens with
    ADMIN_JWT_SECRET (unset: none are accepted), each with an issuer and audience of its own.
    """

    password: str | None = None
    session_secret: str | None = None
    session_ttl_s: int = 1800
    cookie_secure: bool = True
    jwt_secret: str | None = None
    jwt_issuer: str = "photo-pipeline-admin"
    jwt_audience: str = "status-admin-api"
    # Defaults until an admin sets thresholds through the API (they persist in Redis).
    default_thresholds: dict[str, dict[str, float]] = field(
        default_factory=lambda: {stage: dict(keys) for stage, keys in DEFAULT_THRESHOLDS.items()}
    )
    # Users listed in the overview (most recently active first), and how long an idle user
    # stays in the active index.
    users_shown: int = 50
    idle_user_retention_s: float = 3600.0
    # The login brake (functions/status/admin_store.py): wrong passwords per client address in
    # a window, wrong passwords from all addresses together before only known addresses may
    # try, and the networks of the proxies in front whose X-Forwarded-For entries are trusted.
    login_window_s: int = 900
    login_failures_per_client: int = 5
    login_failures_per_account: int = 100
    trusted_proxies: tuple[str, ...] = ()
    # Admin bearer tokens are refused once their `iat` is older than this, whatever `exp` says.
    token_max_age_s: int = 3600

    def __post_init__(self) -> None:
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

    @classmethod
    def from_env(cls) -> AdminSettings:
        defaults = cls()
        return cls(
            password=_optional("ADMIN_PASSWORD"),
            session_secret=_optional("ADMIN_SESSION_SECRET"),
            session_ttl_s=_int("ADMIN_SESSION_TTL_S", defaults.session_ttl_s),
            cookie_secure=_bool("ADMIN_COOKIE_SECURE", defaults.cookie_secure),
            jwt_secret=_optional("ADMIN_JWT_SECRET"),
            jwt_issuer=_str("ADMIN_JWT_ISSUER", defaults.jwt_issuer),
            jwt_audience=_str("ADMIN_JWT_AUDIENCE", defaults.jwt_audience),
            default_thresholds={
                stage: {
                    key: _float(f"THRESHOLD_{stage.upper()}_{key.upper()}", default)
                    for key, default in values.items()
                }
                for stage, values in defaults.default_thresholds.items()
            },
            users_shown=_int("ADMIN_USERS_SHOWN", defaults.users_shown),
            idle_user_retention_s=_float(
                "ADMIN_IDLE_USER_RETENTION_S", defaults.idle_user_retention_s
            ),
            login_window_s=_int("ADMIN_LOGIN_WINDOW_S", defaults.login_window_s),
            login_failures_per_client=_int(
                "ADMIN_LOGIN_FAILURES_PER_CLIENT", defaults.login_failures_per_client
            ),
            login_failures_per_account=_int(
                "ADMIN_LOGIN_FAILURES_PER_ACCOUNT", defaults.login_failures_per_account
            ),
            trusted_proxies=_list("ADMIN_TRUSTED_PROXIES", ""),
            token_max_age_s=_int("ADMIN_TOKEN_MAX_AGE_S", defaults.token_max_age_s),
        )


@dataclass(frozen=True)
class InputLimits:
    """The most an uploaded photo may weigh, in bytes and in pixels (read from its header),
    before any stage decodes it; over either it fails as `too_large`. And the memory the photos
    a pod decodes at once may take together (functions/common/memory_budget.py): a photo whose
    decoding alone would take more than a worker's share fails as `too_large` too."""

    max_bytes: int = 100 * 1024 * 1024
    max_pixels: int = 100_000_000
    # Sized for a 1 GiB pod: gunicorn and two idle workers take ~180 MiB; the rest holds the
    # downloaded originals, encoded results and what the estimates leave out.
    memory_budget_bytes: int = 640 * 1024 * 1024
    # gunicorn's worker processes (WEB_CONCURRENCY, 2 as in gunicorn_conf.py): memory is not
    # shared between processes, so each gets an equal share of the pod's budget to spend on its
    # own threads' photos without asking the others.
    workers: int = 2

    def __post_init__(self) -> None:
        if self.memory_budget_bytes <= 0 or self.workers < 1:
            raise ValueError(
                "DECODE_MEMORY_BUDGET_MB must be positive and WEB_CONCURRENCY at least 1, got "
                f"{self.memory_budget_bytes // (1024 * 1024)} MiB and {self.workers}"
            )

    @property
    def process_memory_budget_bytes(self) -> int:
        return self.memory_budget_bytes // self.workers

    @classmethod
    def from_env(cls) -> InputLimits:
        defaults = cls()
        mib = 1024 * 1024
        budget_mb = _int("DECODE_MEMORY_BUDGET_MB", defaults.memory_budget_bytes // mib)
        return cls(
            max_bytes=_int("MAX_INPUT_BYTES", defaults.max_bytes),
            max_pixels=_int("MAX_INPUT_PIXELS", defaults.max_pixels),
            memory_budget_bytes=budget_mb * mib,
            workers=_int("WEB_CONCURRENCY", defaults.workers),
        )


@dataclass(frozen=True)
class ThumbnailSettings:
    """How thumbnails are made; defaults reproduce the old sharp Lambda."""

    max_width: int = 400
    max_height: int = 400
    quality: int = 80
    background: tuple[int, int, int] = (255, 255, 255)
    # `{key}`, not `{key_stem}`: IMG_1.HEIC and IMG_1.JPG must not share a thumbnail.
    key_template: str = "thumbnails/{key}.jpg"
    limits: InputLimits = field(default_factory=InputLimits)

    def __post_init__(self) -> None:
        if not self.key_prefix:
            raise ValueError(
                "THUMBNAIL_KEY_TEMPLATE must start with a fixed prefix such as `thumbnails/`: "
                "the receiver ignores keys under it, or every thumbnail written back would be "
                f"thumbnailed again; got {self.key_template!r}"
            )

    @property
    def key_prefix(self) -> str:
        """The fixed prefix of every thumbnail key; the receiver ignores keys under it."""
        return self.key_template.split("{", 1)[0]

    @classmethod
    def from_env(cls) -> ThumbnailSettings:
        defaults = cls()
        return cls(
            max_width=_int("THUMBNAIL_MAX_WIDTH", defaults.max_width),
            max_height=_int("THUMBNAIL_MAX_HEIGHT", defaults.max_height),
            quality=_int("THUMBNAIL_QUALITY", defaults.quality),
            background=_rgb("THUMBNAIL_BACKGROUND", defaults.background),
            key_template=_str("THUMBNAIL_KEY_TEMPLATE", defaults.key_template),
            limits=InputLimits.from_env(),
        )


REQUIRED_MODULES = ("detection", "recognition")
OPTIONAL_MODULES = ("genderage", "landmark_2d_106", "landmark_3d_68")


@dataclass(frozen=True)
class EmbedSettings:
    """Face detection + recognition. Every value that changes an embedding defaults to what the
    production batch job runs: insightface 0.7.3's `FaceAnalysis(name="buffalo_l")`,
    `prepare(ctx_id=0, det_size=(640, 640))`, `get(cv2.imread(path))`."""

    model_root: Path = Path("/models")
    model_pack: str = "buffalo_l"
    # Pack modules that run, by insightface task name; the optional ones add face attributes
    # and change no embedding.
    modules: tuple[str, ...] = REQUIRED_MODULES
    det_size: int = 640
    det_thresh: float = 0.5
    nms_thresh: float = 0.4
    # The best faces by detection score that are kept; production keeps every face.
    max_faces: int = 100
    normalize_embeddings: bool = False
    # JPEGs far larger than the detector needs are decoded at 1/2, 1/4 or 1/8 scale, keeping
    # the long side at least `decode_min_side`; off reproduces production's full decode.
    decode_shrink: bool = False
    decode_min_side: int = 1280
    providers: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    intra_op_threads: int = 2
    limits: InputLimits = field(default_factory=InputLimits)

    def __post_init__(self) -> None:
        missing = [name for name in REQUIRED_MODULES if name not in self.modules]
        unknown = [name for name in self.modules if name not in REQUIRED_MODULES + OPTIONAL_MODULES]
        if missing or unknown:
            raise ValueError(
                f"MODEL_MODULES must hold {', '.join(REQUIRED_MODULES)} and only these besides: "
                f"{', '.join(OPTIONAL_MODULES)}; got {', '.join(self.modules)}"
            )
        if self.det_size <= 0 or self.det_size % 32:
            raise ValueError(f"DET_SIZE must be a positive multiple of 32, got {self.det_size}")
        if self.max_faces < 1:
            raise ValueError(f"MAX_FACES must be at least 1, got {self.max_faces}")

    @property
    def model_dir(self) -> Path:
        return self.model_root / self.model_pack

    @property
    def optional_modules(self) -> tuple[str, ...]:
        return tuple(name for name in self.modules if name not in REQUIRED_MODULES)

    @classmethod
    def from_env(cls) -> EmbedSettings:
        defaults = cls()
        return cls(
            model_root=Path(_str("MODEL_ROOT", str(defaults.model_root))),
            model_pack=_str("MODEL_PACK", defaults.model_pack),
            modules=_list("MODEL_MODULES", ",".join(defaults.modules)),
            det_size=_int("DET_SIZE", defaults.det_size),
            det_thresh=_float("DET_THRESH", defaults.det_thresh),
            nms_thresh=_float("DET_NMS_THRESH", defaults.nms_thresh),
            max_faces=_int("MAX_FACES", defaults.max_faces),
            normalize_embeddings=_bool("EMBEDDING_NORMALIZE", defaults.normalize_embeddings),
            decode_shrink=_bool("DECODE_SHRINK_ON_LOAD", defaults.decode_shrink),
            decode_min_side=_int("DECODE_MIN_SIDE", defaults.decode_min_side),
            providers=_list("ORT_PROVIDERS", ",".join(defaults.providers)),
            intra_op_threads=_int("ORT_INTRA_OP_THREADS", defaults.intra_op_threads),
            limits=InputLimits.from_env(),
        )


KIB = 1024


@dataclass(frozen=True)
class RequestLimits:
    """The largest request body each HTTP endpoint reads, in bytes; a larger one is answered
    413 before it is read (Content-Length over it) or once it passes it (chunked)."""

    webhook_bytes: int = 1024 * KIB  # B2's batch of 50 events takes ~30 KiB
    login_bytes: int = 4 * KIB
    event_bytes: int = 64 * KIB  # a CloudEvent to a stage, or to the dead-letter sink
    api_body_bytes: int = 16 * KIB  # the status API's other bodies (uploads, thresholds)

    def __post_init__(self) -> None:
        sizes = (self.webhook_bytes, self.login_bytes, self.event_bytes, self.api_body_bytes)
        if min(sizes) < 1:
            raise ValueError(
                "MAX_WEBHOOK_BYTES, MAX_LOGIN_BYTES, MAX_EVENT_BYTES and "
                "MAX_API_BODY_BYTES must be positive"
            )

    @classmethod
    def from_env(cls) -> RequestLimits:
        return cls(
            webhook_bytes=_int("MAX_WEBHOOK_BYTES", cls.webhook_bytes),
            login_bytes=_int("MAX_LOGIN_BYTES", cls.login_bytes),
            event_bytes=_int("MAX_EVENT_BYTES", cls.event_bytes),
            api_body_bytes=_int("MAX_API_BODY_BYTES", cls.api_body_bytes),
        )


@dataclass(frozen=True)
class ReceiverSettings:
    """The B2 event-notification webhook receiver. It fails closed: it refuses to start
    without B2_WEBHOOK_SECRETS (`require_signed_webhooks`) unless local tooling opts out with
    B2_WEBHOOK_ALLOW_UNSIGNED=true."""

    signing_secrets: tuple[str, ...]
    sink_url: str
    user_id_pattern: re.Pattern[str]
    image_extensions: frozenset[str]
    thumbnail_prefix: str
    publish_timeout_s: float = 2.0
    # A webhook is answered within this, accepted or not: B2 gives up after about 3 s, and an
    # answered 503 makes it retry where a timeout might not.
    answer_within_s: float = 2.5
    # PEM CA certificates the broker's HTTPS certificate chains to, trusted besides the usual
    # ones: the SinkBinding injects them as K_CA_CERTS under Knative's transport encryption.
    sink_ca_certs: str | None = None
    # The OIDC token the broker's ingress requires under Eventing's `authentication-oidc`:
    # the SinkBinding mounts it here and the kubelet rotates it, so it is read per publish.
    # Sent when the file exists; nothing is sent where OIDC is off (no file).
    sink_token_file: Path = Path("/oidc/token")
    # A B2 eventId published within this many seconds is dropped when B2 delivers it again.
    dedup_window_s: float = 86400.0
    # Local tooling only: with no secret set, accept webhooks without a signature.
    allow_unsigned: bool = False

    def __post_init__(self) -> None:
        if not self.thumbnail_prefix:
            raise ValueError("the thumbnail prefix (the receiver's loop guard) must not be empty")
        if self.dedup_window_s < 0.001:
            raise ValueError(
                f"WEBHOOK_DEDUP_WINDOW_S must be at least 0.001 s, got {self.dedup_window_s}"
            )

    def require_signed_webhooks(self) -> None:
        """ValueError, so the receiver does not start, when it would accept unsigned webhooks
        without having been told to (B2_WEBHOOK_ALLOW_UNSIGNED)."""
        if not (self.signing_secrets or self.allow_unsigned):
            raise ValueError(
                "set B2_WEBHOOK_SECRETS (the B2 rule's signing secret): the receiver refuses "
                "unsigned webhooks (B2_WEBHOOK_ALLOW_UNSIGNED=true for local tooling only)"
            )

    @classmethod
    def from_env(cls) -> ReceiverSettings:
        return cls(
            signing_secrets=_list("B2_WEBHOOK_SECRETS", ""),
            sink_url=_str("K_SINK", "http://127.0.0.1:8080"),
            user_id_pattern=re.compile(_str("USER_ID_PATTERN", r"^(?P<user_id>[^/]+)/")),
            image_extensions=frozenset(
                ext.lower()
                for ext in _list(
                    "IMAGE_EXTENSIONS",
                    "jpg,jpeg,png,webp,heic,heif,avif,tif,tiff,gif,bmp",
                )
            ),
            thumbnail_prefix=ThumbnailSettings.from_env().key_prefix,
            publish_timeout_s=_float("PUBLISH_TIMEOUT_S", cls.publish_timeout_s),
            answer_within_s=_float("WEBHOOK_ANSWER_WITHIN_S", cls.answer_within_s),
            sink_ca_certs=_optional("K_CA_CERTS"),
            sink_token_file=Path(_str("K_SINK_TOKEN_FILE", str(cls.sink_token_file))),
            dedup_window_s=_float("WEBHOOK_DEDUP_WINDOW_S", cls.dedup_window_s),
            allow_unsigned=_bool("B2_WEBHOOK_ALLOW_UNSIGNED", cls.allow_unsigned),
        )
