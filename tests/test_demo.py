"""`make demo`, the README's main job, run on the session's local stack: several users upload
at once, a broken photo each, and the demo accounts for every photo."""

import argparse
import re

import pytest

from scripts import demo
from tests.stack_fixtures import run_script

USERS, PHOTOS, BROKEN = 2, 3, 1


@pytest.fixture(scope="module")
def demo_run(stack):
    """The demo's exit status and printed lines, run once for the module's tests."""
    args = argparse.Namespace(
        users=USERS, photos=PHOTOS, photos_dir=None, corrupt=BROKEN, timeout=180, keep=False
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


def test_the_demo_table_has_a_row_per_user_with_the_seconds_after_their_upload(demo_run):
    _, printed = demo_run
    rows = [line.split() for line in printed if line.startswith("user")]
    table = [row for row in rows if len(row) == 10 and row[1].isdigit()]
    assert [row[0] for row in table] == [f"user{n + 1}" for n in range(USERS)]
    for name, *counts, to_thumbnails, to_embeddings in table:
        photos, thumbnails, embeddings, _faces, _drawn, failed, lost = map(int, counts)
        assert (photos, thumbnails, embeddings, failed, lost) == (
            PHOTOS + BROKEN,
            PHOTOS,
            PHOTOS,
            BROKEN,
            0,
        )
        assert float(to_thumbnails) >= 0 and float(to_embeddings) >= 0, name


def test_the_demo_reports_each_stages_seconds_from_webhook_to_database_lambda(demo_run):
    _, printed = demo_run
    [line] = [line for line in printed if line.startswith("per photo, webhook to database")]
    for stage in ("thumbnails", "embeddings"):
        found = re.search(rf"{stage} p50 ([\d.]+) s, p95 ([\d.]+) s, max ([\d.]+) s", line)
        assert found, line
        p50, p95, most = map(float, found.groups())
        assert 0 <= p50 <= p95 <= most
