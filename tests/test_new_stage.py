"""A new stage is a row in pipeline.toml, its function's folder and its Trigger: nothing else.

The test copies the code a local stack runs (functions/, eventing/, devstack/, knative/) into
a temporary tree, adds a toy third stage there the way a developer would (a table row, a
`functions/caption/app.py` handler, a Trigger on the embed stage's reply) and runs a photo
through that tree's local stack: the broker routes to the new stage, the status API counts
it, and the admin API lists it with its default thresholds.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from functions.common.pipeline import PIPELINE
from tests.pipelines import CAPTION_ROW

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("functions", "eventing", "devstack", "knative")

HANDLER = """
from functions.common.config import StatusSettings
from functions.common.photo_store import PhotoStore
from functions.common.pipeline import PIPELINE
from functions.common.stage_app import StageResult, create_stage_app


def caption(photo):
    return StageResult({"caption": f"a photo called {photo.key}"})


def create_app():
    store = PhotoStore.from_settings(StatusSettings.from_env())
    return create_stage_app(PIPELINE["caption"], caption, store)
"""

TRIGGER = f"""---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: caption
spec:
  broker: photos
  filter:
    attributes:
      type: {PIPELINE.stages[-1].created}
  subscriber:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: caption
  delivery:
    retry: 2
    backoffPolicy: exponential
    backoffDelay: PT0.2S
    deadLetterSink:
      ref:
        apiVersion: serving.knative.dev/v1
        kind: Service
        name: status-dead-letter
      uri: /v1/dead-letter
"""

# Run inside the copied tree: one photo through its stack, then what the front end and the
# admin see, as JSON on the last line.
DRIVER = """
import json, sys, time
from pathlib import Path

import requests

from devstack import b2_sender
from devstack.sample_photos import sample_photo
from devstack.stack import LocalStack, StackConfig, fetch_status

config = StackConfig(model_root=Path(sys.argv[1]), workdir=Path(sys.argv[2]))
with LocalStack(config) as stack:
    data = sample_photo(seed=1, faces=1, size=(800, 600))
    stored = stack.s3().put_object(Bucket=config.bucket, Key="ann/photos/a.jpg", Body=data)
    event = b2_sender.object_created(config.bucket, "ann/photos/a.jpg", len(data),
                                     stored["VersionId"])
    b2_sender.deliver(stack.urls["receiver"], [event], config.webhook_secret).raise_for_status()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = fetch_status(stack, "ann")
        if status["phase"] == "idle" and status["counts"]["uploaded"] == 1:
            break
        time.sleep(0.2)
    admin = requests.Session()
    login = {"password": config.admin_password}
    admin.post(stack.urls["status"] + "/v1/admin/login", json=login, timeout=5).raise_for_status()
    overview = admin.get(stack.urls["status"] + "/v1/admin/overview", timeout=5).json()
    print(json.dumps({"status": status, "overview": overview}))
"""


def add_caption_stage(tree: Path) -> None:
    """What a developer adds for a new stage: the row, the handler, the Trigger."""
    with (tree / "functions/common/pipeline.toml").open("a") as table:
        table.write(CAPTION_ROW)
    (tree / "functions/caption").mkdir()
    (tree / "functions/caption/__init__.py").write_text("")
    (tree / "functions/caption/app.py").write_text(HANDLER)
    with (tree / "eventing/triggers.yaml").open("a") as triggers:
        triggers.write(TRIGGER)


def changed_files(tree: Path) -> set[str]:
    """Files of `tree` that differ from the repository's or are new in it."""
    changed = set()
    for top in COPIED:
        for path in (tree / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                original = ROOT / path.relative_to(tree)
                if not original.exists() or not filecmp.cmp(path, original, shallow=False):
                    changed.add(str(path.relative_to(tree)))
    return changed


@pytest.fixture(scope="module")
def three_stages(tmp_path_factory, test_model_pack):
    tree = tmp_path_factory.mktemp("tree")
    for top in COPIED:
        shutil.copytree(ROOT / top, tree / top, ignore=shutil.ignore_patterns("__pycache__"))
    add_caption_stage(tree)
    changed = changed_files(tree)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    work = tmp_path_factory.mktemp("stack")
    command = [sys.executable, "-c", DRIVER, str(test_model_pack.parent), str(work)]
    run = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    return changed, json.loads(run.stdout.strip().splitlines()[-1])


def test_the_new_stage_needs_only_its_row_its_folder_and_its_trigger(three_stages):
    changed, _ = three_stages
    assert changed == {
        "functions/common/pipeline.toml",
        "functions/caption/__init__.py",
        "functions/caption/app.py",
        "eventing/triggers.yaml",
    }


def test_a_photo_goes_through_the_new_stage_and_the_status_counts_it(three_stages):
    _, answers = three_stages
    status = answers["status"]
    counts = status["counts"]
    assert (status["phase"], status["run"]["progress"]) == ("idle", 1.0)
    assert (counts["thumbnails_done"], counts["embeddings_done"]) == (1, 1)
    assert (counts["captions_done"], counts["captions_failed"], counts["captions_pending"]) == (
        1,
        0,
        0,
    )
    assert "last_captioned_at" in status["timestamps"]


def test_the_admin_overview_lists_the_new_stage_with_its_default_thresholds(three_stages):
    _, answers = three_stages
    overview = answers["overview"]
    assert [stage["name"] for stage in overview["pipeline"]] == [*PIPELINE.names, "caption"]
    assert overview["stages"]["caption"]["throughput_per_min"] == 1
    assert overview["thresholds"]["caption"] == {"p95_ms": 100.0, "backlog_age_s": 30.0}
    (user,) = overview["users"]
    assert user["captions_done"] == 1
