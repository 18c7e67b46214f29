"""Issue #10, "Nobody in", proven on the rendered manifests without a cluster: the photos
namespace is closed by NetworkPolicies except for the paths the pipeline uses (checked with a
small evaluator of NetworkPolicy's semantics), Eventing authenticates senders with OIDC, and
TLS is on by default in the Knative settings scripts/deploy applies and verifies."""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from scripts.deploy import CLUSTER_PATCHES
from tests.knative_manifests import ALERTS, OVERLAYS, of_kind, rendered, validation_errors

NAMESPACE = "photos"
POLICY = ("networking.k8s.io/v1", "NetworkPolicy")
FUNCTIONS = ("b2-receiver", "thumbnail", "embed", "status", "status-dead-letter")


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.244.1.10"  # a pod address: inside the cluster's private ranges


@dataclass(frozen=True)
class Address:
    ip: str


def function(name: str) -> Pod:
    return Pod(NAMESPACE, {"serving.knative.dev/service": name})


REDIS = Pod(NAMESPACE, {"app.kubernetes.io/name": "redis"})
OTEL_COLLECTOR = Pod("observability", {"app.kubernetes.io/name": "otel-collector"})
KOURIER = Pod("kourier-system", {"app": "3scale-kourier-gateway"})
ACTIVATOR = Pod("knative-serving", {"app": "activator"})
BROKER_FILTER = Pod("knative-eventing", {"app.kubernetes.io/component": "broker-filter"})
BROKER_INGRESS = Pod("knative-eventing", {"app.kubernetes.io/component": "broker-ingress"})
KUBE_DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
STRANGER = Pod("default", {"app": "anything"})
NEIGHBOUR = Pod(NAMESPACE, {"app": "debug-shell"})
B2 = Address("149.137.128.10")  # public addresses, as B2's and Lambda's are
LAMBDA = Address("52.94.1.1")


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Kubernetes' label selector semantics (an empty selector selects everything)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if not {
            "In": present and labels.get(key) in (values or []),
            "NotIn": not present or labels[key] not in (values or []),
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}


def peer_matches(peer: dict, policy_namespace: str, other: Pod | Address) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(other.ip)
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(excluded) for excluded in block.get("except", [])
        )
    if isinstance(other, Address):
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespace_labels(other.namespace)):
            return False
    elif other.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector", {}), other.labels)


def port_matches(ports: list[dict] | None, port: int, protocol: str) -> bool:
    return not ports or any(
        p.get("port") in (None, port) and p.get("protocol", "TCP") == protocol for p in ports
    )


