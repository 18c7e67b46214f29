"""The receiver as deployed, under gunicorn with functions/common/gunicorn_conf.py: bodies and
request heads over their limits are refused, and without a webhook secret it does not start."""

from __future__ import annotations

import time

import pytest

from devstack.stack import Processes
from tests.security.helpers import WEBHOOK_SECRET, raw_exchange, status_of

RECEIVER = "eventing.receiver:create_app()"


def receiver_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {"REDIS_URL": redis_url, "K_SINK": "http://127.0.0.1:9", "WEB_CONCURRENCY": "1"}
    unsigned = {"B2_WEBHOOK_SECRETS": "", "B2_WEBHOOK_ALLOW_UNSIGNED": ""}
    return {**env, **unsigned, "GUNICORN_THREADS": "2", **extra}


@pytest.fixture(scope="module")
def gunicorn_receiver(redis_server, tmp_path_factory):
    with Processes(tmp_path_factory.mktemp("gunicorn")) as processes:
        env = receiver_env(redis_server, B2_WEBHOOK_SECRETS=WEBHOOK_SECRET)
        yield processes.gunicorn("receiver", RECEIVER, env)


def test_gunicorn_answers_a_50_mib_content_length_413_at_once(gunicorn_receiver):
    started = time.monotonic()
    head = f"POST / HTTP/1.1\r\nHost: b2\r\nContent-Length: {50 * 1024 * 1024}"
    assert status_of(raw_exchange(gunicorn_receiver, head, b'{"events": [')) == 413
    assert time.monotonic() - started < 3


def test_gunicorn_cuts_a_chunked_body_off_at_the_limit_413(gunicorn_receiver):
    chunk = b"x" * 65536
    body = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 20 + b"0\r\n\r\n"  # 1.25 MiB
    head = "POST / HTTP/1.1\r\nHost: b2\r\nTransfer-Encoding: chunked"
    assert status_of(raw_exchange(gunicorn_receiver, head, body)) == 413


def test_gunicorn_refuses_a_request_with_more_than_50_headers(gunicorn_receiver):
    headers = "".join(f"\r\nX-Padding-{n}: x" for n in range(51))
    head = f"GET /healthz HTTP/1.1\r\nHost: b2{headers}"
    assert status_of(raw_exchange(gunicorn_receiver, head)) in (400, 431)


def test_gunicorn_passes_a_4000_byte_session_cookie(gunicorn_receiver):
    head = f"GET /healthz HTTP/1.1\r\nHost: b2\r\nCookie: admin_session={'a' * 4000}"
    assert status_of(raw_exchange(gunicorn_receiver, head)) == 200


def test_the_receiver_under_gunicorn_does_not_start_without_b2_webhook_secrets(
    redis_server, tmp_path
):
    with Processes(tmp_path) as processes, pytest.raises(RuntimeError, match="B2_WEBHOOK_SECRETS"):
        processes.gunicorn("receiver", RECEIVER, receiver_env(redis_server), ready_timeout=15)
