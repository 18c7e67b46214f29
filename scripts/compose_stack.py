"""docker-compose.yml as the demo's stack (`make demo-compose`, `scripts.demo --compose`): the
same interface as devstack/stack.py's LocalStack (urls, config, s3(), auth_headers()), every part
a container from the images `make images` builds.

Brings the stack up under its own project name with free published ports (two can run at once),
Redis from the pinned official image where it can be pulled, else photo-pipeline/redis:dev
(Debian's redis-server), and traces to Jaeger where its image can be pulled, else to the local
OTLP receiver. The embed image carries no pack: the model root is mounted read-only at /models.
On exit the containers' logs are kept in the workdir and the stack is brought down, volumes
and all.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import requests

from devstack.stack import (
    ROOT,
    Stack,
    StackConfig,
    free_port,
)
from scripts import build_images

COMPOSE_FILE = ROOT / "docker-compose.yml"
# Where devstack/stack.py's model_root_or_test_pack makes the TEST pack.
TEST_PACK_ROOT = ROOT / "var" / "test-models"
# Published ports, by the variable docker-compose.yml reads and the URL name the demo uses.
PORTS = {"RECEIVER_PORT": "receiver", "STATUS_PORT": "status", "S3_PORT": "s3"}
PORTS |= {"LAMBDA_PORT": "lambda", "JAEGER_UI_PORT": "jaeger"}
READY_TIMEOUT_S = 300


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) where the plugin is there, else docker-compose 1.x."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise RuntimeError(
        "no compose here: install the docker compose plugin, or docker-compose 1.29"
        " (Debian: apt-get install docker-compose)"
    )


def compose_default(variable: str) -> str:
    """The default docker-compose.yml gives `${variable:-default}`."""
    match = re.search(rf"\$\{{{variable}:-([^}}]+)\}}", COMPOSE_FILE.read_text())
    assert match, f"docker-compose.yml has no default for {variable}"
    return match[1]


def third_party_choices(client: str) -> tuple[dict[str, str], str]:
    """The Redis image and the traces profile: the pinned images where they can be pulled,
    else what is built here."""
    env = {}
    if not build_images.pullable(client, compose_default("REDIS_IMAGE")):
        env["REDIS_IMAGE"] = build_images.reference("redis")
    jaeger = build_images.pullable(client, compose_default("JAEGER_IMAGE"))
    return env, "jaeger" if jaeger else "otlp-receiver"


class ComposeStack(Stack):
    """`with ComposeStack(config) as stack:`; `stack.urls` names the published endpoints."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.project = f"photo-pipeline-{os.getpid()}"
        self.urls: dict[str, str] = {}
        self._compose = compose_command()
        self._env: dict[str, str] = {}

    def start(self) -> None:
        built = subprocess.run(
            [sys.executable, "-m", "scripts.build_images", "--if-stale"], cwd=ROOT
        )
        if built.returncode != 0:
            raise RuntimeError("make images failed (its output is above)")
        choices, profile = third_party_choices(build_images.buildkit_client())
        ports = {variable: str(free_port()) for variable in PORTS}
        self._env = {**choices, **ports, "MODEL_ROOT": str(self.config.model_root)}
        self._env["COMPOSE_PROFILES"] = profile
        redis = self._env.get("REDIS_IMAGE", compose_default("REDIS_IMAGE"))
        print(f"compose project {self.project}: redis {redis}, traces to {profile}")
        pack = self.config.model_root / self.config.model_pack
        test_pack = " (the TEST pack)" if self.config.model_root == TEST_PACK_ROOT else ""
        mounted = f"/models/{self.config.model_pack}"
        print(
            f"embed: no pack baked into its image; {pack}{test_pack} mounted read-only at {mounted}"
        )
        self.urls = {name: f"http://127.0.0.1:{ports[v]}" for v, name in PORTS.items()}
        if profile != "jaeger":
            del self.urls["jaeger"]
        self.config.workdir.mkdir(parents=True, exist_ok=True)
        self._run("up", "--detach", "--no-build")
        print(
            f"compose: up; its output and the containers' logs in {self.config.workdir}/compose.log"
        )
        self._wait_ready()

    def stop(self) -> None:
        if not self._env:
            return
        self._run("logs", "--no-color", "--timestamps", check=False)
        self._run("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False)
        self._env = {}
        self._s3 = None

    def _run(self, *arguments: str, check: bool = True) -> None:
        """A compose command on this project; its output goes to the workdir's compose.log
        (shown when it fails), so the demo's own lines stay the last ones printed."""
        command = [*self._compose, "--project-name", self.project, "--file", str(COMPOSE_FILE)]
        env = {**os.environ, **self._env}
        log_path = self.config.workdir / "compose.log"
        with log_path.open("a") as log:
            log.write(f"$ {' '.join(arguments)}\n")
            log.flush()
            done = subprocess.run(
                [*command, *arguments], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        if check and done.returncode != 0:
            tail = "\n".join(log_path.read_text().splitlines()[-30:])
            raise RuntimeError(f"compose {arguments[0]} failed ({done.returncode}):\n{tail}")

    def _wait_ready(self) -> None:
        """Until the receiver, status, S3 and the Lambda stand-in answer from this machine."""
        paths = {"receiver": "/healthz", "status": "/healthz", "s3": "/", "lambda": "/healthz"}
        deadline = time.monotonic() + READY_TIMEOUT_S
        for name, path in paths.items():
            while not _answers(self.urls[name] + path):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"compose stack: {name} not answering after {READY_TIMEOUT_S} s"
                    )
                time.sleep(0.5)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False
