"""`scripts/deploy` needs only Python 3's standard library, docker or podman, and kubectl, and
names whichever is missing. Its dry run, with kubectl and no cluster, prints every command it
would run and the full, valid manifest set it would apply. kubectl here is a fake (below) whose
local rendering tests/test_manifests.py compares with kubectl's own; docker is a stub."""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts.deploy import (
    CLUSTER_PATCHES,
    DOCKERFILES,
    EXAMPLE_SECRETS,
    REDIS_USERS,
    REQUIRED_CLUSTER_ISSUERS,
    SECRET_NAME,
    parse_options,
    referenced_secret_keys,
    secret_problems,
    write_overlay,
)
from scripts.kustomize_render import read_env_file, render
from tests.knative_manifests import (
    ALERTS,
    KSVC,
    OVERLAYS,
    ROOT,
    container,
    find,
    knative_services,
    of_kind,
    validation_errors,
)

REGISTRY = "registry.example.com/photos"
WEBHOOK_SECRET = "Abcdefghijklmnopqrstuvwxyz012345"
GOOD_SECRETS = {
    "S3_ACCESS_KEY_ID": "0045b2keyid",
    "S3_SECRET_ACCESS_KEY": "K004-b2-application-key-value",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEYID",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-access-key-value",
    "B2_WEBHOOK_SECRETS": WEBHOOK_SECRET,
    "JWT_SECRET": "a-jwt-signing-key-that-is-long-enough-000",
    "ADMIN_PASSWORD": "admin-password-value",
    "ADMIN_SESSION_SECRET": "an-admin-session-key-that-is-long-enough-000",
    "REDIS_PASSWORD": "RedisAdminPassword0123456789",
    **{
        f"REDIS_{user.upper()}_PASSWORD": f"{user.title()}Password0123456789abcdef"
        for user in REDIS_USERS
    },
    **{
        f"REDIS_URL_{user.upper()}": (
            f"rediss://{user}:{user.title()}Password0123456789abcdef"
            "@redis.photos.svc.cluster.local:6379/0?ssl_ca_certs=/etc/redis-tls/ca.crt"
        )
        for user in REDIS_USERS
    },
}


def built_image(service: dict) -> str:
    """The name of the image (a DOCKERFILES key) that a Knative Service of knative/ runs."""
    return container(service)["image"].removeprefix("photo-pipeline/")


# Knative Service -> the image it runs: status-dead-letter runs status's, a stage's bulk lane
# (<stage>-bulk) its stage's.
SERVICE_IMAGES = {s["metadata"]["name"]: built_image(s) for s in knative_services()}


def write_secrets(path: Path, secrets: dict[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in secrets.items()))
    return path


FAKE_KUBECTL = '''#!@PYTHON@
"""kubectl for tests. What deploy.py asks of local files: `kustomize DIR` renders with
scripts/kustomize_render.py, `patch --local` prints the YAML documents on stdin as JSON. The
cluster, in $FAKE_KUBE: keeps ConfigMaps as JSON files, merges `patch --type merge --patch-file`
into them (except those named in $FAKE_KUBE_IGNORE, as a reverting webhook would), answers
`get configmap -o json` from them and everything else with success."""
import json, os, pathlib, sys
import yaml
sys.path.insert(0, "@ROOT@")
from scripts.kustomize_render import dump, render
args = sys.argv[1:]
if args[0] == "kustomize":
    sys.stdout.write(dump(render(args[1])))
    sys.exit()
if args[:2] == ["patch", "--local"]:
    for document in yaml.safe_load_all(sys.stdin):
        print(json.dumps(document, indent=4))
    sys.exit()
state = pathlib.Path(os.environ["FAKE_KUBE"])
with open(state / "log", "a") as log:
    log.write(json.dumps(args) + "\\n")
def path(name, namespace):
    return state / f"{namespace}_{name}.json"
namespace = args[args.index("--namespace") + 1] if "--namespace" in args else "default"
if args[:2] == ["patch", "configmap"] and "--patch-file" in args:
    name = args[2]
    if name not in os.environ.get("FAKE_KUBE_IGNORE", "").split(","):
        patch = yaml.safe_load(open(args[args.index("--patch-file") + 1]))
        stored = path(name, namespace)
        current = json.loads(stored.read_text()) if stored.exists() else {"data": {}}
        current["data"].update(patch["data"])
        path(name, namespace).write_text(json.dumps(current))
elif args[:2] == ["get", "configmap"]:
    target = path(args[2], namespace)
    print(target.read_text() if target.exists() else json.dumps({"data": {}}))
elif args[:2] == ["get", "ksvc"]:
    print(f"https://{args[-1]}.photos.example.com")
'''.replace("@PYTHON@", sys.executable).replace("@ROOT@", str(ROOT))
STUB = "#!/bin/sh\nexit 0\n"
TOOLS = {
    # This interpreter without its site-packages: Python's standard library only.
    "python3": f'#!/bin/sh\nexec "{sys.executable}" -E -S "$@"\n',
    "kubectl": FAKE_KUBECTL,
    "docker": STUB,
    "podman": STUB,
}


