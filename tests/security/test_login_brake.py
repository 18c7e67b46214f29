"""The admin login brake: wrong passwords lock out the address they come from, never the
admins at other addresses."""

# The fixtures imported from tests.status_fixtures are parameters of the tests below.
# ruff: noqa: F811

from __future__ import annotations

import dataclasses

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from functions.status.admin_store import client_address
from functions.status.app import create_app
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


def test_a_forged_forwarded_for_does_not_escape_the_lockout(client, admin_settings):
    for n in range(admin_settings.login_failures_per_client):
        assert attempt(client, "guess", "203.0.113.9", forwarded=f"10.0.0.{n}") == 401
    assert attempt(client, ADMIN_PASSWORD, "203.0.113.9", forwarded="10.9.9.9") == 429


@pytest.fixture
def distributed(store, auth_settings, admin_settings):
    """A status app whose account-wide limit a handful of addresses reaches."""
    settings = dataclasses.replace(admin_settings, login_failures_per_account=3)
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
        ("127.0.0.1", None, "127.0.0.1"),
    ],
)
def test_the_client_is_the_first_address_right_to_left_outside_the_proxies(peer, forwarded, client):
    assert client_address(request_from(peer, forwarded), CLUSTER) == client


def test_without_trusted_proxies_the_client_is_the_peer():
    assert client_address(request_from("127.0.0.1", "203.0.113.9"), ()) == "127.0.0.1"


def test_behind_proxies_a_forged_forwarded_for_does_not_escape_the_lockout(
    store, auth_settings, admin_settings
):
    settings = dataclasses.replace(admin_settings, trusted_proxies=CLUSTER)
    client = create_app(store, auth_settings, settings).test_client()
    for n in range(settings.login_failures_per_client):
        forged = f"10.0.0.{n}, 203.0.113.9, 10.1.2.3"  # left of its address: never read
        assert attempt(client, "guess", "127.0.0.1", forwarded=forged) == 401
    assert attempt(client, ADMIN_PASSWORD, "127.0.0.1", forwarded="1.2.3.4, 203.0.113.9") == 429
    assert attempt(client, ADMIN_PASSWORD, "127.0.0.1", forwarded="198.51.100.7, 10.1.2.3") == 200