def allowed(
    policies: list[dict],
    direction: str,
    pod: Pod,
    other: Pod | Address,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether `pod` may receive from (Ingress) or send to (Egress) `other` on `port`."""
    peers_key = "from" if direction == "Ingress" else "to"
    rules_key = direction.lower()
    isolating = [
        p
        for p in policies
        if p["metadata"].get("namespace") == pod.namespace
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], pod.labels)
    ]
    if not isolating:
        return True
    return any(
        port_matches(rule.get("ports"), port, protocol)
        and (
            not rule.get(peers_key)
            or any(
                peer_matches(peer, p["metadata"]["namespace"], other) for peer in rule[peers_key]
            )
        )
        for p in isolating
        for rule in p["spec"].get(rules_key, [])
    )


def connects(policies: list[dict], source: Pod, target: Pod | Address, port: int, protocol="TCP"):
    """A connection needs the source's egress and, for a pod, the target's ingress allowed."""
    out = allowed(policies, "Egress", source, target, port, protocol)
    if isinstance(target, Address):
        return out
    return out and allowed(policies, "Ingress", target, source, port, protocol)


@pytest.fixture(params=OVERLAYS)
def policies(request) -> list[dict]:
    return of_kind(rendered(request.param), *POLICY)


# -- the namespace is closed ---------------------------------------------------------------------


def test_the_namespace_denies_all_ingress_and_egress_by_default(policies):
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert deny and all(p["metadata"]["namespace"] == NAMESPACE for p in policies)


@pytest.mark.parametrize("target", FUNCTIONS)
@pytest.mark.parametrize("source", [STRANGER, NEIGHBOUR], ids=["other namespace", "same ns"])
def test_no_stray_pod_reaches_a_function_or_redis(policies, source, target):
    assert not connects(policies, source, function(target), 8012)
    assert not connects(policies, source, function(target), 8080)
    assert not connects(policies, source, REDIS, 6379)


@pytest.mark.parametrize("target", ["b2-receiver", "status"])
def test_the_ingress_gateway_and_activator_reach_the_public_services(policies, target):
    assert allowed(policies, "Ingress", function(target), KOURIER, 8012)
    assert allowed(policies, "Ingress", function(target), ACTIVATOR, 8012)
    assert not allowed(policies, "Ingress", function(target), BROKER_FILTER, 8012)


def test_lets_encrypt_reaches_cert_managers_challenge_solver_through_the_gateway(policies):
    solver = Pod(NAMESPACE, {"acme.cert-manager.io/http01-solver": "true"})
    assert allowed(policies, "Ingress", solver, KOURIER, 8089)
    assert not allowed(policies, "Ingress", solver, STRANGER, 8089)


@pytest.mark.parametrize("target", ["thumbnail", "embed", "status-dead-letter"])
def test_only_the_eventing_data_plane_and_knative_reach_the_private_services(policies, target):
    for sender in (BROKER_FILTER, KOURIER, ACTIVATOR):
        assert allowed(policies, "Ingress", function(target), sender, 8012)
    assert not allowed(policies, "Ingress", function(target), STRANGER, 8012)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_function_reaches_redis_dns_and_the_collector(policies, name):
    assert connects(policies, function(name), REDIS, 6379)
    assert not connects(policies, function(name), REDIS, 6380)
    assert connects(policies, function(name), KUBE_DNS, 53, "UDP")
    assert connects(policies, function(name), KUBE_DNS, 53, "TCP")
    assert connects(policies, function(name), OTEL_COLLECTOR, 4318)


@pytest.mark.parametrize("name", ["thumbnail", "embed", "status", "status-dead-letter"])
def test_the_stages_reach_b2_and_lambda_over_https_only(policies, name):
    for service in (B2, LAMBDA):
        assert connects(policies, function(name), service, 443)
        assert not connects(policies, function(name), service, 80)
    # The internet rule is no way into the cluster: pod, Service and node addresses are private.
    for inside in ("10.96.0.1", "10.244.3.7", "172.16.0.5", "192.168.1.1"):
        assert not connects(policies, function(name), Address(inside), 443)


API_SERVER = Address("10.0.0.10")  # the API server's endpoint, behind the `kubernetes` Service


@pytest.mark.parametrize("name", ["thumbnail", "embed", "status-dead-letter"])
def test_the_event_receivers_reach_the_api_servers_jwks(policies, name):
    # Issue #10: they verify the broker's OIDC tokens with the service-account issuer's keys.
    assert connects(policies, function(name), API_SERVER, 6443)
    assert not connects(policies, function(name), API_SERVER, 80)


@pytest.mark.parametrize("name", ["status", "b2-receiver"])
def test_only_the_event_receivers_reach_the_api_server(policies, name):
    assert not connects(policies, function(name), API_SERVER, 6443)


def test_only_the_receiver_reaches_the_broker_ingress(policies):
    assert connects(policies, function("b2-receiver"), BROKER_INGRESS, 8080)
    assert connects(policies, function("b2-receiver"), BROKER_INGRESS, 8443)
    assert not connects(policies, function("thumbnail"), BROKER_INGRESS, 8080)
    assert not connects(policies, function("b2-receiver"), B2, 443)


def test_redis_calls_nobody(policies):
    for target in (B2, KUBE_DNS, OTEL_COLLECTOR, function("status")):
        assert not connects(policies, REDIS, target, 443 if isinstance(target, Address) else 53)


def test_the_evaluator_sees_that_no_policy_means_open():
    assert connects([], STRANGER, REDIS, 6379)


def test_validation_catches_a_misspelled_networkpolicy_field():
    manifests = rendered()
    policy = copy.deepcopy(of_kind(manifests, *POLICY)[0])
    policy["spec"]["podselector"] = policy["spec"].pop("podSelector")
    assert validation_errors(policy, manifests)


def test_every_policy_file_explains_each_policy():
    for path in sorted(
        (Path(__file__).resolve().parents[2] / "knative" / "network").glob("*.yaml")
    ):
        if path.name == "kustomization.yaml":
            continue
        for document in path.read_text().split("\n---\n"):
            assert document.lstrip().startswith("#"), f"{path.name}: a policy without its why"


# -- Knative's cluster settings: OIDC and TLS by default --------------------------------------


def cluster_setting(namespace: str, name: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in sorted(CLUSTER_PATCHES.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        if (document["metadata"]["namespace"], document["metadata"]["name"]) == (namespace, name):
            merged |= document["data"]
    return merged


def test_eventing_authenticates_senders_with_oidc():
    assert cluster_setting("knative-eventing", "config-features")["authentication-oidc"] == (
        "enabled"
    )


def test_eventing_transport_encryption_is_strict():
    assert cluster_setting("knative-eventing", "config-features")["transport-encryption"] == (
        "strict"
    )


def test_serving_serves_tls_everywhere_and_redirects_http():
    network = cluster_setting("knative-serving", "config-network")
    assert network == network | {
        "external-domain-tls": "Enabled",
        "http-protocol": "Redirected",
        "cluster-local-domain-tls": "Enabled",
        "system-internal-tls": "Enabled",
    }


def test_every_certificate_kind_has_a_cluster_issuer():
    certmanager = cluster_setting("knative-serving", "config-certmanager")
    for key in ("issuerRef", "clusterLocalIssuerRef", "systemInternalIssuerRef"):
        reference = yaml.safe_load(certmanager[key])
        assert reference["kind"] == "ClusterIssuer" and reference["name"]


@pytest.mark.parametrize("path", sorted(CLUSTER_PATCHES.glob("*.yaml")), ids=lambda p: p.name)
def test_cluster_settings_are_valid_configmaps_with_string_values(path):
    document = yaml.safe_load(path.read_text())
    assert validation_errors(document, ()) == []
    assert all(isinstance(value, str) for value in document["data"].values())


def test_prometheus_may_scrape_the_functions_when_alerts_are_applied():
    scraping = of_kind(rendered(ALERTS), *POLICY) + of_kind(rendered(), *POLICY)
    prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    for name in FUNCTIONS:
        assert allowed(scraping, "Ingress", function(name), prometheus, 8080)
    assert not allowed(
        of_kind(rendered(), *POLICY), "Ingress", function("status"), prometheus, 8080
    )
