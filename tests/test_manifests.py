"""The Knative deployment, proven without a cluster: every rendered document is valid for its
kind, the autoscaling settings mean what the design says, func.yaml and the Knative Services
agree, and the pieces reference each other correctly."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TypeVar

import promql_parser
import pytest
import yaml

from devstack.local_broker import Delivery, parse_duration
from functions.common.config import DeadLetterSettings, EventAuthSettings
from functions.common.lanes import Lane, service_name
from functions.common.pipeline import PIPELINE
from functions.embed.settings import EmbedSettings
from scripts.deploy import EXAMPLE_SECRETS, referenced_secret_keys
from scripts.kustomize_render import KustomizationError, read_env_file, render
from tests.knative_manifests import (
    ALERTS,
    KSVC,
    OVERLAYS,
    POD_MONITOR,
    ROOT,
    annotations,
    config_maps_loaded,
    container,
    find,
    knative_service,
    knative_services,
    literal_env,
    of_kind,
    rendered,
    secret_env,
    triggers,
    validation_errors,
)

FUNCTIONS = ("thumbnail", "embed", "status")
# Each stage's Knative Service in each lane (functions/common/lanes.py) -> its stage.
STAGE_OF_SERVICE = {
    service_name(stage.name, lane): stage.name for stage in PIPELINE for lane in Lane
}
AUTOSCALING = "autoscaling.knative.dev/"
# Every per-revision autoscaling annotation Knative Serving reads.
AUTOSCALING_KEYS = {
    "class",
    "metric",
    "target",
    "target-utilization-percentage",
    "target-burst-capacity",
    "min-scale",
    "max-scale",
    "initial-scale",
    "activation-scale",
    "scale-down-delay",
    "scale-to-zero-pod-retention-period",
    "window",
    "panic-window-percentage",
    "panic-threshold-percentage",
}
# Mount paths and variables Knative's admission webhook rejects in a Service.
KNATIVE_RESERVED_PATHS = {"/", "/dev", "/dev/log", "/tmp", "/var", "/var/log"}
KNATIVE_RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
# Loading buffalo_l's detection and recognition graphs (191 MB) into onnxruntime took 2.2-4.5 s
# on a shared 2-core machine (full-size stand-ins, scripts/reference_graphs.py); the budget is
# ten times that and more, for a cold node reading the image from disk.
MODEL_LOAD_BUDGET_S = 60
DURATION = re.compile(r"(?:(\d+)m)?(?:(\d+)s)?")
T = TypeVar("T")


def seconds(duration: str) -> int:
    match = DURATION.fullmatch(duration)
    assert match and duration, f"not a Go duration in minutes/seconds: {duration!r}"
    return int(match[1] or 0) * 60 + int(match[2] or 0)


def startup_window_s(probe: dict) -> int:
    """How long a startup probe lets a container take before it is restarted."""
    return probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]


def func_yaml(name: str) -> dict:
    return yaml.safe_load((ROOT / "functions" / name / "func.yaml").read_text())


# -- every document is valid ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_document_is_valid_for_its_kind(overlay):
    manifests = rendered(overlay)
    assert len(manifests) > 20
    errors = {
        f"{m['kind']}/{m['metadata']['name']}": validation_errors(m, manifests) for m in manifests
    }
    assert {name: found for name, found in errors.items() if found} == {}


def test_validation_catches_a_misspelled_knative_field():
    service = copy.deepcopy(knative_service("embed"))
    service["spec"]["template"]["spec"]["containerconcurrency"] = 2
    assert validation_errors(service, rendered())


def test_validation_catches_a_wrongly_typed_kubernetes_field():
    statefulset = copy.deepcopy(find(rendered(), "apps/v1", "StatefulSet", "redis"))
    statefulset["spec"]["replicas"] = "one"
    assert validation_errors(statefulset, rendered())


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", [*OVERLAYS, ALERTS])
def test_the_renderer_matches_kubectl_kustomize(overlay):
    output = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert list(rendered(overlay)) == list(yaml.safe_load_all(output))


def test_the_renderer_refuses_kustomize_fields_it_does_not_implement(tmp_path: Path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(KustomizationError, match="commonLabels"):
        render(tmp_path)


# nameSuffix, as knative/app/lanes/ uses it: a Knative Service written once (stages/), included
# as it is and through a kustomization that renames it, each then patched by its own name.
KNATIVE_SERVICE = """apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: embed
spec:
  template:
    metadata:
      annotations: {autoscaling.knative.dev/min-scale: "1"}
    spec:
      containers: [{image: photo-pipeline/embed}]
