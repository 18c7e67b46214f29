"""Builds every image of the project (`make images`): the four function images, the local
stand-ins (local-tools) and Redis from Debian's package, tagged `photo-pipeline/<name>:<tag>`.

    python3 -m scripts.build_images [NAME ...] [--base-image IMAGE] [--tag TAG] [--if-stale]
        [--with-model-pack] [--gpu]

Standard library only: it runs with any Python 3.11, without the development virtualenv.

- Dockerfiles: thumbnail, status, b2-receiver and local-tools are targets of
  functions/Dockerfile, told apart by build arguments (IMAGES: the lock, the package copied);
  embed and redis have their own.

- Base image: the Dockerfiles' default (debian:bookworm-slim pinned by digest) when it is
  present or can be pulled; otherwise scripts/make-base-image.sh makes a Debian bookworm image
  from Debian's packages and every image is built on it. `--base-image` (or BASE_IMAGE in the
  environment) chooses another.
- BuildKit: the Dockerfiles mount secrets, so the build needs a docker client that can use
  BuildKit: one with the buildx component, or a client before 23.0 with BuildKit built in
  (Debian's docker.io). It says so when none can.
- The host's pip index (http or https only: a file:// index on the host means nothing in a
  container) and CA bundle pass into the builds as BuildKit secrets, never into a layer.
- The embed image is built without the insightface pack (target `no-model-pack`; mount a pack
  at /models/buffalo_l when running it) unless `--with-model-pack`, which downloads it.
- `--if-stale` rebuilds only an image whose inputs (Dockerfile, the files it copies, build
  arguments, base image) changed since it was built: each image carries their digest as a label.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Every Dockerfile's ARG BASE_IMAGE default (tests/test_images.py checks they agree).
DEFAULT_BASE_IMAGE = (
    "debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251"
)
LOCAL_BASE_IMAGE = "photo-pipeline/debian:bookworm"
REPOSITORY = "photo-pipeline"
DEFAULT_TAG = "dev"
INPUTS_LABEL = "photo-pipeline.inputs"
# The first docker release whose client needs the buildx component for BuildKit.
BUILDX_REQUIRED_FROM = 23


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: str
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None  # the stage built and deployed; None: the Dockerfile's last
    local_target: str | None = None  # the stage make images builds instead, where another
    deployed: bool = True  # a Knative Service runs it (scripts/deploy builds and pushes it)


# thumbnail, status, b2-receiver and local-tools: one Dockerfile, a target each; the build
# arguments name the lock it installs and the package it copies (APP, and APP_FILES where only
# part of it; APP_DATA, one more file).
FUNCTION_DOCKERFILE = "functions/Dockerfile"
IMAGES = (
    Image(
        "thumbnail",
        FUNCTION_DOCKERFILE,
        {"LOCK": "thumbnail", "APP": "functions/thumbnail"},
        target="thumbnail",
    ),
    # insightface compiled and a model pack baked: its own Dockerfile, the same stages.
    Image("embed", "functions/embed/Dockerfile", local_target="no-model-pack"),
    Image(
        "status",
        FUNCTION_DOCKERFILE,
        {"LOCK": "status", "APP": "functions/status"},
        target="status",
    ),
    Image(
        "b2-receiver",
        FUNCTION_DOCKERFILE,
        {"LOCK": "receiver", "APP": "eventing", "APP_FILES": "*.py"},
        target="b2-receiver",
    ),
    # compose's stand-ins: [_lo]*.py is exactly devstack's __init__, local_broker,
    # lambda_standin and otlp_receiver (tests/test_images.py checks), and the broker's triggers.
    Image(
        "local-tools",
        FUNCTION_DOCKERFILE,
        {
            "LOCK": "local-tools",
            "APP": "devstack",
            "APP_FILES": "[_lo]*.py",
            "APP_DATA": "eventing/triggers.yaml",
        },
        target="local-tools",
        deployed=False,
    ),
    Image("redis", "docker/redis/Dockerfile", deployed=False),
)
NAMES = tuple(image.name for image in IMAGES)
# What a Knative Service runs, by Service name: scripts/deploy builds exactly these.
DEPLOYED = {image.name: image for image in IMAGES if image.deployed}
DEPLOYED_DOCKERFILES = {name: image.dockerfile for name, image in DEPLOYED.items()}


class BuildError(RuntimeError):
    """A build cannot run here or failed; the message says why."""


def reference(name: str, tag: str = DEFAULT_TAG) -> str:
    return f"{REPOSITORY}/{name}:{tag}"


# -- the docker client -------------------------------------------------------------------------


def _docker_clients() -> Iterator[str]:
    """Every `docker` executable on PATH, then Debian's, each once."""
    seen: set[str] = set()
    directories = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]
    for directory in directories:
        candidate = os.path.realpath(os.path.join(directory or ".", "docker"))
        if candidate not in seen and os.access(candidate, os.X_OK):
            seen.add(candidate)
            yield candidate


