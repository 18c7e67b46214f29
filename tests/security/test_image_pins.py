"""Every third-party image is pinned by digest: a tag can be moved to other bytes by whoever
controls the registry, a digest cannot. The project's own images are pinned by scripts/deploy,
which writes the digest it pushed into the overlay it applies (tests/test_deploy.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import yaml

from tests.knative_manifests import ROOT, rendered

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
OWN_IMAGES = "photo-pipeline/"
OVERLAYS = ["knative", "knative/overlays/kafka-broker"]


def pod_images(manifest: dict) -> Iterator[str]:
    """The images of a manifest's pod template (Deployment, StatefulSet, Knative Service)."""
    pod = manifest.get("spec", {}).get("template", {}).get("spec", {})
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        yield container["image"]


def third_party(images: Iterator[str]) -> list[str]:
    return sorted({image for image in images if not image.startswith(OWN_IMAGES)})


def manifest_images(overlay: str) -> list[str]:
    return third_party(image for manifest in rendered(overlay) for image in pod_images(manifest))


def compose_images() -> list[str]:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    images = (service["image"] for service in services.values() if "image" in service)
    # ${VARIABLE:-default}: the default is what runs unless an operator overrides it.
    return third_party(re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", image) for image in images)


def dockerfile_base_images() -> list[str]:
    defaults = (
        match[1]
        for dockerfile in ROOT.glob("**/Dockerfile")
        if ".venv" not in dockerfile.parts
        for match in re.finditer(r"^ARG \w*IMAGE=(\S+)", dockerfile.read_text(), re.MULTILINE)
    )
    return third_party(defaults)


def test_a_tag_alone_is_not_a_pin():
    assert not DIGEST.search("redis:7.4.7-bookworm")
    assert DIGEST.search(f"redis:7.4.7@sha256:{'c6e4' * 16}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_third_party_image_in_the_manifests_is_pinned_by_digest(overlay):
    images = manifest_images(overlay)
    assert images, "no third-party image found: the walk over the manifests is broken"
    assert [image for image in images if not DIGEST.search(image)] == []


def test_every_third_party_image_in_compose_is_pinned_by_digest():
    images = compose_images()
    assert images
    assert [image for image in images if not DIGEST.search(image)] == []


def test_every_dockerfile_base_image_default_is_pinned_by_digest():
    images = dockerfile_base_images()
    assert images
    assert [image for image in images if not DIGEST.search(image)] == []
