"""The whole pipeline on this machine, every part real, on free ports.

redis-server (status store), moto's S3 server (the bucket, reached through boto3 like B2), the
Lambda stand-in, the local broker (routes by eventing/triggers.yaml), and the B2 webhook
receiver plus the functions under gunicorn. As on Knative, each stage runs once per lane
(`<stage>` and `<stage>-bulk`; functions/common/lanes.py) and the status function
twice: `status` (public, no dead-letter sink) and `status-dead-letter` (the Triggers'
dead-letter sink, reached only by the broker). Two stacks can run at once.

    python -m devstack.stack            # start, print URLs, run until Ctrl-C
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import boto3
import jwt
import redis
import requests

from devstack import fault_proxy
from devstack.make_test_model_pack import build_pack
from devstack.processes import children
from functions.common.config import JWT_HMAC_ALGORITHM, StorageSettings
from functions.common.lanes import Lane, service_name
from functions.common.pipeline import PIPELINE
from scripts.kustomize_render import render as render_kustomization

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "functions" / "common" / "gunicorn_conf.py"
_WORKER_VARIABLES = ("WEB_CONCURRENCY", "GUNICORN_THREADS")
# The local S3 server and Lambda stand-in accept any credentials; these are the stack's.
REGION = "us-east-1"
CREDENTIAL = "local"
LAMBDA_FUNCTION = "photo-db-update"
# Each stage runs once per lane, as the Knative Service of that lane (functions/common/lanes.py).
STAGE_SERVICES = tuple(service_name(stage.name, lane) for stage in PIPELINE for lane in Lane)
# On a cluster each lane's Service has its own pods, each with the CPU it requests, so bulk
# work never takes an interactive photo's CPU; here every process shares this machine's, so
# the bulk lane runs at the lowest CPU priority instead (nice 19, its servers' scheduling
# groups too: about a seventieth of an interactive server's CPU share while both are busy, all
# of the CPU while the interactive ones are idle).
LANE_NICENESS = {Lane.INTERACTIVE: 0, Lane.BULK: 19}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Who issues the local stack's user tokens, and for whom (the status function's JWT_ISSUER and
# JWT_AUDIENCE); the admin sessions' own key (never the users' JWT_SECRET).
JWT_ISSUER = "https://backend.local.example"
JWT_AUDIENCE = "photo-status"
ADMIN_SESSION_SECRET = "local-admin-session-key-of-the-stack-only"


def token_env(secret: str) -> dict[str, str]:
    """The status function's settings for verifying `mint_token`'s tokens."""
    return {"JWT_SECRET": secret, "JWT_ISSUER": JWT_ISSUER, "JWT_AUDIENCE": JWT_AUDIENCE}


def mint_token(secret: str, user_id: str, ttl_s: int = 3600) -> str:
    """An HS256 bearer token for the status API, as the app's backend issues them."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "iat": now,
        "exp": now + ttl_s,
    }
    headers = {"typ": "JWT"}
    return jwt.encode(claims, secret, algorithm=JWT_HMAC_ALGORITHM, headers=headers)


@dataclass
class StackConfig:
    model_root: Path
    workdir: Path
    model_pack: str = "buffalo_l"
    bucket: str = "photos"
    webhook_secret: str = "local-webhook-secret"
    # The status function's HS256 key (the app's backend signs user tokens with it).
    jwt_secret: str = "local-jwt-secret-of-the-stack-only-32b"
    admin_password: str = "local-admin-password"
    extra_env: dict[str, str] = field(default_factory=dict)
    # Export every process's spans to a stand-in OTLP collector (devstack/otlp_receiver.py).
    tracing: bool = False
    # Route the functions' S3 and Lambda calls through fault-injecting proxies
    # (devstack/fault_proxy.py, at `s3-proxy` and `lambda-proxy`); the stack's own client
    # (`stack.s3()`) still talks to the S3 server directly.
    fault_proxies: bool = False


