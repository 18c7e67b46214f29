"""Redis's ACL users, proven on a real redis-server started with the very `--user` arguments of
knative/app/redis.yaml (issue #10: no component logs in as the full-rights default user).

Each component's user runs that component's real code paths (PhotoStore, StatusReader,
SeenEvents, the admin's stores) and is refused commands outside its set (FLUSHALL, CONFIG,
KEYS, ...) and keys outside its patterns.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from functions.common.config import AdminSettings, StatusSettings
from functions.common.photo_store import PhotoStore
from functions.common.pipeline import PIPELINE, PhotoState
from functions.common.seen_events import SeenEvents
from functions.status.admin_store import LoginBrake, SessionStore, ThresholdStore
from functions.status.status_reader import StatusReader
from scripts.deploy import REDIS_USERS
from tests.knative_manifests import container, find, rendered

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)

PASSWORDS = {
    "REDIS_PASSWORD": "AdminPassword0123456789xyz",
    "REDIS_RECEIVER_PASSWORD": "ReceiverPassword0123456789",
    "REDIS_STAGE_PASSWORD": "StagePassword0123456789abc",
    "REDIS_STATUS_PASSWORD": "StatusPassword0123456789ab",
}
T0 = 1_000_000.0


def manifest_acl_arguments() -> list[str]:
    """The `--user` arguments of the deployed Redis, their $(VAR)s substituted as kubelet does."""
    return [
        re.sub(r"\$\((\w+)\)", lambda m: PASSWORDS[m[1]], argument)
        for rule in manifest_acl_rules()
        for argument in ("--user", *rule)
    ]


def manifest_acl_rules() -> list[list[str]]:
    """Each `--user` directive of the deployed Redis: its words, up to the next `--` option."""
    rules: list[list[str]] = []
    current: list[str] | None = None
    for argument in container_of_statefulset()["args"]:
        if argument.startswith("--"):
            current = [] if argument == "--user" else None
            if current is not None:
                rules.append(current)
        elif current is not None:
            current.append(argument)
    return rules


def container_of_statefulset() -> dict:
    statefulset = find(rendered(), "apps/v1", "StatefulSet", "redis")
    (only,) = statefulset["spec"]["template"]["spec"]["containers"]
    return only


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no",
            "--dir", str(tmp_path_factory.mktemp("redis-acl")),
            "--requirepass", PASSWORDS["REDIS_PASSWORD"],
            *manifest_acl_arguments(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        admin = redis.Redis(port=port, password=PASSWORDS["REDIS_PASSWORD"])
        for _ in range(100):
            if process.poll() is not None:
                pytest.fail(f"redis-server refused the ACL rules: {process.stdout.read()}")
            try:
                admin.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def client_as(port: int, user: str) -> redis.Redis:
    password_key, _ = REDIS_USERS[user]
    return redis.Redis(
        port=port, username=user, password=PASSWORDS[password_key], decode_responses=True
    )


def store_as(port: int, user: str) -> PhotoStore:
    return PhotoStore(client_as(port, user), StatusSettings(pending_deadline_s=1.0))


def test_the_manifest_gives_each_component_its_own_user():
    rules = manifest_acl_rules()
    assert sorted(rule[0] for rule in rules) == sorted(REDIS_USERS)
    for rule in rules:
        assert rule[1] == "on" and rule[2].startswith(">$(")
        assert "-@all" in rule and "-@dangerous" in rule and "~*" not in rule


def test_every_component_reads_its_own_users_url():
    urls = {}
    for manifest in rendered():
        if manifest["kind"] != "Service" or manifest["apiVersion"] != "serving.knative.dev/v1":
            continue
        env = container(manifest)["env"]
        (ref,) = [e["valueFrom"]["secretKeyRef"]["key"] for e in env if e["name"] == "REDIS_URL"]
        urls[manifest["metadata"]["name"]] = ref
    assert urls == {
        "b2-receiver": "REDIS_URL_RECEIVER",
        "thumbnail": "REDIS_URL_STAGE",
        "embed": "REDIS_URL_STAGE",
        "thumbnail-bulk": "REDIS_URL_STAGE",
        "embed-bulk": "REDIS_URL_STAGE",
        "status": "REDIS_URL_STATUS",
        "status-dead-letter": "REDIS_URL_STATUS",
    }


def test_the_receiver_accepts_uploads_and_remembers_events(server):
    store = store_as(server, "receiver")
    assert store.record("ann", "a.jpg", PhotoState.UPLOADED, at=T0)
    store.declare_upload("ann", 2, at=T0)
    seen = SeenEvents(client_as(server, "receiver"), window_s=60)
    assert not seen.is_seen("event-1")
    seen.remember("event-1")
    assert seen.is_seen("event-1")
    # The lanes: the user's backlog and the flag that keeps them in the bulk lane.
    store.set_bulk("ann", True)
    assert store.backlog("ann").in_bulk
    store.set_bulk("ann", False)


def test_a_stage_claims_records_and_releases_photos(server):
    store_as(server, "receiver").record("bob", "b.jpg", PhotoState.UPLOADED, at=T0)
    stage = store_as(server, "stage")
    claim = stage.claim("bob", "b.jpg", PIPELINE["thumbnail"])
    stage.record("bob", "b.jpg", PhotoState.THUMBNAIL, at=T0 + 1)
    stage.release("bob", "b.jpg", PIPELINE["thumbnail"], claim)
    stage.record("bob", "b.jpg", PhotoState.EMBEDDING, faces=2, at=T0 + 2)
    assert stage.claim("bob", "b.jpg", PIPELINE["embed"]) is not None


def test_status_reads_users_the_pipeline_and_sweeps(server):
    store_as(server, "receiver").record("cat", "c.jpg", PhotoState.UPLOADED, at=T0)
    status = StatusReader(client_as(server, "status"))
    assert status.user_status("cat", now=T0 + 1).uploaded == 1
    status.snapshot(idle_retention_s=3600, now=T0 + 1)
    store_as(server, "status").sweep(now=T0 + 10_000)
    ThresholdStore(client_as(server, "status")).thresholds()
    # The admin login brake and sessions (admin_* keys), through their own code.
    admin = client_as(server, "status")
    brake = LoginBrake(admin, AdminSettings(login_failures_per_client=2))
    assert brake.attempt("203.0.113.9", now=T0).allowed
    brake.failed("203.0.113.9", now=T0)
    assert brake.attempt("203.0.113.9", now=T0).allowed
    brake.succeeded("203.0.113.9", now=T0)
    assert brake.attempt(None, now=T0).allowed
    brake.failed(None, now=T0)
    sessions = SessionStore(admin)
    sessions.open("x", ttl_s=60)
    assert sessions.is_open("x")
    sessions.close("x")
    assert not sessions.is_open("x")
    assert "used_memory" in admin.info("memory")


def test_the_dead_letter_sink_records_failures(server):
    status = store_as(server, "status")
    status.record("dan", "d.jpg", PhotoState.UPLOADED, at=T0)
    status.record("dan", "d.jpg", PhotoState.THUMBNAIL_FAILED, reason="dead-lettered", at=T0 + 1)


@pytest.mark.parametrize("user", sorted(REDIS_USERS))
@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "GET", "*"),
        ("KEYS", "*"),
        ("MONITOR",),
        ("CLIENT", "KILL", "ID", "1"),
        ("ACL", "LIST"),
        ("SCRIPT", "FLUSH"),
        ("SHUTDOWN",),
        ("MODULE", "LIST"),
        ("PUBLISH", "channel", "message"),
    ],
    ids=lambda c: " ".join(c[:2]) if isinstance(c, tuple) else c,
)
def test_a_component_is_refused_commands_outside_its_set(server, user, command):
    with pytest.raises(redis.exceptions.NoPermissionError):
        client_as(server, user).execute_command(*command)


@pytest.mark.parametrize(
    ("user", "key"),
    [
        ("stage", "b2event:x"),
        ("stage", "sweeper_lock"),
        ("stage", "admin_sessions"),
        ("receiver", "admin_sessions"),
        ("status", "b2event:x"),
        *((user, "other:key") for user in REDIS_USERS),
    ],
)
def test_a_component_is_refused_keys_outside_its_patterns(server, user, key):
    with pytest.raises(redis.exceptions.NoPermissionError):
        client_as(server, user).set(key, "1")


def test_a_script_cannot_reach_keys_outside_the_users_patterns(server):
    script = "return redis.call('SET', KEYS[1], '1')"
    with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)permission|no-?perm"):
        client_as(server, "stage").eval(script, 1, "other:key")


@pytest.mark.parametrize("user", ["stage", "receiver"])
def test_only_status_reads_info(server, user):
    with pytest.raises(redis.exceptions.NoPermissionError):
        client_as(server, user).info("memory")
