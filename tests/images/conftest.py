"""Fixtures of the image tests: the images built by scripts/build_images.py (as `make images`
builds them; an image whose inputs did not change is not rebuilt), the real backends they talk
to (redis-server, moto's S3 server, the Lambda stand-in, the OTLP receiver, a JWKS endpoint for
the broker's OIDC tokens), and each function image started as its Knative Service runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from werkzeug.serving import make_server

from devstack.stack import CREDENTIAL, LAMBDA_FUNCTION, REGION, Processes, free_port
from scripts import build_images
from tests.knative_manifests import (
    ROOT,
    config_maps_loaded,
    container,
    find,
    knative_service,
    literal_env,
    rendered,
    secret_env,
)

FUNCTION_IMAGES = ("thumbnail", "embed", "status", "b2-receiver")
# The image each Knative Service runs (status-dead-letter is the status image again).
SERVICE_IMAGES = {name: name for name in FUNCTION_IMAGES} | {"status-dead-letter": "status"}
BUCKET = "photos"
UID = "10001"
STARTUP_TIMEOUT_S = 120
# Local values of the photo-pipeline-secrets keys the Knative Services read.
JWT_SECRET = "image-test-jwt-secret-of-32-bytes-or-more"
WEBHOOK_SECRET = "image-test-webhook-secret-32-bytes"


@dataclass(frozen=True)
class Backends:
    redis: str
    s3: str
    lambda_: str
    otlp: str
    jwks: str
    sender_key: rsa.RSAPrivateKey

    def s3_client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.s3,
            region_name=REGION,
            aws_access_key_id=CREDENTIAL,
            aws_secret_access_key=CREDENTIAL,
        )

    def secrets(self) -> dict[str, str]:
        """photo-pipeline-secrets, by key, with this machine's values."""
        return {
            "REDIS_URL_RECEIVER": self.redis,
            "REDIS_URL_STAGE": self.redis,
            "REDIS_URL_STATUS": self.redis,
            "S3_ACCESS_KEY_ID": CREDENTIAL,
            "S3_SECRET_ACCESS_KEY": CREDENTIAL,
            "AWS_ACCESS_KEY_ID": CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": CREDENTIAL,
            "JWT_SECRET": JWT_SECRET,
            "ADMIN_PASSWORD": "image-test-admin-password",
            "ADMIN_SESSION_SECRET": "image-test-admin-session-secret-32-bytes",
            "B2_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        }

    def endpoints(self) -> dict[str, str]:
        """The ConfigMap's endpoints, pointed at this machine's stand-ins."""
        return {
            "S3_ENDPOINT_URL": self.s3,
            "S3_REGION": REGION,
            "DB_LAMBDA_ENDPOINT_URL": self.lambda_,
            "DB_LAMBDA_FUNCTION": LAMBDA_FUNCTION,
            "DB_LAMBDA_REGION": REGION,
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp,
            "EVENT_AUTH_JWKS_URL": self.jwks,
        }


@dataclass(frozen=True)
class Container:
    name: str
    url: str

    def logs(self) -> str:
        done = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True)
        return done.stdout + done.stderr


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Skip where no Docker daemon can build and run the images (the reason said)."""
    reason = build_images.unavailable_reason()
    if reason:
        pytest.skip(f"no Docker here to build and run the images: {reason}")


@pytest.fixture(scope="session")
def images(docker_ready: None) -> dict[str, str]:
    """The function images, built by the script `make images` runs; image name -> reference."""
    command = [sys.executable, "-m", "scripts.build_images", "--if-stale", *FUNCTION_IMAGES]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"make images failed:\n{(done.stdout + done.stderr)[-6000:]}")
    return {name: build_images.reference(name) for name in FUNCTION_IMAGES}


@pytest.fixture(scope="session")
def jwks(docker_ready: None) -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    """The cluster's service-account issuer, as the stages see it: a JWKS over HTTP, and the
    key that signs the broker's tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    provider = Flask("issuer")
    provider.add_url_rule("/jwks", "jwks", lambda: {"keys": [{**jwk, "kid": "k1", "use": "sig"}]})
    server = make_server("127.0.0.1", 0, provider, threaded=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/jwks", key
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def backends(
    jwks: tuple[str, rsa.RSAPrivateKey], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backends]:
    """redis-server, moto's S3 server with a versioned bucket, the Lambda stand-in and the
    OTLP receiver, as real processes on this machine."""
    python = sys.executable
    with Processes(tmp_path_factory.mktemp("image-backends")) as processes:
        s3 = processes.http("s3", [python, "-m", "moto.server", "-p", "{port}"], "/")
        lambda_ = [python, "-m", "devstack.lambda_standin", "--port", "{port}"]
        otlp = [python, "-m", "devstack.otlp_receiver", "--port", "{port}"]
        running = Backends(
            redis=processes.redis(),
            s3=s3,
            lambda_=processes.http("lambda", [*lambda_, "--function", LAMBDA_FUNCTION], "/healthz"),
            otlp=processes.http("otlp", otlp, "/healthz"),
            jwks=jwks[0],
            sender_key=jwks[1],
        )
        client = running.s3_client()
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield running


def knative_env(service_name: str, backends: Backends, port: int) -> dict[str, str]:
    """The environment the Knative Service gives its container: its ConfigMaps, its literal
    env, its secrets (this machine's values), the endpoints of this machine, and PORT."""
    service = knative_service(service_name)
    env: dict[str, str] = {}
    for config_map in sorted(config_maps_loaded(service)):
        manifest = find(rendered(), "v1", "ConfigMap", config_map)
        assert manifest is not None, f"{service_name} loads a ConfigMap not in the manifests"
        env |= manifest["data"]
    env |= literal_env(service)
    secrets = backends.secrets()
    env |= {variable: secrets[key] for variable, (_, key) in secret_env(service).items()}
    return env | backends.endpoints() | {"PORT": str(port)}


def scratch_mounts(service_name: str) -> list[str]:
    """Where the Knative Service mounts an emptyDir: a tmpfs each, as `--tmpfs` arguments."""
    service = knative_service(service_name)
    volumes = service["spec"]["template"]["spec"].get("volumes", [])
    empty = {volume["name"] for volume in volumes if "emptyDir" in volume}
    mounts = container(service).get("volumeMounts", [])
    return [
        argument
        for mount in mounts
        if mount["name"] in empty
        for argument in ("--tmpfs", f"{mount['mountPath']}:rw,mode=1777")
    ]


def docker_run_command(name: str, image: str, env: dict[str, str], options: list[str]) -> list[str]:
    """`docker run` as Knative runs the container: not root, read-only root filesystem, no
    capabilities, no privilege escalation; the host's network, so 127.0.0.1 is this machine."""
    command = ["docker", "run", "--detach", "--name", name, "--network", "host"]
    command += ["--user", f"{UID}:{UID}", "--read-only", "--cap-drop", "ALL"]
    command += ["--security-opt", "no-new-privileges"]
    for variable, value in sorted(env.items()):
        command += ["--env", f"{variable}={value}"]
    return [*command, *options, image]


def wait_healthy(container_: Container, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{container_.url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if not running(container_.name):
            break
        time.sleep(0.5)
    raise AssertionError(f"{container_.name} never answered /healthz:\n{container_.logs()[-4000:]}")


def running(name: str) -> bool:
    state = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Running}}", name],
        capture_output=True,
        text=True,
    )
    return state.stdout.strip() == "true"


StartService = Callable[..., Container]


@pytest.fixture(scope="module")
def start_service(images: dict[str, str], backends: Backends) -> Iterator[StartService]:
    """Start a Knative Service's image as Knative would run it: `start_service(name,
    env={...}, options=[...])`; its URL once /healthz answers. Removed at the end."""
    started: list[str] = []

    def start(
        service_name: str, env: dict[str, str] | None = None, options: list[str] | None = None
    ) -> Container:
        port = free_port()
        name = f"image-test-{service_name}-{uuid.uuid4().hex[:8]}"
        environment = knative_env(service_name, backends, port) | (env or {})
        mounts = [*scratch_mounts(service_name), *(options or [])]
        image = images[SERVICE_IMAGES[service_name]]
        subprocess.run(docker_run_command(name, image, environment, mounts), check=True)
        started.append(name)
        running_container = Container(name, f"http://127.0.0.1:{port}")
        wait_healthy(running_container)
        return running_container

    yield start
    for name in started:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)


@pytest.fixture(scope="module")
def test_pack_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding buffalo_l/, the generated TEST pack, readable by uid 10001."""
    from devstack.make_test_model_pack import build_pack

    root = tmp_path_factory.mktemp("image-models")
    build_pack(root / "buffalo_l")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root
