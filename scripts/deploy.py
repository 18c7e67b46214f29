"""Deploy the photo pipeline to a Knative cluster in one command (run as `scripts/deploy`).

Builds and pushes the four images, pins them by digest in a generated kustomize overlay
(with the Secret generated from --secrets-file), merges the tracing and TLS settings into
Knative's own ConfigMaps, applies everything with `kubectl apply -k`, waits for every Knative
resource to be Ready, reads Knative's ConfigMaps back (refusing to finish while TLS by default,
Eventing's OIDC sender tokens or tracing is off), and prints the public URLs and the
`b2 bucket notification-rule create` command.
With --alerts it also applies knative/alerts/ (for clusters with the Prometheus Operator).

    scripts/deploy --registry registry.example.com/photos --bucket photos \\
        --secrets-file knative/secrets.env
    scripts/deploy --dry-run --registry registry.example.com/photos --bucket photos

It needs Python 3's standard library, docker (or podman) and kubectl, and nothing else: kubectl's
own kustomize renders the manifests, and kubectl turns YAML into JSON (`patch --local`, which
reads files only), so no YAML parser is needed. --dry-run needs kubectl only, for that, and no
cluster: it prints every command it would run (as `#` comments) and the full manifest set it
would apply (as JSON documents, which are YAML; Secret values redacted).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from scripts.build_images import DEPLOYED_DOCKERFILES, production_build_command
from scripts.env_file import EnvFileError, read_env_file

Manifest = dict[str, Any]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OVERLAY = ROOT / "knative"
# PodMonitor and PrometheusRule, applied with --alerts where the Prometheus Operator runs.
ALERTS = ROOT / "knative" / "alerts"
CLUSTER_PATCHES = ROOT / "knative" / "cluster"
EXAMPLE_SECRETS = ROOT / "knative" / "secrets.example.env"
SECRET_NAME = "photo-pipeline-secrets"
NAMESPACE = "photos"
# Knative Service name -> its Dockerfile (thumbnail, status and b2-receiver share one, a target
# each); every image is built from the repository root.
DOCKERFILES = DEPLOYED_DOCKERFILES
PLACEHOLDER_IMAGE = "photo-pipeline/{name}"
# The container engines that can build and push the images, in order of preference.
CONTAINER_ENGINES = ("docker", "podman")
PUBLIC_SERVICES = ("b2-receiver", "status")
REQUIRED_CRDS = (
    "services.serving.knative.dev",
    "brokers.eventing.knative.dev",
    "triggers.eventing.knative.dev",
    "sinkbindings.sources.knative.dev",
    "certificates.cert-manager.io",
)
# The cert-manager ClusterIssuers knative/cluster/serving-config-certmanager.yaml and Eventing's
# transport encryption name: without them Knative's TLS settings issue no certificate.
REQUIRED_CLUSTER_ISSUERS = (
    "letsencrypt",
    "knative-selfsigned-issuer",
    "knative-eventing-ca-issuer",
)
ALERTS_CRDS = ("podmonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com")
# Kinds whose Ready condition says the pipeline is up, and Deployments/StatefulSets to roll out.
READY_KINDS = {
    ("serving.knative.dev/v1", "Service"): "ksvc",
    ("eventing.knative.dev/v1", "Broker"): "broker",
    ("eventing.knative.dev/v1", "Trigger"): "trigger",
    ("sources.knative.dev/v1", "SinkBinding"): "sinkbinding",
}
ROLLOUT_KINDS = {"Deployment": "deployment", "StatefulSet": "statefulset"}
B2_SIGNING_SECRET = re.compile(r"[A-Za-z0-9]{32}")
# Redis ACL user (knative/app/redis.yaml) -> the Secret keys of its password and its URL. The
# password goes unquoted into redis-server's arguments and a URL: letters and digits only.
REDIS_USERS = {
    "receiver": ("REDIS_RECEIVER_PASSWORD", "REDIS_URL_RECEIVER"),
    "stage": ("REDIS_STAGE_PASSWORD", "REDIS_URL_STAGE"),
    "status": ("REDIS_STATUS_PASSWORD", "REDIS_URL_STATUS"),
}
REDIS_PASSWORD = re.compile(r"[A-Za-z0-9]{24,}")
IN_CLUSTER_REDIS = "redis.photos.svc.cluster.local"
WAIT_TIMEOUT = "10m"
_SPACE = re.compile(r"\s*")


class DeployError(RuntimeError):
    """A precondition failed; nothing after it ran."""


@dataclass(frozen=True)
class Options:
    registry: str
    tag: str
    overlay: Path
    secrets_file: Path
    bucket: str
    upload_prefix: str
    rule_name: str
    domain: str | None
    gpu: bool
    model_pack_sha256: str | None
    alerts: bool
    skip_build: bool
    dry_run: bool


class Shell:
    """Runs commands, echoing each; in a dry run only prints them, as YAML comments."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run

    def run(self, command: Sequence[str]) -> None:
        print(f"# + {shlex.join(command)}", flush=True)
        if not self.dry_run:
            subprocess.run(command, cwd=ROOT, check=True)

    def output(self, command: Sequence[str]) -> str:
        """A read-only query of the cluster or docker; never called in a dry run."""
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            raise DeployError(f"{shlex.join(command)} failed: {result.stderr.strip()}")
        return result.stdout.strip()