"""


def scale_patch(name: str, min_scale: str, namespace: str | None = None) -> str:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return yaml.safe_dump(
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": {
                "template": {"metadata": {"annotations": {AUTOSCALING + "min-scale": min_scale}}}
            },
        }
    )


SUFFIX_TREE = {
    "stages/kustomization.yaml": "resources: [embed.yaml]\n",
    "stages/embed.yaml": KNATIVE_SERVICE,
    # A Namespace keeps its name under nameSuffix, as in kustomize.
    "bulk/kustomization.yaml": (
        "resources: [../stages, namespace.yaml]\nnameSuffix: -bulk\npatches: [{path: scale.yaml}]\n"
    ),
    "bulk/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: photos}\n",
    # Patches apply before the suffix: this one names the Service it renames.
    "bulk/scale.yaml": scale_patch("embed", "0"),
    "app/kustomization.yaml": "namespace: photos\nresources: [../stages, ../bulk]\n",
    # Above the rename, a patch finds its target by any name and namespace it has had: the new
    # name is only the copy; the old one, without a namespace, both (kustomize refuses that);
    # the old one in the namespace, only the Service that has had both at once.
    "by-new-name/kustomization.yaml": "resources: [../app]\npatches: [{path: p.yaml}]\n",
    "by-new-name/p.yaml": scale_patch("embed-bulk", "2"),
    "by-old-name/kustomization.yaml": "resources: [../app]\npatches: [{path: p.yaml}]\n",
    "by-old-name/p.yaml": scale_patch("embed", "2"),
    "by-old-name-in-namespace/kustomization.yaml": (
        "resources: [../app]\npatches: [{path: p.yaml}]\n"
    ),
    "by-old-name-in-namespace/p.yaml": scale_patch("embed", "2", namespace="photos"),
    # A patch with a `target` goes onto every resource the target selects, whatever it names.
    "targeted/kustomization.yaml": (
        "resources: [../app]\npatches:\n"
        "  - {path: p.yaml, target: {group: serving.knative.dev, kind: Service}}\n"
    ),
    "targeted/p.yaml": scale_patch("any", "3"),
    "targeted-by-name/kustomization.yaml": (
        "resources: [../app]\npatches: [{path: p.yaml, target: {kind: Service, name: embed}}]\n"
    ),
    "targeted-by-name/p.yaml": scale_patch("any", "3"),
}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def min_scales(manifests: list[dict]) -> dict[str, str]:
    return {
        m["metadata"]["name"]: annotations(m)[AUTOSCALING + "min-scale"]
        for m in manifests
        if (m["apiVersion"], m["kind"]) == KSVC
    }


@pytest.mark.parametrize(
    ("kustomization", "expected"),
    [
        ("bulk", {"embed-bulk": "0"}),
        ("app", {"embed": "1", "embed-bulk": "0"}),
        ("by-new-name", {"embed": "1", "embed-bulk": "2"}),
        ("by-old-name-in-namespace", {"embed": "2", "embed-bulk": "0"}),
        ("targeted", {"embed": "3", "embed-bulk": "3"}),
        ("targeted-by-name", {"embed": "3", "embed-bulk": "3"}),
    ],
)
def test_the_renderer_suffixes_names_and_patches_by_any_name_a_resource_had(
    tmp_path: Path, kustomization, expected
):
    manifests = render(write_tree(tmp_path, SUFFIX_TREE) / kustomization)
    assert min_scales(manifests) == expected
    services = [m for m in manifests if (m["apiVersion"], m["kind"]) == KSVC]
    assert {container(m)["image"] for m in services} == {"photo-pipeline/embed"}
    if kustomization == "bulk":
        assert find(tuple(manifests), "v1", "Namespace", "photos")


def test_the_renderer_refuses_a_patch_that_names_a_service_and_its_renamed_copy(tmp_path: Path):
    with pytest.raises(KustomizationError, match="matches 2 resources"):
        render(write_tree(tmp_path, SUFFIX_TREE) / "by-old-name")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize(
    "kustomization",
    [
        "bulk",
        "app",
        "by-new-name",
        "by-old-name",
        "by-old-name-in-namespace",
        "targeted",
        "targeted-by-name",
    ],
)
def test_the_renderers_name_suffix_matches_kubectl_kustomize(tmp_path: Path, kustomization):
    directory = write_tree(tmp_path, SUFFIX_TREE) / kustomization
    kubectl = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True
    )
    try:
        ours = render(directory)
    except KustomizationError:
        assert kubectl.returncode != 0  # refused by both
        return
    assert kubectl.returncode == 0, kubectl.stderr
    assert ours == list(yaml.safe_load_all(kubectl.stdout))


@pytest.mark.parametrize(
    ("files", "refusal"),
    [
        # kustomize would rename the ConfigMap and every reference to it: not reproduced here.
        (
            {
                "kustomization.yaml": "resources: [c.yaml]\nnameSuffix: -bulk\n",
                "c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n",
            },
            "nameSuffix on v1 ConfigMap settings is not supported",
        ),
        # kustomize would point the StatefulSet's serviceName at the renamed Service.
        (
            {
                "stages/kustomization.yaml": "resources: [embed.yaml]\n",
                "stages/embed.yaml": KNATIVE_SERVICE,
                "bulk/kustomization.yaml": "resources: [../stages]\nnameSuffix: -bulk\n",
                "kustomization.yaml": "resources: [bulk, set.yaml]\n",
                "set.yaml": "apiVersion: apps/v1\nkind: StatefulSet\n"
                "metadata: {name: s}\nspec: {serviceName: embed}\n",
            },
            "names renamed Service 'embed'",
        ),
        # Two resources with one id, as kustomize refuses them.
        (
            {
                "kustomization.yaml": "resources: [stages, stages]\n",
                "stages/kustomization.yaml": "resources: [embed.yaml]\n",
                "stages/embed.yaml": KNATIVE_SERVICE,
            },
            "already registered id Service/embed",
        ),
        (
            {"kustomization.yaml": "resources: []\nnameSuffix: [-bulk]\n"},
            "nameSuffix must be a string",
        ),
    ],
    ids=["configmap", "statefulset-reference", "duplicate-id", "not-a-string"],
)
def test_the_renderer_refuses_what_it_cannot_rename_as_kustomize_would(
    tmp_path: Path, files, refusal
):
    with pytest.raises(KustomizationError, match=re.escape(refusal)):
        render(write_tree(tmp_path, files))


# -- autoscaling -------------------------------------------------------------------------------


def test_embed_keeps_one_pod_warm():
    assert annotations(knative_service("embed"))[AUTOSCALING + "min-scale"] == "1"


def test_thumbnail_scales_to_zero():
    assert annotations(knative_service("thumbnail")).get(AUTOSCALING + "min-scale", "0") == "0"


@pytest.mark.parametrize("service", knative_services(), ids=lambda s: s["metadata"]["name"])
def test_autoscaling_annotations_are_ones_knative_reads_with_valid_values(service):
    scaling = {
        key.removeprefix(AUTOSCALING): value
        for key, value in annotations(service).items()
        if key.startswith(AUTOSCALING)
    }
    assert set(scaling) <= AUTOSCALING_KEYS
    bounds = {key: int(scaling[key]) for key in ("min-scale", "max-scale") if key in scaling}
    assert all(value >= 0 for value in bounds.values())
    assert bounds.get("min-scale", 0) <= bounds.get("max-scale", 10**6)
    assert scaling.get("metric", "concurrency") in {"concurrency", "rps"}  # KPA's metrics
    assert float(scaling.get("target", "1")) > 0


@pytest.mark.parametrize("service", knative_services(), ids=lambda s: s["metadata"]["name"])
def test_concurrency_is_a_hard_limit_at_the_threads_gunicorn_runs(service):
    env = literal_env(service)
    threads = int(env["WEB_CONCURRENCY"]) * int(env["GUNICORN_THREADS"])
    assert service["spec"]["template"]["spec"]["containerConcurrency"] == threads


def test_embed_takes_two_photos_at_a_time():
    assert knative_service("embed")["spec"]["template"]["spec"]["containerConcurrency"] == 2


def test_embed_requests_the_cpus_its_onnxruntime_threads_use():
    embed = knative_service("embed")
    resources = container(embed)["resources"]
    threads = literal_env(embed)["ORT_INTRA_OP_THREADS"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == threads == "2"


def test_embed_is_started_by_a_startup_probe_on_healthz_that_outlasts_the_model_load():
    probe = container(knative_service("embed"))["startupProbe"]
    assert probe["httpGet"]["path"] == "/healthz"
    window = (
        probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]
    )
    assert window > MODEL_LOAD_BUDGET_S


def test_embed_progress_deadline_outlasts_its_startup_probe():
    embed = knative_service("embed")
    probe = container(embed)["startupProbe"]
    window = (
        probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]
    )
    deadline = annotations(embed)["serving.knative.dev/progress-deadline"]
    assert seconds(deadline) > window


@pytest.mark.parametrize("name", sorted(STAGE_OF_SERVICE))
def test_a_service_answers_within_its_triggers_delivery_timeout(name):
    (trigger,) = [t for t in triggers() if t["spec"]["subscriber"]["ref"]["name"] == name]
    timeout = seconds(trigger["spec"]["delivery"]["timeout"].removeprefix("PT").lower())
    assert knative_service(name)["spec"]["template"]["spec"]["timeoutSeconds"] == timeout


# -- func.yaml and the Knative Services agree --------------------------------------------------


def func_yaml_drift(function: dict, service: dict) -> list[str]:
    """How `function` (a func.yaml) and `service` (its Knative Service) disagree; empty if not."""
    options = function["deploy"]["options"]
    scale = options["scale"]
    expected_annotations = {
        AUTOSCALING + "min-scale": str(scale["min"]),
        AUTOSCALING + "max-scale": str(scale["max"]),
        AUTOSCALING + "metric": scale["metric"],
        AUTOSCALING + "target": str(scale["target"]),
    }
    actual_annotations = {key: annotations(service).get(key) for key in expected_annotations}
    resources = container(service)["resources"]
    limits = dict(options["resources"]["limits"])
    concurrency = limits.pop("concurrency")
    envs = function["run"]["envs"]
    secret_refs = {
        env["name"]: tuple(env["value"].strip("{} ").removeprefix("secret:").split(":"))
        for env in envs
        if env["value"].startswith("{{ secret:")
    }
    config_imports = {
        env["value"].strip("{} ").removeprefix("configMap:")
        for env in envs
        if env["value"].startswith("{{ configMap:")
    }
    literals = {env["name"]: env["value"] for env in envs if not env["value"].startswith("{{")}
    health = function["deploy"]["healthEndpoints"]
    probes = {
        "liveness": container(service)["livenessProbe"]["httpGet"]["path"],
        "readiness": container(service)["readinessProbe"]["httpGet"]["path"],
    }
    checks = {
        "scale": (expected_annotations, actual_annotations),
        "requests": (options["resources"]["requests"], resources["requests"]),
        "limits": (limits, resources["limits"]),
        "concurrency": (concurrency, service["spec"]["template"]["spec"]["containerConcurrency"]),
        "literal envs": (literals, literal_env(service)),
        "secret envs": (secret_refs, secret_env(service)),
        "config maps": (config_imports, config_maps_loaded(service)),
        "health endpoints": (health, probes),
    }
    return [
        f"{what}: func.yaml {ours} != Knative {theirs}"
        for what, (ours, theirs) in checks.items()
        if ours != theirs
    ]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_func_yaml_agrees_with_the_knative_service(name):
    assert func_yaml_drift(func_yaml(name), knative_service(name)) == []


@pytest.mark.parametrize(
    "drift",
    [
        lambda f: f["deploy"]["options"]["scale"].update(min=0),
        lambda f: f["deploy"]["options"]["resources"]["requests"].update(cpu="1"),
        lambda f: f["deploy"]["options"]["resources"]["limits"].update(concurrency=4),
        lambda f: f["run"]["envs"].append({"name": "DET_SIZE", "value": "320"}),
        lambda f: f["run"]["envs"].pop(),
    ],
    ids=["scale", "requests", "concurrency", "added env", "dropped secret"],
)
def test_a_func_yaml_that_drifts_from_the_knative_service_is_caught(drift):
    function = func_yaml("embed")
    drift(function)
    assert func_yaml_drift(function, knative_service("embed"))


# -- security ----------------------------------------------------------------------------------


def pod_containers(manifest: dict) -> list[dict]:
    return manifest["spec"]["template"]["spec"]["containers"]


def workloads(overlay: str = "knative") -> list[dict]:
    kinds = {KSVC, ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet")}
    return [m for m in rendered(overlay) if (m["apiVersion"], m["kind"]) in kinds]


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_every_container_runs_as_non_root_on_a_read_only_root_filesystem(workload):
    pod_context = workload["spec"]["template"]["spec"].get("securityContext", {})
    for spec in pod_containers(workload):
        context = {**pod_context, **spec["securityContext"]}
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] > 0
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("service", knative_services(), ids=lambda s: s["metadata"]["name"])
def test_knative_services_avoid_what_knatives_webhook_rejects(service):
    spec = container(service)
    assert not {m["mountPath"] for m in spec["volumeMounts"]} & KNATIVE_RESERVED_PATHS
    assert not {e["name"] for e in spec.get("env", [])} & KNATIVE_RESERVED_ENV


@pytest.mark.parametrize("service", knative_services(), ids=lambda s: s["metadata"]["name"])
def test_writable_paths_the_code_uses_are_mounted(service):
    mounts = {m["mountPath"] for m in container(service)["volumeMounts"]}
    env = literal_env(service)
    assert {env["TMPDIR"], env["PROMETHEUS_MULTIPROC_DIR"]} <= mounts


def visibility(service: dict) -> str:
    return service["metadata"].get("labels", {}).get("networking.knative.dev/visibility", "public")


def test_only_the_webhook_and_status_endpoints_are_public():
    assert {s["metadata"]["name"]: visibility(s) for s in knative_services()} == {
        "b2-receiver": "public",
        "status": "public",
        "status-dead-letter": "cluster-local",
        "thumbnail": "cluster-local",
        "thumbnail-bulk": "cluster-local",
        "embed": "cluster-local",
        "embed-bulk": "cluster-local",
    }


def deployed_env(service: dict, overlay: str = "knative") -> dict[str, str]:
    """The literal environment `service`'s container gets: the ConfigMap it loads, overridden
    by its own `env` (as Kubernetes resolves them)."""
    config = find(rendered(overlay), "v1", "ConfigMap", "photo-pipeline")["data"]
    return {**config, **literal_env(service)}


def settings_read_from(env: dict[str, str], settings: type[T]) -> T:
    """`settings.from_env()` in a process whose environment is exactly `env`."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return settings.from_env()


