"""Who is calling the status API.

Users: `Authorization: Bearer <JWT>` issued by the app's backend, HS256 with the shared
JWT_SECRET (or RS256 with a key from JWT_JWKS_URL); `sub` is the user id, `exp` is required.
Each path accepts exactly one algorithm, so a token's own `alg` header (`none`, or HS256 signed
with the RSA public key) never chooses a weaker check. Admins: a bearer token with
`role: "admin"`, or the `admin_session` cookie set by the password login, itself a short-lived
HS256 JWT with an audience of its own, so it is never accepted as a bearer token.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jwt
from flask import Request

from functions.common.config import (
    JWT_HMAC_ALGORITHM,
    JWT_JWKS_ALGORITHM,
    AdminSettings,
    AuthSettings,
)
from functions.common.errors import TransientError

ADMIN_ROLE = "admin"
ADMIN_COOKIE = "admin_session"
_SESSION_AUDIENCE = "status-admin-session"


class Unauthorized(Exception):
    """No valid credentials: answered 401."""


class Forbidden(Exception):
    """Valid credentials that do not grant this resource: answered 403."""


@dataclass(frozen=True)
class Principal:
    user_id: str
    is_admin: bool

    def may_read(self, user_id: str) -> bool:
        return self.is_admin or self.user_id == user_id


class TokenVerifier:
    """Verifies user bearer tokens.

    A front end polls with the same token every few seconds, so a token whose signature was
    verified is remembered (bounded, per process); only its time claims are checked again.
    """

    def __init__(self, settings: AuthSettings, remembered: int = 4096) -> None:
        self._settings = settings
        self._jwks = (
            jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300, timeout=5)
            if settings.jwks_url
            else None
        )
        self._verified = lru_cache(maxsize=remembered)(self._verify_signature)

    def verify(self, token: str) -> Principal:
        principal, expires_at, not_before = self._verified(token)
        now = time.time()
        if now > expires_at + self._settings.leeway_s:
            raise Unauthorized("invalid token: Signature has expired")
        if now < not_before - self._settings.leeway_s:
            raise Unauthorized("invalid token: The token is not yet valid (nbf)")
        return principal

    def _verify_signature(self, token: str) -> tuple[Principal, float, float]:
        """The token's principal and validity period; raises for an invalid token (not cached)."""
        try:
            key, algorithm = self._key_for(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._settings.audience,
                leeway=self._settings.leeway_s,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise TransientError(f"JWKS unavailable: {exc}") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        return _principal(claims), float(claims["exp"]), float(claims.get("nbf", 0))

    def _key_for(self, token: str) -> tuple[Any, str]:
        if self._jwks is not None and jwt.get_unverified_header(token).get("alg") == (
            JWT_JWKS_ALGORITHM
        ):
            return self._jwks.get_signing_key_from_jwt(token).key, JWT_JWKS_ALGORITHM
        if self._settings.jwt_secret is None:
            raise jwt.InvalidAlgorithmError(f"only {JWT_JWKS_ALGORITHM} tokens are accepted")
        return self._settings.jwt_secret, JWT_HMAC_ALGORITHM


class AdminSessions:
    """Password login for the dashboard; sessions are signed with JWT_SECRET.

    Without ADMIN_PASSWORD or JWT_SECRET, login is off and admins use bearer tokens only.
    """

    def __init__(self, settings: AdminSettings, jwt_secret: str | None) -> None:
        self._settings = settings
        self._secret = jwt_secret

    @property
    def ttl_s(self) -> int:
        return self._settings.session_ttl_s

    def login(self, password: str, now: float | None = None) -> str:
        """A session token for the right password; Unauthorized otherwise."""
        if not (self._settings.password and self._secret):
            raise Unauthorized("admin login is not configured")
        if not hmac.compare_digest(password.encode(), self._settings.password.encode()):
            raise Unauthorized("wrong password")
        now = time.time() if now is None else now
        claims = {
            "sub": ADMIN_ROLE,
            "role": ADMIN_ROLE,
            "aud": _SESSION_AUDIENCE,
            "iat": int(now),
            "exp": int(now) + self._settings.session_ttl_s,
        }
        return jwt.encode(claims, self._secret, algorithm=JWT_HMAC_ALGORITHM)

    def verify(self, token: str) -> Principal:
        if not self._secret:
            raise Unauthorized("admin login is not configured")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_HMAC_ALGORITHM],
                audience=_SESSION_AUDIENCE,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid admin session: {exc}") from exc
        return _principal(claims)


class Authenticator:
    """Finds the caller of a request: a user, or an admin."""

    def __init__(self, tokens: TokenVerifier, sessions: AdminSessions) -> None:
        self.tokens = tokens
        self.sessions = sessions

    def user(self, request: Request) -> Principal:
        return self.tokens.verify(bearer_token(request.headers.get("Authorization", "")))

    def admin(self, request: Request) -> Principal:
        if "Authorization" not in request.headers and ADMIN_COOKIE in request.cookies:
            principal = self.sessions.verify(request.cookies[ADMIN_COOKIE])
        else:
            principal = self.user(request)
        if not principal.is_admin:
            raise Forbidden("the admin role is required")
        return principal


def bearer_token(authorization: str) -> str:
    """The token of an `Authorization: Bearer <token>` header's value; Unauthorized if none."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("an Authorization: Bearer token is required")
    return token.strip()


def _principal(claims: dict[str, Any]) -> Principal:
    if not claims["sub"]:
        raise Unauthorized("invalid token: empty sub")
    return Principal(user_id=claims["sub"], is_admin=claims.get("role") == ADMIN_ROLE)
