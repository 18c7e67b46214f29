"""`make bench-status`: the user status endpoint under concurrent clients, on loopback.

Starts a real redis-server and the status function under gunicorn exactly as deployed
(functions/common/gunicorn_conf.py, the func.yaml's workers and threads), seeds a user in the
middle of a run, and drives it with wrk (keep-alive connections, a valid bearer JWT):
- `GET /healthz` on the same server: the baseline, what gunicorn + Flask cost alone;
- `GET /v1/status`: JWT verification, one Redis round trip, the JSON body and its ETag;
- `GET /v1/status` with `If-None-Match`: the front end's usual poll while nothing changed (304).
Prints a table and, last, `bench status: rps=… p99_ms=…` for the plain status poll. Besides
req/s and latency, each row has the CPU the server (gunicorn workers, redis-server) and wrk spent
per request, and the ceiling they allow: the machine's CPUs divided by their sum, the most req/s
this machine could reach whatever the noise from its other tenants.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
import requests

from devstack.processes import usage_with_children
from devstack.stack import Processes, mint_token, token_env
from functions.common.photo_store import PhotoStore
from functions.common.pipeline import PhotoState

USER = "bench-user"
JWT_SECRET = "bench-status-" + "0123456789abcdef" * 2
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class WrkResult:
    requests: int
    rps: float
    percentiles_ms: dict[int, float]
    errors: int
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def cpu_us_per_request(self) -> float:
        """CPU the server side (gunicorn workers, redis-server) spent per request: unlike
        req/s, it does not depend on what else this machine is running."""
        return self.server_cpu_s / self.requests * 1e6

    @property
    def client_cpu_us_per_request(self) -> float:
        """CPU wrk itself spent per request (a new connection each: gunicorn's sync workers
        close it after every response)."""
        return self.client_cpu_s / self.requests * 1e6

    @property
    def ceiling_rps(self) -> float:
        """The most req/s this machine's CPUs allow at these server and client costs."""
        cost_s = (self.server_cpu_s + self.client_cpu_s) / self.requests
        return len(os.sched_getaffinity(0)) / cost_s


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per request kind")
    parser.add_argument("--connections", type=int, default=32, help="concurrent clients")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="wrk threads (one event loop drives every connection; a second only takes CPU"
        " from the server under test)",
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--gunicorn-threads", type=int, default=1, help="threads per worker")
    return parser.parse_args()


def seed(redis_url: str) -> None:
    """A user in the middle of a run: 40 photos, 30 thumbnails, 20 embeddings, 2 failures."""
    store = PhotoStore(redis.Redis.from_url(redis_url, decode_responses=True))
    now = time.time()
    for index in range(40):
        store.record(USER, f"{USER}/IMG_{index:04d}.jpg", PhotoState.UPLOADED, at=now - 60)
    for index in range(30):
        stage = PhotoState.THUMBNAIL_FAILED if index < 2 else PhotoState.THUMBNAIL
        reason = "corrupt" if index < 2 else None
        store.record(USER, f"{USER}/IMG_{index:04d}.jpg", stage, reason=reason, at=now - 30)
    for index in range(2, 22):
        store.record(
            USER, f"{USER}/IMG_{index:04d}.jpg", PhotoState.EMBEDDING, faces=1, at=now - 10
        )


def start_status(processes: Processes, redis_url: str, args: argparse.Namespace) -> str:
    env = {
        "REDIS_URL": redis_url,
        **token_env(JWT_SECRET),
        "WEB_CONCURRENCY": str(args.workers),
        "GUNICORN_THREADS": str(args.gunicorn_threads),
    }
    return processes.gunicorn("status", "functions.status.app:create_app()", env)


