"""The front-end example (examples/frontend/) under node's own test runner, polling a real
status function (over HTTP, on a real redis-server) as a browser would."""

# The fixtures imported from tests.status_fixtures are parameters of the tests below.
# ruff: noqa: F811

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.status_fixtures import (  # noqa: F401 - fixtures
    admin_settings,
    app,
    auth_settings,
    dead_letter_app,
    store,
    token,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "frontend"


def test_the_react_hooks_poller_follows_a_run_to_idle_against_the_real_api(
    app, dead_letter_app, serve
):
    if shutil.which("node") is None:
        pytest.fail("node is not installed (run scripts/install-system-deps.sh --node)")
    env = {
        **os.environ,
        "STATUS_URL": serve(app),
        "DEAD_LETTER_URL": serve(dead_letter_app),
        "STATUS_USER": "frontend-user",
        "STATUS_TOKEN": token("frontend-user"),
    }
    result = subprocess.run(
        ["node", "--test", "--test-reporter=spec", str(EXAMPLE / "statusPoller.test.js")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped 0" in result.stdout or "# skip 0" in result.stdout, result.stdout
