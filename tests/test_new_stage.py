"""A new stage is a row in pipeline.toml, its function's folder, its Triggers (one per lane)
and its Knative Service: nothing else.

The test copies the code a local stack runs (functions/, eventing/, devstack/, knative/, and
scripts/, whose renderer reads knative/) into a temporary tree, adds a toy third stage there
the way a developer would (a table row, a `functions/caption/app.py` handler, a Trigger per
lane on the embed stage's reply, a Service in knative/app/stages/, which the bulk lane then
runs as `caption-bulk` with no change of its own) and runs a photo through that tree's local
stack: the broker routes to the new stage, the status API counts it, and the admin API lists
it with its default thresholds.
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

from functions.common.lanes import LANE_EXTENSION, Lane, service_name
from functions.common.pipeline import PIPELINE
from scripts.kustomize_render import render
from tests.knative_manifests import container, find
from tests.pipelines import CAPTION_ROW

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("functions", "eventing", "devstack", "knative", "scripts")
STAGES_KUSTOMIZATION = "knative/app/stages/kustomization.yaml"

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

# One per lane, as eventing/triggers.yaml has them for every stage.
TRIGGER = """---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: {service}
spec:
  broker: photos
  filter:
    attributes:
      type: {event_type}
      {lane_attribute}: {lane}
  subscriber:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: {service}
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


def caption_service(tree: Path) -> str:
    """The new stage's Knative Service, as a developer writes it: the thumbnail stage's, its
    name, image, audience and senders the caption stage's."""
    return (tree / "knative/app/stages/thumbnail.yaml").read_text().replace("thumbnail", "caption")


def add_caption_stage(tree: Path) -> None:
    """What a developer adds for a new stage: the row, the handler, a Trigger per lane, the
    Service (the bulk lane's comes from knative/app/lanes/bulk/ as it is)."""
    with (tree / "functions/common/pipeline.toml").open("a") as table:
        table.write(CAPTION_ROW)
    (tree / "functions/caption").mkdir()
    (tree / "functions/caption/__init__.py").write_text("")
    (tree / "functions/caption/app.py").write_text(HANDLER)
    with (tree / "eventing/triggers.yaml").open("a") as triggers:
        for lane in Lane:
            triggers.write(
                TRIGGER.format(
                    service=service_name("caption", lane),
                    event_type=PIPELINE.stages[-1].created,
                    lane_attribute=LANE_EXTENSION,
                    lane=lane.value,
                )
            )
    (tree / "knative/app/stages/caption.yaml").write_text(caption_service(tree))
    with (tree / STAGES_KUSTOMIZATION).open("a") as kustomization:
        kustomization.write("  - caption.yaml\n")


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
        ignored = shutil.ignore_patterns("__pycache__", "node_modules")
        shutil.copytree(ROOT / top, tree / top, ignore=ignored)
    add_caption_stage(tree)
    changed = changed_files(tree)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    work = tmp_path_factory.mktemp("stack")
    command = [sys.executable, "-c", DRIVER, str(test_model_pack.parent), str(work)]
    run = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    return changed, json.loads(run.stdout.strip().splitlines()[-1]), tree


def test_the_new_stage_needs_only_its_row_its_folder_its_triggers_and_its_service(three_stages):
    changed, _, _ = three_stages
    assert changed == {
        "functions/common/pipeline.toml",
        "functions/caption/__init__.py",
        "functions/caption/app.py",
        "eventing/triggers.yaml",
        "knative/app/stages/caption.yaml",
        STAGES_KUSTOMIZATION,
    }


def test_the_new_stage_runs_in_both_lanes_from_its_one_service(three_stages):
    _, _, tree = three_stages
    manifests = tuple(render(tree / "knative" / "app"))
    services = [
        find(manifests, "serving.knative.dev/v1", "Service", n) for n in ("caption", "caption-bulk")
    ]
    assert all(services)
    assert {container(service)["image"] for service in services} == {"photo-pipeline/caption"}


def test_a_photo_goes_through_the_new_stage_and_the_status_counts_it(three_stages):
    _, answers, _ = three_stages
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
    _, answers, _ = three_stages
    overview = answers["overview"]
    assert [stage["name"] for stage in overview["pipeline"]] == [*PIPELINE.names, "caption"]
    assert overview["stages"]["caption"]["throughput_per_min"] == 1
    assert overview["thresholds"]["caption"] == {"p95_ms": 100.0, "backlog_age_s": 30.0}
    (user,) = overview["users"]
    assert user["captions_done"] == 1