def machine(directory: Path, *tools: str) -> dict[str, str]:
    """The environment of a machine whose PATH holds bash and dirname (scripts/deploy's shell)
    and, of the deploy tools, only those named (TOOLS)."""
    directory.mkdir(exist_ok=True)
    for name in ("bash", "dirname"):
        (directory / name).symlink_to(shutil.which(name))
    for name in tools:
        (directory / name).write_text(TOOLS[name])
        (directory / name).chmod(0o755)
    environment = {key: value for key, value in os.environ.items() if key != "MODEL_PACK_SHA256"}
    return {**environment, "PATH": str(directory)}


def run_deploy(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ROOT / "scripts" / "deploy", "--registry", REGISTRY, *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def dry_run(environment: dict[str, str], *arguments: str) -> str:
    result = run_deploy(environment, "--dry-run", *arguments)
    assert result.returncode == 0, result.stderr
    return result.stdout


def commands(output: str) -> list[list[str]]:
    return [
        shlex.split(line[len("# + ") :]) for line in output.splitlines() if line.startswith("# + ")
    ]


def embed_build_args(output: str) -> dict[str, str]:
    """The --build-arg values of the dry run's embed image build."""
    (build,) = [
        c
        for c in commands(output)
        if c[:2] == ["docker", "build"] and c[c.index("--file") + 1] == DOCKERFILES["embed"]
    ]
    return dict(build[i + 1].split("=", 1) for i, arg in enumerate(build) if arg == "--build-arg")


@pytest.fixture(scope="module")
def secrets_file(tmp_path_factory) -> Path:
    return write_secrets(tmp_path_factory.mktemp("secrets") / "secrets.env", GOOD_SECRETS)


@pytest.fixture(scope="module")
def tools(tmp_path_factory) -> dict[str, str]:
    """A machine with the deploy tools: a bare python3, kubectl and docker."""
    return machine(tmp_path_factory.mktemp("bin"), "python3", "kubectl", "docker")


@pytest.fixture(scope="module")
def output(tools, secrets_file) -> str:
    return dry_run(
        tools,
        "--bucket", "photo-uploads", "--upload-prefix", "users/", "--domain", "photos.example.com",
        "--tag", "v1", "--secrets-file", str(secrets_file),
    )  # fmt: skip


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_dry_run_prints_the_full_valid_manifest_set(overlay, tools, secrets_file):
    printed = dry_run(
        tools, "--bucket", "b", "--overlay", overlay, "--secrets-file", str(secrets_file)
    )  # fmt: skip
    manifests = tuple(yaml.safe_load_all(printed))
    errors = {
        f"{m['kind']}/{m['metadata']['name']}": validation_errors(m, manifests) for m in manifests
    }
    assert {name: found for name, found in errors.items() if found} == {}
    assert len(manifests) == len(render(ROOT / overlay)) + 1  # and the generated Secret


def test_a_dry_run_with_alerts_also_applies_the_valid_alert_manifests(tools, secrets_file):
    printed = dry_run(tools, "--bucket", "b", "--alerts", "--secrets-file", str(secrets_file))
    manifests = tuple(yaml.safe_load_all(printed))
    assert all(validation_errors(m, manifests) == [] for m in manifests)
    alerts = {(m["kind"], m["metadata"]["name"]) for m in render(ROOT / ALERTS)}
    assert alerts <= {(m["kind"], m["metadata"]["name"]) for m in manifests}
    assert len(manifests) == len(render(ROOT / "knative")) + len(alerts) + 1


def test_a_dry_run_builds_and_pushes_every_image_from_the_repository_root(output):
    builds = [c for c in commands(output) if c[:2] == ["docker", "build"]]
    assert sorted(c[c.index("--file") + 1] for c in builds) == sorted(DOCKERFILES.values())
    assert all(c[-1] == "." for c in builds)
    pushes = [c[2] for c in commands(output) if c[:2] == ["docker", "push"]]
    assert pushes == [f"{REGISTRY}/{name}:v1" for name in DOCKERFILES]


def test_the_embed_image_bakes_the_pinned_model_pack_unless_a_sha256_is_given(output):
    assert "MODEL_PACK_SHA256" not in embed_build_args(output)
    assert "--model-pack-sha256" not in output


def test_a_model_pack_sha256_given_to_deploy_overrides_the_pin_in_the_embed_build(
    tools, secrets_file
):
    sha256 = "ab" * 32
    printed = dry_run(
        tools,
        "--bucket", "b", "--secrets-file", str(secrets_file), "--model-pack-sha256", sha256
    )  # fmt: skip
    assert embed_build_args(printed)["MODEL_PACK_SHA256"] == sha256


def test_deploy_gpu_builds_embed_from_the_gpu_lock(tools, secrets_file):
    printed = dry_run(tools, "--bucket", "b", "--secrets-file", str(secrets_file), "--gpu")
    assert embed_build_args(printed)["LOCK"] == "embed-gpu"


def test_a_default_deploy_builds_embed_from_the_cpu_lock(output):
    assert "LOCK" not in embed_build_args(output)


def test_each_service_runs_the_image_the_dry_run_builds_for_it(output):
    services = of_kind(tuple(yaml.safe_load_all(output)), *KSVC)
    images = {
        s["metadata"]["name"]: s["spec"]["template"]["spec"]["containers"][0]["image"]
        for s in services
    }
    assert images == {name: f"{REGISTRY}/{image}:v1" for name, image in SERVICE_IMAGES.items()}


def test_a_dry_run_applies_with_kubectl_apply_k_then_waits_for_every_knative_resource(output):
    steps = commands(output)
    (apply,) = [c for c in steps if c[:3] == ["kubectl", "apply", "-k"]]
    waits = {c[-1] for c in steps if c[:2] == ["kubectl", "wait"]}
    assert waits == {
        *(f"ksvc/{name}" for name in SERVICE_IMAGES),
        "broker/photos",
        "trigger/thumbnail",
        "trigger/thumbnail-bulk",
        "trigger/embed",
        "trigger/embed-bulk",
        "sinkbinding/b2-receiver",
    }
    assert steps.index(apply) < min(i for i, c in enumerate(steps) if c[:2] == ["kubectl", "wait"])


def test_a_dry_run_merges_tracing_into_knatives_own_configmaps(output):
    patched = {
        (c[c.index("--namespace") + 1], c[3])
        for c in commands(output)
        if c[:3] == ["kubectl", "patch", "configmap"]
    }
    assert {
        ("knative-serving", "config-observability"),
        ("knative-eventing", "config-observability"),
        ("knative-serving", "config-domain"),
    } <= patched


def test_a_dry_run_prints_the_b2_notification_rule_command(output):
    (line,) = [line for line in output.splitlines() if "notification-rule" in line]
    assert shlex.split(line.lstrip("# ")) == [
        "b2", "bucket", "notification-rule", "create", "b2://photo-uploads/users/",
        "photo-uploads", "--event-type", "b2:ObjectCreated:*",
        "--webhook-url", "https://b2-receiver.photos.photos.example.com/",
        "--sign-secret", WEBHOOK_SECRET,
    ]  # fmt: skip


def test_a_dry_run_prints_no_secret_value_but_the_signing_secret_b2_needs(output):
    shown = [v for k, v in GOOD_SECRETS.items() if v in output and k != "B2_WEBHOOK_SECRETS"]
    assert shown == []
    (secret,) = [m for m in yaml.safe_load_all(output) if m["kind"] == "Secret"]
    assert set(secret["data"]) == set(GOOD_SECRETS)
    assert {base64.b64decode(v) for v in secret["data"].values()} == {b"<redacted>"}


def test_the_example_secrets_are_refused_as_placeholders():
    problems = secret_problems(read_env_file(EXAMPLE_SECRETS), set(GOOD_SECRETS))
    assert "REDIS_URL_STAGE is still a placeholder" in problems


def test_complete_secrets_pass():
    assert secret_problems(GOOD_SECRETS, set(GOOD_SECRETS)) == []


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("B2_WEBHOOK_SECRETS", "too-short", "32 letters and digits"),
        ("JWT_SECRET", "short", "at least 32 bytes"),
        ("ADMIN_SESSION_SECRET", "short", "ADMIN_SESSION_SECRET must be at least 32 bytes"),
        ("ADMIN_JWT_SECRET", "short", "ADMIN_JWT_SECRET must be at least 32 bytes"),
        (
            "ADMIN_SESSION_SECRET",
            "a-jwt-signing-key-that-is-long-enough-000",
            "ADMIN_SESSION_SECRET must not be JWT_SECRET",
        ),
        ("REDIS_URL_STAGE", "redis://redis:6379/0", "rediss://"),
        ("REDIS_STAGE_PASSWORD", "short1", "24 or more letters and digits"),
        (
            "REDIS_URL_STAGE",
            "rediss://default:StagePassword0123456789abcdef@redis.photos.svc.cluster.local:6379/0",
            "must log in as 'stage'",
        ),
        (
            "REDIS_URL_RECEIVER",
            "rediss://receiver:OtherPassword0123456789abcdef@redis.photos.svc.cluster.local/0",
            "must log in as 'receiver' with REDIS_RECEIVER_PASSWORD",
        ),
    ],
)
def test_secrets_the_services_would_reject_are_refused(key, value, problem):
    problems = secret_problems({**GOOD_SECRETS, key: value}, set(GOOD_SECRETS))
    assert any(problem in found for found in problems)