def _output(command: list[str]) -> str | None:
    """The command's stripped stdout, or None when it fails or cannot start."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _client_major(client: str) -> int | None:
    version = _output([client, "version", "--format", "{{.Client.Version}}"])
    match = re.match(r"(\d+)\.", version or "")
    return int(match[1]) if match else None


def can_buildkit(client: str) -> bool:
    """Whether `DOCKER_BUILDKIT=1 <client> build` works: buildx present, or built in."""
    if _output([client, "buildx", "version"]) is not None:
        return True
    major = _client_major(client)
    return major is not None and major < BUILDX_REQUIRED_FROM


def buildkit_client() -> str:
    """A docker client that builds with BuildKit and reaches a daemon; BuildError if none."""
    clients = list(_docker_clients())
    if not clients:
        raise BuildError(
            "no docker client on PATH: install Docker (Debian: apt-get install docker.io)"
        )
    if _output([clients[0], "version", "--format", "{{.Server.Version}}"]) is None:
        raise BuildError(f"no Docker daemon answers {clients[0]} (is dockerd running?)")
    for client in clients:
        if can_buildkit(client):
            return client
    raise BuildError(
        f"no docker client here can build with BuildKit (the Dockerfiles mount secrets): "
        f"{', '.join(clients)} lack the buildx component and are 23.0 or newer. Install buildx "
        "(docker-buildx-plugin, or Debian's docker-buildx) or Debian's docker.io client "
        "(/usr/bin/docker, BuildKit built in)."
    )


def unavailable_reason() -> str | None:
    """Why images cannot be built and run here, or None when they can."""
    try:
        buildkit_client()
    except BuildError as exc:
        return str(exc)
    return None


# -- the base image ----------------------------------------------------------------------------


def image_present(client: str, image: str) -> bool:
    return _output([client, "image", "inspect", "--format", "{{.Id}}", image]) is not None


def pullable(client: str, image: str) -> bool:
    return image_present(client, image) or _output([client, "pull", "--quiet", image]) is not None


def choose_base_image(client: str, requested: str | None) -> str:
    """The requested base, else the pinned default where it can be pulled, else the local
    Debian base that scripts/make-base-image.sh makes (idempotently)."""
    if requested:
        return requested
    if pullable(client, DEFAULT_BASE_IMAGE):
        return DEFAULT_BASE_IMAGE
    print(
        f"base image: {DEFAULT_BASE_IMAGE} cannot be pulled; using {LOCAL_BASE_IMAGE}", flush=True
    )
    subprocess.run([str(ROOT / "scripts" / "make-base-image.sh"), LOCAL_BASE_IMAGE], check=True)
    return LOCAL_BASE_IMAGE


# -- pip's index and CA bundle, as BuildKit secrets --------------------------------------------


def host_pip_settings() -> dict[str, str]:
    """pip's settings on this machine (files, then PIP_* variables), by option name."""
    listed = _output([sys.executable, "-m", "pip", "config", "list"]) or ""
    ordered = sorted(listed.splitlines(), key=lambda line: line.startswith(":env:"))
    settings: dict[str, str] = {}
    for line in ordered:
        match = re.fullmatch(r"([^.]*)\.([\w-]+)='(.*)'", line)
        if match and match[1] in ("global", "install", ":env:"):
            settings[match[2]] = match[3]
    return settings