def _kubectl(arguments: Sequence[str], stdin: str | None = None) -> str:
    """A kubectl command that reads local files only (never the cluster), in dry runs too."""
    command = ["kubectl", *arguments]
    result = subprocess.run(command, cwd=ROOT, input=stdin, capture_output=True, text=True)
    if result.returncode != 0:
        raise DeployError(f"{shlex.join(command)} failed: {result.stderr.strip()}")
    return result.stdout


def documents(yaml_text: str) -> list[Manifest]:
    """YAML documents as data: kubectl converts them to JSON (an empty patch of local files)."""
    converted = _kubectl(
        ["patch", "--local", "--filename", "-", "--type", "merge", "--patch", "{}", "-o", "json"],
        stdin=yaml_text,
    )
    decoder = json.JSONDecoder()
    manifests = []
    position = _SPACE.match(converted).end()
    while position < len(converted):
        manifest, position = decoder.raw_decode(converted, position)
        manifests.append(manifest)
        position = _SPACE.match(converted, position).end()
    return manifests


def render(directory: Path) -> list[Manifest]:
    """The manifests of the kustomization in `directory`, rendered by kubectl's kustomize."""
    return documents(_kubectl(["kustomize", str(directory)]))


def dump(manifests: list[Manifest]) -> str:
    """Manifests as a multi-document YAML stream whose documents are JSON."""
    return "".join(f"---\n{json.dumps(m, indent=2, sort_keys=True)}\n" for m in manifests)


def cluster_settings() -> list[tuple[Path, Manifest]]:
    """Each knative/cluster/*.yaml (a part of one of Knative's ConfigMaps) with its content."""
    return [
        (path, manifest)
        for path in sorted(CLUSTER_PATCHES.glob("*.yaml"))
        for manifest in documents(path.read_text())
    ]


def container_engine() -> str | None:
    """docker, else podman: whichever is installed; None if neither."""
    return next((engine for engine in CONTAINER_ENGINES if shutil.which(engine)), None)


def missing_tools(options: Options) -> list[str]:
    """One line per deploy tool that this run needs and PATH lacks; empty when all are there."""
    missing = []
    if shutil.which("kubectl") is None:
        missing.append("kubectl is not installed (it renders and applies the manifests)")
    builds = not (options.dry_run or options.skip_build)
    if builds and container_engine() is None:
        missing.append("neither docker nor podman is installed (one builds and pushes the images)")
    return missing


def referenced_secret_keys(manifests: list[Manifest]) -> set[str]:
    """Every key of the pipeline's Secret that some container reads."""
    return {
        ref["key"] for ref in _find_key(manifests, "secretKeyRef") if ref.get("name") == SECRET_NAME
    }


def _find_key(node: Any, wanted: str) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == wanted:
                yield value
            yield from _find_key(value, wanted)
    elif isinstance(node, list):
        for item in node:
            yield from _find_key(item, wanted)


def secret_problems(secrets: dict[str, str], required: set[str]) -> list[str]:
    """What is wrong with the secrets file, in words; empty when it can be applied."""
    problems = [f"{key} is missing" for key in sorted(required - set(secrets))]
    problems += [
        f"{key} is still a placeholder"
        for key, value in sorted(secrets.items())
        if "change-me" in value or not value
    ]
    signing = secrets.get("B2_WEBHOOK_SECRETS", "").split(",")[0]
    if not B2_SIGNING_SECRET.fullmatch(signing):
        problems.append("B2_WEBHOOK_SECRETS' first secret must be 32 letters and digits (B2)")
    problems += _signing_key_problems(secrets)
    problems += _redis_problems(secrets)
    return problems


