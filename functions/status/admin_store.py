"""What the admin login keeps in Redis: open sessions, and the failed-login brake.

- `admin_session:<jti>`: an open dashboard session, expiring with the session's TTL; logout
  deletes it, and a session whose key is gone is refused.
- `admin_login:client:<address>:<window>`: wrong passwords from one client address in the
  current window.
- `admin_login:account:<window>`: wrong passwords from every address together.
- `admin_login:known:<address>`: an address that logged in successfully (kept 30 days).
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

import redis
from flask import Request

from functions.common.config import AdminSettings
from functions.common.redis_client import unavailable_as_transient

KNOWN_ADDRESS_TTL_S = 30 * 24 * 3600


class SessionStore:
    """Server-side records of open admin sessions, by session id."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def open(self, session_id: str, ttl_s: int) -> None:
        with unavailable_as_transient("admin sessions"):
            self._redis.set(_session_key(session_id), "1", ex=ttl_s)

    def is_open(self, session_id: str) -> bool:
        with unavailable_as_transient("admin sessions"):
            return bool(self._redis.exists(_session_key(session_id)))

    def close(self, session_id: str) -> None:
        with unavailable_as_transient("admin sessions"):
            self._redis.delete(_session_key(session_id))


@dataclass(frozen=True)
class Verdict:
    """Whether a client may try a password now, and else when to come back."""

    allowed: bool
    retry_after_s: int = 0


class LoginBrake:
    """Limits wrong admin passwords without letting an attacker lock other admins out.

    Per client address: after `login_failures_per_client` wrong passwords in a window, that
    address alone is refused until the window ends, so one attacker slows only themself.

    Per account (there is one: the admin password): after `login_failures_per_account` wrong
    passwords from all addresses together in a window (a distributed guess), only addresses
    that logged in successfully before may still try. A lockout of the account for everyone
    would hand a denial of service to whoever can send wrong passwords; a delay would hold the
    status function's workers. Known addresses keep their own per-client limit, so the
    exemption gives an attacker nothing new, and an admin locked out by a distributed attack
    on a new address still gets in from one used before. The window is fixed (counters per
    window index), good enough for a brake whose limits are far from the password's strength.
    """

    def __init__(self, client: redis.Redis, settings: AdminSettings) -> None:
        self._redis = client
        self._settings = settings

    def check(self, address: str, now: float | None = None) -> Verdict:
        now = time.time() if now is None else now
        client_key, account_key = self._failure_keys(address, now)
        with unavailable_as_transient("login brake"):
            client, account, known = self._redis.mget(client_key, account_key, _known_key(address))
        retry_after_s = self._settings.login_window_s - int(now % self._settings.login_window_s)
        if int(client or 0) >= self._settings.login_failures_per_client:
            return Verdict(False, retry_after_s)
        if int(account or 0) >= self._settings.login_failures_per_account and not known:
            return Verdict(False, retry_after_s)
        return Verdict(True)

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with unavailable_as_transient("login brake"):
            pipe = self._redis.pipeline(transaction=False)
            for key in self._failure_keys(address, now):
                pipe.incr(key)
                pipe.expire(key, 2 * self._settings.login_window_s)
            pipe.execute()

    def succeeded(self, address: str) -> None:
        with unavailable_as_transient("login brake"):
            self._redis.set(_known_key(address), "1", ex=KNOWN_ADDRESS_TTL_S)

    def _failure_keys(self, address: str, now: float) -> tuple[str, str]:
        window = int(now // self._settings.login_window_s)
        return f"admin_login:client:{address}:{window}", f"admin_login:account:{window}"


def client_address(request: Request, trusted_proxies: tuple[str, ...]) -> str:
    """The caller's address: the connection's peer, unless the peer is a trusted proxy (in one
    of `trusted_proxies`' networks); then X-Forwarded-For is read from the right, each proxy
    having appended the address it was called from, and the first entry outside the trusted
    networks is the client. Entries left of it are the client's own claims, never read. The
    number of proxies may vary (Knative's activator joins the path at times), this does not."""
    networks = [ipaddress.ip_network(network) for network in trusted_proxies]
    peer = request.remote_addr or "unknown"
    forwarded = [
        entry.strip()
        for header in request.headers.getlist("X-Forwarded-For")
        for entry in header.split(",")
    ]
    for address in [peer, *reversed(forwarded)]:
        if not _within(address, networks):
            return address
    return peer


def _within(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _session_key(session_id: str) -> str:
    return f"admin_session:{session_id}"


def _known_key(address: str) -> str:
    return f"admin_login:known:{address}"
