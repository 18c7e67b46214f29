"""Operators' logs: every line a function's gunicorn process writes is one JSON object on stdout.

Each test reads the real output of a gunicorn process started with the deployed
functions/common/gunicorn_conf.py, against a real redis-server, S3 server and Lambda stand-in.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests

from devstack.stack import (
    CREDENTIAL,
    GUNICORN_CONF,
    LAMBDA_FUNCTION,
    REGION,
    ROOT,
    Processes,
    free_port,
)
from functions.common.events import OBJECT_CREATED, PhotoRef, binary_http, new_event, photo_data
from functions.common.pipeline import PIPELINE
from tests.stack_fixtures import deliver, upload, wait_until_idle

THUMBNAIL_FAILED = PIPELINE["thumbnail"].failed_event

BUCKET = "photos"
BROKEN_KEY = "nora/photos/broken.jpg"
TRACE_ID = "5b8aa5a2d2c872e8321cf37308d69df2"
TRACEPARENT = f"00-{TRACE_ID}-051581bf3cb55c13-01"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass
class Output:
    """A gunicorn process's stdout and stderr files."""

    stdout: Path
    stderr: Path

    def lines(self) -> list[dict]:
        """Every stdout line, each parsed as one JSON object (fails on any other line)."""
        return [json.loads(line) for line in self.stdout.read_text().splitlines()]


def start_gunicorn(app: str, env: dict[str, str], workdir: Path) -> tuple[subprocess.Popen, Output]:
    output = Output(workdir / "stdout.log", workdir / "stderr.log")
    untraced = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LOG_LEVEL"))}
    metrics = workdir / "metrics"
    metrics.mkdir()
    with output.stdout.open("wb") as stdout, output.stderr.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), app],
            cwd=ROOT,
            env={**untraced, "PROMETHEUS_MULTIPROC_DIR": str(metrics), **env},
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    return process, output


def wait_healthy(url: str, process: subprocess.Popen, output: Output) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, output.stderr.read_text()
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not healthy: {output.stdout.read_text()}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def dependencies(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A thumbnail function's environment: a real redis-server, S3 server and Lambda stand-in,
    the bucket holding one broken photo."""
    with Processes(tmp_path_factory.mktemp("log-deps")) as processes:
        python = sys.executable
        s3 = processes.http("s3", [python, "-m", "moto.server", "-p", "{port}"], "/")
        standin = [python, "-m", "devstack.lambda_standin", "--port", "{port}"]
        lambda_url = processes.http("lambda", [*standin, "--function", LAMBDA_FUNCTION], "/healthz")
        client = boto3.client(
            "s3",
            endpoint_url=s3,
            region_name=REGION,
            aws_access_key_id=CREDENTIAL,
            aws_secret_access_key=CREDENTIAL,
        )
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key=BROKEN_KEY, Body=b"\xff\xd8\xff\xe0 truncated")
        yield {
            "S3_ENDPOINT_URL": s3,
            "S3_REGION": REGION,
            "S3_ACCESS_KEY_ID": CREDENTIAL,
            "S3_SECRET_ACCESS_KEY": CREDENTIAL,
            "DB_LAMBDA_ENDPOINT_URL": lambda_url,
            "DB_LAMBDA_FUNCTION": LAMBDA_FUNCTION,
            "AWS_ACCESS_KEY_ID": CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": CREDENTIAL,
            "REDIS_URL": processes.redis(),
        }


@pytest.fixture(scope="module")
def thumbnail_output(dependencies, tmp_path_factory) -> Output:
    """The output of a thumbnail function that was sent the broken photo's CloudEvent (with
    its trace in the event's `traceparent` extension, no HTTP header) and then stopped."""
    port = free_port()
    env = {**dependencies, "PORT": str(port), "WEB_CONCURRENCY": "1", "ACCESS_LOG": "1"}
    workdir = tmp_path_factory.mktemp("thumbnail-logs")
    process, output = start_gunicorn("functions.thumbnail.app:create_app()", env, workdir)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, output)
        photo = PhotoRef(bucket=BUCKET, key=BROKEN_KEY, version_id=None, user_id="nora")
        event = new_event(OBJECT_CREATED, "/test", photo, photo_data(photo))
        event["traceparent"] = TRACEPARENT
        headers, body = binary_http(event)
        reply = requests.post(url, headers=headers, data=body, timeout=30)
        assert reply.headers["ce-type"] == THUMBNAIL_FAILED, reply.text
    finally:
        stop(process)
    return output


