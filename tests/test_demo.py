"""`make demo`, the README's main job, run on the session's local stack: several users upload
at once, a broken photo each, and the demo accounts for every photo."""

import argparse
import re

import pytest
import requests

from devstack.sample_photos import sample_photo
from functions.common.lanes import Lane
from functions.common.pipeline import PIPELINE
from scripts import demo
from tests.pipelines import with_a_caption_stage
from tests.stack_fixtures import lambda_invocations, run_script

USERS, PHOTOS, BROKEN = 2, 3, 1


@pytest.fixture(scope="module")
def demo_run(stack):
    """The demo's exit status and printed lines, run once for the module's tests."""
    args = argparse.Namespace(
        users=USERS,
        photos=PHOTOS,
        photos_dir=None,
        corrupt=BROKEN,
        timeout=180,
        keep=False,
        user_prefix="user",
    )
    return run_script(demo.run, stack, args)


def test_the_demo_ends_with_every_photo_accounted_for_and_the_broken_ones_failed(demo_run):
    status, printed = demo_run
    total = USERS * (PHOTOS + BROKEN)
    good = USERS * PHOTOS
    assert status == 0
    assert printed[-1] == (
        f"demo: {good}/{total} thumbnails, {good}/{total} embeddings,"
        f" {USERS * BROKEN} failed, 0 lost"
    )


def test_the_demo_table_has_a_row_per_user_with_their_counts(demo_run):
    _, printed = demo_run
    stages = len(PIPELINE)
    rows = [line.split() for line in printed if line.startswith("user")]
    # The user; photos, per lane, done per stage, faces, drawn, failed, lost; seconds per stage.
    table = [row for row in rows if len(row) == 6 + len(Lane) + 2 * stages and row[1].isdigit()]
    assert [row[0] for row in table] == [f"user{n + 1}" for n in range(USERS)]
    for row in table:
        photos, interactive, bulk, *done, _faces, _drawn, failed, lost = map(int, row[1:-stages])
        assert (photos, done, failed, lost) == (PHOTOS + BROKEN, [PHOTOS] * stages, BROKEN, 0)
        # A few photos each: every one went in the interactive lane.
        assert (interactive, bulk) == (PHOTOS + BROKEN, 0)


def test_the_demo_reports_both_stages_seconds_from_webhook_to_database_lambda(demo_run):
    _, printed = demo_run
    [line] = [line for line in printed if line.startswith("per photo, webhook to database")]
    assert re.search(r"thumbnails p50 [\d.]+ s, p95 [\d.]+ s, max [\d.]+ s; embeddings p50", line)


# Files as users name them: Japanese, an emoji, NFD and NFC accents (two files), spaces.
NAMED_FILES = ["写真.jpg", "🎉 party.jpg", "Cafe\u0301.jpg", "Caf\u00e9.jpg", "summer holiday.jpg"]
NAMED_USERS = ["ユーザー1", "ユーザー2"]


@pytest.fixture(scope="module")
def named_files_run(stack, tmp_path_factory):
    """The demo uploading a folder of files named as users name them, for two users."""
    folder = tmp_path_factory.mktemp("named-photos")
    for seed, name in enumerate(NAMED_FILES):
        (folder / name).write_bytes(sample_photo(seed=seed, faces=1))
    (folder / "notes.txt").write_text("not a photo: the demo leaves it out")
    args = argparse.Namespace(
        users=len(NAMED_USERS),
        photos=0,
        photos_dir=folder,
        corrupt=0,
        timeout=180,
        keep=False,
        user_prefix="ユーザー",
    )
    return run_script(demo.run, stack, args)


def test_the_demo_uploads_files_named_as_users_name_them_and_accounts_for_every_one(
    named_files_run,
):
    status, printed = named_files_run
    total = len(NAMED_USERS) * len(NAMED_FILES)
    assert status == 0
    assert printed[-1] == (
        f"demo: {total}/{total} thumbnails, {total}/{total} embeddings, 0 failed, 0 lost"
    )


def test_each_file_keeps_its_exact_name_in_its_key_under_its_user(stack, named_files_run):
    for user in NAMED_USERS:
        keys = {p["key"] for p in lambda_invocations(stack) if p.get("user_id") == user}
        assert keys == {f"{user}/photos/{name}" for name in NAMED_FILES}


