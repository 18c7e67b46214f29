"""`make loadtest`: a small uploader among large ones, and the line that sums it up."""

import pytest

from functions.common.pipeline import PIPELINE
from scripts import demo, loadtest
from tests.stack_fixtures import run_script

FIRST, LAST = PIPELINE.stages[0], PIPELINE.stages[-1]


def settled_phase(user_waits_s, calls=()):
    """A phase whose users each ended their upload at t=100 and got their last thumbnail
    `wait` seconds later; the small user last."""
    uploads, statuses = [], {}
    for user, wait in user_waits_s.items():
        upload = demo.Upload(user, [demo.Photo(f"{user}/a.jpg", b"", 0, 100.0)])
        upload.finished_at = 100.0
        uploads.append(upload)
        stamps = {FIRST.finished_at: 100.0 + wait, LAST.finished_at: 100.0 + 2 * wait}
        statuses[user] = {"timestamps": stamps}
    return loadtest.Phase(uploads, statuses, list(calls), lost=0)


def lambda_call(stage, key, at):
    return {"payload": {"event": stage.created, "key": key}, "at": at}


def test_fairness_is_the_small_users_wait_among_large_uploads_over_their_median_wait_alone():
    alone = [settled_phase({f"solo{n}": wait}) for n, wait in enumerate((0.9, 0.5, 0.4))]
    mixed = settled_phase({"user1": 30.0, "small": 0.6})
    assert loadtest.fairness(alone, mixed) == pytest.approx(1.2)


def test_the_summary_line_names_users_photos_lost_p95s_the_small_users_wait_and_fairness():
    alone = [settled_phase({"solo1": 0.5})]
    calls = [
        lambda_call(stage, f"{user}/a.jpg", 100.0 + offset)
        for stage, offset in ((FIRST, 1.0), (LAST, 3.0))
        for user in ("user1", "small")
    ]
    mixed = settled_phase({"user1": 30.0, "small": 0.6}, calls)
    assert loadtest.summary_line(alone, mixed) == (
        "loadtest: users=2 photos=2 lost=0 thumbs_p95_s=1.00 embeds_p95_s=3.00"
        " small_user_thumbs_s=0.60 fairness=1.20"
    )


def test_a_small_loadtest_on_the_local_stack_accounts_for_every_photo(stack):
    small = ["--users", "3", "--photos", "4", "--small-photos", "2", "--alone-runs", "1"]
    args = loadtest.parse_args([*small, "--pace", "0", "--user-prefix", "lt-"])
    args.max_fairness = float("inf")  # fairness needs a real backlog: make loadtest's
    status, printed = run_script(loadtest.run, stack, args)
    assert status == 0
    line = printed[-1]
    assert line.startswith("loadtest: users=3 photos=10 lost=0 thumbs_p95_s=")
    assert " small_user_thumbs_s=" in line and " fairness=" in line
