"""The admin login brake: wrong passwords lock out the address they come from, never the
admins at other addresses."""

# The fixtures imported from tests.status_fixtures are parameters of the tests below.
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest
import requests
import yaml
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from functions.common.config import AdminSettings
from functions.status.admin_store import client_address
from functions.status.app import create_app
from functions.status.auth import AdminSessions
from tests.status_fixtures import (  # noqa: F401 - fixtures
    ADMIN_PASSWORD,
    admin_settings,
    app,
    auth_settings,
    client,
    store,
)


def attempt(client, password: str, address: str, forwarded: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return client.post(
        "/v1/admin/login",
        json={"password": password},
        headers=headers,
        environ_base={"REMOTE_ADDR": address},
    ).status_code


def test_wrong_passwords_lock_out_only_their_own_address(client, admin_settings):
    for _ in range(admin_settings.login_failures_per_client):
        assert attempt(client, "guess", "203.0.113.9") == 401
    assert attempt(client, ADMIN_PASSWORD, "203.0.113.9") == 429
    assert attempt(client, ADMIN_PASSWORD, "198.51.100.7") == 200


def test_a_forged_forwarded_for_does_not_escape_the_lockout(store, auth_settings, admin_settings):
    """With the ConfigMap's narrowed proxies (loopback, the pod CIDR): a node address that
    Kourier's SNAT put in the chain is the client, never skipped, so what the caller wrote
    left of it is never read."""
    settings = admin_settings.replace(trusted_proxies=deployed_proxies())
    client = create_app(store, auth_settings, settings).test_client()
    for n in range(settings.login_failures_per_client):
        forged = f"6.6.6.{n}, 10.20.0.7, 10.244.1.5"
        assert attempt(client, "guess", "127.0.0.1", forwarded=forged) == 401
    assert attempt(client, ADMIN_PASSWORD, "127.0.0.1", forwarded="9.9.9.9, 10.20.0.7") == 429
    assert attempt(client, ADMIN_PASSWORD, "127.0.0.1", forwarded="198.51.100.7") == 200


DEPLOYED = ("127.0.0.0/8", "::1/128", "10.244.0.0/16")


def deployed_proxies() -> tuple[str, ...]:
    """ADMIN_TRUSTED_PROXIES of the Knative ConfigMap."""
    config = yaml.safe_load(Path("knative/app/config.yaml").read_text())
    return tuple(config["data"]["ADMIN_TRUSTED_PROXIES"].split(","))


def test_the_deployed_proxies_are_loopback_and_the_pod_cidr_placeholder():
    assert deployed_proxies() == DEPLOYED


def test_unattributed_wrong_passwords_never_lock_out_a_known_admin(
    store, auth_settings, admin_settings
):
    settings = admin_settings.replace(trusted_proxies=DEPLOYED, login_failures_per_account=10)
    client = create_app(store, auth_settings, settings).test_client()
    assert attempt(client, ADMIN_PASSWORD, "198.51.100.7") == 200  # an admin's address
    # No forwarded chain from a proxy, or a non-IP entry: unattributed, whatever the count.
    for n in range(settings.login_failures_per_account):
        forwarded = None if n % 3 else f"junk-{n}, 10.244.1.5"
        assert attempt(client, "guess", "127.0.0.1", forwarded=forwarded) == 401
    assert attempt(client, ADMIN_PASSWORD, "127.0.0.1") == 429  # unattributed: over the account
    assert attempt(client, ADMIN_PASSWORD, "10.244.1.5", forwarded="unknown") == 429
    assert attempt(client, ADMIN_PASSWORD, "198.51.100.7") == 200  # the known admin gets in
    assert attempt(client, "guess", "203.0.113.50") == 429  # new addresses wait, as before


def test_an_unattributed_address_never_becomes_known(store, auth_settings, admin_settings):
    settings = admin_settings.replace(trusted_proxies=DEPLOYED, login_failures_per_account=2)
    client = create_app(store, auth_settings, settings).test_client()
    assert attempt(client, ADMIN_PASSWORD, "127.0.0.1") == 200
    for n in range(2):
        assert attempt(client, "guess", f"203.0.113.{n}") == 401
    assert attempt(client, ADMIN_PASSWORD, "127.0.0.1") == 429


@pytest.fixture
def distributed(store, auth_settings, admin_settings):
    """A status app whose account-wide limit a handful of addresses reaches."""
    settings = admin_settings.replace(login_failures_per_account=3)
    return create_app(store, auth_settings, settings).test_client()


def test_a_distributed_guess_lets_known_admins_in(distributed):
    assert attempt(distributed, ADMIN_PASSWORD, "198.51.100.7") == 200  # an admin's address
    for n in range(3):
        assert attempt(distributed, "guess", f"203.0.113.{n}") == 401
    assert attempt(distributed, "guess", "203.0.113.99") == 429  # new addresses must wait
    assert attempt(distributed, ADMIN_PASSWORD, "198.51.100.7") == 200


CLUSTER = ("10.0.0.0/8", "127.0.0.1/32")


def request_from(peer: str, forwarded: str | None = None) -> Request:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return EnvironBuilder(headers=headers, environ_base={"REMOTE_ADDR": peer}).get_request()


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.9", "6.6.6.6", "203.0.113.9"),  # not from a proxy: its claims are ignored
        ("127.0.0.1", "6.6.6.6, 203.0.113.9, 10.1.2.3", "203.0.113.9"),  # gateway, queue-proxy
        ("127.0.0.1", "6.6.6.6, 203.0.113.9, 10.1.2.3, 10.4.5.6", "203.0.113.9"),  # activator
        ("127.0.0.1", None, None),  # only proxies: unattributed
        ("127.0.0.1", "6.6.6.6, not-an-ip, 10.1.2.3", None),  # a non-IP entry: unattributed
        ("not-an-ip", None, None),
        ("127.0.0.1", "2001:db8:1:2:aaaa::1, 10.1.2.3", "2001:db8:1:2::/64"),  # IPv6: its /64
        ("2001:db8:1:2:bbbb::9", None, "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.9", None, "203.0.113.9"),
    ],
)
def test_the_client_is_the_first_address_right_to_left_outside_the_proxies(peer, forwarded, client):
    assert client_address(request_from(peer, forwarded), CLUSTER) == client


