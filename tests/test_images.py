"""The images and docker-compose.yml, checked without a Docker engine (tests/images/ builds and
runs them: make test-images): hadolint passes; every image is multi-stage on BASE_IMAGE (the
pinned Debian by default) with Debian's Python, installs its hashed lock through BuildKit
secrets, runs as uid 10001 and serves its app with gunicorn on $PORT, and copies every project
module its app imports (thumbnail, status, b2-receiver and the local stand-ins are targets of one
Dockerfile, told apart by build arguments); compose runs those images as Knative does and wires
the same stack."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from modulefinder import ModuleFinder
from pathlib import Path

import pytest
import yaml

from functions.common.lanes import Lane, service_name
from functions.common.pipeline import PIPELINE
from scripts import build_images
from scripts.build_images import (
    DEFAULT_BASE_IMAGE,
    DEPLOYED,
    DEPLOYED_DOCKERFILES,
    FUNCTION_DOCKERFILE,
    IMAGES,
    Image,
    copied_sources,
)
from scripts.deploy import DOCKERFILES
from tests.knative_manifests import (
    ROOT,
    container,
    knative_service,
    knative_services,
    literal_env,
    secret_env,
)

ALL_DOCKERFILES = sorted({image.dockerfile for image in IMAGES})
PYTHON_DOCKERFILES = sorted({i.dockerfile for i in IMAGES if i.name != "redis"})
EMBED_DOCKERFILE = "functions/embed/Dockerfile"
# The lock each image installs, as its Dockerfile names it (with the image's build arguments).
LOCKS = {
    "thumbnail": "thumbnail",
    "embed": "embed",
    "status": "status",
    "b2-receiver": "receiver",
    "local-tools": "local-tools",
}
IMAGE = {image.name: image for image in IMAGES}
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
FUNCTION_SERVICES = ["thumbnail", "embed", "status", "status-dead-letter", "b2-receiver"]
# Compose runs one container per function: each lane's Knative Service of a stage (`thumbnail`,
# `thumbnail-bulk`, ...) is its stage's container there.
LANE_SERVICES = {service_name(stage.name, lane): stage.name for stage in PIPELINE for lane in Lane}


def compose_service(knative_name: str) -> str:
    """The docker-compose.yml service that runs the Knative Service `knative_name`."""
    return LANE_SERVICES.get(knative_name, knative_name)


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / dockerfile).read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def stages(dockerfile: str) -> list[list[tuple[str, str]]]:
    """The instructions of each stage (FROM first), in order."""
    found: list[list[tuple[str, str]]] = []
    for name, args in instructions(dockerfile):
        if name == "FROM":
            found.append([])
        if found:
            found[-1].append((name, args))
    return found


def last(dockerfile: str, instruction: str) -> str:
    return [args for name, args in instructions(dockerfile) if name == instruction][-1]


def image_instructions(image: Image) -> list[tuple[str, str]]:
    """The instructions that build `image`: its target and the stages that target is FROM
    (a stage's COPY --from is not followed), in order."""
    found = stages(image.dockerfile)
    names = {
        stage[0][1].split(" AS ")[1]: index
        for index, stage in enumerate(found)
        if " AS " in stage[0][1]
    }
    index = names[image.target] if image.target else len(found) - 1
    chain = []
    while True:
        chain.insert(0, found[index])
        base = found[index][0][1].split(" AS ")[0]
        if base not in names:
            return [step for stage in chain for step in stage]
        index = names[base]


def image_last(image: Image, instruction: str) -> str:
    return [args for name, args in image_instructions(image) if name == instruction][-1]


def runs(stage: list[tuple[str, str]]) -> str:
    return " ".join(args for name, args in stage if name == "RUN")


def apt_packages(stage: list[tuple[str, str]]) -> set[str]:
    installs = re.findall(r"apt-get install ([^&]*)", runs(stage))
    return {word for words in installs for word in words.split() if not word.startswith("-")}


def served_module(image: Image) -> str:
    command = json.loads(image_last(image, "CMD"))
    return command[-1].removesuffix(":create_app()")


def copied_paths(image: Image) -> list[str]:
    """The repository paths an image copies from the build context (its build arguments
    substituted, patterns matched)."""
    return copied_sources(image.dockerfile, image.build_args)


def project_files_imported(module: str) -> set[str]:
    """Every file of this repository that importing `module` loads."""
    finder = ModuleFinder(path=[str(ROOT)])
    finder.run_script(str(ROOT / (module.replace(".", "/") + ".py")))
    files = {Path(m.__file__) for m in finder.modules.values() if m.__file__}
    return {str(f.relative_to(ROOT)) for f in files if f.is_relative_to(ROOT)}


# -- the Dockerfiles ---------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES)
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([hadolint, dockerfile], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES)
def test_dockerfile_needs_no_frontend_image_from_a_registry(dockerfile):
    # A `# syntax=` line makes BuildKit pull its frontend from Docker Hub before building.
    assert not re.search(r"^#\s*syntax=", (ROOT / dockerfile).read_text(), re.MULTILINE)


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES)
def test_image_is_built_on_base_image_defaulting_to_the_pinned_debian(dockerfile):
    steps = instructions(dockerfile)
    (argument,) = [args for name, args in steps if name == "ARG" and "IMAGE=" in args]
    assert argument == f"BASE_IMAGE={DEFAULT_BASE_IMAGE}"
    names = set()
    for stage in stages(dockerfile):
        base, *alias = stage[0][1].split(" AS ")
        assert base == "${BASE_IMAGE}" or base in names, f"stage FROM {base}"
        names.update(alias)


