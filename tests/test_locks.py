"""requirements/lock/*.txt: complete, hashed and current with the requirements/*.in they come from.

`make lock` (scripts/lock.py) writes them; these checks read files only, no network.
"""

import re
from pathlib import Path

import pytest

from scripts import lock

LOCK_DIR = lock.LOCK_DIR
NOT_DEV = [name for name in lock.LOCKS if name != lock.DEV]
PINNED = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;]+)(?:\s*;[^\\]*?)?"
    r"(?P<hashes>(?:\s+--hash=sha256:[0-9a-f]{64})+)"
)
TOP_LEVEL = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?:==\s*(?P<version>[^\s;#]+))?"
)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def entries(path: Path) -> list[str]:
    """The lock's requirement entries, continuation lines joined, comments left out."""
    joined, current = [], ""
    for line in path.read_text().splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip() and not current.lstrip().startswith("#"):
            joined.append(current.strip())
        current = ""
    return joined


def pins(name: str) -> dict[str, str]:
    found = {}
    for entry in entries(LOCK_DIR / f"{name}.txt"):
        match = PINNED.fullmatch(entry)
        assert match, entry
        found[normalized(match["name"])] = match["version"]
    return found


def top_level(name: str) -> dict[str, str | None]:
    """Each package the .in files name, with its pinned version (None where unpinned)."""
    wanted: dict[str, str | None] = {}
    for path in lock.input_files(name):
        if path.suffix != ".in":
            continue
        for line in path.read_text().splitlines():
            line = line.split(" #")[0].strip()
            if not line or line.startswith(("#", "-")):
                continue
            match = TOP_LEVEL.match(line)
            assert match, f"{path.name}: {line}"
            wanted[normalized(match["name"])] = match["version"]
    return wanted


def excluded(name: str) -> set[str]:
    path = lock.REQUIREMENTS / f"{name}.exclude"
    if not path.is_file():
        return set()
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {normalized(line) for line in lines if line}


def header(name: str) -> list[str]:
    lines = (LOCK_DIR / f"{name}.txt").read_text().splitlines()
    return [line for line in lines if line.startswith((lock.INPUTS_PREFIX, lock.DIGEST_PREFIX))]


def test_each_image_and_dev_and_the_build_environment_has_exactly_one_lock():
    assert sorted(p.stem for p in LOCK_DIR.glob("*.txt")) == sorted(lock.LOCKS)
    assert {"thumbnail", "embed", "embed-gpu", "status", "receiver", "dev"} <= set(lock.LOCKS)


@pytest.mark.parametrize("name", lock.LOCKS)
def test_a_lock_records_the_digest_of_the_inputs_it_was_compiled_from(name):
    # Fails when a requirements/*.in changed after `make lock`: run `make lock`.
    assert header(name) == lock.header_lines(name), f"requirements/lock/{name}.txt is stale"


@pytest.mark.parametrize("name", lock.LOCKS)
def test_every_package_in_a_lock_is_pinned_with_double_equals_and_a_sha256_hash(name):
    bad = [entry for entry in entries(LOCK_DIR / f"{name}.txt") if not PINNED.fullmatch(entry)]
    assert not bad
    assert entries(LOCK_DIR / f"{name}.txt")


@pytest.mark.parametrize("name", lock.LOCKS)
def test_every_top_level_requirement_is_in_the_lock_at_its_pinned_version(name):
    locked = pins(name)
    wanted = {k: v for k, v in top_level(name).items() if k not in excluded(name)}
    assert wanted
    missing = sorted(k for k in wanted if k not in locked)
    differing = {k: (v, locked[k]) for k, v in wanted.items() if v and locked.get(k, v) != v}
    assert (missing, differing) == ([], {})


@pytest.mark.parametrize("name", NOT_DEV)
def test_a_lock_pins_the_versions_the_dev_lock_pins(name):
    # The tests run from the dev lock; an image ships the same versions, and insightface is
    # built with the numpy and cython it runs with.
    dev = pins(lock.DEV)
    assert {k: v for k, v in pins(name).items() if k in dev and dev[k] != v} == {}


def test_the_embed_gpu_lock_has_onnxruntimes_cuda_build_instead_of_the_cpu_package():
    locked = pins("embed-gpu")
    assert "onnxruntime-gpu" in locked
    assert {"onnxruntime", "onnxruntime-openvino"} & locked.keys() == set()
    assert any(name.startswith("nvidia-cudnn") for name in locked)  # the [cudnn] extra


def test_the_inputs_digest_changes_when_a_file_included_with_r_changes(tmp_path, monkeypatch):
    (tmp_path / "requirements").mkdir()
    monkeypatch.setattr(lock, "ROOT", tmp_path)
    monkeypatch.setattr(lock, "REQUIREMENTS", tmp_path / "requirements")
    (tmp_path / "requirements" / "image.in").write_text("-r base.in\nflask==3.1.3\n")
    base = tmp_path / "requirements" / "base.in"
    base.write_text("redis==8.1.0\n")
    before = lock.header_lines("image")
    base.write_text("redis==8.1.1\n")
    assert lock.header_lines("image")[0] == before[0]  # the same files, in the same order
    assert lock.header_lines("image")[1] != before[1]
