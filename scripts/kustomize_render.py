"""Render a kustomization as `kubectl kustomize` does, for the subset of kustomize this project
uses, so that the tests render, validate and print the manifests where kubectl is not installed
(tests/test_manifests.py compares the two where it is). scripts/deploy does not use it: it
renders with kubectl's own kustomize.

Supported: `resources` (files and kustomization directories, the same directory more than
once; two resources with one id are an error, as in kustomize), `namespace`, `images`
(`newName`, `newTag`, `digest`), `patches` with `path` (strategic-merge patches of custom
resources: maps merge, lists are replaced, `null` deletes; the patch's target is found by any
name and namespace it has had, as kustomize finds it, and must be unique) or with `path` and a
`target` (by `group`, `version`, `kind` and `name`: every resource it selects), `nameSuffix`
(on Knative Services only: `metadata.name` gets the suffix, Namespaces and CRDs keep theirs,
and since this renderer does not rewrite references to a renamed resource, a suffix on any
other kind, or a field kustomize would rewrite to a renamed Service, is an error),
`secretGenerator` with `envs`
and `literals` (`generatorOptions.disableNameSuffixHash: true` only), and kustomize's order:
patches, namespace, nameSuffix, images within a kustomization, its output order overall.
Anything else in a kustomization is an error, never silently ignored.

    python -m scripts.kustomize_render knative/
"""

from __future__ import annotations

import argparse
import base64
import copy
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from scripts.env_file import read_env_file

Manifest = dict[str, Any]