def _signing_key_problems(secrets: dict[str, str]) -> list[str]:
    """The keys the status function refuses at start-up, refused here instead of as a crash
    loop: each at least 32 bytes, and no admin key equal to the users' JWT_SECRET."""
    problems = []
    for key in ("JWT_SECRET", "ADMIN_SESSION_SECRET", "ADMIN_JWT_SECRET"):
        value = secrets.get(key)
        if value is None and key != "JWT_SECRET":
            continue
        if len((value or "").encode()) < 32:
            problems.append(f"{key} must be at least 32 bytes")
        elif key != "JWT_SECRET" and value == secrets.get("JWT_SECRET"):
            problems.append(f"{key} must not be JWT_SECRET")
    return problems


def _redis_problems(secrets: dict[str, str]) -> list[str]:
    """Each component's REDIS_URL_* is rediss://, and, for the in-cluster Redis, logs in as that
    component's ACL user with the password that Redis is given for it."""
    problems = []
    for user, (password_key, url_key) in REDIS_USERS.items():
        url = urlsplit(secrets.get(url_key, ""))
        password = secrets.get(password_key, "")
        if url.scheme != "rediss":
            problems.append(f"{url_key} must be rediss:// (Redis is reached over TLS)")
            continue
        if url.hostname != IN_CLUSTER_REDIS:
            continue  # a managed Redis: its own users
        if not REDIS_PASSWORD.fullmatch(password):
            problems.append(f"{password_key} must be 24 or more letters and digits")
        if url.username != user or unquote(url.password or "") != password:
            problems.append(f"{url_key} must log in as {user!r} with {password_key}")
    return problems


def image_reference(options: Options, name: str) -> str:
    return f"{options.registry}/{name}:{options.tag}"


def build_and_push(options: Options, shell: Shell, engine: str) -> dict[str, str]:
    """Image reference per Service: by digest once pushed, by tag in a dry run. `engine` is
    docker or podman, which take the same arguments here."""
    os.environ.setdefault("DOCKER_BUILDKIT", "1")  # the Dockerfiles mount build secrets
    pinned = {}
    for name in DOCKERFILES:
        reference = image_reference(options, name)
        shell.run(
            production_build_command(
                engine,
                name,
                reference,
                gpu=options.gpu,
                model_pack_sha256=options.model_pack_sha256 or "",
            )
        )
        shell.run([engine, "push", reference])
        pinned[name] = reference if shell.dry_run else _pushed_digest(shell, options, engine, name)
    return pinned


def _pushed_digest(shell: Shell, options: Options, engine: str, name: str) -> str:
    repository = f"{options.registry}/{name}"
    template = "{{range .RepoDigests}}{{println .}}{{end}}"
    reference = image_reference(options, name)
    digests = shell.output([engine, "inspect", "--format", template, reference]).splitlines()
    for digest in digests:
        if digest.startswith(f"{repository}@"):
            return digest
    raise DeployError(f"{engine} reports no pushed digest for {repository}: {digests}")


def write_overlay(options: Options, images: dict[str, str], workdir: Path) -> Path:
    """The kustomization that scripts/deploy applies: the chosen overlay, its images pinned,
    the Secret generated from the secrets file (copied beside it, readable by its owner only)."""
    secrets_copy = workdir / "secrets.env"
    shutil.copyfile(options.secrets_file, secrets_copy)
    secrets_copy.chmod(0o600)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [
            os.path.relpath(directory, workdir)
            for directory in (options.overlay, *([ALERTS] if options.alerts else []))
        ],
        "images": [_image_entry(name, reference) for name, reference in images.items()],
        "secretGenerator": [{"name": SECRET_NAME, "namespace": NAMESPACE, "envs": ["secrets.env"]}],
        # Knative Services are not among the kinds whose Secret references kustomize renames.
        "generatorOptions": {"disableNameSuffixHash": True},
    }
    # JSON is YAML: kustomize reads it as it is.
    (workdir / "kustomization.yaml").write_text(json.dumps(kustomization, indent=2))
    return workdir


def _image_entry(name: str, reference: str) -> dict[str, str]:
    entry = {"name": PLACEHOLDER_IMAGE.format(name=name)}
    if "@" in reference:
        entry["newName"], entry["digest"] = reference.split("@", 1)
    else:
        entry["newName"], entry["newTag"] = reference.rsplit(":", 1)
    return entry


def redacted(manifests: list[Manifest]) -> list[Manifest]:
    """The manifests with every Secret value replaced, for printing."""
    marker = base64.b64encode(b"<redacted>").decode()
    for manifest in manifests:
        if manifest["kind"] == "Secret":
            manifest["data"] = dict.fromkeys(manifest.get("data", {}), marker)
    return manifests