def dead_letter_sink_enabled(service: dict, overlay: str = "knative") -> bool:
    """Whether `service` serves POST /v1/dead-letter, by the settings it is given."""
    return settings_read_from(deployed_env(service, overlay), DeadLetterSettings).enabled


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_delivery_retries_for_minutes_before_dead_lettering(overlay):
    """A Redis restart or a short Lambda outage must delay photos, not fail them all."""
    brokers = of_kind(rendered(overlay), "eventing.knative.dev/v1", "Broker")
    for spec in (m["spec"]["delivery"] for m in [*brokers, *triggers(overlay)]):
        delivery = Delivery(
            retry=spec["retry"],
            backoff_policy=spec["backoffPolicy"],
            backoff_delay_s=parse_duration(spec["backoffDelay"]),
        )
        assert sum(delivery.backoff_s(index) for index in range(delivery.retry)) >= 180


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dead_letters_go_only_to_a_cluster_local_service_that_serves_the_sink(overlay):
    brokers = of_kind(rendered(overlay), "eventing.knative.dev/v1", "Broker")
    deliveries = [m["spec"]["delivery"] for m in [*brokers, *triggers(overlay)]]
    for delivery in deliveries:
        ref = delivery["deadLetterSink"]["ref"]
        assert delivery["deadLetterSink"]["uri"] == "/v1/dead-letter"
        sink = knative_service(ref["name"], overlay)
        assert visibility(sink) == "cluster-local"
        assert dead_letter_sink_enabled(sink, overlay)


