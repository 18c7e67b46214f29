"""The capacity model: Knative's autoscaler over the manifests' stages, simulated."""

from dataclasses import replace

import pytest

from scripts import capacity
from scripts.capacity import (
    Cluster,
    Load,
    StageCapacity,
    max_pods,
    simulate,
    smallest_cluster,
    stage_from_manifest,
)

THUMBNAIL = StageCapacity(
    name="thumbnail",
    cpu_s_per_photo=0.1,
    pod_vcpu=1.0,
    target=8,
    container_concurrency=8,
    min_scale=0,
    max_scale=10,
    window_s=60.0,
    pod_start_s=3.0,
)
EMBED = StageCapacity(
    name="embed",
    cpu_s_per_photo=0.5,
    pod_vcpu=2.0,
    target=2,
    container_concurrency=2,
    min_scale=1,
    max_scale=10,
    window_s=60.0,
    pod_start_s=10.0,
)
BIG = Cluster(nodes=16, node_vcpu=4)


def test_a_stage_is_scaled_as_its_knative_service_says():
    embed = stage_from_manifest("embed", cpu_s=0.55, pod_start_s=12)
    assert (embed.target, embed.container_concurrency, embed.pod_vcpu) == (2, 2, 2.0)
    assert (embed.min_scale, embed.max_scale, embed.window_s) == (1, 10, 60.0)


def test_a_cluster_that_keeps_up_finishes_each_stage_within_its_photos_own_time():
    prediction = simulate(Load(users=2, photos=100, pace=2), (THUMBNAIL, EMBED), BIG)
    assert prediction.worst("thumbnail") < THUMBNAIL.latency_s + 2
    assert prediction.worst("embed") < THUMBNAIL.latency_s + EMBED.latency_s + 3


def test_a_stage_held_below_the_upload_rate_leaves_a_backlog_it_clears_at_its_own_rate():
    # 100 photos in 10 s; one embed pod finishes 4 a second, so the last one ends near 25 s.
    warm = replace(THUMBNAIL, min_scale=1)
    one_pod = replace(EMBED, max_scale=1)
    prediction = simulate(Load(users=1, photos=100, pace=10), (warm, one_pod), BIG)
    assert prediction.worst("embed") == pytest.approx(25 - 10, abs=3)


def test_a_stage_at_min_scale_zero_wakes_for_the_first_photo_and_sleeps_after_the_grace():
    prediction = simulate(Load(users=1, photos=20, pace=1), (THUMBNAIL, EMBED), BIG)
    pods = prediction.pods["thumbnail"]
    assert pods[0][1] == 0
    assert max(count for _, count in pods) >= 1
    woken = next(t for t, count in pods if count)
    assert woken <= capacity.AUTOSCALER_TICK_S + THUMBNAIL.pod_start_s + capacity.STEP_S


def test_a_burst_panics_the_autoscaler_into_scaling_within_seconds():
    burst = Load(users=5, photos=200, pace=20)
    prediction = simulate(burst, (THUMBNAIL, EMBED), BIG)
    ten_seconds_in = [count for t, count in prediction.pods["embed"] if t <= 25][-1]
    assert ten_seconds_in >= 4


def test_pods_never_request_more_vcpu_than_the_nodes_have():
    small = Cluster(nodes=1, node_vcpu=4)
    prediction = simulate(Load(users=5, photos=200, pace=20), (THUMBNAIL, EMBED), small)
    steps = zip(prediction.pods["thumbnail"], prediction.pods["embed"], strict=True)
    used = [thumb * 1.0 + embed * 2.0 for (_, thumb), (_, embed) in steps]
    assert max(used) <= small.allocatable_vcpu


def test_vcpu_hours_add_up_each_pods_requested_vcpus_over_the_run():
    steady = replace(EMBED, min_scale=1, max_scale=1)
    prediction = simulate(
        Load(users=1, photos=10, pace=1),
        (replace(THUMBNAIL, min_scale=1, max_scale=1), steady),
        BIG,
    )
    seconds = len(prediction.pods["embed"]) * capacity.STEP_S
    assert prediction.vcpu_hours == pytest.approx(seconds * (1.0 + 2.0) / 3600)


