"""Who is calling the status API.

Users: `Authorization: Bearer <JWT>` issued by the app's backend, HS256 with the shared
JWT_SECRET (or RS256 with a key from JWT_JWKS_URL). A user token must carry `sub`, `exp`, the
`iss` of JWT_ISSUER and the `aud` of JWT_AUDIENCE; its `typ` header, when present, must be
`JWT` or `at+jwt`; `nbf`/`iat` are honoured, with JWT_LEEWAY_S (at most 60 s) of clock skew.
Each path accepts exactly one algorithm, so a token's own `alg` header (`none`, or HS256 signed
with the RSA public key) never chooses a weaker check. A user token never grants the admin
role, whatever its claims say.

Admins: the `admin_session` cookie set by the password login, signed with ADMIN_SESSION_SECRET,
checked against its server-side record (revoked on logout) and its maximum age; or a bearer
token signed with ADMIN_JWT_SECRET for the admin issuer and audience (when configured), with
an `iat` at most ADMIN_TOKEN_MAX_AGE_S old whatever its `exp` says.
Neither key is ever the users' JWT_SECRET.
"""

from __future__ import annotations

import hmac
import time
import uuid
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
from functions.status.admin_store import SessionStore

ADMIN_ROLE = "admin"
ADMIN_COOKIE = "admin_session"
USER_TOKEN_TYPES = frozenset({"jwt", "at+jwt"})
SESSION_TYPE = "admin-session+jwt"
_SESSION_ISSUER = "status-admin-login"
_SESSION_AUDIENCE = "status-admin-session"
_REQUIRED = ["exp", "sub", "iss", "aud"]
# Clock skew allowed on admin sessions' and admin tokens' time claims.
_SKEW_S = 5.0


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

    def is_other_issuers(self, token: str) -> bool:
        """Whether a token names an issuer other than the users' (an admin token, say), read
        without its signature: such a token is the Authenticator's to verify, not this one's."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        return isinstance(claims, dict) and claims.get("iss") != self._settings.issuer

    def _verify_signature(self, token: str) -> tuple[Principal, float, float]:
        """The token's principal and validity period; raises for an invalid token (not cached)."""
        try:
            key, algorithm = self._key_for(token)
            decoded = jwt.decode_complete(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._settings.issuer,
                audience=self._settings.audience,
                leeway=self._settings.leeway_s,
                options={"require": _REQUIRED},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise TransientError(f"JWKS unavailable: {exc}") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        _check_type(decoded["header"], USER_TOKEN_TYPES)
        claims = decoded["payload"]
        principal = Principal(user_id=_subject(claims), is_admin=False)
        return principal, float(claims["exp"]), float(claims.get("nbf", 0))

    def _key_for(self, token: str) -> tuple[Any, str]:
        if self._jwks is not None and jwt.get_unverified_header(token).get("alg") == (
            JWT_JWKS_ALGORITHM
        ):
            return self._jwks.get_signing_key_from_jwt(token).key, JWT_JWKS_ALGORITHM
        if self._settings.jwt_secret is None:
            raise jwt.InvalidAlgorithmError(f"only {JWT_JWKS_ALGORITHM} tokens are accepted")
        return self._settings.jwt_secret, JWT_HMAC_ALGORITHM


class AdminSessions:
    """Admin credentials: the dashboard's password login and its sessions, and admin tokens.

    A session is an HS256 JWT signed with ADMIN_SESSION_SECRET, with a `typ`, issuer and
    audience of its own (never accepted as a bearer token, nor a user token as a session), and
    a fresh session id (`jti`) per login, recorded server-side for ADMIN_SESSION_TTL_S. A
    session is valid only while its record exists (logout deletes it) and while its `iat` is
    younger than the TTL, whatever its `exp` says. The users' JWT_SECRET is refused as an
    admin key.
    """

    def __init__(
        self, settings: AdminSettings, user_jwt_secret: str | None, store: SessionStore
    ) -> None:
        for secret in (settings.session_secret, settings.jwt_secret):
            if secret and secret == user_jwt_secret:
                raise ValueError("ADMIN_SESSION_SECRET and ADMIN_JWT_SECRET must not be JWT_SECRET")
        self._settings = settings
        self._store = store

    @property
    def ttl_s(self) -> int:
        return self._settings.session_ttl_s

    def login(self, password: str, now: float | None = None) -> str:
        """A new session (a new id) for the right password; Unauthorized otherwise."""
        secret, store = self._session_key(), self._store
        expected = self._settings.password or ""
        if not (expected and hmac.compare_digest(password.encode(), expected.encode())):
            raise Unauthorized("wrong password")
        now = time.time() if now is None else now
        session_id = uuid.uuid4().hex
        store.open(session_id, self.ttl_s)
        claims = {
            "sub": ADMIN_ROLE,
            "iss": _SESSION_ISSUER,
            "aud": _SESSION_AUDIENCE,
            "jti": session_id,
            "iat": int(now),
            "exp": int(now) + self.ttl_s,
        }
        headers = {"typ": SESSION_TYPE}
        return jwt.encode(claims, secret, algorithm=JWT_HMAC_ALGORITHM, headers=headers)

    def verify(self, token: str, now: float | None = None) -> Principal:
        """The admin of a live session cookie; Unauthorized otherwise."""
        claims = self._session_claims(token)
        now = time.time() if now is None else now
        issued_at = float(claims["iat"])
        if issued_at > now + _SKEW_S or now - issued_at > self.ttl_s:
            raise Unauthorized("invalid admin session: past its maximum age")
        if not self._store.is_open(claims["jti"]):
            raise Unauthorized("invalid admin session: logged out or unknown")
        return Principal(user_id=ADMIN_ROLE, is_admin=True)

    def logout(self, token: str) -> None:
        """Ends the cookie's session server-side; an invalid cookie has nothing to end."""
        try:
            session_id = self._session_claims(token)["jti"]
        except Unauthorized:
            return
        self._store.close(session_id)

    def verify_token(self, token: str, now: float | None = None) -> Principal:
        """An admin bearer token, signed with ADMIN_JWT_SECRET, with an `iat` at most
        ADMIN_TOKEN_MAX_AGE_S old; Unauthorized otherwise."""
        if not self._settings.jwt_secret:
            raise Unauthorized("admin tokens are not accepted here")
        try:
            decoded = jwt.decode_complete(
                token,
                self._settings.jwt_secret,
                algorithms=[JWT_HMAC_ALGORITHM],
                issuer=self._settings.jwt_issuer,
                audience=self._settings.jwt_audience,
                leeway=_SKEW_S,
                options={"require": ["iat", *_REQUIRED]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid admin token: {exc}") from exc
        _check_type(decoded["header"], USER_TOKEN_TYPES)
        now = time.time() if now is None else now
        issued_at = float(decoded["payload"]["iat"])
        if now - issued_at > self._settings.token_max_age_s:
            raise Unauthorized("invalid admin token: past its maximum age (ADMIN_TOKEN_MAX_AGE_S)")
        if decoded["payload"].get("role") != ADMIN_ROLE:
            raise Forbidden("the admin role is required")
        return Principal(user_id=_subject(decoded["payload"]), is_admin=True)

    def is_admin_token(self, token: str) -> bool:
        """Whether a bearer token claims the admin issuer (its signature decides the rest)."""
        if not self._settings.jwt_secret:
            return False
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        return isinstance(claims, dict) and claims.get("iss") == self._settings.jwt_issuer

    def _session_claims(self, token: str) -> dict[str, Any]:
        try:
            decoded = jwt.decode_complete(
                token,
                self._session_key(),
                algorithms=[JWT_HMAC_ALGORITHM],
                issuer=_SESSION_ISSUER,
                audience=_SESSION_AUDIENCE,
                leeway=_SKEW_S,
                options={"require": ["exp", "iat", "jti", *_REQUIRED]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid admin session: {exc}") from exc
        _check_type(decoded["header"], frozenset({SESSION_TYPE}))
        if not isinstance(decoded["payload"]["jti"], str):
            raise Unauthorized("invalid admin session: bad jti")
        return decoded["payload"]

    def _session_key(self) -> str:
        if not (self._settings.password and self._settings.session_secret):
            raise Unauthorized("admin login is not configured")
        return self._settings.session_secret


class Authenticator:
    """Finds the caller of a request: a user, or an admin."""

    def __init__(self, tokens: TokenVerifier, sessions: AdminSessions) -> None:
        self.tokens = tokens
        self.sessions = sessions

    def user(self, request: Request) -> Principal:
        return self._bearer(bearer_token(request.headers.get("Authorization", "")))

    def admin(self, request: Request) -> Principal:
        if "Authorization" not in request.headers and ADMIN_COOKIE in request.cookies:
            principal = self.sessions.verify(request.cookies[ADMIN_COOKIE])
        else:
            principal = self.user(request)
        if not principal.is_admin:
            raise Forbidden("the admin role is required")
        return principal

    def _bearer(self, token: str) -> Principal:
        if self.sessions.is_admin_token(token):
            return self.sessions.verify_token(token)
        return self.tokens.verify(token)


def bearer_token(authorization: str) -> str:
    """The token of an `Authorization: Bearer <token>` header's value; Unauthorized if none."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("an Authorization: Bearer token is required")
    return token.strip()


def _check_type(header: dict[str, Any], accepted: frozenset[str]) -> None:
    """A `typ` header, when present, must be one of `accepted` (case-insensitive, with or
    without the `application/` prefix)."""
    if "typ" not in header:
        return
    typ = header["typ"]
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") not in accepted:
        raise Unauthorized("invalid token: unexpected typ header")


def _subject(claims: dict[str, Any]) -> str:
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise Unauthorized("invalid token: empty sub")
    return claims["sub"]