def trigger_identity(trigger: dict) -> str:
    """The `sub` of the tokens the broker sends for `trigger`: Knative Eventing's OIDC service
    account of the Trigger (knative.dev/eventing pkg/auth GetOIDCServiceAccountNameForResource)."""
    metadata = trigger["metadata"]
    account = f"{metadata['name']}-oidc-eventing.knative.dev-trigger"
    return f"system:serviceaccount:{metadata['namespace']}:{account}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_trigger_delivers_with_a_token_its_destinations_accept(overlay):
    """Issue #10: a Knative Service announces no OIDC audience, so each Trigger names it for
    its subscriber and dead-letter sink, and each of those verifies tokens for that audience from
    the Trigger's identity (EventAuthSettings, as the deployed environment sets them)."""
    for trigger in triggers(overlay):
        spec = trigger["spec"]
        for destination in (spec["subscriber"], spec["delivery"]["deadLetterSink"]):
            service = knative_service(destination["ref"]["name"], overlay)
            accepted = settings_read_from(deployed_env(service, overlay), EventAuthSettings)
            assert accepted.enabled
            assert destination["audience"] == accepted.audience
            assert accepted.allows(trigger_identity(trigger))
            assert not accepted.allows(
                f"system:serviceaccount:{trigger['metadata']['namespace']}:default"
            )


