"""pipeline.toml is the one place the stages are written: it is checked when loaded, the rest
follows from it, and no other code spells a stage out."""

import re
from pathlib import Path

import pytest

from functions.common.events import OBJECT_CREATED
from functions.common.pipeline import PIPELINE, PhotoState
from tests.pipelines import CAPTION_ROW, with_a_caption_stage

ROOT = Path(__file__).resolve().parent.parent
# Code that must take the stages from the table: shared and status code, the receiver, the
# dashboard, the local stack and the demo. A stage's own folder, its manifests, the tests and
# the tools about one stage (its benchmark, the parity check, the image and lock lists) may
# name it.
SCANNED = ("functions/common", "functions/status", "eventing", "devstack", "scripts/demo.py")
SUFFIXES = {".py", ".js", ".html"}
# Where a stage's name is meant, each with why.
ALLOWED = {
    # The receiver's loop guard ignores what the thumbnail stage writes back into the bucket;
    # `thumbnail` is the ignore reason it counts (receiver_events_ignored{reason}).
    "eventing/b2_webhook.py": {"thumbnail"},
    # The TEST pack's recognizer names its output tensor as buffalo_l's does.
    "devstack/make_test_model_pack.py": {"embedding"},
}


def stage_words() -> set[str]:
    fields = ("name", "done", "failed", "counted_as", "created", "failed_event")
    return {getattr(stage, field) for stage in PIPELINE for field in fields}


def scanned_files() -> list[Path]:
    files = []
    for entry in SCANNED:
        path = ROOT / entry
        candidates = [path] if path.is_file() else path.rglob("*")
        files += [p for p in candidates if p.suffix in SUFFIXES and "__pycache__" not in p.parts]
    return sorted(files)


def test_no_code_outside_the_table_writes_a_stage_name_as_a_literal():
    literal = re.compile(r"""["'`]([a-z_.]+)["'`]""")
    words = stage_words()
    found = []
    for path in scanned_files():
        name = str(path.relative_to(ROOT))
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for word in literal.findall(line):
                if word in words and word not in ALLOWED.get(name, set()):
                    found.append(f"{name}:{number}: {line.strip()}")
    assert found == []


def test_the_pipeline_starts_from_b2s_upload_and_each_stage_from_the_reply_before_it():
    triggers = [stage.trigger for stage in PIPELINE]
    assert triggers == [OBJECT_CREATED, *(stage.created for stage in PIPELINE.stages[:-1])]


def test_a_stage_whose_trigger_is_not_the_reply_before_it_is_refused():
    row = CAPTION_ROW.replace('trigger = "embedding.created"', 'trigger = "thumbnail.created"')
    with pytest.raises(ValueError, match=r"caption: trigger must be 'embedding\.created'"):
        with_a_caption_stage(row)


def test_a_state_used_by_two_stages_is_refused():
    row = CAPTION_ROW.replace('done = "captioned"', 'done = "thumbnail"')
    with pytest.raises(ValueError, match="each state must be unique"):
        with_a_caption_stage(row)


def test_a_stage_without_both_thresholds_is_refused():
    row = CAPTION_ROW.replace(", backlog_age_s = 30.0", "")
    with pytest.raises(ValueError, match="thresholds must be p95_ms, backlog_age_s"):
        with_a_caption_stage(row)


def test_photo_states_are_uploaded_then_each_stages_done_and_failed():
    assert tuple(state.value for state in PhotoState) == PIPELINE.states
    assert PIPELINE.states[:3] == ("uploaded", PIPELINE.stages[0].done, PIPELINE.stages[0].failed)


def test_a_photo_enters_a_stage_only_from_upload_or_an_earlier_stage():
    three = with_a_caption_stage()
    first, second, _ = three.stages
    assert three.entered_from("captioned") == ("", "uploaded", first.done, second.done)
    assert three.entered_from("uploaded") == ("",)


def test_an_undeliverable_event_fails_its_stage_first_then_the_ones_after():
    three = with_a_caption_stage()
    assert three.dead_letter_stages(OBJECT_CREATED) == three.stages
    assert three.dead_letter_stages(three.stages[0].created) == three.stages[1:]
    with pytest.raises(KeyError):
        three.dead_letter_stages("caption.created")


def test_a_photo_is_final_when_failed_or_done_with_the_last_stage():
    three = with_a_caption_stage()
    final = [state for state in three.states if three.is_final(state)]
    assert final == [*(stage.failed for stage in three.stages[:2]), "captioned", "caption_failed"]