@pytest.mark.parametrize("name", LOCKS)
def test_image_runs_debians_python_without_build_tools(name):
    image = IMAGE[name]
    build = stages(image.dockerfile)[0]
    assert {"python3", "python3-venv"} <= apt_packages(build)
    assert apt_packages(image_instructions(image)) == {"python3"}  # the stages it runs on
    assert "python3 -m venv /opt/venv" in runs(build)


def test_embed_build_stage_has_the_compiler_and_headers_insightface_needs():
    build = stages(EMBED_DOCKERFILE)[0]
    assert {"g++", "python3-dev"} <= apt_packages(build)


@pytest.mark.parametrize(("name", "lock"), LOCKS.items())
def test_image_installs_its_hashed_lock_and_nothing_else(name, lock):
    image = IMAGE[name]
    install = [args for name, args in instructions(image.dockerfile) if "pip install" in args]
    (venv_install,) = install
    arguments = dict(re.findall(r"^ARG (\w+)=(\S+)", (ROOT / image.dockerfile).read_text(), re.M))
    arguments |= image.build_args
    installed = re.sub(r"\$\{(\w+)\}", lambda m: arguments[m[1]], venv_install)
    assert f"-r /build/requirements/{lock}.txt" in installed
    for command in re.findall(r"pip install [^&]*", venv_install):
        assert "--require-hashes" in command and "--no-deps" in command
    assert f"requirements/lock/{lock}.txt" in copied_paths(image)


@pytest.mark.parametrize("name", ["thumbnail", "status", "b2-receiver"])
def test_function_images_but_embed_install_wheels_only(name):
    (install,) = [args for _, args in instructions(IMAGE[name].dockerfile) if "pip install" in args]
    assert "--only-binary=:all:" in install


@pytest.mark.parametrize("name", LOCKS)
def test_pip_index_and_ca_come_as_build_secrets_never_in_a_layer(name):
    image = IMAGE[name]
    (install,) = [args for name, args in instructions(image.dockerfile) if "pip install" in args]
    assert "--mount=type=secret,id=pip.conf" in install
    assert "--mount=type=secret,id=ca" in install
    env = " ".join(args for name, args in instructions(image.dockerfile) if name == "ENV")
    assert "PIP_CONFIG_FILE=/run/secrets/pip.conf" in env
    assert not any(re.search(r"pip\.conf|\.crt|\.pem", path) for path in copied_paths(image))


@pytest.mark.parametrize("dockerfile", PYTHON_DOCKERFILES)
def test_image_compiles_its_bytecode_for_a_read_only_root_filesystem(dockerfile):
    assert "python -m compileall -q /app" in runs(instructions(dockerfile))


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_image_runs_as_uid_10001(image):
    assert image_last(image, "USER") == "10001:10001"


@pytest.mark.parametrize("service", DOCKERFILES)
def test_image_serves_its_app_with_gunicorn_on_port(service):
    command = json.loads(image_last(DEPLOYED[service], "CMD"))
    assert command[:3] == ["gunicorn", "-c", "functions/common/gunicorn_conf.py"]
    assert command[-1].endswith(":create_app()")
    assert container(knative_service(service))["ports"] == [{"containerPort": 8080}]  # as $PORT