def container_pip_conf(settings: dict[str, str], ca_target: str | None) -> str | None:
    """A pip.conf for inside a build: the host's http(s) indexes and trusted hosts, and the CA
    bundle at `ca_target`; None when the defaults (PyPI, the system CAs) will do."""
    lines = []
    for option in ("index-url", "extra-index-url", "trusted-host"):
        values = settings.get(option, "").split()
        if option != "trusted-host":
            values = [url for url in values if url.startswith(("http://", "https://"))]
        if values:
            lines.append(f"{option} = {' '.join(values)}")
    if ca_target:
        lines.append(f"cert = {ca_target}")
    return "[global]\n" + "\n".join(lines) + "\n" if lines else None


def secret_arguments(workdir: Path) -> list[str]:
    """`--secret` arguments giving a build the host's pip index (pip.conf) and CA bundle (ca)."""
    settings = host_pip_settings()
    cert = settings.get("cert") or os.environ.get("REQUESTS_CA_BUNDLE")
    cert = cert if cert and Path(cert).is_file() else None
    arguments = ["--secret", f"id=ca,src={cert}"] if cert else []
    conf = container_pip_conf(settings, "/run/secrets/ca" if cert else None)
    if conf:
        path = workdir / "pip.conf"
        path.write_text(conf)
        path.chmod(0o600)
        arguments += ["--secret", f"id=pip.conf,src={path}"]
    return arguments


# -- inputs and freshness ----------------------------------------------------------------------


def copied_sources(dockerfile: str, build_args: dict[str, str]) -> list[str]:
    """The build-context paths a Dockerfile's COPY instructions read: ARGs substituted (the
    Dockerfile's defaults where `build_args` names none), patterns matched."""
    text = re.sub(r"\\\n", " ", (ROOT / dockerfile).read_text())
    args = dict(re.findall(r"^ARG (\w+)=?(\S*)", text, re.MULTILINE)) | build_args
    sources = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    paths = []
    for source in sources:
        source = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), source).rstrip("/")
        if re.search(r"[*?[]", source):
            paths += sorted(str(path.relative_to(ROOT)) for path in ROOT.glob(source))
        else:
            paths.append(source)
    return paths


def _files(source: str) -> Iterator[Path]:
    path = ROOT / source
    found = sorted(path.rglob("*")) if path.is_dir() else [path]
    for file in found:
        if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
            yield file


def inputs_digest(
    image: Image, target: str | None, build_args: dict[str, str], base_id: str
) -> str:
    """The digest of everything an image is built from."""
    digest = hashlib.sha256()
    for part in (image.dockerfile, target or "", base_id, repr(sorted(build_args.items()))):
        digest.update(part.encode() + b"\0")
    for source in [image.dockerfile, *copied_sources(image.dockerfile, build_args)]:
        for file in _files(source):
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def built_inputs(client: str, ref: str) -> str | None:
    label = "{{index .Config.Labels " + f'"{INPUTS_LABEL}"' + "}}"
    return _output([client, "image", "inspect", "--format", label, ref])


# -- building ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    names: list[str]
    base_image: str | None
    tag: str
    if_stale: bool
    with_model_pack: bool
    gpu: bool


def image_build_args(image: Image, options: Options, base: str) -> dict[str, str]:
    args = {"BASE_IMAGE": base, **image.build_args}
    if image.name == "embed" and options.gpu:
        args["LOCK"] = "embed-gpu"
    return args


def build_target(image: Image, options: Options) -> str | None:
    """The stage to build: the deployed one (embed's, the pack baked) with --with-model-pack."""
    if image.local_target and not options.with_model_pack:
        return image.local_target
    return image.target


