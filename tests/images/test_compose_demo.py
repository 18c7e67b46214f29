"""Issue #11: `make demo-compose` runs the same demo against docker-compose.yml, every part a
container from the images, ends with the same `demo:` line, and leaves no container behind."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.knative_manifests import ROOT

pytestmark = pytest.mark.images


def test_demo_against_compose_accounts_for_every_photo_and_brings_the_stack_down(docker_ready):
    command = [sys.executable, "-m", "scripts.demo", "--compose", "--users", "2", "--photos", "2"]
    command += ["--corrupt", "1", "--timeout", "300"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)

    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "demo: 4/6 thumbnails, 4/6 embeddings, 2 failed, 0 lost", output[-3000:]
    assert "TEST model pack" in done.stdout
    (project,) = re.findall(r"compose project (\S+):", done.stdout)
    listed = [
        "docker",
        "ps",
        "--all",
        "--quiet",
        "--filter",
        f"label=com.docker.compose.project={project}",
    ]
    assert subprocess.run(listed, capture_output=True, text=True).stdout.strip() == ""