@dataclass
class _Process:
    name: str
    command: list[str]
    env: dict[str, str]
    answers: Callable[[], bool]  # true once it is ready
    ready_timeout: float
    log_path: Path
    niceness: int = 0
    popen: subprocess.Popen | None = None


class Processes:
    """Local servers, each in its own session and logging to `<workdir>/<name>.log`, started
    on free ports once they answer and stopped together (`with Processes(workdir) as ...`)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._started: list[_Process] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def pids(self) -> dict[str, int]:
        """Each running server's process id, by name (a gunicorn master's, for a function)."""
        return {p.name: p.popen.pid for p in self._started if p.popen and p.popen.poll() is None}

    def redis(self) -> str:
        """A redis-server that persists as production's does (append-only file, fsync'd every
        second, under `<workdir>/redis`), so a restart keeps the data; its URL once it answers
        PING."""
        port = str(free_port())
        data_dir = (self.workdir / "redis").resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data_dir)]
        url = f"redis://127.0.0.1:{port}/0"
        # Before the next free port is looked up: until redis-server binds its port, the
        # kernel may hand the same one out again.
        self._start("redis", command, {}, redis.Redis.from_url(url).ping)
        return url

    def restart(self, name: str, down_s: float = 0.0) -> None:
        """Stop a server as a pod is stopped (SIGTERM, then SIGKILL after 15 s) and, `down_s`
        later, start it again with the same command, so on the same port; returns once it
        answers again."""
        process = next(p for p in self._started if p.name == name)
        _terminate([process])
        time.sleep(down_s)
        self._launch(process)

    def workers(self, name: str) -> list[int]:
        """The process ids of a gunicorn server's workers (its master's children)."""
        return children(self.pids()[name])

    def gunicorn(
        self,
        name: str,
        app: str,
        env: dict[str, str],
        ready_timeout: float = 30,
        niceness: int = 0,
    ) -> str:
        """`app` under gunicorn as deployed (functions/common/gunicorn_conf.py), at `niceness`,
        its metrics under `<workdir>/metrics/<name>`; its URL once `/healthz` answers."""
        metrics_dir = self.workdir / "metrics" / name
        metrics_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), app]
        env = {"PORT": "{port}", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **env}
        return self.http(name, command, "/healthz", env, ready_timeout, niceness)

    def http(
        self,
        name: str,
        command: list[str],
        health_path: str,
        env: dict[str, str] | None = None,
        ready_timeout: float = 30,
        niceness: int = 0,
    ) -> str:
        """An HTTP server on a free port (`{port}` in its command and env), at `niceness`; its
        URL once `health_path` answers."""
        port = str(free_port())
        command = [part.replace("{port}", port) for part in command]
        env = {key: value.replace("{port}", port) for key, value in (env or {}).items()}
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            return requests.get(url + health_path, timeout=1).status_code < 500

        self._start(name, command, env, answers, ready_timeout, niceness)
        return url

    def stop(self) -> None:
        _terminate(list(reversed(self._started)))
        self._started.clear()

    def _start(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        answers: Callable[[], bool],
        ready_timeout: float = 30,
        niceness: int = 0,
    ) -> None:
        if shutil.which(command[0]) is None:
            raise RuntimeError(
                f"{command[0]} is not installed (run scripts/install-system-deps.sh)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / f"{name}.log"
        process = _Process(name, command, env, answers, ready_timeout, log_path, niceness)
        self._started.append(process)
        self._launch(process)

    def _launch(self, process: _Process) -> None:
        """Start the process, logging to its file; returns once it answers."""
        with process.log_path.open("ab") as log_file:
            popen = process.popen = subprocess.Popen(
                process.command,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), **process.env},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if process.niceness:
            _lower_priority(popen.pid, process.niceness)
        self._wait_answering(process, popen)

    def _wait_answering(self, process: _Process, popen: subprocess.Popen) -> None:
        """Until it answers; a connection refused or timing out means not yet."""
        deadline = time.monotonic() + process.ready_timeout
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited at start-up:\n{_tail(process.log_path)}")
            try:
                if process.answers():
                    return
            except (requests.RequestException, redis.ConnectionError):
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"{process.name} not healthy after {process.ready_timeout} s:\n"
            + _tail(process.log_path)
        )


class Stack(ABC):
    """A stack used as `with`: started on entry, stopped on exit, and stopped if starting
    failed half way, so nothing it started is left running. `urls` names its endpoints."""

    config: StackConfig
    urls: dict[str, str]
    _s3: Any = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def s3(self):  # noqa: ANN201 - boto3 clients are dynamically typed
        """The stack's S3 client, made once (boto3 clients are thread-safe)."""
        if self._s3 is None:
            self._s3 = boto3.client(
                "s3",
                endpoint_url=self.urls["s3"],
                region_name=REGION,
                aws_access_key_id=CREDENTIAL,
                aws_secret_access_key=CREDENTIAL,
            )
        return self._s3

    def auth_headers(self, user_id: str) -> dict[str, str]:
        """A user's `Authorization` header for the status API, as the app's backend issues it."""
        return {"Authorization": f"Bearer {mint_token(self.config.jwt_secret, user_id)}"}