def test_a_missing_secret_is_refused():
    secrets = {k: v for k, v in GOOD_SECRETS.items() if k != "ADMIN_PASSWORD"}
    assert "ADMIN_PASSWORD is missing" in secret_problems(secrets, set(GOOD_SECRETS))


def test_the_applied_overlay_pins_images_by_digest_and_generates_the_secret(tmp_path, secrets_file):
    digest = "sha256:" + "ab" * 32
    images = {name: f"{REGISTRY}/{name}@{digest}" for name in DOCKERFILES}
    options = parse_options(
        ["--registry", REGISTRY, "--bucket", "b", "--secrets-file", str(secrets_file)]
    )
    manifests = tuple(render(write_overlay(options, images, tmp_path)))
    for name, image in SERVICE_IMAGES.items():
        assert container(find(manifests, *KSVC, name))["image"] == f"{REGISTRY}/{image}@{digest}"
    secret = find(manifests, "v1", "Secret", SECRET_NAME)
    assert secret["metadata"]["namespace"] == "photos"
    for key in ("REDIS_URL_STAGE", "REDIS_STATUS_PASSWORD"):
        assert base64.b64decode(secret["data"][key]).decode() == GOOD_SECRETS[key]
    assert set(secret["data"]) == referenced_secret_keys(list(manifests))
    assert (tmp_path / "secrets.env").stat().st_mode & 0o077 == 0


