"""The images and docker-compose.yml, checked without a Docker engine: hadolint passes, each
image is pinned, multi-stage, non-root and serves its app with gunicorn on $PORT, copies every
project module its app imports, and compose wires the same stack the Knative manifests do."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from modulefinder import ModuleFinder
from pathlib import Path

import pytest
import yaml

from scripts.deploy import DOCKERFILES
from tests.knative_manifests import (
    ROOT,
    knative_service,
    knative_services,
    literal_env,
    rendered,
    secret_env,
)

ALL_DOCKERFILES = sorted({*DOCKERFILES.values(), "scripts/Dockerfile"})
EXACT_PYTHON_IMAGE = re.compile(r"python:\d+\.\d+\.\d+-slim-[a-z]+")
EXACT_TAG = re.compile(r"[^:@]+(:[\w.-]*\d[\w.-]*|@sha256:[0-9a-f]{64})")
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / dockerfile).read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def last(dockerfile: str, instruction: str) -> str:
    return [args for name, args in instructions(dockerfile) if name == instruction][-1]


def served_module(dockerfile: str) -> str:
    command = json.loads(last(dockerfile, "CMD"))
    return command[-1].removesuffix(":create_app()")


def copied_paths(dockerfile: str) -> list[str]:
    """The repository paths an image copies from the build context."""
    sources = []
    for name, args in instructions(dockerfile):
        if name == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    return sources


def project_files_imported(module: str) -> set[str]:
    """Every file of this repository that importing `module` loads."""
    finder = ModuleFinder(path=[str(ROOT)])
    finder.run_script(str(ROOT / (module.replace(".", "/") + ".py")))
    files = {Path(m.__file__) for m in finder.modules.values() if m.__file__}
    return {str(f.relative_to(ROOT)) for f in files if f.is_relative_to(ROOT)}


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES)
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([hadolint, dockerfile], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES)
def test_image_is_multi_stage_on_a_pinned_slim_python(dockerfile):
    steps = instructions(dockerfile)
    (base,) = [args for name, args in steps if name == "ARG" and args.startswith("PYTHON_IMAGE=")]
    assert EXACT_PYTHON_IMAGE.fullmatch(base.split("=", 1)[1])
    stages = [args for name, args in steps if name == "FROM"]
    assert len(stages) >= 2
    assert stages[-1] == "${PYTHON_IMAGE}"


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES)
def test_image_runs_as_a_non_root_user(dockerfile):
    user = last(dockerfile, "USER").split(":")[0]
    assert user.isdigit() and int(user) > 0


@pytest.mark.parametrize(("service", "dockerfile"), DOCKERFILES.items())
def test_image_serves_its_app_with_gunicorn_on_port(service, dockerfile):
    command = json.loads(last(dockerfile, "CMD"))
    assert command[:3] == ["gunicorn", "-c", "functions/common/gunicorn_conf.py"]
    assert command[3].endswith(":create_app()")
    container = knative_service(service)["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"containerPort": 8080}]  # Knative passes it as $PORT


def modules_run(dockerfile: str) -> list[str]:
    """The project modules an image serves, and those its build runs with `python -m`."""
    built = [
        module
        for name, args in instructions(dockerfile)
        if name == "RUN"
        for module in re.findall(r"python -m ((?:functions|eventing|scripts)\.[\w.]+)", args)
    ]
    return [served_module(dockerfile), *built]


@pytest.mark.parametrize("dockerfile", DOCKERFILES.values())
def test_image_copies_every_project_module_its_app_and_build_import(dockerfile):
    copied = copied_paths(dockerfile)
    imported = {
        path for module in modules_run(dockerfile) for path in project_files_imported(module)
    }
    missing = [
        path
        for path in sorted(imported)
        if not any(path == source or path.startswith(source.rstrip("/") + "/") for source in copied)
    ]
    assert missing == []


def test_embed_image_bakes_the_model_pack_where_the_service_loads_it():
    dockerfile = "functions/embed/Dockerfile"
    (fetch,) = [
        args
        for name, args in instructions(dockerfile)
        if name == "RUN" and "fetch_model_pack" in args
    ]
    arguments = fetch.split()
    pack, dest = (arguments[arguments.index(flag) + 1] for flag in ("--pack", "--dest"))
    env = literal_env(knative_service("embed"))
    assert (env["MODEL_PACK"], env["MODEL_ROOT"]) == (pack, dest)
    assert "scripts/fetch_model_pack.py" in copied_paths(dockerfile)
    assert (ROOT / "scripts" / "fetch_model_pack.py").is_file()


def test_embed_image_can_take_onnxruntimes_gpu_build():
    (argument,) = [
        args
        for name, args in instructions("functions/embed/Dockerfile")
        if name == "ARG" and args.startswith("ONNXRUNTIME=")
    ]
    assert argument == "ONNXRUNTIME=onnxruntime"
    requirements = (ROOT / "requirements" / "embed.txt").read_text()
    assert re.search(r"^onnxruntime==", requirements, re.MULTILINE)  # what the ARG replaces


def test_every_third_party_image_is_pinned():
    images = [
        c["image"]
        for m in rendered()
        if m["kind"] in ("Deployment", "StatefulSet")
        for c in m["spec"]["template"]["spec"]["containers"]
    ]
    built_here = {s["image"] for s in COMPOSE["services"].values() if "build" in s}
    images += [
        s["image"]
        for s in COMPOSE["services"].values()
        if "build" not in s and s["image"] not in built_here
    ]
    assert images and all(EXACT_TAG.fullmatch(image) for image in images)


# -- docker-compose.yml ------------------------------------------------------------------------


def test_compose_builds_each_function_from_the_repository_root_with_its_dockerfile():
    built = {
        name: service["build"]["dockerfile"]
        for name, service in COMPOSE["services"].items()
        if service.get("build", {}).get("dockerfile") in DOCKERFILES.values()
    }
    assert built == DOCKERFILES
    contexts = {s["build"]["context"] for s in COMPOSE["services"].values() if "build" in s}
    assert contexts == {"."}


def test_compose_broker_routes_by_the_trigger_manifests_to_every_service_they_name():
    command = COMPOSE["services"]["broker"]["command"]
    assert command[command.index("--triggers") + 1] == "eventing/triggers.yaml"
    routes = dict(
        command[i + 1].split("=", 1) for i, arg in enumerate(command) if arg == "--service"
    )
    triggers = yaml.safe_load_all((ROOT / "eventing" / "triggers.yaml").read_text())
    named = {
        destination["ref"]["name"]
        for trigger in triggers
        for destination in (
            trigger["spec"]["subscriber"],
            trigger["spec"]["delivery"]["deadLetterSink"],
        )
    }
    assert set(routes) == named
    assert all(routes[name] == f"http://{name}:8080" for name in named)


@pytest.mark.parametrize("name", [s["metadata"]["name"] for s in knative_services()])
def test_compose_gives_each_function_every_secret_its_knative_service_reads(name):
    environment = COMPOSE["services"][name]["environment"]
    assert set(secret_env(knative_service(name))) <= set(environment)


def test_compose_receiver_publishes_to_the_broker():
    assert COMPOSE["services"]["b2-receiver"]["environment"]["K_SINK"] == "http://broker:8080"
