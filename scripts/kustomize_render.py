"""Render a kustomization as `kubectl kustomize` does, for the subset of kustomize this project
uses, so that the tests render, validate and print the manifests where kubectl is not installed
(tests/test_manifests.py compares the two where it is). scripts/deploy does not use it: it
renders with kubectl's own kustomize.

Supported: `resources` (files and kustomization directories), `namespace`, `images`
(`newName`, `newTag`, `digest`), `patches` with `path` (strategic-merge patches of custom
resources: maps merge, lists are replaced, `null` deletes), `secretGenerator` with `envs` and
`literals` (`generatorOptions.disableNameSuffixHash: true` only), and kustomize's output
order. Anything else in a kustomization is an error, never silently ignored.

    python -m scripts.kustomize_render knative/
"""

from __future__ import annotations

import argparse
import base64
import copy
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
        "secretGenerator",
        "generatorOptions",
    }
)
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

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


class KustomizationError(ValueError):
    """A kustomization this renderer cannot render exactly as kustomize would."""


def render(path: str | Path) -> list[Manifest]:
    """The manifests of the kustomization in directory `path`, in kustomize's output order."""
    return sorted(_build(Path(path)), key=_output_order)


def dump(manifests: list[Manifest]) -> str:
    """Multi-document YAML, as `kubectl kustomize` prints it."""
    return yaml.safe_dump_all(manifests, sort_keys=True, default_flow_style=False)


def _build(directory: Path) -> list[Manifest]:
    kustomization = _load_kustomization(directory)
    manifests = [
        manifest
        for resource in kustomization.get("resources", [])
        for manifest in _load_resource(directory / resource)
    ]
    options = kustomization.get("generatorOptions", {})
    for generator in kustomization.get("secretGenerator", []):
        manifests.append(_generate_secret(directory, generator, options))
    for patch in kustomization.get("patches", []):
        _apply_patch(manifests, directory, patch)
    if "namespace" in kustomization:
        for manifest in manifests:
            if manifest["kind"] not in CLUSTER_SCOPED_KINDS:
                manifest["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        for manifest in manifests:
            _set_image(manifest, image)
    return manifests


def _load_kustomization(directory: Path) -> Mapping[str, Any]:
    for name in KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            kustomization = yaml.safe_load(path.read_text()) or {}
            unsupported = set(kustomization) - SUPPORTED_FIELDS
            if unsupported:
                raise KustomizationError(f"{path}: unsupported fields {sorted(unsupported)}")
            return kustomization
    raise KustomizationError(f"{directory} has no kustomization.yaml")


def _load_resource(path: Path) -> list[Manifest]:
    if path.is_dir():
        return _build(path)
    if not path.is_file():
        raise KustomizationError(f"resource {path} does not exist")
    manifests = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
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


def _apply_patch(manifests: list[Manifest], directory: Path, patch: Mapping[str, Any]) -> None:
    if set(patch) != {"path"}:
        raise KustomizationError(f"only `patches: - path: FILE` is supported, got {dict(patch)}")
    document = yaml.safe_load((directory / patch["path"]).read_text())
    targets = [manifest for manifest in manifests if _is_patch_target(manifest, document)]
    if len(targets) != 1:
        raise KustomizationError(f"patch {patch['path']} matches {len(targets)} resources")
    patched = _merge(targets[0], document)
    targets[0].clear()
    targets[0].update(patched)


def _is_patch_target(manifest: Manifest, patch: Mapping[str, Any]) -> bool:
    metadata = patch["metadata"]
    return (
        manifest["apiVersion"] == patch["apiVersion"]
        and manifest["kind"] == patch["kind"]
        and manifest["metadata"]["name"] == metadata["name"]
        and metadata.get("namespace") in (None, manifest["metadata"].get("namespace"))
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
