"""Reading and validating the rendered Knative deployment, for the manifest and deploy tests.

Each document is checked against the schema its kind has: the JSON Schemas of Knative's and the
Prometheus Operator's custom resources (converted from their CRDs, with provenance, in
tests/schemas/), Kubernetes' OpenAPI schemas for the standard kinds (kubernetes-validate,
strict: unknown fields fail), and, for cert-manager's kinds and the PodMonitor, whose schemas
are not kept here, the fields this project relies on.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

from scripts.kustomize_render import render

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "tests" / "schemas"
OVERLAYS = ("knative", "knative/overlays/kafka-broker")
# Applied on its own, where the Prometheus Operator runs (scripts/deploy --alerts).
ALERTS = "knative/alerts"
# The oldest Kubernetes minor that Vultr Kubernetes Engine offers at the time of writing.
KUBERNETES_VERSION = "1.33.0"
CUSTOM_RESOURCE_SCHEMA_FILES = {
    ("serving.knative.dev/v1", "Service"): "knative/serving.knative.dev_v1_Service.json",
    ("eventing.knative.dev/v1", "Broker"): "knative/eventing.knative.dev_v1_Broker.json",
    ("eventing.knative.dev/v1", "Trigger"): "knative/eventing.knative.dev_v1_Trigger.json",
    ("sources.knative.dev/v1", "SinkBinding"): "knative/sources.knative.dev_v1_SinkBinding.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): (
        "prometheus-operator/monitoring.coreos.com_v1_PrometheusRule.json"
    ),
}
POD_MONITOR = ("monitoring.coreos.com/v1", "PodMonitor")
STANDARD_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("scheduling.k8s.io/v1", "PriorityClass"),
}
KSVC = ("serving.knative.dev/v1", "Service")

Manifest = dict[str, Any]


@cache
def rendered(overlay: str = "knative") -> tuple[Manifest, ...]:
    return tuple(render(ROOT / overlay))


def validation_errors(manifest: Manifest, manifests: tuple[Manifest, ...]) -> list[str]:
    """What is invalid in `manifest`, in words; empty when it is valid."""
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    if key in CUSTOM_RESOURCE_SCHEMA_FILES:
        schema = _schema(CUSTOM_RESOURCE_SCHEMA_FILES[key])
        return [
            error.message for error in jsonschema.Draft202012Validator(schema).iter_errors(manifest)
        ]
    if key in STANDARD_KINDS:
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            return [exc.message]
        return []
    if key[0] == "cert-manager.io/v1":
        return _cert_manager_errors(manifest, manifests)
    if key == POD_MONITOR:
        return _pod_monitor_errors(manifest)
    return [f"no schema for {key}"]


@cache
def _schema(path: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / path).read_text())


def _pod_monitor_errors(manifest: Manifest) -> list[str]:
    """The PodMonitor fields this project sets, as the Prometheus Operator's CRD types them."""
    spec = manifest.get("spec", {})
    errors = [
        f"PodMonitor spec.{field} is not one this project uses"
        for field in sorted(set(spec) - {"selector", "podMetricsEndpoints"})
    ]
    selector = spec.get("selector", {})
    if not (selector.get("matchLabels") or selector.get("matchExpressions")):
        errors.append("PodMonitor selects no pods (spec.selector is empty)")
    for expression in selector.get("matchExpressions", []):
        if expression.get("operator") not in {"In", "NotIn", "Exists", "DoesNotExist"}:
            errors.append(f"PodMonitor selector operator {expression.get('operator')!r}")
    endpoints = spec.get("podMetricsEndpoints") or []
    if not endpoints:
        errors.append("PodMonitor has no podMetricsEndpoints")
    for endpoint in endpoints:
        if set(endpoint) - {"port", "path", "interval"}:
            errors.append(f"PodMonitor endpoint fields {sorted(endpoint)}")
        if not isinstance(endpoint.get("port"), str) or not endpoint.get("path", "").startswith(
            "/"
        ):
            errors.append(f"PodMonitor endpoint needs a port name and a path: {endpoint}")
    return errors


def _cert_manager_errors(manifest: Manifest, manifests: tuple[Manifest, ...]) -> list[str]:
    spec = manifest.get("spec", {})
    if manifest["kind"] == "Issuer":
        kinds = {"selfSigned", "ca", "acme", "vault", "venafi"} & set(spec)
        return [] if len(kinds) == 1 else [f"an Issuer has one issuer type, got {sorted(kinds)}"]
    if manifest["kind"] != "Certificate":
        return [f"unexpected cert-manager kind {manifest['kind']}"]
    errors = [
        f"Certificate lacks spec.{field}"
        for field in ("secretName", "issuerRef")
        if field not in spec
    ]
    if not (spec.get("dnsNames") or spec.get("commonName")):
        errors.append("Certificate names no dnsNames or commonName")
    issuer = spec.get("issuerRef", {})
    if (
        find(manifests, "cert-manager.io/v1", issuer.get("kind", "Issuer"), issuer.get("name"))
        is None
    ):
        errors.append(f"Certificate's issuer {issuer} is not in the manifests")
    return errors


def find(
    manifests: tuple[Manifest, ...], api_version: str, kind: str, name: str | None
) -> Manifest | None:
    return next(
        (
            manifest
            for manifest in manifests
            if (manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"])
            == (api_version, kind, name)
        ),
        None,
    )


def of_kind(manifests: tuple[Manifest, ...], api_version: str, kind: str) -> list[Manifest]:
    return [m for m in manifests if (m["apiVersion"], m["kind"]) == (api_version, kind)]


def knative_service(name: str, overlay: str = "knative") -> Manifest:
    service = find(rendered(overlay), *KSVC, name)
    assert service is not None, f"no Knative Service {name}"
    return service


def knative_services(overlay: str = "knative") -> list[Manifest]:
    return of_kind(rendered(overlay), *KSVC)


def container(service: Manifest) -> dict[str, Any]:
    (only,) = service["spec"]["template"]["spec"]["containers"]
    return only


def annotations(service: Manifest) -> dict[str, str]:
    return service["spec"]["template"].get("metadata", {}).get("annotations", {})


def literal_env(service: Manifest) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(service).get("env", []) if "value" in e}


def secret_env(service: Manifest) -> dict[str, tuple[str, str]]:
    """Env name -> (Secret name, key), for every variable read from a Secret."""
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container(service).get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def config_maps_loaded(service: Manifest) -> set[str]:
    return {
        source["configMapRef"]["name"]
        for source in container(service).get("envFrom", [])
        if "configMapRef" in source
    }


def triggers(overlay: str = "knative") -> list[Manifest]:
    return of_kind(rendered(overlay), "eventing.knative.dev/v1", "Trigger")