def patch_knative_config(shell: Shell) -> None:
    """Merge knative/cluster/*.yaml into Knative's own ConfigMaps (applying them would replace
    keys that Knative's installation owns)."""
    for path, setting in cluster_settings():
        metadata = setting["metadata"]
        shell.run(
            [
                "kubectl", "patch", "configmap", metadata["name"],
                "--namespace", metadata["namespace"],
                "--type", "merge", "--patch-file", str(path.relative_to(ROOT)),
            ]
        )  # fmt: skip


def knative_config_problems(shell: Shell) -> list[str]:
    """Read Knative's ConfigMaps back: every key knative/cluster/*.yaml sets (TLS everywhere,
    Eventing's OIDC sender tokens, tracing) must hold its value, in words what does not. A dry
    run only prints the reads."""
    problems = []
    for _, wanted in cluster_settings():
        name, namespace = wanted["metadata"]["name"], wanted["metadata"]["namespace"]
        query = ["kubectl", "get", "configmap", name, "--namespace", namespace, "-o", "json"]
        if shell.dry_run:
            print(f"# + {shlex.join(query)}", flush=True)
            continue
        data = json.loads(shell.output(query)).get("data") or {}
        problems += [
            f"{namespace}/{name}: {key} is {data.get(key)!r}, not {value!r}"
            for key, value in wanted["data"].items()
            if data.get(key) != value
        ]
    return problems


def verify_knative_config(shell: Shell) -> None:
    problems = knative_config_problems(shell)
    if problems:
        raise DeployError(
            "Knative's settings are not as knative/cluster/ sets them (TLS, OIDC or tracing "
            "off): " + "; ".join(problems)
        )


def set_domain(shell: Shell, domain: str) -> None:
    patch = json.dumps({"data": {domain: ""}})
    shell.run(
        [
            "kubectl", "patch", "configmap", "config-domain", "--namespace", "knative-serving",
            "--type", "merge", "--patch", patch,
        ]
    )  # fmt: skip


def wait_until_ready(shell: Shell, manifests: list[Manifest]) -> None:
    for manifest in manifests:
        metadata = manifest["metadata"]
        namespace = metadata.get("namespace", "default")
        resource = READY_KINDS.get((manifest["apiVersion"], manifest["kind"]))
        if resource:
            shell.run(
                [
                    "kubectl", "wait", "--for=condition=Ready", f"--timeout={WAIT_TIMEOUT}",
                    "--namespace", namespace, f"{resource}/{metadata['name']}",
                ]
            )  # fmt: skip
        elif manifest["kind"] in ROLLOUT_KINDS:
            shell.run(
                [
                    "kubectl", "rollout", "status", f"--timeout={WAIT_TIMEOUT}",
                    "--namespace", namespace,
                    f"{ROLLOUT_KINDS[manifest['kind']]}/{metadata['name']}",
                ]
            )  # fmt: skip


def public_urls(options: Options, shell: Shell) -> dict[str, str]:
    """The public URL of each public Service: from the cluster, or the expected one in a dry
    run (Knative's default domain template, {name}.{namespace}.{domain})."""
    if shell.dry_run:
        domain = options.domain or "<your-domain>"
        return {name: f"https://{name}.{NAMESPACE}.{domain}" for name in PUBLIC_SERVICES}
    query = ["kubectl", "get", "ksvc", "--namespace", NAMESPACE, "-o", "jsonpath={.status.url}"]
    return {name: shell.output([*query, name]) for name in PUBLIC_SERVICES}


def notification_rule_command(options: Options, webhook_url: str, signing_secret: str) -> str:
    """The B2 CLI (v4) command that makes B2 call the receiver for every upload."""
    prefix = options.upload_prefix.lstrip("/")
    return shlex.join(
        [
            "b2", "bucket", "notification-rule", "create",
            f"b2://{options.bucket}/{prefix}", options.rule_name,
            "--event-type", "b2:ObjectCreated:*",
            "--webhook-url", f"{webhook_url.rstrip('/')}/",
            "--sign-secret", signing_secret,
        ]
    )  # fmt: skip


def preflight(shell: Shell, alerts: bool) -> None:
    shell.output(["kubectl", "get", "crd", *REQUIRED_CRDS, *(ALERTS_CRDS if alerts else ())])
    shell.output(["kubectl", "get", "clusterissuer", *REQUIRED_CLUSTER_ISSUERS])


