"""scripts/fetch_model_pack.py against an archive served over real HTTP, laid out as
insightface's buffalo_l.zip (five models at the top level); the two the function runs are the
TEST pack's. Tests that need an archive matching a pack's pin pin the fake archive instead."""

import hashlib
import io
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from devstack.make_test_model_pack import DETECTOR_FILE, RECOGNIZER_FILE
from devstack.stack import ROOT
from functions.embed.models import FaceAnalyzer
from functions.embed.settings import EmbedSettings
from scripts.fetch_model_pack import PACKS, FetchError, PackFile, PackSource, fetch_pack, main

EMBEDDING_DOC = ROOT / "docs" / "embedding.md"

OTHER_MODULES = {"genderage.onnx": b"gender", "2d106det.onnx": b"106", "1k3d68.onnx": b"68"}


class ArchiveServer:
    """A WSGI app that serves one archive and counts the requests for it."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests = 0

    def __call__(self, environ, start_response):
        self.requests += 1
        start_response(
            "200 OK", [("Content-Type", "application/zip"), ("Content-Length", str(len(self.body)))]
        )
        return [self.body]


def pack_archive(test_model_pack, prefix="", leave_out=()):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in (DETECTOR_FILE, RECOGNIZER_FILE):
            if name not in leave_out:
                archive.writestr(prefix + name, (test_model_pack / name).read_bytes())
        for name, data in OTHER_MODULES.items():
            archive.writestr(prefix + name, data)
    return buffer.getvalue()


@pytest.fixture
def served(serve, test_model_pack):
    """Serve an archive; returns (server, url, its SHA-256)."""

    def start(body=None):
        server = ArchiveServer(body or pack_archive(test_model_pack))
        url = serve(server) + "/buffalo_l.zip"
        return server, url, hashlib.sha256(server.body).hexdigest()

    return start


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    monkeypatch.delenv("MODEL_PACK_SHA256", raising=False)
    monkeypatch.delenv("MODEL_MODULES", raising=False)


def fetch(url, dest, sha256):
    return main(["--pack", "buffalo_l", "--dest", str(dest), "--url", url, "--sha256", sha256])


def sha256_of(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pinned_to(url, archive_sha256, test_model_pack, wrong=None):
    """A buffalo_l PackSource pinned to the fake archive at `url` and to its detector and
    recognizer, except that the file called `wrong` is pinned to another SHA-256."""
    files = {
        task: PackFile(name, "0" * 64 if name == wrong else sha256_of(test_model_pack / name))
        for task, name in (("detection", DETECTOR_FILE), ("recognition", RECOGNIZER_FILE))
    }
    return PackSource(url, archive_sha256, files)


def test_the_embedding_doc_states_the_sha256s_the_script_pins_for_buffalo_l():
    row = r"^\| `([\w.]+)` \| [\d,]+ \| `([0-9a-f]{64})` \|$"
    rows = re.findall(row, EMBEDDING_DOC.read_text(), re.M)
    pack = PACKS["buffalo_l"]
    pinned = {Path(pack.url).name: pack.sha256}
    pinned |= {file.name: file.sha256 for file in pack.files.values()}
    assert dict(rows) == pinned


def test_the_command_installs_the_verified_packs_detector_and_recognizer(
    served, tmp_path, test_model_pack
):
    _, url, sha256 = served()
    dest = tmp_path / "models"
    command = [sys.executable, "-m", "scripts.fetch_model_pack", "--pack", "buffalo_l"]

    ended = subprocess.run(
        [*command, "--dest", str(dest), "--url", url],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "MODEL_PACK_SHA256": sha256},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert ended.returncode == 0, ended.stderr
    assert sorted(path.name for path in dest.iterdir()) == ["buffalo_l"]
    installed = dest / "buffalo_l"
    assert sorted(path.name for path in installed.iterdir()) == [DETECTOR_FILE, RECOGNIZER_FILE]
    for name in (DETECTOR_FILE, RECOGNIZER_FILE):
        assert (installed / name).read_bytes() == (test_model_pack / name).read_bytes()
    FaceAnalyzer(EmbedSettings(model_root=dest)).load()


def test_a_wrong_checksum_installs_nothing(served, tmp_path):
    _, url, _ = served()
    dest = tmp_path / "models"

    assert fetch(url, dest, "0" * 64) == 1

    assert not dest.exists()


def test_a_wrong_checksum_leaves_the_earlier_install_as_it_was(served, tmp_path):
    _, url, _ = served()
    earlier = tmp_path / "models" / "buffalo_l"
    earlier.mkdir(parents=True)
    (earlier / DETECTOR_FILE).write_bytes(b"earlier")

    assert fetch(url, tmp_path / "models", "0" * 64) == 1

    assert [path.name for path in (tmp_path / "models").iterdir()] == ["buffalo_l"]
    assert [path.read_bytes() for path in earlier.iterdir()] == [b"earlier"]


def test_a_good_archive_replaces_the_earlier_install(served, tmp_path, test_model_pack):
    _, url, sha256 = served()
    earlier = tmp_path / "models" / "buffalo_l"
    earlier.mkdir(parents=True)
    (earlier / "stale.onnx").write_bytes(b"stale")

    assert fetch(url, tmp_path / "models", sha256) == 0

    assert sorted(path.name for path in earlier.iterdir()) == [DETECTOR_FILE, RECOGNIZER_FILE]
    assert [path.name for path in (tmp_path / "models").iterdir()] == ["buffalo_l"]


def test_without_an_override_another_archive_with_other_files_is_refused(served, tmp_path, capsys):
    server, url, _ = served()

    assert main(["--pack", "buffalo_l", "--dest", str(tmp_path / "models"), "--url", url]) == 1

    assert server.requests == 1
    assert PACKS["buffalo_l"].sha256 in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_an_archive_and_files_matching_their_pins_are_installed(
    served, tmp_path, test_model_pack, monkeypatch
):
    _, url, sha256 = served()
    monkeypatch.setitem(PACKS, "buffalo_l", pinned_to(url, sha256, test_model_pack))

    assert main(["--pack", "buffalo_l", "--dest", str(tmp_path / "models")]) == 0

    installed = sorted(path.name for path in (tmp_path / "models" / "buffalo_l").iterdir())
    assert installed == [DETECTOR_FILE, RECOGNIZER_FILE]


def test_an_empty_override_means_the_pinned_sha256(served, tmp_path, test_model_pack, monkeypatch):
    _, url, sha256 = served()
    monkeypatch.setitem(PACKS, "buffalo_l", pinned_to(url, sha256, test_model_pack))
    monkeypatch.setenv("MODEL_PACK_SHA256", "")

    assert main(["--pack", "buffalo_l", "--dest", str(tmp_path / "models")]) == 0


def test_another_archive_with_a_file_unlike_its_pin_installs_nothing(
    served, tmp_path, test_model_pack
):
    _, url, _ = served()
    source = pinned_to(url, "1" * 64, test_model_pack, wrong=RECOGNIZER_FILE)
    dest = tmp_path / "models"

    with pytest.raises(FetchError, match=RECOGNIZER_FILE):
        fetch_pack(source, "buffalo_l", dest, None, ("detection", "recognition"))

    assert not dest.exists()


def test_another_archive_holding_the_pinned_files_is_installed(served, tmp_path, test_model_pack):
    """A mirror that zipped the same files again: another archive SHA-256, the same files."""
    _, url, _ = served()
    source = pinned_to(url, "1" * 64, test_model_pack)

    fetch_pack(source, "buffalo_l", tmp_path / "models", None, ("detection", "recognition"))

    assert (tmp_path / "models" / "buffalo_l" / RECOGNIZER_FILE).is_file()


def test_an_archive_without_a_needed_model_installs_nothing(served, tmp_path, test_model_pack):
    _, url, sha256 = served(pack_archive(test_model_pack, leave_out=(RECOGNIZER_FILE,)))

    assert fetch(url, tmp_path / "models", sha256) == 1

    assert not (tmp_path / "models").exists()


def test_members_inside_a_folder_of_the_archive_are_found(served, tmp_path, test_model_pack):
    _, url, sha256 = served(pack_archive(test_model_pack, prefix="buffalo_l/"))

    assert fetch(url, tmp_path / "models", sha256) == 0

    assert (tmp_path / "models" / "buffalo_l" / RECOGNIZER_FILE).is_file()


def test_configured_optional_modules_are_unpacked_too(served, tmp_path, monkeypatch):
    _, url, sha256 = served()
    monkeypatch.setenv("MODEL_MODULES", "detection,recognition,genderage")

    assert fetch(url, tmp_path / "models", sha256) == 0

    installed = sorted(path.name for path in (tmp_path / "models" / "buffalo_l").iterdir())
    assert installed == [DETECTOR_FILE, "genderage.onnx", RECOGNIZER_FILE]


def test_with_an_override_only_the_archive_is_checked(served, tmp_path, test_model_pack):
    _, url, sha256 = served()
    source = pinned_to(url, "1" * 64, test_model_pack, wrong=RECOGNIZER_FILE)

    fetch_pack(source, "buffalo_l", tmp_path / "models", sha256, ("detection", "recognition"))

    assert (tmp_path / "models" / "buffalo_l" / RECOGNIZER_FILE).is_file()
