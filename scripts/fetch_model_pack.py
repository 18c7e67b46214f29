"""Fetch an insightface model pack from its official release into the model directory.

    python -m scripts.fetch_model_pack --pack buffalo_l --dest /models

The pinned archive (its SHA-256, as released) is installed. Another archive, e.g. from a mirror
at `--url`, is installed only when every file unpacked from it has its pinned SHA-256. `--sha256`
(or MODEL_PACK_SHA256; empty means not given) names another build instead: the archive must then
have that SHA-256, and its files are not compared with the pins. Any mismatch installs nothing.
Only the files of the modules the embed function runs
(MODEL_MODULES: detection and recognition unless configured) are unpacked, into DEST/PACK, which
appears whole or not at all and replaces an earlier install only once the new one is complete.
The embed image runs this at build time; at run time nothing is downloaded.

The pretrained models are insightface's and are licensed for non-commercial research only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from functions.embed.settings import EmbedSettings


@dataclass(frozen=True)
class PackFile:
    name: str  # in the archive
    sha256: str


@dataclass(frozen=True)
class PackSource:
    url: str
    sha256: str  # the archive's
    files: dict[str, PackFile]  # insightface task name -> its file


# As pinned by several independent public projects; not re-verified on our machines, which
# cannot reach GitHub releases. The archive is 288,621,354 bytes.
PACKS = {
    "buffalo_l": PackSource(
        url="https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
        sha256="80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f",
        files={
            "detection": PackFile(
                "det_10g.onnx", "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91"
            ),
            "recognition": PackFile(
                "w600k_r50.onnx", "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43"
            ),
            "genderage": PackFile(
                "genderage.onnx", "4fde69b1c810857b88c64a335084f1c3fe8f01246c9a191b48c7bb756d6652fb"
            ),
            "landmark_2d_106": PackFile(
                "2d106det.onnx", "f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf"
            ),
            "landmark_3d_68": PackFile(
                "1k3d68.onnx", "df5c06b8a0c12e422b2ed8947b8869faa4105387f199c477af038aa01f9a45cc"
            ),
        },
    ),
}
CHUNK = 1 << 20
TIMEOUT_S = (10, 60)  # connect, and between two reads


class FetchError(RuntimeError):
    """The pack cannot be installed; nothing was changed in the model directory."""


def fetch_pack(
    source: PackSource, name: str, dest: Path, sha256: str | None, modules: tuple[str, ...]
) -> dict[str, str]:
    """Download, verify and unpack; returns each installed file's SHA-256.

    With `sha256` given, the archive must have it. Without, the archive must be the pinned one,
    or else every file unpacked from it must have its pinned SHA-256 (a mirror that zipped the
    same files again).
    """
    wanted = [source.files[module] for module in modules]
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        # Staged inside `dest`, so the last step is a rename on one filesystem.
        with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=dest) as work:
            archive = Path(work) / "pack.zip"
            actual = download(source.url, archive)
            if sha256 and actual != sha256.lower():
                raise FetchError(
                    f"{source.url} has SHA-256 {actual}, not the given {sha256}; nothing installed"
                )
            staged = Path(work) / name
            installed = unpack(archive, [file.name for file in wanted], staged)
            if not sha256 and actual != source.sha256:
                check_files(
                    installed,
                    wanted,
                    f"{source.url} (SHA-256 {actual}) is not the pinned {source.sha256}, and",
                )
            _replace(staged, dest / name)
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    return installed


def download(url: str, path: Path) -> str:
    """Stream `url` into `path`; returns the SHA-256 of what arrived."""
    digest = hashlib.sha256()
    retries = Retry(total=3, backoff_factor=1, status_forcelist=(429, 500, 502, 503, 504))
    with requests.Session() as session:
        session.mount("https://", HTTPAdapter(max_retries=retries))
        session.mount("http://", HTTPAdapter(max_retries=retries))
        try:
            with session.get(url, stream=True, timeout=TIMEOUT_S) as response:
                response.raise_for_status()
                with path.open("wb") as out:
                    for chunk in response.iter_content(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        except requests.RequestException as exc:
            raise FetchError(f"cannot download {url}: {exc}") from exc
    return digest.hexdigest()


def unpack(archive: Path, names: list[str], into: Path) -> dict[str, str]:
    """Extract the members called `names` (wherever they sit in the archive) flat into `into`."""
    try:
        with zipfile.ZipFile(archive) as pack:
            members = {Path(info.filename).name: info for info in pack.infolist()}
            missing = [name for name in names if name not in members]
            if missing:
                raise FetchError(f"the archive has no {', '.join(missing)}; nothing installed")
            into.mkdir()
            for name in names:
                with pack.open(members[name]) as source, (into / name).open("wb") as target:
                    shutil.copyfileobj(source, target, CHUNK)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"the archive is not a valid zip: {exc}; nothing installed") from exc
    return {name: _sha256(into / name) for name in names}


def check_files(installed: dict[str, str], files: list[PackFile], context: str) -> None:
    """Refuse unpacked files whose SHA-256 is not their pinned one."""
    wrong = [file.name for file in files if installed[file.name] != file.sha256]
    if wrong:
        raise FetchError(
            f"{context} {', '.join(wrong)} differ from the pinned SHA-256; nothing installed"
        )


def _replace(staged: Path, target: Path) -> None:
    """Put `staged` at `target`, moving an earlier install aside only at the last moment."""
    previous = target.with_name(f".{target.name}-previous")
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    staged.rename(target)
    shutil.rmtree(previous, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", choices=sorted(PACKS), default="buffalo_l")
    parser.add_argument("--dest", type=Path, required=True, help="model directory (MODEL_ROOT)")
    parser.add_argument(
        "--sha256",
        default=os.environ.get("MODEL_PACK_SHA256"),
        help="override the archive's pinned SHA-256 (default: MODEL_PACK_SHA256, else the pin)",
    )
    parser.add_argument("--url", help="download from here instead of the official release")
    args = parser.parse_args(argv)
    source = PACKS[args.pack]
    if args.url:
        source = replace(source, url=args.url)
    modules = EmbedSettings.from_env().modules
    try:
        installed = fetch_pack(source, args.pack, args.dest, args.sha256, modules)
    except FetchError as exc:
        print(f"fetch_model_pack: {exc}", file=sys.stderr)
        return 1
    for name, digest in installed.items():
        print(f"{args.dest / args.pack / name}  sha256 {digest}")
    print(f"{args.pack} ({', '.join(modules)}) installed from {source.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
