"""scripts/fetch_model_pack.py against an archive served over real HTTP, laid out as
insightface's buffalo_l.zip (five models at the top level); the two the function runs are the
TEST pack's."""

import hashlib
import io
import subprocess
import sys
import zipfile

import pytest

from functions.common.config import EmbedSettings
from functions.embed.models import FaceAnalyzer
from scripts.fetch_model_pack import main
from scripts.make_test_model_pack import DETECTOR_FILE, RECOGNIZER_FILE
from scripts.stack import ROOT

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


def test_without_a_checksum_nothing_is_downloaded(served, tmp_path):
    server, url, _ = served()

    with pytest.raises(SystemExit) as refused:
        main(["--pack", "buffalo_l", "--dest", str(tmp_path / "models"), "--url", url])

    assert refused.value.code != 0
    assert server.requests == 0
    assert not (tmp_path / "models").exists()


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