def service_template(name: str) -> dict[str, Any] | None:
    """The pod template of the Knative Service `name` as knative/app/ renders it (a stage's
    bulk lane, `<stage>-bulk`, is its stage's Service renamed by knative/app/lanes/bulk/); a
    copy, for the caller to keep. None where there is no such Service."""
    template = _knative_service_templates().get(name)
    return None if template is None else copy.deepcopy(template)


@functools.cache
def knative_app_manifests() -> tuple[dict[str, Any], ...]:
    """knative/app/ as it renders, once a process; not to be modified."""
    return tuple(render_kustomization(ROOT / "knative" / "app"))


@functools.cache
def _knative_service_templates() -> dict[str, dict[str, Any]]:
    """Every Knative Service's pod template, by name."""
    return {
        manifest["metadata"]["name"]: manifest["spec"]["template"]
        for manifest in knative_app_manifests()
        if (manifest["apiVersion"], manifest["kind"]) == ("serving.knative.dev/v1", "Service")
    }


def service_workers(name: str) -> dict[str, str]:
    """The gunicorn workers and threads a function's Knative Service runs it with, so it runs
    here as it does there; none where it has none."""
    template = service_template(name)
    if template is None:
        return {}
    container = template["spec"]["containers"][0]
    return {
        item["name"]: item["value"]
        for item in container.get("env", [])
        if item["name"] in _WORKER_VARIABLES and "value" in item
    }


