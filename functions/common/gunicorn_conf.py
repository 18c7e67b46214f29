"""gunicorn settings shared by every function, tuned per function through the environment.

Knative sets PORT. CPU-bound stages keep workers x threads close to the pod's CPUs; the embed
function runs one worker so exactly one copy of the model is in memory.
"""

import ctypes
import glob
import logging
import os
import tempfile

from functions.common.logs import logging_config

bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 20
keepalive = 75  # longer than the Knative queue-proxy's idle timeout, so it closes first
# gunicorn's error and access lines and the app's own, as JSON lines on stdout (logs.py);
# access lines only with ACCESS_LOG=1.
logconfig_dict = logging_config()
loglevel = os.environ.get("LOG_LEVEL", "info")
logging.captureWarnings(True)
# No control socket (gunicorn 27 makes one under $HOME, read-only in the images; nothing here
# uses gunicornc).
control_socket_disable = True
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Bounded request heads (400 or 431 past them, before the app): a request line up to 8190
# bytes, at most 50 headers (the ingress and queue-proxy add about 15), each up to 8190 bytes,
# room for the admin session cookie, a bearer JWT and B2's signature header. Bodies are bounded
# per endpoint by the apps themselves (RequestLimits in config.py).
limit_request_line = 8190
limit_request_fields = 50
limit_request_field_size = 8190

# prometheus-client's multiprocess mode: every worker writes its metrics under this folder and
# /metrics adds them up. Set here, in the master, before any worker imports prometheus_client.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prometheus-")


# glibc's malloc gives freed memory at the top of a heap back to the kernel once it exceeds a
# trim threshold that it raises itself, to twice the largest block freed so far: 36 MB after
# one 3000x2000 photo's 18 MB decode. A request's decode and download buffers come to about
# that, so a worker's resident memory saw-toothed by tens of MB (faulted in again by the next
# request), which a soak reads as growth. Pinned where glibc's own adjustment stops (blocks
# over 32 MB mapped apart, 64 MB of free top kept), the freed buffers stay for the next
# request: a worker's memory rises to its busiest moment's and stays flat, holding no more
# than glibc itself holds once it has seen a large photo. Set in the master, before it forks:
# every worker inherits them. glibc only; MALLOC_*_THRESHOLD_ variables, when set, win.
MALLOC_MMAP_THRESHOLD = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, the most it accepts
MALLOC_TRIM_THRESHOLD = 64 << 20  # twice that, as glibc's dynamic threshold ends
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h


def pin_malloc_thresholds(
    mmap_threshold: int = MALLOC_MMAP_THRESHOLD, trim_threshold: int = MALLOC_TRIM_THRESHOLD
) -> bool:
    """Fix glibc malloc's mmap and trim thresholds in this process (and those it forks
    afterwards); False, changing nothing, without glibc or when the environment sets them."""
    if {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & os.environ.keys():
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc's alone; musl's mallopt does nothing
    except (OSError, AttributeError):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


pin_malloc_thresholds()


def on_starting(server: object) -> None:
    """Files left by an earlier run of this server would be added to this run's totals."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)


def child_exit(server: object, worker: object) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
