"""The receiver never accepts unsigned webhooks unless local tooling says so explicitly."""

# The fixtures imported below are parameters of the tests.

from __future__ import annotations

import pytest
import requests

from eventing.b2_webhook import verify_signature
from eventing.receiver import create_app
from functions.common.config import ReceiverSettings
from functions.common.photo_store import PhotoStore
from functions.common.seen_events import SeenEvents
from tests.security.helpers import receiver_settings


def test_a_receiver_without_webhook_secrets_refuses_to_start_naming_b2_webhook_secrets(
    redis_client,
):
    settings = receiver_settings(signing_secrets=())
    with pytest.raises(ValueError, match="set B2_WEBHOOK_SECRETS"):
        create_app(settings, PhotoStore(redis_client), SeenEvents(redis_client, 60))


def test_the_environment_without_b2_webhook_secrets_does_not_start_a_receiver(monkeypatch):
    monkeypatch.delenv("B2_WEBHOOK_SECRETS", raising=False)
    monkeypatch.delenv("B2_WEBHOOK_ALLOW_UNSIGNED", raising=False)
    with pytest.raises(ValueError, match="B2_WEBHOOK_SECRETS"):
        ReceiverSettings.from_env().require_signed_webhooks()


def test_no_signature_verifies_when_no_secret_is_configured():
    assert not verify_signature(b"{}", "v1=anything", ())


def test_unsigned_webhooks_pass_only_with_the_explicit_local_opt_out(
    monkeypatch, serve, redis_client
):
    monkeypatch.delenv("B2_WEBHOOK_SECRETS", raising=False)
    monkeypatch.setenv("B2_WEBHOOK_ALLOW_UNSIGNED", "true")
    settings = ReceiverSettings.from_env()
    url = serve(create_app(settings, PhotoStore(redis_client), SeenEvents(redis_client, 60)))
    assert requests.post(url, data=b'{"events": []}', timeout=5).status_code == 200