def modules_run(image: Image) -> list[str]:
    """The project modules an image serves, and those its build runs with `python -m`."""
    built = [
        module
        for name, args in instructions(image.dockerfile)
        if name == "RUN"
        for module in re.findall(r"python -m ((?:functions|eventing|scripts)\.[\w.]+)", args)
    ]
    return [served_module(image), *built]


def not_copied(image: Image, modules: list[str]) -> list[str]:
    """The project files that importing `modules` loads and `image` does not copy."""
    copied = copied_paths(image)
    imported = {path for module in modules for path in project_files_imported(module)}
    return [
        path
        for path in sorted(imported)
        if not any(path == source or path.startswith(source.rstrip("/") + "/") for source in copied)
    ]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_copies_every_project_module_its_app_and_build_import(name):
    image = DEPLOYED[name]
    assert not_copied(image, modules_run(image)) == []


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_image_never_copies_the_whole_build_context(image):
    # A COPY source that is only an argument, empty for this image, copies the whole context.
    assert not {"", "."} & set(copied_paths(image))


def test_images_of_the_shared_dockerfile_copy_only_their_own_package():
    shared = [image for image in IMAGES if image.dockerfile == FUNCTION_DOCKERFILE]
    assert {image.target for image in shared} == {image.name for image in shared}
    packages = {"functions/embed", *(image.build_args["APP"] for image in shared)}
    for image in (image for image in shared if image.deployed):
        app = image.build_args["APP"]
        assert served_module(image).replace(".", "/").startswith(app + "/")
        own = [path for path in copied_paths(image) if path.startswith(tuple(packages))]
        assert own and all(path.startswith(app) for path in own), image.name
    receiver = copied_paths(IMAGE["b2-receiver"])
    assert not any(path.endswith(".yaml") for path in receiver)  # its .py, not the manifests


def test_local_tools_image_copies_the_stand_ins_and_the_brokers_triggers_only():
    image = IMAGE["local-tools"]
    assert (image.dockerfile, image.target) == (FUNCTION_DOCKERFILE, "local-tools")
    assert not image.deployed
    stand_ins = ["devstack.local_broker", "devstack.lambda_standin", "devstack.otlp_receiver"]
    own = {
        path for path in copied_paths(image) if not path.startswith(("functions/", "requirements/"))
    }
    modules = {module.replace(".", "/") + ".py" for module in stand_ins}
    assert own == {"devstack/__init__.py", *modules, "eventing/triggers.yaml"}
    assert not_copied(image, stand_ins) == []
    command = COMPOSE["services"]["broker"]["command"]
    assert image.build_args["APP_DATA"] == command[command.index("--triggers") + 1]
    command = json.loads(image_last(image, "CMD"))
    assert command == ["python", "-m", "devstack.local_broker", "--help"]


def test_embed_image_bakes_the_model_pack_where_the_service_loads_it_by_default():
    dockerfile = EMBED_DOCKERFILE
    (fetch,) = [
        args
        for name, args in instructions(dockerfile)
        if name == "RUN" and "fetch_model_pack" in args
    ]
    arguments = fetch.split()
    pack, dest = (arguments[arguments.index(flag) + 1] for flag in ("--pack", "--dest"))
    env = literal_env(knative_service("embed"))
    assert (env["MODEL_PACK"], env["MODEL_ROOT"]) == (pack, dest)
    default_target = stages(dockerfile)[-1]
    assert ("COPY", f"--from=models {dest} {dest}") in default_target


def test_embed_image_has_a_target_without_the_pack_for_machines_that_cannot_fetch_it():
    (no_pack,) = [s for s in stages(EMBED_DOCKERFILE) if s[0][1].endswith(" no-model-pack")]
    assert not any("models" in args for name, args in no_pack if name == "COPY")
    assert IMAGE["embed"].local_target == "no-model-pack"  # make images: the pack is mounted
    assert IMAGE["embed"].target is None  # deployed: the default target, the pack baked in


def test_embed_image_turns_off_onnxruntimes_telemetry():
    env = " ".join(args for name, args in instructions(EMBED_DOCKERFILE) if name == "ENV")
    assert "ORT_DISABLE_TELEMETRY=1" in env.split()


