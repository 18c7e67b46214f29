"""Memory that stays bounded under steady load, checked without timing or RSS thresholds.

A worker's resident memory used to saw-tooth by tens of MB from request to request: glibc's
malloc handed a decoded photo's freed buffers back to the kernel whenever they topped its
self-adjusting trim threshold, and the next request faulted them in again. gunicorn_conf.py
pins malloc's thresholds in the master, so its workers keep those buffers. These tests read
glibc's own accounting (mallinfo2) in a fresh interpreter, so they are exact.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

GUNICORN_CONF = Path(__file__).resolve().parent.parent / "functions" / "common" / "gunicorn_conf.py"
MB = 1 << 20

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

# Run in a fresh interpreter: argv[1] is the gunicorn config to load first, or "" for none.
# Each round holds two decoded 3000x2000 photos (18 MB each, as two concurrent requests do),
# frees them, and reports malloc's heap size (`arena`) and mmapped blocks (`hblks`) meanwhile
# and after; then one 64 MB block (a huge photo) likewise. With `fork`, a child does it.
_ROUNDS = r"""
import ctypes, importlib.util, json, os, sys

FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
          "uordblks", "fordblks", "keepcost")

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]

if sys.argv[1]:
    spec = importlib.util.spec_from_file_location("gunicorn_conf", sys.argv[1])
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def info():
    got = libc.mallinfo2()
    return {"arena": got.arena, "hblks": got.hblks}

def hold(sizes):
    before = info()
    blocks = [libc.malloc(size) for size in sizes]
    for block in blocks:
        ctypes.memset(block, 1, 4096)
    during = info()
    for block in blocks:
        libc.free(block)
    after = info()
    # Blocks mapped apart from the heap (mmap) while held, and still after.
    during["mapped"] = during["hblks"] - before["hblks"]
    after["mapped"] = after["hblks"] - before["hblks"]
    return {"during": during, "after": after}

def rounds():
    photos = [hold([18 << 20, 18 << 20]) for _ in range(int(sys.argv[2]))]
    return {"photos": photos, "huge": hold([64 << 20])}

if sys.argv[3] == "fork":
    read, write = os.pipe()
    if os.fork() == 0:
        os.write(write, json.dumps(rounds()).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.wait()
    print(b"".join(chunks).decode())
else:
    print(json.dumps(rounds()))
"""


def malloc_rounds(conf: Path | None, rounds: int = 20, fork: bool = False) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    # Loading the config would otherwise make a metrics folder under TMPDIR.
    env["PROMETHEUS_MULTIPROC_DIR"] = os.devnull
    command = [sys.executable, "-c", _ROUNDS, str(conf or ""), str(rounds), "fork" * fork]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def load_gunicorn_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The config module, loaded with malloc thresholds in the environment, so that loading
    it leaves this process's malloc as it is."""
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", str(64 * MB))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    spec = importlib.util.spec_from_file_location("gunicorn_conf_under_test", GUNICORN_CONF)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_pinned_thresholds_malloc_gives_photo_buffers_back_and_takes_them_again():
    """The cause: glibc's own thresholds trim two freed photos (36 MB) off the heap."""
    photos = malloc_rounds(None)["photos"]
    heap_after = [held["after"]["arena"] for held in photos]
    heap_during = [held["during"]["arena"] for held in photos]
    assert min(heap_after) < max(heap_during) - 32 * MB


@pytest.mark.parametrize("fork", [False, True], ids=["master", "forked worker"])
def test_pinned_thresholds_keep_a_workers_heap_flat_after_the_first_request(fork):
    result = malloc_rounds(GUNICORN_CONF, fork=fork)
    photos = result["photos"]
    # Photo-sized blocks come from the heap, which keeps them once freed: the heap reached
    # its size in the first round and never gave it back nor grew past it.
    assert all(held["during"]["mapped"] == 0 for held in photos)
    heap = {held[moment]["arena"] for held in photos for moment in ("during", "after")}
    assert len(heap) == 1
    assert heap.pop() >= 36 * MB
    # A block over the mmap threshold is mapped apart and returned as soon as it is freed.
    huge = result["huge"]
    assert huge["during"]["mapped"] == 1
    assert huge["after"]["mapped"] == 0


def test_thresholds_set_in_the_environment_win(monkeypatch, tmp_path):
    conf = load_gunicorn_conf(monkeypatch, tmp_path)
    assert conf.pin_malloc_thresholds() is False
    assert conf.MALLOC_TRIM_THRESHOLD > 2 * 18 * MB  # two concurrent photos' buffers stay
    assert conf.MALLOC_MMAP_THRESHOLD > 18 * MB  # a decoded 3000x2000 photo is heap memory