def upload_of(*photos: tuple[str, float | None]) -> demo.Upload:
    return demo.Upload("ann", [demo.Photo(key, b"", 0, sent) for key, sent in photos])


def call(event: str, key: str, at: float) -> dict:
    return {"payload": {"event": event, "key": key}, "at": at}


def test_latency_runs_from_each_photos_webhook_to_its_first_database_call():
    uploads = [upload_of(("ann/a.jpg", 100.0), ("ann/b.jpg", 101.0))]
    calls = [
        call("thumbnail.created", "ann/a.jpg", 100.5),
        call("thumbnail.created", "ann/a.jpg", 107.0),  # a retried call: the first one counts
        call("thumbnail.created", "ann/b.jpg", 102.0),
        call("embedding.created", "ann/a.jpg", 103.0),
    ]
    assert demo.per_photo_latency(uploads, calls) == (
        "per photo, webhook to database Lambda: thumbnails p50 0.50 s, p95 1.00 s, max 1.00 s;"
        " embeddings p50 3.00 s, p95 3.00 s, max 3.00 s"
    )


def test_latency_leaves_out_other_photos_calls_and_photos_never_delivered():
    uploads = [upload_of(("ann/a.jpg", 100.0), ("ann/undelivered.jpg", None))]
    calls = [
        call("thumbnail.created", "ann/a.jpg", 100.25),
        call("thumbnail.created", "ann/undelivered.jpg", 100.5),
        call("thumbnail.created", "bob/other.jpg", 150.0),
        {"payload": ["not", "a", "photo"], "at": 151.0},
    ]
    assert demo.per_photo_latency(uploads, calls) == (
        "per photo, webhook to database Lambda: thumbnails p50 0.25 s, p95 0.25 s, max 0.25 s"
    )


def test_watching_gives_up_at_the_deadline_while_the_status_function_does_not_answer(
    monkeypatch,
):
    def unreachable(stack, user_id):
        raise requests.ConnectionError("connection refused")

    monkeypatch.setattr(demo, "fetch_status", unreachable)
    monkeypatch.setattr(demo.time, "sleep", lambda seconds: None)
    with pytest.raises(TimeoutError, match="connection refused"):
        demo.watch(stack=None, uploads=[upload_of(("ann/a.jpg", 100.0))], timeout_s=0.05)


def test_a_photo_has_not_ended_until_the_last_of_any_number_of_stages_is_done(monkeypatch, capsys):
    pipeline = with_a_caption_stage()
    monkeypatch.setattr(demo, "PIPELINE", pipeline)
    first, *middle, last = pipeline.stages
    # Five photos: one fails at the first stage, one at the last; of the other three, two are
    # through the last stage and one, done at every stage before it, is still on its way.
    counts = {"faces": 0}
    for stage, done, failed in [(first, 4, 1), *((s, 4, 0) for s in middle), (last, 2, 1)]:
        counts |= {stage.done_counter: done, stage.failed_counter: failed}
        counts[stage.pending_counter] = 0
    upload = demo.Upload("ann", [demo.Photo(f"ann/{n}.jpg", b"", 0, 1.0) for n in range(5)])
    upload.finished_at = 10.0
    status = {
        "counts": counts,
        "timestamps": {stage.finished_at: 12.0 for stage in pipeline},
        "failures": [],
        "phase": last.phase,
        "message": last.message,
    }

    assert demo.ended(counts) == 4

    [line] = demo.render([upload], {"ann": status})
    # The last stage expects the four photos the first stage did not fail, and has seen three.
    assert f" {last.counted_as} " in line and "   3/4    Writing captions" in line

    assert demo.summarize([upload], {"ann": status}, lambda_calls=[]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert last.counted_as in printed[1] and printed[1].startswith("user")
    before = ", ".join(f"4/5 {stage.counted_as}" for stage in (first, *middle))
    assert printed[-1] == f"demo: {before}, 2/5 captions, 2 failed, 1 lost"


def test_a_bar_shows_the_photos_done_in_each_lane_then_those_waiting():
    fast, slow = (demo.LANE_MARKS[lane] for lane in Lane)
    line = demo.bar(done=18, total=24, interactive=6)
    assert line == fast * 6 + slow * 12 + demo.WAITING_MARK * 6
