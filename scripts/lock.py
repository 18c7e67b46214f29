"""Compiles requirements/lock/<image>.txt from requirements/<image>.in (`make lock`).

Every lock pins every package, transitive ones included, with `==` and the sha256 of each of
its files on the index, for CPython 3.11 on Linux x86_64 (the images' Debian bookworm, glibc
2.36). Its header records the inputs it was compiled from, in the order they are read, and a
sha256 over them: tests/test_locks.py fails when an input changed after the lock was made.

build.txt (insightface's build tools, for pip's --build-constraint) is compiled first, then
dev.txt; each image's lock is constrained to dev's versions, so the tests run what the images
ship. A lock `<name>` may have `requirements/<name>.exclude`: packages dropped from its
resolution (embed-gpu drops the CPU onnxruntime that its -r embed.in brings in).
Extra arguments pass to `uv pip compile`, e.g. `make lock ARGS='--upgrade-package boto3'`.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
LOCK_DIR = REQUIREMENTS / "lock"
# One lock per image, and dev: everything for the tests, the local stack and the benchmarks;
# build: what pip builds the sdists (insightface, pyvips) with (--build-constraint), compiled
# first, as uv builds them too while resolving the others.
BUILD = "build"
DEV = "dev"
LOCKS = (BUILD, DEV, "thumbnail", "embed", "embed-gpu", "status", "receiver", "local-tools")
COMMAND = "make lock"
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "x86_64-manylinux_2_36"
INPUTS_PREFIX = "# inputs: "
DIGEST_PREFIX = "# inputs-sha256: "
_INCLUDE = re.compile(r"^\s*(?:-r|--requirement|-c|--constraint)[\s=]+(\S+)")


def input_files(name: str) -> list[Path]:
    """The files lock `name` is compiled from, in the order they are read, each once."""
    files: list[Path] = []

    def read(path: Path) -> None:
        if path in files:
            return
        files.append(path)
        for line in path.read_text().splitlines():
            include = _INCLUDE.match(line)
            if include:
                read((path.parent / include.group(1)).resolve())

    read((REQUIREMENTS / f"{name}.in").resolve())
    exclude = REQUIREMENTS / f"{name}.exclude"
    if exclude.is_file():
        files.append(exclude.resolve())
    return files


def inputs_digest(files: list[Path]) -> str:
    """sha256 over each input's repository-relative path and bytes, in order."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def header_lines(name: str) -> list[str]:
    """The lines `make lock` adds under uv's header: the inputs and their digest."""
    files = input_files(name)
    return [
        INPUTS_PREFIX + " ".join(path.relative_to(ROOT).as_posix() for path in files),
        DIGEST_PREFIX + inputs_digest(files),
    ]


def compile_lock(name: str, uv: str, extra: list[str]) -> None:
    lock = LOCK_DIR / f"{name}.txt"
    command = [
        uv, "pip", "compile", "--quiet", "--generate-hashes",
        "--python-version", PYTHON_VERSION, "--python-platform", PYTHON_PLATFORM,
        "--custom-compile-command", COMMAND,
        f"requirements/{name}.in", "--output-file", lock.relative_to(ROOT).as_posix(),
    ]  # fmt: skip
    if name != BUILD:
        command += ["--build-constraints", f"requirements/lock/{BUILD}.txt"]
    if name not in (BUILD, DEV):
        # An image gets the versions the tests ran with: those of dev, compiled before it.
        command += ["--constraints", f"requirements/lock/{DEV}.txt"]
    exclude = REQUIREMENTS / f"{name}.exclude"
    if exclude.is_file():
        command += ["--excludes", exclude.relative_to(ROOT).as_posix()]
    subprocess.run([*command, *extra], cwd=ROOT, check=True)
    lines = lock.read_text().splitlines()
    # uv's header is its first comment lines; ours follow them.
    end = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    kept = [line for line in lines[:end] if not line.startswith((INPUTS_PREFIX, DIGEST_PREFIX))]
    lock.write_text("\n".join([*kept, *header_lines(name), *lines[end:]]) + "\n")


def main(argv: list[str]) -> int:
    from uv import find_uv_bin  # installed into .venv by `make lock`

    LOCK_DIR.mkdir(exist_ok=True)
    for name in LOCKS:
        print(f"lock: requirements/lock/{name}.txt", flush=True)
        compile_lock(name, find_uv_bin(), argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