def test_embed_image_selects_onnxruntimes_gpu_build_by_its_lock():
    (argument,) = [
        args
        for name, args in instructions(EMBED_DOCKERFILE)
        if name == "ARG" and args.startswith("LOCK=")
    ]
    assert argument == "LOCK=embed"
    gpu = (ROOT / "requirements" / "lock" / "embed-gpu.txt").read_text()
    assert re.search(r"^onnxruntime-gpu(\[[\w,]+\])?==", gpu, re.MULTILINE)
    assert not re.search(r"^onnxruntime==", gpu, re.MULTILINE)


# -- scripts/build_images.py -------------------------------------------------------------------


def test_make_images_builds_every_dockerfile_in_the_repository():
    found = {
        str(path.relative_to(ROOT))
        for pattern in ("**/Dockerfile", "**/*.Dockerfile")
        for path in ROOT.glob(pattern)
        if not {".venv", "var", "node_modules"} & set(path.parts)
    }
    assert found == set(ALL_DOCKERFILES)


def test_make_images_and_deploy_build_the_same_function_images():
    assert DEPLOYED_DOCKERFILES == DOCKERFILES


def test_a_production_embed_build_bakes_the_pack_and_selects_the_gpu_lock_by_argument():
    command = build_images.production_build_command(
        "docker", "embed", "registry.example/embed:1", gpu=True, model_pack_sha256="ab" * 32
    )
    assert "--target" not in command  # the default target: the pack baked in
    assert command[-1] == "."
    assert {"LOCK=embed-gpu", f"MODEL_PACK_SHA256={'ab' * 32}"} <= set(command)
    thumbnail = build_images.production_build_command("docker", "thumbnail", "r/t:1")
    assert thumbnail == [
        "docker", "build", "--file", "functions/Dockerfile", "--tag", "r/t:1",
        "--target", "thumbnail",
        "--build-arg", "LOCK=thumbnail", "--build-arg", "APP=functions/thumbnail", ".",
    ]  # fmt: skip


def test_pip_conf_for_a_build_keeps_only_indexes_a_container_can_reach():
    host = {
        "index-url": "https://pypi.example/simple",
        "extra-index-url": "file:///opt/pypi/simple https://mirror.example/simple",
        "find-links": "/opt/wheels",
        "constraint": "/etc/xdg/pip/constraints.txt",
    }
    conf = build_images.container_pip_conf(host, "/run/secrets/ca")
    assert conf == (
        "[global]\n"
        "index-url = https://pypi.example/simple\n"
        "extra-index-url = https://mirror.example/simple\n"
        "cert = /run/secrets/ca\n"
    )
    assert build_images.container_pip_conf({"find-links": "/opt/wheels"}, None) is None


def test_docker_clients_from_23_need_buildx_for_buildkit():
    # Debian's docker.io 20.10 has BuildKit built in; docker 23 and later moved it to buildx.
    assert build_images.BUILDX_REQUIRED_FROM == 23


# -- docker-compose.yml ------------------------------------------------------------------------