def test_a_deploy_with_placeholder_secrets_stops_before_touching_docker_or_the_cluster(tools):
    result = run_deploy(tools, "--bucket", "b", "--secrets-file", str(EXAMPLE_SECRETS))
    assert result.returncode != 0
    assert "REDIS_URL_RECEIVER is still a placeholder" in result.stderr
    assert "# + " not in result.stdout


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("flags", [[], ["--alerts"]], ids=["pipeline", "with alerts"])
def test_the_applied_overlay_renders_as_kubectl_kustomize_renders_it(tmp_path, secrets_file, flags):
    options = parse_options(
        ["--registry", REGISTRY, "--bucket", "b", "--secrets-file", str(secrets_file), *flags]
    )
    images = {name: f"{REGISTRY}/{name}@sha256:{'cd' * 32}" for name in DOCKERFILES}
    overlay = write_overlay(options, images, tmp_path)
    kubectl = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True
    )
    assert render(overlay) == list(yaml.safe_load_all(kubectl.stdout))


# -- what the deploy needs -------------------------------------------------------------------


def test_a_dry_run_runs_on_python3s_standard_library_alone(tools, secrets_file):
    bare = subprocess.run(["python3", "-c", "import yaml"], env=tools, capture_output=True)
    assert b"No module named 'yaml'" in bare.stderr
    printed = dry_run(tools, "--bucket", "b", "--secrets-file", str(secrets_file))
    assert of_kind(tuple(yaml.safe_load_all(printed)), *KSVC)


@pytest.mark.parametrize(
    ("installed", "line"),
    [
        (("kubectl", "docker"), "deploy: python3 is not installed"),
        (("python3", "docker"), "deploy: kubectl is not installed"),
        (("python3", "kubectl"), "deploy: neither docker nor podman is installed"),
    ],
    ids=["python3", "kubectl", "docker or podman"],
)
def test_a_deploy_names_a_missing_tool_before_doing_anything(
    tmp_path, secrets_file, installed, line
):
    environment = machine(tmp_path / "bin", *installed)
    result = run_deploy(environment, "--bucket", "b", "--secrets-file", str(secrets_file))
    assert result.returncode != 0
    assert any(found.startswith(line) for found in result.stderr.splitlines()), result.stderr
    assert result.stdout == ""


