"""devstack/reconcile.py on hand-made evidence: what counts as lost, double called, stuck,
failed and miscounted."""

from devstack.reconcile import Evidence, reconcile
from functions.common.events import PhotoRef
from functions.common.pipeline import PIPELINE

EMBEDDING_CREATED = PIPELINE["embed"].created
THUMBNAIL_CREATED = PIPELINE["thumbnail"].created

TEMPLATE = "thumbnails/{key}.jpg"


def photo(name: str, version: str = "v1") -> PhotoRef:
    return PhotoRef("photos", f"u/photos/{name}.jpg", version, "u")


def call(ref: PhotoRef, event: str, at: float = 1.0) -> dict:
    payload = {"event": event, "bucket": ref.bucket, "key": ref.key}
    return {"payload": {**payload, "version_id": ref.version_id, "user_id": ref.user_id}, "at": at}


def embedded(ref: PhotoRef) -> tuple[str, list[dict], str]:
    """State, Lambda calls and thumbnail of a photo that went all the way."""
    calls = [call(ref, THUMBNAIL_CREATED), call(ref, EMBEDDING_CREATED)]
    return "embedding", calls, f"thumbnails/{ref.key}.jpg"


def evidence(
    states: dict[PhotoRef, str],
    calls: list[dict],
    thumbnails: set[str],
    counts: dict[str, int] | None = None,
) -> Evidence:
    """One user `u`; counters as the states add up to unless given."""
    values = list(states.values())
    done = {"thumbnail", "embedding", "embedding_failed"}
    consistent = {
        "uploaded": len(values),
        "thumbnails_done": sum(value in done for value in values),
        "thumbnails_failed": values.count("thumbnail_failed"),
        "embeddings_done": values.count("embedding"),
        "embeddings_failed": values.count("embedding_failed"),
    }
    return Evidence(
        states={"u": {ref.photo_id: state for ref, state in states.items()}},
        counts={"u": {**consistent, **(counts or {})}},
        thumbnails=frozenset(thumbnails),
        invocations=calls,
    )


def test_photos_that_went_all_the_way_reconcile_to_nothing_wrong():
    a, b = photo("a"), photo("b")
    (state, calls_a, thumb_a), (_, calls_b, thumb_b) = embedded(a), embedded(b)
    result = reconcile(
        [a, b], evidence({a: state, b: state}, calls_a + calls_b, {thumb_a, thumb_b}), TEMPLATE
    )
    assert result.summary() == (
        "miscounted=0 photos=2 thumbnails=2 embeddings=2 failed=0 lost=0 double_called=0 stuck=0"
    )
    assert result.findings == ()


def test_a_photo_without_a_status_record_is_lost():
    a, b = photo("a"), photo("b")
    state, calls, thumb = embedded(a)
    result = reconcile([a, b], evidence({a: state}, calls, {thumb}), TEMPLATE)
    assert result.lost == 1
    assert result.findings == (f"lost: {b.photo_id}: no status record",)


def test_a_photo_done_without_its_thumbnail_in_the_bucket_or_its_lambda_call_is_lost():
    a, b = photo("a"), photo("b")
    (state, calls_a, _), (_, calls_b, thumb_b) = embedded(a), embedded(b)
    calls = calls_a + calls_b[:1]  # b's embedding was never sent to the database
    result = reconcile([a, b], evidence({a: state, b: state}, calls, {thumb_b}), TEMPLATE)
    assert result.lost == 2
    assert result.findings == (
        f"lost: {a.photo_id}: embedding, but no thumbnails/{a.key}.jpg in the bucket",
        f"lost: {b.photo_id}: embedding, but no embedding.created call",
    )


def test_every_lambda_call_for_a_photo_version_and_stage_beyond_the_first_is_a_double_call():
    a, a2 = photo("a"), photo("a", version="v2")  # a new version of a photo is new work
    state, calls, thumb = embedded(a)
    _, calls2, _ = embedded(a2)
    calls += [call(a, THUMBNAIL_CREATED, at=2.0), call(a, THUMBNAIL_CREATED, at=3.0)]
    states = {a: state, a2: state}
    result = reconcile([a, a2], evidence(states, calls + calls2, {thumb}), TEMPLATE)
    assert result.double_called == 2
    assert [line.split(" at ")[0] for line in result.findings] == [
        f"double call: {a.photo_id} thumbnail.created x3"
    ]


def test_photos_still_uploaded_or_thumbnailed_after_the_drain_are_stuck():
    a, b = photo("a"), photo("b")
    calls = [call(b, THUMBNAIL_CREATED)]
    result = reconcile(
        [a, b],
        evidence({a: "uploaded", b: "thumbnail"}, calls, {f"thumbnails/{b.key}.jpg"}),
        TEMPLATE,
    )
    assert (result.stuck, result.lost, result.thumbnails, result.embeddings) == (2, 0, 1, 0)
    assert result.findings == (
        f"stuck: {a.photo_id} is still uploaded",
        f"stuck: {b.photo_id} is still thumbnail",
    )


def test_a_failed_photo_needs_only_the_traces_of_the_stages_it_passed():
    a, b = photo("a"), photo("b")
    calls = [call(b, THUMBNAIL_CREATED)]
    states = {a: "thumbnail_failed", b: "embedding_failed"}
    result = reconcile([a, b], evidence(states, calls, {f"thumbnails/{b.key}.jpg"}), TEMPLATE)
    assert (result.failed, result.lost, result.thumbnails) == (2, 0, 1)
    assert result.findings == ()


def test_counters_off_from_the_photos_states_are_miscounted_by_how_far():
    a = photo("a")
    state, calls, thumb = embedded(a)
    counts = {"thumbnails_done": 3, "embeddings_done": 0}
    result = reconcile([a], evidence({a: state}, calls, {thumb}, counts), TEMPLATE)
    assert result.miscounted == 3
    assert result.findings == (
        "miscounted: u thumbnails_done is 3, states say 1",
        "miscounted: u embeddings_done is 0, states say 1",
    )


def test_lambda_calls_about_other_photos_on_the_same_stack_are_not_this_runs():
    a, other = photo("a"), photo("not-this-runs")
    state, calls, thumb = embedded(a)
    calls += [call(other, THUMBNAIL_CREATED), call(other, THUMBNAIL_CREATED)]
    calls.append({"payload": {"key": "clients/marker"}, "at": 1.0})
    result = reconcile([a], evidence({a: state}, calls, {thumb}), TEMPLATE)
    assert (result.double_called, result.findings) == (0, ())
