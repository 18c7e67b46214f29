"""gunicorn settings shared by every function, tuned per function through the environment.

Knative sets PORT. CPU-bound stages keep workers x threads close to the pod's CPUs; the embed
function runs one worker so exactly one copy of the model is in memory.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 20
keepalive = 75  # longer than the Knative queue-proxy's idle timeout, so it closes first
accesslog = "-" if os.environ.get("ACCESS_LOG") == "1" else None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