def test_a_deploy_names_every_missing_tool_one_line_each(tmp_path, secrets_file):
    environment = machine(tmp_path / "bin", "python3")
    result = run_deploy(environment, "--bucket", "b", "--secrets-file", str(secrets_file))
    assert [line.split(" is")[0] for line in result.stderr.splitlines()] == [
        "deploy: kubectl",
        "deploy: neither docker nor podman",
    ]


def test_without_docker_the_images_are_built_and_pushed_with_podman(tmp_path, secrets_file):
    environment = machine(tmp_path / "bin", "python3", "kubectl", "podman")
    printed = dry_run(environment, "--bucket", "b", "--secrets-file", str(secrets_file))
    engines = {c[0] for c in commands(printed) if c[1:2] in (["build"], ["push"])}
    assert engines == {"podman"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_a_dry_run_with_kubectl_itself_prints_what_it_prints_with_the_fake(
    tmp_path, tools, secrets_file
):
    with_kubectl = machine(tmp_path / "bin", "python3")
    (tmp_path / "bin" / "kubectl").symlink_to(shutil.which("kubectl"))
    arguments = ["--bucket", "b", "--tag", "v1", "--alerts", "--secrets-file", str(secrets_file)]
    printed = dry_run(with_kubectl, *arguments)
    assert list(yaml.safe_load_all(printed)) == list(yaml.safe_load_all(dry_run(tools, *arguments)))


# -- TLS, OIDC and tracing settings are verified on the cluster ------------------------------


@pytest.fixture
def fake_cluster(tmp_path, tools) -> dict[str, str]:
    """The deploy tools, and the fake kubectl's cluster."""
    state = tmp_path / "cluster"
    state.mkdir()
    # Knative as installed: TLS and OIDC off.
    (state / "knative-serving_config-network.json").write_text(
        json.dumps({"data": {"external-domain-tls": "Disabled", "system-internal-tls": "Disabled"}})
    )
    return {**tools, "FAKE_KUBE": str(state)}


def deploy_on(environment: dict[str, str], secrets_file: Path) -> subprocess.CompletedProcess:
    arguments = ["--bucket", "b", "--tag", "v1", "--skip-build", "--secrets-file", secrets_file]
    return run_deploy(environment, *map(str, arguments))


def test_a_deploy_merges_and_verifies_tls_oidc_and_tracing(fake_cluster, secrets_file):
    result = deploy_on(fake_cluster, secrets_file)
    assert result.returncode == 0, result.stderr
    state = Path(fake_cluster["FAKE_KUBE"])
    network = json.loads((state / "knative-serving_config-network.json").read_text())["data"]
    assert network["system-internal-tls"] == "Enabled"
    features = json.loads((state / "knative-eventing_config-features.json").read_text())["data"]
    assert features["authentication-oidc"] == "enabled"
    calls = [json.loads(line) for line in (state / "log").read_text().splitlines()]
    assert ["get", "clusterissuer", *REQUIRED_CLUSTER_ISSUERS] in calls
    read_back = [c for c in calls if c[:2] == ["get", "configmap"]]
    assert len(read_back) == len(list(CLUSTER_PATCHES.glob("*.yaml")))
    assert calls.index(read_back[0]) > max(i for i, c in enumerate(calls) if c[0] == "apply")


@pytest.mark.parametrize(
    ("ignored", "line"),
    [
        ("config-network", "knative-serving/config-network: system-internal-tls is 'Disabled'"),
        ("config-features", "knative-eventing/config-features: authentication-oidc is None"),
    ],
)
def test_a_deploy_refuses_to_finish_while_tls_or_oidc_is_off(
    fake_cluster, secrets_file, ignored, line
):
    result = deploy_on({**fake_cluster, "FAKE_KUBE_IGNORE": ignored}, secrets_file)
    assert result.returncode != 0
    assert line in result.stderr
    assert "TLS, OIDC or tracing off" in result.stderr
    assert "notification-rule" not in result.stdout


def test_a_dry_run_reads_back_every_knative_setting_it_merges(output):
    reads = {
        (c[c.index("--namespace") + 1], c[3])
        for c in commands(output)
        if c[:3] == ["kubectl", "get", "configmap"]
    }
    merged = {
        (m["metadata"]["namespace"], m["metadata"]["name"])
        for m in (yaml.safe_load(p.read_text()) for p in CLUSTER_PATCHES.glob("*.yaml"))
    }
    assert reads == merged
    assert ("knative-eventing", "config-features") in reads
    assert ("knative-serving", "config-network") in reads
