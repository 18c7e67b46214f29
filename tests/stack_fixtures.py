"""The local stack as a pytest fixture, and helpers to drive it like B2 and the front end do."""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from collections.abc import Callable

import pytest
import requests

from devstack import b2_sender
from devstack.make_test_model_pack import build_pack
from devstack.stack import LocalStack, StackConfig
from devstack.stack import fetch_status as status
from scripts.demo import ended


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    build_pack(models / "buffalo_l")
    config = StackConfig(model_root=models, workdir=tmp_path_factory.mktemp("stack"))
    with LocalStack(config) as running:
        yield running


def upload(stack: LocalStack, key: str, data: bytes) -> dict:
    """Put the photo in the bucket and return the B2 event describing that upload."""
    stored = stack.s3().put_object(Bucket=stack.config.bucket, Key=key, Body=data)
    return b2_sender.object_created(stack.config.bucket, key, len(data), stored["VersionId"])


def deliver(stack: LocalStack, events: list[dict], secret: str | None = None) -> requests.Response:
    return b2_sender.deliver(stack.urls["receiver"], events, secret or stack.config.webhook_secret)


def wait_until_idle(stack: LocalStack, user_id: str, photos: int, timeout_s: float = 90) -> dict:
    """Poll as the front end does until every one of `photos` is embedded or failed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = status(stack, user_id)
        if body["phase"] == "idle" and ended(body["counts"]) >= photos:
            return body
        time.sleep(0.2)
    raise AssertionError(f"{user_id} not idle after {timeout_s} s: {body}")


def lambda_invocations(stack: LocalStack, key: str | None = None) -> list[dict]:
    calls = requests.get(f"{stack.urls['lambda']}/_invocations", timeout=5).json()
    payloads = [call["payload"] for call in calls]
    return [p for p in payloads if key is None or p["key"] == key]


def broker_stats(stack: LocalStack) -> dict:
    return requests.get(f"{stack.urls['broker']}/stats", timeout=5).json()


Script = Callable[[LocalStack, argparse.Namespace], int]


def run_script(run: Script, stack: LocalStack, args: argparse.Namespace) -> tuple[int, list[str]]:
    """Run a script's `run(stack, args)` on this stack: its exit status and printed lines."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = run(stack, args)
    return status, printed.getvalue().splitlines()