SUPPORTED_FIELDS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "images",
        "patches",
        "nameSuffix",
        "secretGenerator",
        "generatorOptions",
    }
)
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# libyaml's parser where PyYAML has it (ten times faster, the same documents).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Kinds that live outside namespaces, among those a kustomization here may hold.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "ClusterIssuer",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    }
)
# kustomize's "legacy" output order: these kinds first, in this order, then every other kind,
# then the webhook configurations.
_ORDER_FIRST = (
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
)
_ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
_BASE64_LINE = 70
# (group, kind) that kustomize's nameSuffix leaves unrenamed; None: any group.
_SUFFIX_SKIPPED = (
    (None, "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    (None, "Namespace"),
)
# What nameSuffix may rename here: kinds that nothing refers to by a field kustomize rewrites,
# except the core Service's referrers below (its nameReference rows select any group's
# `Service`, Knative's too), which render() checks.
_SUFFIXABLE = frozenset({("serving.knative.dev", "Service")})
# Kinds whose fields kustomize points at a renamed Service, besides StatefulSet's serviceName.
_SERVICE_REFERRERS = frozenset(
    {
        "Ingress",
        "APIService",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "HTTPRoute",
    }
)


class KustomizationError(ValueError):
    """A kustomization this renderer cannot render exactly as kustomize would."""


class _PreviousIds(dict[int, list[tuple[str, str]]]):
    """Each manifest's earlier (name, namespace) ids, by id() of the manifest while a render
    holds it: kustomize finds a patch's target by any of them."""

    def store(self, manifest: Manifest) -> None:
        metadata = manifest["metadata"]
        self.setdefault(id(manifest), []).append((metadata["name"], metadata.get("namespace", "")))

    def of(self, manifest: Manifest) -> list[tuple[str, str]]:
        metadata = manifest["metadata"]
        return [*self.get(id(manifest), []), (metadata["name"], metadata.get("namespace", ""))]


def render(path: str | Path) -> list[Manifest]:
    """The manifests of the kustomization in directory `path`, in kustomize's output order."""
    previous = _PreviousIds()
    manifests = _build(Path(path), previous)
    _refuse_references_to_renamed(manifests, previous)
    return sorted(manifests, key=_output_order)


def dump(manifests: list[Manifest]) -> str:
    """Multi-document YAML, as `kubectl kustomize` prints it."""
    return yaml.safe_dump_all(manifests, sort_keys=True, default_flow_style=False)


def _build(directory: Path, previous: _PreviousIds) -> list[Manifest]:
    kustomization = _load_kustomization(directory)
    manifests: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        for manifest in _load_resource(directory / resource, previous):
            _append(manifests, manifest, directory)
    options = kustomization.get("generatorOptions", {})
    for generator in kustomization.get("secretGenerator", []):
        _append(manifests, _generate_secret(directory, generator, options), directory)
    for patch in kustomization.get("patches", []):
        _apply_patch(manifests, directory, patch, previous)
    if "namespace" in kustomization:
        for manifest in manifests:
            previous.store(manifest)
            if manifest["kind"] not in CLUSTER_SCOPED_KINDS:
                manifest["metadata"]["namespace"] = kustomization["namespace"]
    if kustomization.get("nameSuffix"):
        _add_name_suffix(manifests, directory, kustomization["nameSuffix"], previous)
    for image in kustomization.get("images", []):
        for manifest in manifests:
            _set_image(manifest, image)
    return manifests


def _current_id(manifest: Manifest) -> tuple[str, str, str, str]:
    metadata = manifest["metadata"]
    kind = manifest["kind"]
    return manifest["apiVersion"], kind, _effective_namespace(metadata, kind), metadata["name"]


def _effective_namespace(metadata: Mapping[str, Any], kind: str) -> str:
    """The namespace kustomize compares ids by: none for cluster-scoped kinds, and an unset
    one is `default`."""
    if kind in CLUSTER_SCOPED_KINDS:
        return ""
    return metadata.get("namespace") or "default"


def _append(manifests: list[Manifest], manifest: Manifest, directory: Path) -> None:
    if any(_current_id(other) == _current_id(manifest) for other in manifests):
        raise KustomizationError(
            f"{directory}: may not add resource with an already registered id"
            f" {manifest['kind']}/{manifest['metadata']['name']}"
        )
    manifests.append(manifest)


def _group(manifest: Manifest) -> str:
    return manifest["apiVersion"].rpartition("/")[0]


def _add_name_suffix(
    manifests: list[Manifest], directory: Path, suffix: Any, previous: _PreviousIds
) -> None:
    if not isinstance(suffix, str):
        raise KustomizationError(f"{directory}: nameSuffix must be a string, got {suffix!r}")
    for manifest in manifests:
        group, kind = _group(manifest), manifest["kind"]
        if any(kind == k and g in (None, group) for g, k in _SUFFIX_SKIPPED):
            continue
        if (group, kind) not in _SUFFIXABLE:
            raise KustomizationError(
                f"{directory}: nameSuffix on {manifest['apiVersion']} {kind}"
                f" {manifest['metadata']['name']} is not supported (kustomize would also rewrite"
                " the references to it); only Knative Services"
            )
        previous.store(manifest)
        manifest["metadata"]["name"] += suffix


def _refuse_references_to_renamed(manifests: list[Manifest], previous: _PreviousIds) -> None:
    """kustomize points fields that name a renamed resource at its new name; this renderer
    renames only Knative Services, and refuses what kustomize would rewrite to one."""
    renamed = {
        name
        for manifest in manifests
        for name, _ in previous.of(manifest)
        if name != manifest["metadata"]["name"]
    }
    if not renamed:
        return
    for manifest in manifests:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if kind in _SERVICE_REFERRERS:
            raise KustomizationError(
                f"{kind} {name} beside a renamed Service: kustomize would rewrite its references"
                " to renamed Services, which this renderer does not"
            )
        if kind == "StatefulSet" and manifest.get("spec", {}).get("serviceName") in renamed:
            raise KustomizationError(
                f"StatefulSet {name} names renamed Service {manifest['spec']['serviceName']!r}:"
                " kustomize would rewrite it, this renderer does not"
            )


def _load_kustomization(directory: Path) -> Mapping[str, Any]:
    for name in KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            kustomization = yaml.load(path.read_text(), Loader=_LOADER) or {}
            unsupported = set(kustomization) - SUPPORTED_FIELDS
            if unsupported:
                raise KustomizationError(f"{path}: unsupported fields {sorted(unsupported)}")
            return kustomization
    raise KustomizationError(f"{directory} has no kustomization.yaml")


def _load_resource(path: Path, previous: _PreviousIds) -> list[Manifest]:
    if path.is_dir():
        return _build(path, previous)
    if not path.is_file():
        raise KustomizationError(f"resource {path} does not exist")
    manifests = [doc for doc in yaml.load_all(path.read_text(), Loader=_LOADER) if doc is not None]
    for manifest in manifests:
        if not {"apiVersion", "kind", "metadata"} <= set(manifest):
            raise KustomizationError(f"{path}: a document lacks apiVersion, kind or metadata")
    return manifests


def _generate_secret(
    directory: Path, generator: Mapping[str, Any], options: Mapping[str, Any]
) -> Manifest:
    if not options.get("disableNameSuffixHash"):
        raise KustomizationError("secretGenerator needs generatorOptions.disableNameSuffixHash")
    unsupported = set(generator) - {"name", "namespace", "envs", "literals", "type"}
    if unsupported:
        raise KustomizationError(f"secretGenerator: unsupported fields {sorted(unsupported)}")
    pairs = [
        pair
        for env_file in generator.get("envs", [])
        for pair in read_env_file(directory / env_file).items()
    ]
    pairs += [literal.split("=", 1) for literal in generator.get("literals", [])]
    metadata = {"name": generator["name"]}
    if "namespace" in generator:
        metadata["namespace"] = generator["namespace"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": generator.get("type", "Opaque"),
        "data": {key: _base64(value) for key, value in pairs},
    }


def _base64(value: str) -> str:
    """Base64 as kustomize writes it: past 70 characters, in lines of 70, each ending in \\n."""
    encoded = base64.b64encode(value.encode()).decode()
    if len(encoded) <= _BASE64_LINE:
        return encoded
    return "".join(
        encoded[i : i + _BASE64_LINE] + "\n" for i in range(0, len(encoded), _BASE64_LINE)
    )


def _apply_patch(
    manifests: list[Manifest], directory: Path, patch: Mapping[str, Any], previous: _PreviousIds
) -> None:
    """A strategic-merge patch from `path`: onto the resource it names, or, with `target`,
    onto every resource the target selects (its own name then does not matter)."""
    if not {"path"} <= set(patch) <= {"path", "target"}:
        raise KustomizationError(f"only `patches: - path: FILE [target]` is supported: {patch}")
    document = yaml.load((directory / patch["path"]).read_text(), Loader=_LOADER)
    if "target" in patch:
        targets = [m for m in manifests if _is_selected(m, patch["target"], previous)]
    else:
        targets = [m for m in manifests if _is_patch_target(m, document, previous)]
        if len(targets) != 1:
            raise KustomizationError(f"patch {patch['path']} matches {len(targets)} resources")
    for target in targets:
        # A targeted patch is applied as if it named its target.
        names = {
            key: target["metadata"][key]
            for key in ("name", "namespace")
            if key in target["metadata"]
        }
        patched = _merge(
            target, {**document, "metadata": {**document.get("metadata", {}), **names}}
        )
        target.clear()
        target.update(patched)


def _is_selected(manifest: Manifest, target: Mapping[str, Any], previous: _PreviousIds) -> bool:
    """Whether a patch's `target` (its `group`, `version`, `kind` and `name`; no selectors)
    selects `manifest`, its name matched against every name it has had."""
    if not set(target) <= {"group", "version", "kind", "name"}:
        raise KustomizationError(f"patch targets by group, version, kind and name only: {target}")
    if re.search(r"[\^$.*+?()\[\]{}|\\]", target.get("name", "")):
        raise KustomizationError(f"a target's name is a regular expression in kustomize: {target}")
    group, _, version = manifest["apiVersion"].rpartition("/")
    wanted = {"group": group, "version": version, "kind": manifest["kind"]}
    if any(target[key] != value for key, value in wanted.items() if key in target):
        return False
    return "name" not in target or any(name == target["name"] for name, _ in previous.of(manifest))


def _is_patch_target(manifest: Manifest, patch: Mapping[str, Any], previous: _PreviousIds) -> bool:
    """Whether `patch` names `manifest` by any id it has had (kustomize's GetById): a patch
    naming a Service that a nameSuffix copied matches both the Service and its copy."""
    if (manifest["apiVersion"], manifest["kind"]) != (patch["apiVersion"], patch["kind"]):
        return False
    kind = manifest["kind"]
    wanted = (patch["metadata"]["name"], _effective_namespace(patch["metadata"], kind))
    return any(
        (name, _effective_namespace({"namespace": namespace}, kind)) == wanted
        for name, namespace in previous.of(manifest)
    )


def _merge(base: Any, patch: Any) -> Any:
    """A strategic-merge patch of a custom resource: maps merge key by key, anything else
    (lists included: custom resources declare no merge keys) is replaced, `null` deletes."""
    if not (isinstance(base, dict) and isinstance(patch, dict)):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge(merged.get(key), value)
    return merged


def _set_image(node: Any, image: Mapping[str, Any]) -> None:
    """Rewrite every `containers`/`initContainers` image named `image["name"]`, at any depth."""
    if isinstance(node, list):
        for item in node:
            _set_image(item, image)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("containers", "initContainers") and isinstance(value, list):
            for container in value:
                if isinstance(container, dict) and "image" in container:
                    container["image"] = _replaced_image(container["image"], image)
        _set_image(value, image)


def _replaced_image(reference: str, image: Mapping[str, Any]) -> str:
    name, tag, digest = _split_image(reference)
    if name != image["name"]:
        return reference
    name = image.get("newName", name)
    if "digest" in image:
        return f"{name}@{image['digest']}"
    tag = image.get("newTag", tag)
    if tag:
        return f"{name}:{tag}"
    return f"{name}@{digest}" if digest else name


def _split_image(reference: str) -> tuple[str, str | None, str | None]:
    name, _, digest = reference.partition("@")
    last_part = name.rsplit("/", 1)[-1]
    if ":" in last_part:
        name, tag = name.rsplit(":", 1)
        return name, tag, digest or None
    return name, None, digest or None


def _output_order(manifest: Manifest) -> tuple[int, str, str, str]:
    kind = manifest["kind"]
    if kind in _ORDER_FIRST:
        rank = _ORDER_FIRST.index(kind)
    elif kind in _ORDER_LAST:
        rank = len(_ORDER_FIRST) + 1 + _ORDER_LAST.index(kind)
    else:
        rank = len(_ORDER_FIRST)
    group, _, version = manifest["apiVersion"].rpartition("/")
    # kustomize writes the core group as "~G", which sorts after every named group.
    gvk = f"{group or '~G'}_{version}_{kind}"
    metadata = manifest["metadata"]
    return rank, gvk, metadata.get("namespace", ""), metadata["name"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    try:
        sys.stdout.write(dump(render(args.directory)))
    except KustomizationError as exc:
        sys.exit(f"kustomize_render: {exc}")


if __name__ == "__main__":
    main()