class LocalStack(Stack):
    """Start with `with LocalStack(config) as stack:`; `stack.urls` names every endpoint."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.urls: dict[str, str] = {}
        self._processes = Processes(config.workdir)

    @property
    def env(self) -> dict[str, str]:
        """The environment every function gets: the stack's endpoints, as ConfigMap values."""
        return {
            "S3_ENDPOINT_URL": self.urls.get("s3-proxy", self.urls["s3"]),
            "S3_REGION": REGION,
            "S3_ACCESS_KEY_ID": CREDENTIAL,
            "S3_SECRET_ACCESS_KEY": CREDENTIAL,
            "DB_LAMBDA_ENDPOINT_URL": self.urls.get("lambda-proxy", self.urls["lambda"]),
            "DB_LAMBDA_FUNCTION": LAMBDA_FUNCTION,
            "AWS_ACCESS_KEY_ID": CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": CREDENTIAL,
            "REDIS_URL": self.urls["redis"],
            "MODEL_ROOT": str(self.config.model_root),
            "MODEL_PACK": self.config.model_pack,
            "B2_WEBHOOK_SECRETS": self.config.webhook_secret,
            **self.config.extra_env,
        }

    def storage_settings(self, **overrides: float) -> StorageSettings:
        """The functions' object-store settings for this stack's S3 server."""
        defaults = StorageSettings.from_env()
        return defaults.replace(
            endpoint_url=self.urls["s3"],
            region=REGION,
            access_key_id=CREDENTIAL,
            secret_access_key=CREDENTIAL,
            **overrides,
        )

    def pids(self) -> dict[str, int]:
        """Each running part's process id, by name (a gunicorn master's, for a function)."""
        return self._processes.pids()

    def kill_worker(self, name: str) -> int:
        """SIGKILL a worker of the gunicorn server `name` (the lowest pid), as the kernel's
        OOM killer would; its master starts another. The killed worker's pid."""
        workers = self._processes.workers(name)
        if not workers:
            raise RuntimeError(f"{name} has no worker to kill")
        os.kill(workers[0], signal.SIGKILL)
        return workers[0]

    def restart(self, name: str, down_s: float = 0.0) -> None:
        """Stop a part gracefully and start it again on the same port (Processes.restart)."""
        self._processes.restart(name, down_s)

    def start(self) -> None:
        if self.config.tracing:
            self.urls["otlp"] = self._processes.http(
                "otlp",
                [sys.executable, "-m", "devstack.otlp_receiver", "--port", "{port}"],
                "/healthz",
            )
        self.urls["redis"] = self._processes.redis()
        self.urls["s3"] = self._processes.http(
            "s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "{port}"], "/"
        )
        self.urls["lambda"] = self._processes.http(
            "lambda",
            [
                sys.executable,
                "-m",
                "devstack.lambda_standin",
                "--port",
                "{port}",
                "--function",
                LAMBDA_FUNCTION,
            ],
            "/healthz",
        )
        if self.config.fault_proxies:
            for upstream in ("s3", "lambda"):
                self.urls[f"{upstream}-proxy"] = self._spawn_fault_proxy(upstream)
        self.s3().create_bucket(Bucket=self.config.bucket)
        # B2 keeps a version of every object, and its events name the version.
        self.s3().put_bucket_versioning(
            Bucket=self.config.bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        for stage in PIPELINE:
            for lane in Lane:
                name = service_name(stage.name, lane)
                self.urls[name] = self._spawn_function(
                    name,
                    f"functions.{stage.name}.app",
                    service_workers(name),
                    ready_timeout=120,  # a model loads and warms up before /healthz answers
                    niceness=LANE_NICENESS[lane],
                )
        self.urls["status"] = self._spawn_function(
            "status",
            "functions.status.app",
            {
                **token_env(self.config.jwt_secret),
                "ADMIN_PASSWORD": self.config.admin_password,
                "ADMIN_SESSION_SECRET": ADMIN_SESSION_SECRET,
                # Plain http on loopback: a Secure cookie would never be sent back.
                "ADMIN_COOKIE_SECURE": "0",
            },
        )
        self.urls["status-dead-letter"] = self._spawn_function(
            "status-dead-letter",
            "functions.status.app",
            {
                **token_env(self.config.jwt_secret),
                "STATUS_DEAD_LETTER_ENABLED": "true",
                "WEB_CONCURRENCY": "1",
            },
        )
        self.urls["broker"] = self._processes.http(
            "broker",
            [
                sys.executable,
                "-m",
                "devstack.local_broker",
                "--port",
                "{port}",
                "--triggers",
                str(ROOT / "eventing" / "triggers.yaml"),
                *(
                    arg
                    for name in (*STAGE_SERVICES, "status-dead-letter")
                    for arg in ("--service", f"{name}={self.urls[name]}")
                ),
            ],
            "/healthz",
            self._tracing_env("broker"),
        )
        self.urls["receiver"] = self._spawn_function(
            "receiver", "eventing.receiver", {"K_SINK": self.urls["broker"]}
        )

    def stop(self) -> None:
        self._processes.stop()
        self._s3 = None

    def wait_until_quiet(self, timeout_s: float = 60.0) -> None:
        """Wait until the broker has nothing in flight (every delivery settled)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stats = requests.get(f"{self.urls['broker']}/stats", timeout=2).json()
            if stats["in_flight"] == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"broker still busy after {timeout_s} s: {stats}")

    def _spawn_fault_proxy(self, upstream: str) -> str:
        command = [sys.executable, "-m", "devstack.fault_proxy", "--port", "{port}"]
        command += ["--upstream", self.urls[upstream]]
        return self._processes.http(f"{upstream}-proxy", command, fault_proxy.CONTROL_PATH)

    def _spawn_function(
        self,
        name: str,
        module: str,
        env: dict[str, str] | None = None,
        ready_timeout: float = 30,
        niceness: int = 0,
    ) -> str:
        env = {**self.env, **self._tracing_env(name), **(env or {})}
        app = f"{module}:create_app()"
        return self._processes.gunicorn(name, app, env, ready_timeout, niceness)

    def _tracing_env(self, service: str) -> dict[str, str]:
        """OTLP export as `service`, flushed every 100 ms; none (tracing off) by default."""
        if not self.config.tracing:
            return {}
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.urls["otlp"],
            "OTEL_SERVICE_NAME": service,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }


def fetch_status(stack: LocalStack, user_id: str) -> dict:
    """Poll as the user's front end does, with a token the app's backend would issue."""
    headers = stack.auth_headers(user_id)
    response = requests.get(f"{stack.urls['status']}/v1/status", headers=headers, timeout=5)
    response.raise_for_status()
    return response.json()


def _terminate(processes: list[_Process]) -> None:
    """SIGTERM each process's group, then wait for each (SIGKILL after 15 s)."""
    running = [p.popen for p in processes if p.popen and p.popen.poll() is None]
    for popen in running:
        os.killpg(popen.pid, signal.SIGTERM)
    for popen in running:
        try:
            popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()


def _lower_priority(pid: int, niceness: int) -> None:
    """Run the process, and the children it starts, at `niceness`. Each server has a session of
    its own, and with the scheduler's autogroup (on by default) a nice value counts only within
    its session: the session's group gets it instead (sched(7), "The autogroup feature")."""
    os.setpriority(os.PRIO_PROCESS, pid, niceness)
    autogroup = Path(f"/proc/{pid}/autogroup")
    if autogroup.exists():
        autogroup.write_text(str(niceness))


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def model_root_or_test_pack(requested: Path) -> Path:
    """`requested` when it holds the real pack, else a generated TEST pack, said loudly."""
    if any((requested / "buffalo_l").glob("*.onnx")):
        print(f"model pack: {requested / 'buffalo_l'}")
        return requested
    test_root = ROOT / "var" / "test-models"
    build_pack(test_root / "buffalo_l")
    print("!" * 78)
    print("! No real buffalo_l pack found: using the generated TEST model pack, which has")
    print("! buffalo_l's file names and input/output contract but detects only the synthetic")
    print("! face markers drawn into the demo photos. Put the real pack in")
    print(f"! {requested / 'buffalo_l'} (or pass --model-root) for real faces.")
    print("!" * 78)
    return test_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-root", type=Path, default=ROOT / "var" / "models")
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "stack")
    parser.add_argument(
        "--tracing", action="store_true", help="collect spans; read them at <otlp>/spans"
    )
    args = parser.parse_args()
    model_root = model_root_or_test_pack(args.model_root)
    config = StackConfig(model_root=model_root, workdir=args.workdir, tracing=args.tracing)
    with LocalStack(config) as stack:
        for name, url in stack.urls.items():
            print(f"{name:10} {url}")
        signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        signal.sigwait(signals)


if __name__ == "__main__":
    main()