def subscriber_stage(trigger: dict) -> str:
    return STAGE_OF_SERVICE[trigger["spec"]["subscriber"]["ref"]["name"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_stage_accepts_only_its_own_triggers_identities(overlay):
    """Both lanes of a stage are one function: each lane's Service accepts the tokens of its
    stage's Triggers, one per lane, and of no other stage's."""
    for trigger in triggers(overlay):
        name = trigger["spec"]["subscriber"]["ref"]["name"]
        accepted = settings_read_from(
            deployed_env(knative_service(name, overlay), overlay), EventAuthSettings
        )
        own = [t for t in triggers(overlay) if subscriber_stage(t) == subscriber_stage(trigger)]
        others = [t for t in triggers(overlay) if t not in own]
        assert len(own) == len(Lane)
        assert all(accepted.allows(trigger_identity(t)) for t in own)
        assert others and not any(accepted.allows(trigger_identity(t)) for t in others)


@pytest.mark.parametrize(
    "service",
    [s for s in knative_services() if visibility(s) == "public"],
    ids=lambda s: s["metadata"]["name"],
)
def test_no_public_service_serves_the_dead_letter_sink(service):
    assert not dead_letter_sink_enabled(service)


# What the dead-letter Service may set differently from the public status Service: the switch,
# its gunicorn sizing, and no dashboard login.
DEAD_LETTER_ENV_DIFFERENCES = {
    "STATUS_DEAD_LETTER_ENABLED",
    # Who may deliver dead letters: the Triggers' deadLetterSink audience and identities.
    "EVENT_AUTH_AUDIENCE",
    "EVENT_AUTH_SUBJECTS",
    "WEB_CONCURRENCY",
    "GUNICORN_THREADS",
    "ADMIN_PASSWORD",
    # Nobody logs in to the dead-letter sink: no password, so no session key.
    "ADMIN_SESSION_SECRET",
}


def test_the_dead_letter_service_is_the_status_function_with_only_its_settings_changed():
    status, sink = knative_service("status"), knative_service("status-dead-letter")
    public, private = container(status), container(sink)
    same = ("image", "ports", "envFrom", "securityContext", "volumeMounts", "readinessProbe")
    assert {key: private.get(key) for key in same} == {key: public.get(key) for key in same}
    assert (
        sink["spec"]["template"]["spec"]["volumes"] == status["spec"]["template"]["spec"]["volumes"]
    )
    env = {e["name"]: e for e in private["env"]}
    status_env = {e["name"]: e for e in public["env"]}
    differing = {
        name for name in env.keys() | status_env.keys() if env.get(name) != status_env.get(name)
    }
    assert differing <= DEAD_LETTER_ENV_DIFFERENCES


def test_redis_urls_in_the_template_are_tls_with_the_mounted_ca():
    secrets = read_env_file(EXAMPLE_SECRETS)
    for service in knative_services():
        (url_key,) = [key for name, (_, key) in secret_env(service).items() if name == "REDIS_URL"]
        url = secrets[url_key]
        assert url.startswith("rediss://")
        ca_path = re.search(r"ssl_ca_certs=([^&]+)", url)[1]
        mounts = {m["name"]: m["mountPath"] for m in container(service)["volumeMounts"]}
        assert ca_path == f"{mounts['redis-ca']}/ca.crt"


def redis_image_version(image: str) -> tuple[int, ...]:
    """The release of an official redis image tag, e.g. redis:7.4.7-bookworm -> (7, 4, 7)."""
    match = re.fullmatch(
        r"(?:docker\.io/)?(?:library/)?redis:(\d+)\.(\d+)\.(\d+)(?:-[\w.-]+)?(?:@.*)?", image
    )
    assert match, f"not a versioned redis image: {image!r}"
    return tuple(int(part) for part in match.groups())


# CVE-2025-21605 (unauthenticated output-buffer growth) was fixed in 7.4.3, CVE-2025-49844 (Lua
# use-after-free; the status store runs Lua scripts) in 7.4.6.
REDIS_FIXED = (7, 4, 6)


def test_redis_runs_a_release_with_the_2025_security_fixes():
    statefulset = find(rendered(), "apps/v1", "StatefulSet", "redis")
    (redis_container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert redis_image_version(redis_container["image"]) >= REDIS_FIXED


@pytest.mark.parametrize(
    ("image", "patched"),
    [
        ("redis:7.4.2-bookworm", False),
        ("redis:7.4.5", False),
        ("redis:7.4.6-alpine", True),
        ("redis:7.4.7-bookworm", True),
        ("redis:8.0.4", True),
    ],
)
def test_the_redis_version_check_reads_the_tag(image, patched):
    assert (redis_image_version(image) >= REDIS_FIXED) is patched


# -- settings ----------------------------------------------------------------------------------


def test_the_secret_template_holds_exactly_the_keys_the_manifests_read():
    assert set(read_env_file(EXAMPLE_SECRETS)) == referenced_secret_keys(list(rendered()))


# Read by libraries rather than by our code: Python's tempfile, the OpenTelemetry SDK, and
# boto3's credential chain (the Lambda invoke).
READ_BY_LIBRARIES = re.compile(r"TMPDIR|OTEL_\w+|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY")


@pytest.mark.parametrize("service", knative_services(), ids=lambda s: s["metadata"]["name"])
def test_every_setting_a_service_gets_is_one_the_code_reads(service):
    sources = "".join(
        path.read_text()
        for folder in ("functions", "eventing")
        for path in (ROOT / folder).rglob("*.py")
    )
    config = find(rendered(), "v1", "ConfigMap", "photo-pipeline")["data"]
    names = {*config, *literal_env(service), *secret_env(service)}
    unread = [
        name
        for name in sorted(names)
        if not READ_BY_LIBRARIES.fullmatch(name) and f'"{name}"' not in sources
    ]
    assert unread == []


@pytest.mark.parametrize("service", knative_services(), ids=lambda s: s["metadata"]["name"])
def test_every_service_loads_the_shared_settings(service):
    assert config_maps_loaded(service) == {"photo-pipeline"}


@pytest.mark.parametrize("service", knative_services(), ids=lambda s: s["metadata"]["name"])
def test_no_service_overrides_a_shared_setting_with_its_own_value(service):
    """Each setting has one home: a Service's `env` silently wins over the ConfigMap."""
    config = find(rendered(), "v1", "ConfigMap", "photo-pipeline")["data"]
    assert set(literal_env(service)) & set(config) == set()


class _RecordingEnviron(dict):
    """An empty environment that remembers every variable looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get(self, name: str, default: str | None = None) -> str | None:
        self.read.add(name)
        return default


def variables_read(settings: type) -> set[str]:
    """The environment variables `settings.from_env()` reads."""
    environ = _RecordingEnviron()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "environ", environ)
        settings.from_env()
    return environ.read - {"PYDANTIC_SETTINGS_DEBUG"}  # pydantic-settings' own switch


def test_the_embed_service_sets_every_embed_setting_itself():
    unset = variables_read(EmbedSettings) - set(deployed_env(knative_service("embed")))
    assert unset == set()


def test_the_deployed_embed_settings_are_productions():
    """The defaults are what the production batch job runs (docs/embedding.md), and the
    image bakes the default modules' files only."""
    deployed = settings_read_from(deployed_env(knative_service("embed")), EmbedSettings)
    # The input limits are sized for the pod (its memory budget, its gunicorn workers).
    assert deployed.replace(limits=EmbedSettings().limits) == EmbedSettings()


# -- wiring ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_trigger_delivers_to_a_service_in_the_manifests_with_a_dead_letter_sink(overlay):
    manifests = rendered(overlay)
    for trigger in triggers(overlay):
        spec = trigger["spec"]
        assert find(manifests, "eventing.knative.dev/v1", "Broker", spec["broker"])
        for destination in (spec["subscriber"], spec["delivery"]["deadLetterSink"]):
            ref = destination["ref"]
            assert find(manifests, ref["apiVersion"], ref["kind"], ref["name"])
        assert spec["delivery"]["deadLetterSink"]["uri"] == "/v1/dead-letter"


def test_the_sinkbinding_points_the_receiver_at_the_broker():
    (binding,) = of_kind(rendered(), "sources.knative.dev/v1", "SinkBinding")
    subject, sink = binding["spec"]["subject"], binding["spec"]["sink"]["ref"]
    assert (subject["kind"], subject["name"]) == ("Service", "b2-receiver")
    assert (sink["kind"], sink["name"]) == ("Broker", "photos")
    namespace = find(rendered(), "v1", "Namespace", "photos")
    assert namespace["metadata"]["labels"]["bindings.knative.dev/include"] == "true"


def test_the_kafka_overlay_makes_the_broker_a_kafka_broker_with_its_topic_config():
    manifests = rendered("knative/overlays/kafka-broker")
    broker = find(manifests, "eventing.knative.dev/v1", "Broker", "photos")
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == "Kafka"
    config = broker["spec"]["config"]
    topic = find(manifests, "v1", "ConfigMap", config["name"])
    assert topic["metadata"]["namespace"] == config["namespace"]
    assert int(topic["data"]["default.topic.replication.factor"]) >= 3
    assert broker["spec"]["delivery"] == find(rendered(), *broker_key(broker))["spec"]["delivery"]


def broker_key(broker: dict) -> tuple[str, str, str]:
    return broker["apiVersion"], broker["kind"], broker["metadata"]["name"]


def service_port(url: str) -> tuple[str, str, int]:
    """(service, namespace, port) of an in-cluster URL or host:port."""
    match = re.fullmatch(
        r"(?:https?://)?([^./:]+)\.([^./:]+)\.svc\.cluster\.local:(\d+)(/.*)?", url
    )
    assert match, url
    return match[1], match[2], int(match[3])


def assert_service_listens(url: str) -> None:
    name, namespace, port = service_port(url)
    service = find(rendered(), "v1", "Service", name)
    assert service is not None and service["metadata"]["namespace"] == namespace, url
    assert port in {p["port"] for p in service["spec"]["ports"]}, url


def test_functions_export_traces_to_the_collector_over_otlp_http():
    config = find(rendered(), "v1", "ConfigMap", "photo-pipeline")["data"]
    assert_service_listens(config["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert service_port(config["OTEL_EXPORTER_OTLP_ENDPOINT"])[2] == 4318


def test_the_collector_forwards_traces_to_jaeger():
    collector = find(rendered(), "v1", "ConfigMap", "otel-collector")
    config = yaml.safe_load(collector["data"]["config.yaml"])
    assert_service_listens(config["exporters"]["otlp/jaeger"]["endpoint"])
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["otlp/jaeger"]


@pytest.mark.parametrize("path", sorted((ROOT / "knative" / "cluster").glob("*.yaml")))
def test_knative_config_patches_are_valid_configmaps_of_knatives_namespaces(path):
    patch = yaml.safe_load(path.read_text())
    assert validation_errors(patch, ()) == []
    assert patch["metadata"]["namespace"] in {"knative-serving", "knative-eventing"}


@pytest.mark.parametrize("component", ["serving", "eventing"])
def test_knatives_own_spans_go_to_the_same_collector(component):
    path = ROOT / "knative" / "cluster" / f"{component}-config-observability.yaml"
    data = yaml.safe_load(path.read_text())["data"]
    assert data["tracing-protocol"] == "http/protobuf"
    assert data["tracing-endpoint"].endswith("/v1/traces")
    assert_service_listens(data["tracing-endpoint"])
    assert 0 < float(data["tracing-sampling-rate"]) <= 1


# -- alerts (knative/alerts/, applied where the Prometheus Operator runs) ---------------------

PROMETHEUS_RULE = ("monitoring.coreos.com/v1", "PrometheusRule")
SEVERITIES = {"warning", "critical"}
# Series a histogram or summary family exports besides its own name.
FAMILY_SUFFIXES = ("_bucket", "_sum", "_count")


def alert_rules() -> list[dict]:
    (rules,) = of_kind(rendered(ALERTS), *PROMETHEUS_RULE)
    return [rule for group in rules["spec"]["groups"] for rule in group["rules"]]


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects; ValueError when it is not PromQL."""
    names = set()

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expression), visit)
    return names


def exported_by_the_functions(metric: str) -> bool:
    sources = "".join(path.read_text() for path in (ROOT / "functions").rglob("*.py"))
    family = next((metric.removesuffix(s) for s in FAMILY_SUFFIXES if metric.endswith(s)), metric)
    return f'"{metric}"' in sources or f'"{family}"' in sources


def test_the_alerts_are_valid_for_their_kinds_in_the_pipelines_namespace():
    manifests = rendered(ALERTS)
    assert {(m["apiVersion"], m["kind"]) for m in manifests} == {
        PROMETHEUS_RULE,
        POD_MONITOR,
        # Lets Prometheus through knative/network/'s default deny.
        ("networking.k8s.io/v1", "NetworkPolicy"),
    }
    errors = {m["kind"]: validation_errors(m, manifests) for m in manifests}
    assert {kind: found for kind, found in errors.items() if found} == {}
    pipeline_namespace = {s["metadata"]["namespace"] for s in knative_services()}
    assert {m["metadata"]["namespace"] for m in manifests} == pipeline_namespace


def test_validation_catches_a_misspelled_alert_rule_field():
    (rules,) = copy.deepcopy(of_kind(rendered(ALERTS), *PROMETHEUS_RULE))
    rule = rules["spec"]["groups"][0]["rules"][0]
    rule["expression"] = rule.pop("expr")
    assert validation_errors(rules, ())


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_is_promql_over_metrics_the_functions_export(rule):
    names = metric_names(rule["expr"])
    assert names
    assert [name for name in sorted(names) if not exported_by_the_functions(name)] == []


def test_an_alert_on_a_metric_nobody_exports_is_caught():
    assert not exported_by_the_functions("photo_stage_latency_seconds")


def test_an_alert_expression_that_is_not_promql_is_caught():
    with pytest.raises(ValueError):
        metric_names("max by (stage (photo_status_store_up)")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_waits_a_while_and_says_how_bad_and_what_happened(rule):
    assert promql_parser.parse_duration(rule["for"]).total_seconds() > 0
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_alert_names_are_unique():
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))


def test_prometheus_scrapes_the_metrics_of_every_knative_service():
    (monitor,) = of_kind(rendered(ALERTS), *POD_MONITOR)
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    assert (expression["key"], expression["operator"]) == ("serving.knative.dev/service", "In")
    assert set(expression["values"]) == {s["metadata"]["name"] for s in knative_services()}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    # Knative names the user container's port so, whatever number it has.
    assert (endpoint["port"], endpoint["path"]) == ("user-port", "/metrics")
    assert promql_parser.parse_duration(endpoint["interval"]).total_seconds() > 0
