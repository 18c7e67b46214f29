"""Verifying who sent an event: the OIDC token Knative Eventing adds to each delivery.

With `authentication-oidc` on, the broker sends every delivery to a subscriber (and to the
dead-letter sink) with `Authorization: Bearer <JWT>`: a Kubernetes service-account token of
the Trigger's OIDC identity, for the audience set on the Trigger. A receiver verifies it against
the cluster's service-account issuer keys (EventAuthSettings: issuer, audience, JWKS, the
allowed `sub`s); the algorithm is pinned, `exp`, `iss`, `aud` and `sub` are required.

The in-cluster JWKS (`https://kubernetes.default.svc/openid/v1/jwks`) is read with the pod's
own service-account token and the cluster CA: Kubernetes' default RBAC lets every service
account read it (`system:service-account-issuer-discovery`), nobody anonymous.

PyJWT is imported only when verification is on: an image without it still serves with it off.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from functions.common.config import EventAuthSettings
from functions.common.errors import TransientError

if TYPE_CHECKING:
    import jwt

log = logging.getLogger(__name__)

# Kubernetes signs service-account tokens with RS256 (or ES256 with an EC key); never `none`,
# never an HMAC: the token's own `alg` header does not choose.
ALGORITHMS = ("RS256", "ES256")
_REQUIRED = ("exp", "iss", "aud", "sub")

# The pod's service-account credentials, used only to read the API server's JWKS.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_API_SERVER_HOSTS = frozenset(
    {"kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "kubernetes.default"}
)


class EventAuthError(Exception):
    """The event's sender could not be authenticated: answer 401 (not retried)."""


class EventVerifier:
    """Checks the bearer token of a delivery, when EventAuthSettings turn it on."""

    def __init__(
        self, settings: EventAuthSettings, service_account_dir: Path = SERVICE_ACCOUNT_DIR
    ) -> None:
        self._settings = settings
        self._jwks = _jwk_client(settings, service_account_dir) if settings.enabled else None

    @classmethod
    def from_env(cls) -> EventVerifier:
        return cls(EventAuthSettings.from_env())

    @property
    def enabled(self) -> bool:
        return self._jwks is not None

    def verify(self, authorization: str | None) -> str | None:
        """The sender's `sub`; None when verification is off. EventAuthError for a request
        that is not from an allowed sender, TransientError when the keys cannot be fetched."""
        if self._jwks is None:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise EventAuthError("no bearer token")
        token = token.strip()
        import jwt

        try:
            key = self._jwks.get_signing_key_from_jwt(token).key
            claims = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                issuer=self._settings.issuer,
                audience=self._settings.audience,
                leeway=self._settings.leeway_s,
                options={"require": list(_REQUIRED)},
            )
        except (jwt.PyJWKClientConnectionError, OSError) as exc:  # OSError: the pod's token
            raise TransientError(f"the event issuer's JWKS is unavailable: {exc}") from exc
        except jwt.PyJWTError as exc:
            raise EventAuthError(f"invalid token: {exc}") from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not self._settings.allows(subject):
            raise EventAuthError(f"sender {subject!r} is not allowed")
        return subject


def _jwk_client(settings: EventAuthSettings, service_account_dir: Path) -> jwt.PyJWKClient:
    import jwt

    class ApiServerJWKClient(jwt.PyJWKClient):
        """Reads the JWKS with the pod's service-account token, read again on each fetch:
        the kubelet rotates it."""

        def fetch_data(self) -> Any:
            self.headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
            return super().fetch_data()

    assert settings.jwks_url is not None  # EventAuthSettings requires it when enabled
    options: dict[str, Any] = {"cache_keys": True, "lifespan": 300, "timeout": 5}
    token_file = service_account_dir / "token"
    if urlsplit(settings.jwks_url).hostname in _API_SERVER_HOSTS and token_file.exists():
        ca_file = service_account_dir / "ca.crt"
        options["ssl_context"] = ssl.create_default_context(cafile=str(ca_file))
        return ApiServerJWKClient(settings.jwks_url, **options)
    return jwt.PyJWKClient(settings.jwks_url, **options)