def test_compose_has_no_key_docker_compose_1_rejects():
    assert "name" not in COMPOSE


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose 1.x not installed")
def test_compose_file_is_valid_for_docker_compose_1():
    command = ["docker-compose", "--project-name", "check", "config", "--quiet"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_compose_runs_the_images_make_images_builds_from_their_dockerfiles():
    built = {
        name: service["build"]["dockerfile"]
        for name, service in COMPOSE["services"].items()
        if service.get("build", {}).get("dockerfile") in DOCKERFILES.values()
        and service["build"].get("target") != "local-tools"
    }
    assert built == DOCKERFILES
    for name in DOCKERFILES:
        service = COMPOSE["services"][name]
        image = DEPLOYED[name]
        assert service["image"] == f"photo-pipeline/{name}:${{TAG:-dev}}"
        assert service["build"]["context"] == "."
        assert service["build"].get("target") == (image.local_target or image.target)
        args = service["build"]["args"]
        assert args == {"BASE_IMAGE": f"${{BASE_IMAGE:-{DEFAULT_BASE_IMAGE}}}", **image.build_args}


def test_compose_builds_local_tools_as_make_images_does():
    image = IMAGE["local-tools"]
    build = COMPOSE["x-local-tools"]["build"]
    assert build["context"] == "."
    assert (build["dockerfile"], build["target"]) == (image.dockerfile, image.target)
    base = f"${{BASE_IMAGE:-{DEFAULT_BASE_IMAGE}}}"
    assert build["args"] == {"BASE_IMAGE": base, **image.build_args}
    assert COMPOSE["x-local-tools"]["image"] == "photo-pipeline/local-tools:${TAG:-dev}"


@pytest.mark.parametrize("name", FUNCTION_SERVICES)
def test_compose_runs_each_function_with_its_knative_services_workers_and_threads(name):
    environment = COMPOSE["services"][name].get("environment", {})
    for variable, value in literal_env(knative_service(name)).items():
        if variable in ("WEB_CONCURRENCY", "GUNICORN_THREADS"):
            assert environment.get(variable) == value, variable


@pytest.mark.parametrize("name", FUNCTION_SERVICES)
def test_compose_sets_no_setting_to_another_value_than_the_knative_service(name):
    environment = COMPOSE["services"][name].get("environment", {})
    knative = literal_env(knative_service(name))
    assert {
        v: environment[v] for v in knative if v in environment and environment[v] != knative[v]
    } == {}


@pytest.mark.parametrize("name", FUNCTION_SERVICES)
def test_compose_runs_each_function_as_knative_does(name):
    service = COMPOSE["services"][name]
    assert service["user"] == "10001:10001"
    assert service["read_only"] is True
    mounts = {m["mountPath"] for m in container(knative_service(name)).get("volumeMounts", [])}
    assert {"/var/tmp", "/run/prometheus"} <= mounts
    assert {"/var/tmp", "/run/prometheus"} <= set(service["tmpfs"])


def test_compose_embed_mounts_a_model_pack_read_only_at_model_root():
    embed = COMPOSE["services"]["embed"]
    assert embed["build"]["target"] == "no-model-pack"
    model_root = literal_env(knative_service("embed"))["MODEL_ROOT"]
    assert embed["environment"]["MODEL_ROOT"] == model_root
    assert f"${{MODEL_ROOT:-./var/test-models}}:{model_root}:ro" in embed["volumes"]


def test_compose_sends_traces_to_jaeger_or_the_otlp_receiver():
    services = COMPOSE["services"]
    for name in ("jaeger", "otlp-receiver"):
        assert services[name]["networks"]["default"]["aliases"] == ["traces"]
    assert services["jaeger"]["profiles"] != services["otlp-receiver"]["profiles"]
    for name in FUNCTION_SERVICES:
        endpoint = services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint == "http://traces:4318"


def test_compose_redis_is_the_pinned_image_unless_redis_image_names_the_debian_one():
    image = COMPOSE["services"]["redis"]["image"]
    assert re.fullmatch(r"\$\{REDIS_IMAGE:-redis:[\d.]+@sha256:[0-9a-f]{64}\}", image)


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
    assert all(routes[name] == f"http://{compose_service(name)}:8080" for name in named)
    # Both lanes of a stage reach its one container.
    assert {routes[name] for name in LANE_SERVICES} == {
        f"http://{stage.name}:8080" for stage in PIPELINE
    }


def test_compose_runs_every_knative_service_as_a_container_of_its_function():
    assert {compose_service(s["metadata"]["name"]) for s in knative_services()} <= set(
        COMPOSE["services"]
    )


@pytest.mark.parametrize("name", [s["metadata"]["name"] for s in knative_services()])
def test_compose_gives_each_function_every_secret_its_knative_service_reads(name):
    environment = COMPOSE["services"][compose_service(name)]["environment"]
    assert set(secret_env(knative_service(name))) <= set(environment)


def test_compose_receiver_publishes_to_the_broker():
    assert COMPOSE["services"]["b2-receiver"]["environment"]["K_SINK"] == "http://broker:8080"


def test_compose_status_verifies_the_tokens_the_demo_mints():
    from devstack.stack import JWT_AUDIENCE, JWT_ISSUER, StackConfig

    environment = COMPOSE["services"]["status"]["environment"]
    defaults = StackConfig(model_root=ROOT, workdir=ROOT)
    assert environment["JWT_SECRET"] == defaults.jwt_secret
    assert (environment["JWT_ISSUER"], environment["JWT_AUDIENCE"]) == (JWT_ISSUER, JWT_AUDIENCE)
    receiver = COMPOSE["services"]["b2-receiver"]["environment"]
    assert receiver["B2_WEBHOOK_SECRETS"] == defaults.webhook_secret