def build_command(
    client: str, image: Image, options: Options, args: dict[str, str], label: str
) -> list[str]:
    ref = reference(image.name, options.tag)
    command = [client, "build", "--file", image.dockerfile, "--tag", ref]
    target = build_target(image, options)
    if target:
        command += ["--target", target]
    for name, value in args.items():
        command += ["--build-arg", f"{name}={value}"]
    return [*command, "--label", f"{INPUTS_LABEL}={label}"]


def build(client: str, image: Image, options: Options, base: str, secrets: list[str]) -> str:
    """Build one image unless `--if-stale` finds it fresh; what was done, in words."""
    args = image_build_args(image, options, base)
    base_id = _output([client, "image", "inspect", "--format", "{{.Id}}", base]) or base
    label = inputs_digest(image, build_target(image, options), args, base_id)
    ref = reference(image.name, options.tag)
    if options.if_stale and built_inputs(client, ref) == label:
        return "fresh"
    command = build_command(client, image, options, args, label)
    print("+", shlex.join(command), flush=True)
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    if subprocess.run([*command, *secrets, "."], cwd=ROOT, env=env).returncode != 0:
        raise BuildError(f"building {ref} failed (its output is above)")
    return "built"


def production_build_command(
    engine: str,
    name: str,
    ref: str,
    *,
    gpu: bool = False,
    model_pack_sha256: str = "",
    base_image: str | None = None,
) -> list[str]:
    """The build of a deployed image (scripts/deploy): its deployed target, so embed bakes the
    model pack; run it from the repository root with DOCKER_BUILDKIT=1 and a client that can
    use BuildKit (`buildkit_client()`), or podman."""
    image = DEPLOYED[name]
    command = [engine, "build", "--file", image.dockerfile, "--tag", ref]
    if image.target:
        command += ["--target", image.target]
    args = {"BASE_IMAGE": base_image} if base_image else {}
    args |= image.build_args
    if name == "embed" and gpu:
        args["LOCK"] = "embed-gpu"
    if name == "embed" and model_pack_sha256:
        args["MODEL_PACK_SHA256"] = model_pack_sha256
    for arg, value in args.items():
        command += ["--build-arg", f"{arg}={value}"]
    return [*command, "."]


def image_size(client: str, ref: str) -> str:
    size = _output([client, "image", "inspect", "--format", "{{.Size}}", ref])
    return f"{int(size) / 1e6:.0f} MB" if size else "?"


def build_all(options: Options) -> list[tuple[str, str, float, str]]:
    """Build the chosen images: (reference, built/fresh, seconds, size) each."""
    client = buildkit_client()
    base = choose_base_image(client, options.base_image)
    chosen = [image for image in IMAGES if not options.names or image.name in options.names]
    results = []
    with tempfile.TemporaryDirectory(prefix="build-images-") as workdir:
        secrets = secret_arguments(Path(workdir))
        for image in chosen:
            started = time.monotonic()
            done = build(client, image, options, base, secrets)
            ref = reference(image.name, options.tag)
            results.append((ref, done, time.monotonic() - started, image_size(client, ref)))
    return results


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(NAMES))
    parser.add_argument("--base-image", default=os.environ.get("BASE_IMAGE") or None)
    parser.add_argument("--tag", default=DEFAULT_TAG)
    parser.add_argument(
        "--if-stale", action="store_true", help="skip images built from these inputs"
    )
    parser.add_argument("--with-model-pack", action="store_true", help="bake buffalo_l into embed")
    parser.add_argument("--gpu", action="store_true", help="embed with onnxruntime's CUDA build")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        parser.error(f"no image {', '.join(unknown)}: the images are {', '.join(NAMES)}")
    return Options(
        args.names, args.base_image, args.tag, args.if_stale, args.with_model_pack, args.gpu
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    started = time.monotonic()
    try:
        results = build_all(options)
    except BuildError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    for ref, done, seconds, size in results:
        print(f"{ref:40} {done:6} {seconds:6.0f} s  {size}")
    print(f"images: {len(results)} ready in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