def deploy(options: Options) -> None:
    shell = Shell(options.dry_run)
    secrets = read_env_file(options.secrets_file)
    check_inputs(options, secrets, render(options.overlay))
    if not options.dry_run:
        preflight(shell, options.alerts)
    if options.skip_build:
        images = {name: image_reference(options, name) for name in DOCKERFILES}
    else:
        images = build_and_push(options, shell, container_engine() or CONTAINER_ENGINES[0])
    (ROOT / "var").mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="deploy-", dir=ROOT / "var"))
    try:
        overlay = write_overlay(options, images, workdir)
        manifests = render(overlay)
        patch_knative_config(shell)
        if options.domain:
            set_domain(shell, options.domain)
        shell.run(["kubectl", "apply", "-k", str(overlay.relative_to(ROOT))])
    finally:
        shutil.rmtree(workdir)
    if options.dry_run:
        print(dump(redacted(manifests)), end="")
    wait_until_ready(shell, manifests)
    # After everything is applied and Ready, so a webhook or operator that reverted a setting
    # is caught too: the deploy does not finish while TLS, OIDC or tracing is off.
    verify_knative_config(shell)
    report(options, shell, secrets)


def check_inputs(options: Options, secrets: dict[str, str], manifests: list[Manifest]) -> None:
    """Refuse, before touching docker or the cluster, what would deploy a broken pipeline; in a
    dry run, print the problems instead."""
    problems = [
        f"secrets file {options.secrets_file.name}: {problem}"
        for problem in secret_problems(secrets, referenced_secret_keys(manifests))
    ]
    if problems and not options.dry_run:
        raise DeployError("; ".join(problems))
    for problem in problems:
        print(f"# {problem}")


def report(options: Options, shell: Shell, secrets: dict[str, str]) -> None:
    urls = public_urls(options, shell)
    print("#")
    for name, url in urls.items():
        print(f"# {name}: {url}")
    print("# traces: kubectl port-forward --namespace observability svc/jaeger 16686")
    print("#   then http://localhost:16686")
    print("# B2 event notifications (run once; B2 calls only HTTPS URLs):")
    signing_secret = secrets.get("B2_WEBHOOK_SECRETS", "").split(",")[0]
    print(f"#   {notification_rule_command(options, urls['b2-receiver'], signing_secret)}")


def _git_tag() -> str:
    if shutil.which("git") is None:
        return "latest-build"
    result = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=12"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() or "latest-build"


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True, help="e.g. registry.example.com/photos")
    parser.add_argument("--bucket", required=True, help="the B2 bucket photos are uploaded to")
    parser.add_argument("--upload-prefix", default="", help="key prefix of uploads (B2 rule)")
    parser.add_argument("--rule-name", default="photo-uploads", help="B2 notification rule")
    parser.add_argument("--secrets-file", type=Path, help="KEY=VALUE file; see the example")
    parser.add_argument("--overlay", type=Path, default=DEFAULT_OVERLAY)
    parser.add_argument("--tag", default=None, help="image tag (default: git describe)")
    parser.add_argument("--domain", help="set Knative's public domain (config-domain)")
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="embed with onnxruntime's CUDA build for NVIDIA nodes (lock/embed-gpu.txt)",
    )
    parser.add_argument(
        "--model-pack-sha256",
        default=os.environ.get("MODEL_PACK_SHA256") or None,
        help="override the pinned SHA-256 of the buffalo_l archive the embed image bakes in "
        "(default: MODEL_PACK_SHA256, else scripts/fetch_model_pack.py's pin)",
    )
    parser.add_argument(
        "--alerts",
        action="store_true",
        help="also apply knative/alerts/ (PodMonitor, PrometheusRule; needs Prometheus Operator)",
    )
    parser.add_argument("--skip-build", action="store_true", help="deploy already-pushed --tag")
    parser.add_argument("--dry-run", action="store_true", help="print, touch nothing")
    args = parser.parse_args(argv)
    if args.secrets_file is None and not args.dry_run:
        parser.error("--secrets-file is required (copy knative/secrets.example.env)")
    return Options(
        registry=args.registry.rstrip("/"),
        tag=args.tag or _git_tag(),
        overlay=args.overlay.resolve(),
        secrets_file=(args.secrets_file or EXAMPLE_SECRETS).resolve(),
        bucket=args.bucket,
        upload_prefix=args.upload_prefix,
        rule_name=args.rule_name,
        domain=args.domain,
        gpu=args.gpu,
        model_pack_sha256=args.model_pack_sha256,
        alerts=args.alerts,
        skip_build=args.skip_build,
        dry_run=args.dry_run,
    )


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(argv)
    missing = missing_tools(options)
    if missing:
        sys.exit("\n".join(f"deploy: {line}" for line in missing))
    try:
        deploy(options)
    except (DeployError, EnvFileError, subprocess.CalledProcessError) as exc:
        sys.exit(f"deploy: {exc}")


if __name__ == "__main__":
    main()