def test_without_trusted_proxies_the_client_is_the_peer():
    assert client_address(request_from("127.0.0.1", "203.0.113.9"), ()) == "127.0.0.1"


def test_behind_proxies_a_forged_forwarded_for_does_not_escape_the_lockout(
    store, auth_settings, admin_settings
):
    settings = admin_settings.replace(trusted_proxies=CLUSTER)
    client = create_app(store, auth_settings, settings).test_client()
    for n in range(settings.login_failures_per_client):
        forged = f"10.0.0.{n}, 203.0.113.9, 10.1.2.3"  # left of its address: never read
        assert attempt(client, "guess", "127.0.0.1", forwarded=forged) == 401
    assert attempt(client, ADMIN_PASSWORD, "127.0.0.1", forwarded="1.2.3.4, 203.0.113.9") == 429
    assert attempt(client, ADMIN_PASSWORD, "127.0.0.1", forwarded="198.51.100.7, 10.1.2.3") == 200


def test_concurrent_wrong_passwords_pass_the_brake_at_most_the_limit(
    store, auth_settings, admin_settings, serve, monkeypatch
):
    """Every attempt is counted before its password is checked: a burst of concurrent
    guesses cannot all pass a check before any failure is counted."""
    app = create_app(store, auth_settings, admin_settings)
    checked = []
    login = AdminSessions.login
    barrier = threading.Barrier(GUESSES, timeout=1)

    def slow_login(self, password, now=None):
        checked.append(password)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()  # every admitted guess waits for the others, as a slow check would
        return login(self, password, now)

    monkeypatch.setattr(AdminSessions, "login", slow_login)
    url = serve(app) + "/v1/admin/login"

    def guess() -> None:
        codes.append(requests.post(url, json={"password": "guess"}, timeout=10).status_code)

    codes: list[int] = []
    threads = [threading.Thread(target=guess) for _ in range(GUESSES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(checked) <= admin_settings.login_failures_per_client
    assert codes.count(401) == len(checked)
    assert codes.count(429) == GUESSES - len(checked)


GUESSES = 20


@pytest.mark.parametrize(
    "variable",
    [
        "ADMIN_LOGIN_WINDOW_S",
        "ADMIN_LOGIN_FAILURES_PER_CLIENT",
        "ADMIN_LOGIN_FAILURES_PER_ACCOUNT",
        "ADMIN_TOKEN_MAX_AGE_S",
    ],
)
@pytest.mark.parametrize("value", ["0", "-1"])
def test_brake_settings_below_one_are_refused_at_start_up(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"^{variable} must be at least 1"):
        AdminSettings.from_env()