def process_tree_cpu_s(root_pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their children."""
    return sum(usage_with_children(pid).cpu_s for pid in root_pids)


def wrk(
    url: str,
    headers: dict[str, str],
    args: argparse.Namespace,
    duration: int,
    server_pids: list[int],
) -> WrkResult:
    cpu_before = process_tree_cpu_s(server_pids)
    client_before = _children_cpu_s()
    command = ["wrk", "--latency", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    server_cpu_s = process_tree_cpu_s(server_pids) - cpu_before
    client_cpu_s = _children_cpu_s() - client_before
    percentiles = {
        int(rank): float(value) * _UNITS_MS[unit]
        for rank, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    }
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: .*", output)
    if socket_errors:
        print(f"  wrk: {socket_errors.group(0)}")
    return WrkResult(
        requests=int(re.search(r"(\d+) requests in", output).group(1)),
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        percentiles_ms=percentiles,
        errors=int(errors.group(1)) if errors else 0,
        server_cpu_s=server_cpu_s,
        client_cpu_s=client_cpu_s,
    )


def _children_cpu_s() -> float:
    """User + system CPU of this process's finished children: here, the wrk runs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_result(runs: list[WrkResult]) -> WrkResult:
    """Medians over repeated runs (each field on its own)."""
    return WrkResult(
        requests=sum(run.requests for run in runs),
        rps=statistics.median(run.rps for run in runs),
        percentiles_ms={
            rank: statistics.median(run.percentiles_ms[rank] for run in runs)
            for rank in runs[0].percentiles_ms
        },
        errors=sum(run.errors for run in runs),
        server_cpu_s=sum(run.server_cpu_s for run in runs),
        client_cpu_s=sum(run.client_cpu_s for run in runs),
    )


def measure(url: str, args: argparse.Namespace, server_pids: list[int]) -> dict[str, WrkResult]:
    token = mint_token(JWT_SECRET, USER)
    auth = {"Authorization": f"Bearer {token}"}
    polled = requests.get(f"{url}/v1/status", headers=auth, timeout=5)
    polled.raise_for_status()
    cases = {
        "GET /healthz (baseline)": (f"{url}/healthz", {}),
        "GET /v1/status": (f"{url}/v1/status", auth),
        "GET /v1/status, If-None-Match (304)": (
            f"{url}/v1/status",
            {**auth, "If-None-Match": polled.headers["ETag"]},
        ),
    }
    wrk(*cases["GET /v1/status"], args, 2, server_pids)  # warm-up
    runs: dict[str, list[WrkResult]] = {name: [] for name in cases}
    # Interleaved rounds, so a burst of load from elsewhere hits every case alike.
    for _ in range(args.repeat):
        for name, (target, headers) in cases.items():
            runs[name].append(wrk(target, headers, args, args.duration, server_pids))
    return {name: median_result(results) for name, results in runs.items()}


def report(results: dict[str, WrkResult]) -> None:
    header = (
        f"{'request':38} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
        f" {'cpu us/req':>10} {'wrk us/req':>10} {'ceiling':>8} {'errors':>7}"
    )
    print(header + "\n" + "-" * len(header))
    for name, result in results.items():
        p = result.percentiles_ms
        print(
            f"{name:38} {result.rps:9.0f} {p[50]:8.2f} {p[90]:8.2f} {p[99]:8.2f}"
            f" {result.cpu_us_per_request:10.0f} {result.client_cpu_us_per_request:10.0f}"
            f" {result.ceiling_rps:8.0f} {result.errors:7}"
        )
    status, baseline = results["GET /v1/status"], results["GET /healthz (baseline)"]
    print(
        f"bench status: rps={status.rps:.0f} p99_ms={status.percentiles_ms[99]:.2f}"
        f" cpu_us_per_req={status.cpu_us_per_request:.0f} ceiling_rps={status.ceiling_rps:.0f}"
        f" baseline_rps={baseline.rps:.0f}"
        f" relative={status.rps / baseline.rps:.2f}"
    )


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (scripts/install-system-deps.sh --wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-status-"))
    with Processes(workdir) as processes:
        redis_url = processes.redis()
        seed(redis_url)
        url = start_status(processes, redis_url, args)
        print(
            f"status function: gunicorn {args.workers} workers x {args.gunicorn_threads} threads;"
            f" wrk {args.connections} connections, {args.threads} threads;"
            f" medians of {args.repeat} runs of {args.duration} s; load average"
            f" {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        results = measure(url, args, list(processes.pids().values()))
    report(results)
    return 1 if any(result.errors for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