def test_every_line_a_stage_writes_is_a_json_object_with_time_level_logger_and_message(
    thumbnail_output,
):
    lines = thumbnail_output.lines()
    assert lines
    for line in lines:
        assert TIME.match(line["time"]), line
        assert line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, line
        assert line["logger"] and isinstance(line["message"], str), line
    assert thumbnail_output.stderr.read_text() == ""


def test_gunicorns_own_start_up_lines_are_json(thumbnail_output):
    messages = [line["message"] for line in thumbnail_output.lines()]
    gunicorn = [
        line["message"] for line in thumbnail_output.lines() if line["logger"] == "gunicorn.error"
    ]
    assert any(message.startswith("Starting gunicorn") for message in gunicorn), messages
    assert any(message.startswith("Listening at: ") for message in gunicorn), messages


def test_with_access_log_on_each_request_is_a_json_line(thumbnail_output):
    access = [line for line in thumbnail_output.lines() if line["logger"] == "gunicorn.access"]
    assert any('"POST / HTTP/1.1" 200' in line["message"] for line in access), access


def test_a_broken_photo_has_exactly_one_warning_with_its_reason_user_key_and_trace_id(
    thumbnail_output,
):
    [warning] = [line for line in thumbnail_output.lines() if line["level"] == "WARNING"]
    assert warning["reason"] == "corrupt"
    assert "corrupt" in warning["message"]
    assert (warning["user"], warning["key"]) == ("nora", BROKEN_KEY)
    assert warning["trace_id"] == TRACE_ID
    assert re.fullmatch(r"[0-9a-f]{16}", warning["span_id"])


@pytest.fixture(scope="module")
def failed_boot_output(dependencies, tmp_path_factory) -> Output:
    """The output of a receiver whose worker cannot start (no webhook secret), at LOG_LEVEL
    warning."""
    env = {**dependencies, "PORT": str(free_port()), "WEB_CONCURRENCY": "1"}
    env |= {"LOG_LEVEL": "warning", "B2_WEBHOOK_SECRETS": "", "K_SINK": "http://127.0.0.1:9"}
    workdir = tmp_path_factory.mktemp("receiver-logs")
    process, output = start_gunicorn("eventing.receiver:create_app()", env, workdir)
    assert process.wait(timeout=60) != 0
    return output


def test_an_exception_is_logged_inside_its_one_json_line(failed_boot_output):
    errors = [line for line in failed_boot_output.lines() if line["level"] == "ERROR"]
    boot = next(line for line in errors if line["message"] == "Exception in worker process")
    assert "ValueError: set B2_WEBHOOK_SECRETS" in boot["exc_info"]


def test_log_level_warning_leaves_out_info_lines(failed_boot_output):
    levels = {line["level"] for line in failed_boot_output.lines()}
    assert levels == {"ERROR"}


# The local stack's processes that are ours, each logging to `<workdir>/<name>.log`.
STACK_COMPONENTS = ("receiver", "broker", "thumbnail", "embed", "status", "status-dead-letter")


def test_in_the_local_stack_a_broken_photo_has_one_warning_and_every_log_is_json(stack):
    key = "lena/photos/broken.jpg"
    assert deliver(stack, [upload(stack, key, b"\xff\xd8\xff\xe0 broken")]).status_code == 200
    wait_until_idle(stack, "lena", 1)
    logs = {
        name: [json.loads(line) for line in (stack.config.workdir / f"{name}.log").open()]
        for name in STACK_COMPONENTS
    }
    warnings = [
        (name, line["reason"], line["user"])
        for name, lines in logs.items()
        for line in lines
        if line["level"] == "WARNING" and line.get("key") == key
    ]
    assert warnings == [("thumbnail", "corrupt", "lena")]
