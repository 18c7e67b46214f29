"""What the admin keeps in Redis: open sessions, the failed-login brake, and the thresholds.

- `admin_session:<jti>`: an open dashboard session, expiring with the session's TTL; logout
  deletes it, and a session whose key is gone is refused.
- `admin_login:client:<address>:<window>`: wrong passwords from one client address in the
  current window.
- `admin_login:account:<window>`: wrong passwords from every address together.
- `admin_login:known:<address>`: an address that logged in successfully (kept 30 days).
- `thresholds`: the admin's acceptable delays, `<stage>.<key>` -> number (the overview's
  snapshot reads it too: functions/status/status_reader.py).

An IPv6 address is its /64; a request whose address cannot be told has no client counter.
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
THRESHOLDS = "thresholds"


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


class ThresholdStore:
    """The thresholds an admin set, by stage and key (what is never set is absent)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def thresholds(self) -> dict[str, dict[str, float]]:
        """The thresholds an admin set; stages and keys never set are absent."""
        with unavailable_as_transient("status store"):
            return thresholds_from_hash(self._redis.hgetall(THRESHOLDS))

    def set_thresholds(self, values: dict[str, dict[str, float]]) -> None:
        mapping = {
            f"{stage}.{key}": value
            for stage, pairs in values.items()
            for key, value in pairs.items()
        }
        if mapping:
            with unavailable_as_transient("status store"):
                self._redis.hset(THRESHOLDS, mapping=mapping)


def thresholds_from_hash(fields: dict[str, str]) -> dict[str, dict[str, float]]:
    values: dict[str, dict[str, float]] = {}
    for name, value in fields.items():
        stage, _, key = name.partition(".")
        values.setdefault(stage, {})[key] = float(value)
    return values


@dataclass(frozen=True)
class Verdict:
    """Whether a client may try a password now, and else when to come back.

    An allowed attempt is already counted as a failure; `LoginBrake.succeeded` takes it back.
    """

    allowed: bool
    retry_after_s: int = 0


UNATTRIBUTED = None
"""`client_address`'s answer when no client address can be told (see there)."""


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

    Unattributed requests (`client_address` gives None: a forwarded chain with a non-IP entry,
    or one made only of trusted proxies) have no per-client count and are never known: they
    may try only while the account's count is under `login_failures_per_account`. So they can
    never bypass the per-account limit, and nothing they send touches an attributable
    address's own count: an attacker, attributable or not, cannot lock out an admin who comes
    from an attributable address that logged in before.

    `attempt` counts the attempt first, in one MULTI (INCR and EXPIRE of the client's and the
    account's counters, and the known flag), and refuses it when a count is then over its
    limit, so concurrent guesses cannot all pass a check before any is counted; a refused
    attempt, and a right password (`succeeded`), take their count back.
    """

    def __init__(self, client: redis.Redis, settings: AdminSettings) -> None:
        self._redis = client
        self._settings = settings

    def attempt(self, address: str | None, now: float | None = None) -> Verdict:
        """Counts an attempt from `address` (None: unattributed); refused when over a limit."""
        now = time.time() if now is None else now
        client_key, account_key = self._failure_keys(address, now)
        ttl = 2 * self._settings.login_window_s
        with unavailable_as_transient("login brake"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(account_key)
            pipe.expire(account_key, ttl)
            if client_key is not None:
                pipe.incr(client_key)
                pipe.expire(client_key, ttl)
                pipe.exists(_known_key(address or ""))
            results = pipe.execute()
        account = int(results[0])
        client, known = (int(results[2]), bool(results[4])) if client_key else (0, False)
        if client > self._settings.login_failures_per_client or (
            account > self._settings.login_failures_per_account and not known
        ):
            self._uncount(address, now)
            window = self._settings.login_window_s
            return Verdict(False, window - int(now % window))
        return Verdict(True)

    def failed(self, address: str | None, now: float | None = None) -> None:
        """A wrong password: its attempt stays counted."""

    def succeeded(self, address: str | None, now: float | None = None) -> None:
        """The right password: its attempt is taken back, and an attributed address is known."""
        now = time.time() if now is None else now
        self._uncount(address, now)
        if address is not None:
            with unavailable_as_transient("login brake"):
                self._redis.set(_known_key(address), "1", ex=KNOWN_ADDRESS_TTL_S)

    def _uncount(self, address: str | None, now: float) -> None:
        with unavailable_as_transient("login brake"):
            pipe = self._redis.pipeline(transaction=True)
            for key in self._failure_keys(address, now):
                if key is not None:
                    pipe.decr(key)
            pipe.execute()

    def _failure_keys(self, address: str | None, now: float) -> tuple[str | None, str]:
        window = int(now // self._settings.login_window_s)
        client_key = None if address is None else f"admin_login:client:{address}:{window}"
        return client_key, f"admin_login:account:{window}"


def client_address(request: Request, trusted_proxies: tuple[str, ...]) -> str | None:
    """The caller's address, or None (unattributed) when it cannot be told.

    The connection's peer, unless the peer is a trusted proxy (in one of `trusted_proxies`'
    networks); then X-Forwarded-For is read from the right, each proxy having appended the
    address it was called from, and the first entry outside the trusted networks is the
    client. Entries left of it are the client's own claims, never read. The number of proxies
    may vary (Knative's activator joins the path at times), this does not. A non-IP entry
    reached before the client, a non-IP peer, or a chain made only of trusted proxies gives
    None: LoginBrake never lets such a request bypass the account limit. An IPv6 client is
    its /64 (one host holds a whole /64). The trusted networks must be the proxies' own (the
    pod CIDR, loopback), never addresses a client's traffic is SNAT'd to (docs/security.md).
    """
    networks = [ipaddress.ip_network(network) for network in trusted_proxies]
    forwarded = [
        entry.strip()
        for header in request.headers.getlist("X-Forwarded-For")
        for entry in header.split(",")
    ]
    for entry in [request.remote_addr or "", *reversed(forwarded)]:
        try:
            ip = ipaddress.ip_address(entry)
        except ValueError:
            return UNATTRIBUTED
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in networks):
            continue
        if ip.version == 6:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip)
    return UNATTRIBUTED


def _session_key(session_id: str) -> str:
    return f"admin_session:{session_id}"


def _known_key(address: str) -> str:
    return f"admin_login:known:{address}"
