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