def test_the_smallest_cluster_is_the_fewest_nodes_that_meet_every_target():
    load = Load(users=5, photos=200, pace=10)
    targets = {"thumbnail": 10.0, "embed": 60.0}
    smallest = smallest_cluster(load, (THUMBNAIL, EMBED), node_vcpu=4, targets=targets)
    assert smallest is not None
    assert smallest.worst("embed") <= 60.0
    fewer = Cluster(smallest.cluster.nodes - 1, 4)
    unbounded = tuple(replace(s, max_scale=10**6) for s in (THUMBNAIL, EMBED))
    if fewer.allocatable_vcpu >= 3.0:
        assert simulate(load, unbounded, fewer).worst("embed") > 60.0
    assert set(max_pods(smallest)) == {"thumbnail", "embed"}


def test_no_cluster_meets_a_target_below_a_photos_own_processing_time():
    targets = {"thumbnail": 0.01, "embed": 0.01}
    load = Load(users=1, photos=10, pace=1)
    assert smallest_cluster(load, (THUMBNAIL, EMBED), 4, targets, most_nodes=3) is None


def test_the_command_prints_the_prediction_and_the_smallest_cluster_and_draws_the_pods(
    tmp_path, capsys
):
    plot = tmp_path / "pods.png"
    assert capacity.main(["--users", "2", "--photos", "50", "--plot", str(plot)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("capacity: users=2 photos=50 embed_vcpu=2 worst_thumbs_s=")
    assert "smallest_nodes=" in last and "vcpu_hours=" in last
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# This machine's local stack (--local): every stage and component on one node's vCPUs.

LOCAL_THUMBNAIL = capacity.local_stage("thumbnail", cpu_s=0.2, node_vcpu=2)


def test_a_local_stage_runs_as_the_local_stack_runs_it():
    embed = capacity.local_stage("embed", cpu_s=0.08, node_vcpu=2)
    workers = capacity.service_workers("embed")
    slots = int(workers["WEB_CONCURRENCY"]) * int(workers["GUNICORN_THREADS"])
    assert embed.container_concurrency == slots
    assert (embed.min_scale, embed.max_scale, embed.pod_start_s) == (1, 1, 0.0)
    assert embed.pod_vcpu == min(slots, 2)
    assert capacity.local_stage("thumbnail", 0.05, node_vcpu=1).pod_vcpu == 1.0


def test_the_stages_with_photos_waiting_share_what_is_free_equally():
    assert capacity._equal_shares(2.0, [0.3, 2.0, 2.0]) == pytest.approx([0.3, 0.85, 0.85])
    assert capacity._equal_shares(2.0, [0.0, 2.0]) == [0.0, 2.0]
    assert capacity._equal_shares(1.0, [0.25, 0.25]) == [0.25, 0.25]


def test_a_lone_stage_on_the_local_stack_gets_what_the_background_leaves():
    # 100 photos at once, 0.2 CPU-s each, on 2 vCPUs of which 0.5 is taken: 7.5 photos/s.
    node = capacity.SharedNode(vcpu=2, background_vcpu=0.5)
    prediction = simulate(Load(1, 100, pace=1000), (LOCAL_THUMBNAIL,), Cluster(1, 2), node)
    assert prediction.worst("thumbnail") == pytest.approx(100 / 7.5, abs=0.3)


def test_uploads_take_their_cpu_from_the_stages_while_they_go_on():
    # 100 photos at 10/s, 0.1 CPU-s each to upload: 1 vCPU left, 5 thumbnails/s. At the end
    # of the uploads 50 are left, done at 10/s on both vCPUs: 5 s.
    node = capacity.SharedNode(vcpu=2, upload_cpu_s=0.1)
    prediction = simulate(Load(1, 100, pace=10), (LOCAL_THUMBNAIL,), Cluster(1, 2), node)
    assert prediction.worst("thumbnail") == pytest.approx(5.0, abs=0.3)


def test_the_other_processes_take_what_was_measured_when_it_was_measured():
    # Nothing else for 5 s (10 photos/s), then 1 vCPU taken (5/s): 100 photos in 15 s.
    node = capacity.SharedNode(vcpu=2, others_vcpu=((0.0, 0.0), (5.0, 1.0)))
    prediction = simulate(Load(1, 100, pace=1000), (LOCAL_THUMBNAIL,), Cluster(1, 2), node)
    assert prediction.worst("thumbnail") == pytest.approx(15.0, abs=0.3)


def test_two_stages_keep_the_node_busy_until_the_last_photo():
    # 100 photos at once, 0.2 + 0.1 CPU-s each and 0.1 for the other components' calls per
    # photo and stage: 50 CPU-s on 2 vCPUs; thumbnails end first, sharing with embed.
    embed = capacity.local_stage("embed", cpu_s=0.1, node_vcpu=2)
    node = capacity.SharedNode(vcpu=2, hop_cpu_s=0.1)
    prediction = local_stack_of(Load(1, 100, pace=1000), (LOCAL_THUMBNAIL, embed), node)
    assert prediction.worst("embed") == pytest.approx(25.0, rel=0.1)  # whole photos per step
    assert 100 * 0.3 / 2 < prediction.worst("thumbnail") < prediction.worst("embed")


def local_stack_of(load, stages, node):
    return simulate(load, stages, Cluster(1, node.vcpu, reserved_vcpu=0.0), node)


def test_every_user_waits_alike_when_their_uploads_run_at_once():
    node = capacity.SharedNode(vcpu=2)
    prediction = capacity.local_stack(Load(3, 30, pace=10), {"thumbnail": 0.1, "embed": 0.1}, node)
    for stage in ("thumbnail", "embed"):
        waits = [waits[stage] for waits in prediction.waits.values()]
        assert max(waits) - min(waits) <= 2 * node.step_s


def test_the_command_models_this_machines_local_stack(capsys):
    argv = ["--local", "--users", "2", "--photos", "20", "--cpu-s", "embed=0.08"]
    assert capacity.main(argv) == 0
    out = capsys.readouterr().out
    assert "embed: 0.08 CPU-s per photo from --cpu-s" in out
    assert "thumbnail: " in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("capacity: local vcpu=") and "worst_embeds_s=" in last


# -- Lanes (issue #14): a small user among large uploads --------------------------------------

BULK = capacity.BulkLane(
    stages=(
        replace(THUMBNAIL, name="thumbnail-bulk", stage="thumbnail", priority=-100),
        replace(EMBED, name="embed-bulk", stage="embed", min_scale=0, priority=-100),
    ),
    interactive_below=20,
)
# Five users uploading faster than two nodes' embed pods keep up with, a sixth uploading ten
# photos once their backlog is long.
BACKLOGGED = Load(users=5, photos=400, pace=10, small_photos=10, small_start_s=20)


def test_a_bulk_services_scaling_and_priority_come_from_its_manifest():
    embed_bulk = stage_from_manifest("embed-bulk", cpu_s=0.55, pod_start_s=12, stage="embed")
    assert (embed_bulk.min_scale, embed_bulk.pipeline_stage) == (0, "embed")
    assert embed_bulk.priority < stage_from_manifest("embed", 0.55, 12).priority == 0


def test_without_lanes_a_small_user_waits_behind_the_large_backlog():
    prediction = simulate(BACKLOGGED, (THUMBNAIL, EMBED), Cluster(nodes=2, node_vcpu=4))
    assert prediction.waits["small"]["embed"] > 60


def test_with_lanes_a_small_user_waits_about_their_own_photos_time():
    prediction = simulate(BACKLOGGED, (THUMBNAIL, EMBED), Cluster(nodes=2, node_vcpu=4), bulk=BULK)
    assert prediction.waits["small"]["embed"] < 20
    assert max(count for _, count in prediction.pods["embed-bulk"]) >= 1


def test_a_user_without_a_backlog_never_uses_the_bulk_lane():
    slow = Load(users=1, photos=50, pace=0.5)
    prediction = simulate(slow, (THUMBNAIL, EMBED), BIG, bulk=BULK)
    assert max(count for _, count in prediction.pods["embed-bulk"]) == 0


def test_an_interactive_pod_that_does_not_fit_evicts_a_bulk_pod():
    bulk_embed, interactive_embed = (capacity._Stage(spec) for spec in (BULK.stages[1], EMBED))
    bulk_embed.ready = 2
    freed = capacity._preempt(2.0, EMBED.priority, [interactive_embed, bulk_embed])
    assert (freed, bulk_embed.ready) == (2.0, 1)
    assert capacity._preempt(2.0, BULK.stages[1].priority, [interactive_embed, bulk_embed]) == 0
