"""The UAT on a Knative cluster, predicted: pods per stage over time, each user's wait after
their upload ends, the vCPU-hours it costs, and the smallest cluster that meets a target.

    python -m scripts.capacity [--users 5] [--photos 2000] [--pace 2] [--nodes 4]
        [--node-vcpu 4] [--embed-vcpu 2] [--target-thumbs-s 10] [--target-embeds-s 300]
    python -m scripts.capacity --local [--users 5] [--photos 200] [--pace P]
        [--cpu-s STAGE=SECONDS] [--upload-cpu-s 0.03] [--hop-cpu-s 0.01] [--background-vcpu 0.05]

A discrete-time simulation (0.5 s steps) of what the manifests ask Knative for:
- Uploads: every user starts at once and B2 takes one photo at a time per user, `pace`
  photos/s each; a photo reaches the first stage when its upload ends.
- The broker delivers every event at once (no delivery limit), so a stage's concurrency is
  every photo waiting for it, queued in the activator or queue-proxy, plus those being
  processed (a saturated pod holds `containerConcurrency` of them), first come first served
  across users.
- A ready pod finishes `pod vCPU / CPU-seconds per photo` photos per second: the stages are
  CPU-bound, and the manifests give each enough concurrency to keep its vCPUs busy.
- The Knative Pod Autoscaler, as documented at knative.dev (Serving, "Configuring the
  autoscaler" and "Additional autoscaling configuration for KPA"), with config-autoscaler's
  defaults, evaluated every 2 s:
    desired = ceil(average concurrency / (target × container-concurrency-target-percentage))
  averaged over the stable window (`autoscaling.knative.dev/window`, 60 s), or over the panic
  window (panic-window-percentage 10 % of it) while in panic mode. Panic mode starts when the
  panic window's desired count reaches panic-threshold-percentage (200 %) of the ready pods
  and lasts a stable window, during which the count never drops. The count is clamped to
  `min-scale`/`max-scale`, rises at most max-scale-up-rate (1000) times the ready pods and
  drops at most by max-scale-down-rate (2), to zero only after scale-to-zero-grace-period.
- A new pod is ready `pod start` seconds after it fits on a node (the image pulled, the model
  loaded: embed's startup probe), and never while the nodes lack the vCPU it requests, unless
  pods of a lower PriorityClass can be evicted for it, as the scheduler preempts them.
- Lanes (functions/common/lanes.py): a user's photos go in the bulk lane once they have
  LANE_INTERACTIVE_BACKLOG photos waiting at any stage, until none is, as the receiver
  decides, and each photo stays in its lane; each lane's Services (`thumbnail`,
  `thumbnail-bulk`, ...) have their own queues and autoscalers, the bulk ones at a
  PriorityClass below the interactive ones (`BulkLane`).

The stage costs come from the benchmarks' result files under var/bench/ where present (the
last `make bench-thumbnail` / `make bench-embed` on this machine class), else from the
defaults below, measured on this machine class; the output says which it used.

`--local` models this machine's local stack (devstack/stack.py) with the same simulation, in
0.1 s steps: one node of this process's CPUs (os.sched_getaffinity) shared by every process;
each stage one gunicorn server (its interactive lane's: the model, like the test below, keeps
every upload in that lane) with its Service's workers x threads, always up (no autoscaler,
no pod start); the other components' CPU per photo uploaded and per photo a stage finishes,
and the status polls' vCPUs, taken first; the stages with photos waiting share the rest
equally (SharedNode.share). tests/test_capacity_vs_loadtest.py measures all of these in a
small loadtest and checks the model's waits against it.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

from devstack.stack import knative_app_manifests, service_template, service_workers
from functions.common.config import ReceiverSettings
from functions.common.lanes import Lane, next_lane, service_name
from scripts.bench_results import read_result

ROOT = Path(__file__).resolve().parent.parent
PLOT = ROOT / "var" / "capacity" / "pods.png"
STEP_S = 0.5
AUTOSCALER_TICK_S = 2.0

# config-autoscaler's defaults (Knative Serving), which knative/ does not override.
TARGET_UTILIZATION = 0.70
PANIC_WINDOW_FRACTION = 0.10
PANIC_THRESHOLD = 2.0
MAX_SCALE_UP_RATE = 1000.0
MAX_SCALE_DOWN_RATE = 2.0
SCALE_TO_ZERO_GRACE_S = 30.0
SMALL_USER = "small"
DEFAULT_INTERACTIVE_BACKLOG = ReceiverSettings.model_fields["lane_interactive_backlog"].default

# CPU-seconds per photo where no bench result file is there. Thumbnail: the function's
# processes' CPU time per photo on the local stack, `make bench-thumbnail`'s nine photos (12 and
# 24 MP JPEGs, 1080p, PNG, WebP; `function_cpu_s=0.097` on 2026-12-06). Embed: detection, one
# face and the decode at 2 and 4 cores times the cores (docs/embedding.md, "Sizing the embed
# pod"; random-weight graphs of buffalo_l's architectures).
DEFAULT_CPU_S = {"thumbnail": 0.1, "embed": {2: 0.55, 4: 0.71}}
# Seconds from a pod's creation to ready: image cached, gunicorn up; embed loads its model.
DEFAULT_POD_START_S = {"thumbnail": 3.0, "embed": 12.0}
# The local stack on this machine (2 vCPU Xeon), from tests/test_capacity_vs_loadtest.py's
# runs on 2026-12-06 (3 users x 24 photos): the other components' CPU-seconds per photo
# uploaded (0.024-0.033) and per photo a stage finishes (0.008-0.012), the status polls'
# vCPUs (0.05-0.07), and the photos/s all users' uploads together reach (33-50).
DEFAULT_LOCAL = {"upload_cpu_s": 0.03, "hop_cpu_s": 0.01, "background_vcpu": 0.05}
LOCAL_UPLOADS_PER_S = 40.0


@dataclass(frozen=True)
class StageCapacity:
    """One stage's Knative Service as the simulation needs it."""

    name: str
    cpu_s_per_photo: float
    pod_vcpu: float
    target: float
    container_concurrency: int
    min_scale: int
    max_scale: int
    window_s: float
    pod_start_s: float
    # The pipeline stage it runs, where its Service is another lane's (`embed-bulk`: `embed`).
    stage: str | None = None
    # Its pods' PriorityClass value: the scheduler evicts lower ones to place them.
    priority: int = 0

    @property
    def pipeline_stage(self) -> str:
        return self.stage or self.name

    @property
    def photos_per_s_per_pod(self) -> float:
        return self.pod_vcpu / self.cpu_s_per_photo

    @property
    def latency_s(self) -> float:
        """One photo's time in a busy pod: its CPU time at its share of the pod's vCPUs."""
        return self.cpu_s_per_photo * self.container_concurrency / self.pod_vcpu


@dataclass(frozen=True)
class Cluster:
    nodes: int
    node_vcpu: float
    reserved_vcpu: float = 0.5  # per node: kubelet, Knative's and the mesh's own pods

    @property
    def allocatable_vcpu(self) -> float:
        return self.nodes * (self.node_vcpu - self.reserved_vcpu)


@dataclass(frozen=True)
class Load:
    """`users` uploading `photos` each from the start, and, with `small_photos`, one more user
    uploading that many from `small_start_s` on; every user at `pace` photos per second."""

    users: int
    photos: int
    pace: float
    small_photos: int = 0
    small_start_s: float = 0.0

    @property
    def upload_s(self) -> float:
        """When the large uploads end."""
        return self.photos / self.pace

    @property
    def names(self) -> list[str]:
        small = [SMALL_USER] if self.small_photos else []
        return [f"user{user + 1}" for user in range(self.users)] + small

    def photos_of(self, user: int) -> int:
        return self.photos if user < self.users else self.small_photos

    def start_of(self, user: int) -> float:
        return 0.0 if user < self.users else self.small_start_s

    def upload_end(self, user: int) -> float:
        return self.start_of(user) + self.photos_of(user) / self.pace

    def uploads_per_s(self, now: float) -> float:
        """Photos per second all uploads together take at `now`."""
        going = [u for u in range(len(self.names)) if self.start_of(u) <= now < self.upload_end(u)]
        return len(going) * self.pace


@dataclass(frozen=True)
class BulkLane:
    """The bulk lane (functions/common/lanes.py): its Services, one per stage in order, and the
    receiver's rule: a user's upload goes in it once they have `interactive_below` photos
    waiting at any stage (LANE_INTERACTIVE_BACKLOG); before that, in the interactive lane."""

    stages: tuple[StageCapacity, ...]
    interactive_below: int


@dataclass(frozen=True)
class SharedNode:
    """This machine running the local stack: one node whose vCPUs every process shares."""

    vcpu: float
    # The other components' CPU-seconds (the uploader, S3 server, receiver, broker, Lambda
    # stand-in, redis) per photo uploaded, spent as it is uploaded ...
    upload_cpu_s: float = 0.0
    # ... and per photo a stage finishes, spent alongside (its download and upload, its
    # Lambda call, the broker's delivery and the reply).
    hop_cpu_s: float = 0.0
    # vCPUs taken all along: the status polls (the poller and the status function) ...
    background_vcpu: float = 0.0
    # ... and, as measured, by whatever else runs on the machine: (seconds since the uploads
    # began, vCPUs taken from then on), in order.
    others_vcpu: tuple[tuple[float, float], ...] = ()
    # Its photos take tens of milliseconds each: simulated in finer steps than a cluster.
    step_s: float = 0.1

    def share(
        self, stages: list[_Stage], now: float, uploads_per_s: float, hops_per_s: float
    ) -> list[float]:
        """The vCPUs each stage gets this step: what the other components leave, split equally
        between the stages with photos waiting, none given more than it can use (its request
        slots, or what finishes its queue), the rest to the others. Linux's scheduler with
        autogroup (on by default: /proc/sys/kernel/sched_autogroup_enabled) shares the CPUs
        equally between sessions with runnable threads, whatever their thread counts, and the
        local stack starts every server in a session of its own; the other components each
        use less than such a share, so they get what they ask for."""
        others = next((vcpu for at, vcpu in reversed(self.others_vcpu) if at <= now), 0.0)
        background = self.background_vcpu + others
        taken = uploads_per_s * self.upload_cpu_s + hops_per_s * self.hop_cpu_s
        free = self.vcpu - background - taken
        wants = [
            min(stage.spec.pod_vcpu, stage.waiting * stage.spec.cpu_s_per_photo / self.step_s)
            for stage in stages
        ]
        return _equal_shares(max(0.0, free), wants)


def _equal_shares(free: float, wants: list[float]) -> list[float]:
    """`free` split equally between those who want some, none given more than it wants."""
    shares = [0.0] * len(wants)
    wanting = [index for index, want in enumerate(wants) if want > 0]
    while wanting and free > 1e-9:
        each = free / len(wanting)
        sated = [index for index in wanting if wants[index] - shares[index] <= each]
        if not sated:
            for index in wanting:
                shares[index] += each
            break
        for index in sated:
            free -= wants[index] - shares[index]
            shares[index] = wants[index]
        wanting = [index for index in wanting if index not in sated]
    return shares


@dataclass
class _Stage:
    spec: StageCapacity
    queue: deque = field(default_factory=deque)  # [user, photos] first come first served
    waiting: int = 0
    ready: int = 0
    starting: list[float] = field(default_factory=list)  # when each starting pod is ready
    credit: float = 0.0
    busy: float = 0.0  # the fraction of the ready pods' capacity the last step used
    history: deque = field(default_factory=deque)  # (time, concurrency)
    panic_until: float = -1.0
    idle_since: float | None = None
    pods: list[tuple[float, int]] = field(default_factory=list)

    @property
    def requested(self) -> int:
        return self.ready + len(self.starting)


@dataclass(frozen=True)
class Prediction:
    load: Load
    cluster: Cluster
    stages: tuple[StageCapacity, ...]  # every lane's
    # Per user and stage: seconds from the end of the user's upload to the stage's last photo.
    waits: dict[str, dict[str, float]]
    pods: dict[str, list[tuple[float, int]]]
    vcpu_hours: float

    def worst(self, stage: str) -> float:
        return max(waits[stage] for waits in self.waits.values())


def stage_from_manifest(name: str, cpu_s: float, pod_start_s: float, **overrides) -> StageCapacity:
    """A stage's Knative Service `name` as knative/app/ scales it."""
    template = service_template(name)
    annotations = template["metadata"]["annotations"]
    container = template["spec"]["containers"][0]
    values = {
        "name": name,
        "cpu_s_per_photo": cpu_s,
        "pod_vcpu": float(container["resources"]["requests"]["cpu"]),
        "target": float(annotations["autoscaling.knative.dev/target"]),
        "container_concurrency": int(template["spec"]["containerConcurrency"]),
        "min_scale": int(annotations.get("autoscaling.knative.dev/min-scale", 0)),
        "max_scale": int(annotations.get("autoscaling.knative.dev/max-scale", 0)) or 10**6,
        "window_s": _seconds(annotations.get("autoscaling.knative.dev/window", "60s")),
        "pod_start_s": pod_start_s,
        "priority": _priority_values().get(template["spec"].get("priorityClassName"), 0),
    }
    return StageCapacity(**(values | overrides))


@functools.cache
def _priority_values() -> dict[str, int]:
    """knative/app/'s PriorityClasses' values, by name (a pod without one has priority 0)."""
    return {
        manifest["metadata"]["name"]: int(manifest["value"])
        for manifest in knative_app_manifests()
        if manifest["kind"] == "PriorityClass"
    }


def local_stage(name: str, cpu_s: float, node_vcpu: float) -> StageCapacity:
    """A stage as devstack/stack.py runs it: one gunicorn server with its Knative Service's
    workers x threads, always up (no autoscaling, no pod start), using at most as many of the
    node's vCPUs as it has request slots."""
    workers = service_workers(name)
    slots = int(workers.get("WEB_CONCURRENCY", 2)) * int(workers.get("GUNICORN_THREADS", 4))
    return StageCapacity(
        name=name,
        cpu_s_per_photo=cpu_s,
        pod_vcpu=min(float(slots), node_vcpu),
        target=float(slots),
        container_concurrency=slots,
        min_scale=1,
        max_scale=1,
        window_s=60.0,
        pod_start_s=0.0,
    )


def local_stack(load: Load, cpu_s: dict[str, float], node: SharedNode) -> Prediction:
    """`load` on this machine's local stack: the stages (`cpu_s`: name -> CPU-seconds per
    photo, in pipeline order) and the other components sharing `node`, simulated as the
    cluster is."""
    stages = tuple(local_stage(name, cost, node.vcpu) for name, cost in cpu_s.items())
    return simulate(load, stages, Cluster(1, node.vcpu, reserved_vcpu=0.0), node)


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]]


def measured_cpu_s(stage: str, pod_vcpu: int) -> tuple[float, str]:
    """CPU-seconds per photo from the stage's bench result file, else the default; and where
    the number came from."""
    result = read_result(stage) or {}
    key = f"cpu_s_per_photo_{pod_vcpu}vcpu" if stage == "embed" else "cpu_s_per_photo"
    if result.get(key) is not None:
        return float(result[key]), f"var/bench/{stage}.json ({result['date']}, {result['machine']})"
    default = DEFAULT_CPU_S[stage]
    value = default[pod_vcpu] if isinstance(default, dict) else default
    source = "the defaults measured here (scripts/capacity.py, DEFAULT_CPU_S)"
    if "not_measured" in result:  # the bench ran, on a machine too small for this size
        source += f"; var/bench/{stage}.json did not measure {result['not_measured']}"
    return value, source


def simulate(
    load: Load,
    stages: tuple[StageCapacity, ...],
    cluster: Cluster,
    shared: SharedNode | None = None,
    bulk: BulkLane | None = None,
) -> Prediction:
    """Run the UAT through `stages` on `cluster` until every photo is done; with `shared`,
    every stage and the other components share one node's vCPUs (`local_stack`); with `bulk`,
    `stages` are the interactive lane's Services and a user's photos go in the bulk lane's
    while they have a backlog (a photo stays in its lane to the last stage)."""
    step = STEP_S if shared is None else shared.step_s
    lanes = [stages, *([bulk.stages] if bulk else [])]
    state = [[_Stage(spec, ready=spec.min_scale) for spec in lane] for lane in lanes]
    every = [stage for lane in state for stage in lane]
    users = len(load.names)
    uploaded, backlog, in_bulk = [0] * users, [0] * users, [False] * users
    last_done: list[dict[str, float]] = [{} for _ in range(users)]
    total = sum(load.photos_of(user) for user in range(users))
    done_last = 0
    now, vcpu_seconds, next_tick, served = 0.0, 0.0, 0.0, 0
    # Photos a stage finished, on their way to the next: (when they get there, lane, stage,
    # user, n).
    handed_on: list[tuple[float, int, int, int, int]] = []
    while done_last < total:
        for user, lane in _upload(uploaded, backlog, in_bulk, load, now, step, bulk):
            _enqueue(state[lane][0], user, 1)
        arrived = [item for item in handed_on if item[0] <= now]
        handed_on = [item for item in handed_on if item[0] > now]
        for _, lane, index, user, count in arrived:
            _enqueue(state[lane][index], user, count)
        if shared is None:
            vcpus = [stage.ready * stage.spec.pod_vcpu for stage in every]
        else:  # the other components' calls for the last step's photos take CPU meanwhile
            vcpus = shared.share(every, now, load.uploads_per_s(now), served / step)
        served = 0
        shares = iter(vcpus)
        for lane, stages_of_lane in enumerate(state):
            for index, stage in enumerate(stages_of_lane):
                # A pod's photos are done a photo's time in a busy pod after it is served; on
                # a shared node, where the servers share the CPUs between the photos they
                # hold, as soon as the CPU the step gave them is spent.
                done_at = now + step + (stage.spec.latency_s if shared is None else 0.0)
                for user, count in _serve(stage, step, next(shares)):
                    served += count
                    name = stage.spec.pipeline_stage
                    last_done[user][name] = max(done_at, last_done[user].get(name, 0.0))
                    if index + 1 < len(stages_of_lane):
                        handed_on.append((done_at, lane, index + 1, user, count))
                    else:
                        done_last += count
                        backlog[user] -= count
        if now >= next_tick:
            for stage in every:
                _autoscale(stage, now, cluster, every)
            next_tick += AUTOSCALER_TICK_S
        for stage in every:
            _start_ready_pods(stage, now)
            stage.pods.append((now, stage.ready))
            vcpu_seconds += stage.requested * stage.spec.pod_vcpu * step
        now += step
        if now > 30 * 24 * 3600:
            raise RuntimeError("the cluster never finishes this load: add nodes or max-scale")
    waits = {
        name: {
            spec.pipeline_stage: max(
                0.0, last_done[user][spec.pipeline_stage] - load.upload_end(user)
            )
            for spec in stages
        }
        for user, name in enumerate(load.names)
    }
    pods = {stage.spec.name: stage.pods for stage in every}
    return Prediction(load, cluster, tuple(s.spec for s in every), waits, pods, vcpu_seconds / 3600)


def _upload(
    uploaded: list[int],
    backlog: list[int],
    in_bulk: list[bool],
    load: Load,
    now: float,
    step: float,
    bulk: BulkLane | None,
) -> list[tuple[int, int]]:
    """The photos each user's upload gets to in this step, the users' in turn, one photo at a
    time (their uploads run at once): (user, lane) each, the lane as the receiver chooses it
    (0 interactive, 1 bulk: lanes.next_lane) from the user's photos waiting at any stage."""
    due = [
        min(load.photos_of(user), math.floor((now + step - load.start_of(user)) * load.pace))
        for user in range(len(uploaded))
    ]
    arrivals = []
    while any(sent < limit for sent, limit in zip(uploaded, due, strict=True)):
        for user, sent in enumerate(uploaded):
            if sent < due[user]:
                if bulk is not None:
                    lane = next_lane(backlog[user], in_bulk[user], bulk.interactive_below)
                    in_bulk[user] = lane is Lane.BULK
                arrivals.append((user, int(in_bulk[user])))
                uploaded[user] += 1
                backlog[user] += 1
    return arrivals


def _enqueue(stage: _Stage, user: int, count: int) -> None:
    if stage.queue and stage.queue[-1][0] == user:
        stage.queue[-1][1] += count
    else:
        stage.queue.append([user, count])
    stage.waiting += count


def _serve(stage: _Stage, seconds: float, vcpu: float) -> list[tuple[int, int]]:
    """Photos the ready pods, with `vcpu` between them, finish in `seconds`, oldest first, by
    user."""
    possible = vcpu / stage.spec.cpu_s_per_photo * seconds
    stage.credit += possible
    capacity = min(int(stage.credit), stage.waiting)
    stage.busy = min(1.0, capacity / possible) if possible else 0.0
    stage.credit = min(stage.credit - capacity, 1.0) if stage.waiting > capacity else 0.0
    finished = []
    while capacity:
        user, count = stage.queue[0]
        taken = min(count, capacity)
        finished.append((user, taken))
        capacity -= taken
        stage.waiting -= taken
        if taken == count:
            stage.queue.popleft()
        else:
            stage.queue[0][1] -= taken
    return finished


def _autoscale(stage: _Stage, now: float, cluster: Cluster, every: list[_Stage]) -> None:
    spec = stage.spec
    stage.history.append((now, concurrency(stage)))
    while stage.history[0][0] <= now - spec.window_s:
        stage.history.popleft()
    panic_window = spec.window_s * PANIC_WINDOW_FRACTION
    per_pod = spec.target * TARGET_UTILIZATION
    stable = math.ceil(_average(stage.history, now - spec.window_s) / per_pod)
    panic = math.ceil(_average(stage.history, now - panic_window) / per_pod)
    # As the KPA does, a stage with no ready pod counts as one: scaling from zero panics.
    if panic >= PANIC_THRESHOLD * max(1, stage.ready):
        stage.panic_until = now + spec.window_s
    desired = max(panic, stage.requested) if now < stage.panic_until else stable
    if stage.ready:
        desired = min(desired, math.ceil(stage.ready * MAX_SCALE_UP_RATE))
        desired = max(desired, math.floor(stage.requested / MAX_SCALE_DOWN_RATE))
    if desired == 0 and stage.requested:
        stage.idle_since = now if stage.idle_since is None else stage.idle_since
        if now - stage.idle_since < SCALE_TO_ZERO_GRACE_S:
            desired = stage.requested
    else:
        stage.idle_since = None
    if stage.waiting and not stage.requested:
        desired = max(desired, 1)  # the activator holds the request and wakes the stage
    desired = max(spec.min_scale, min(spec.max_scale, desired))
    if desired > stage.requested:
        wanted = desired - stage.requested
        free = cluster.allocatable_vcpu - sum(s.requested * s.spec.pod_vcpu for s in every)
        if free < wanted * spec.pod_vcpu:
            free += _preempt(wanted * spec.pod_vcpu - free, spec.priority, every)
        fits = int(free // spec.pod_vcpu)
        stage.starting += [now + spec.pod_start_s] * min(wanted, fits)
    elif desired < stage.requested:
        surplus = stage.requested - desired
        dropped = min(surplus, len(stage.starting))
        stage.starting = stage.starting[: len(stage.starting) - dropped]
        stage.ready -= surplus - dropped


def _preempt(vcpu: float, priority: int, every: list[_Stage]) -> float:
    """Evict pods of lower priority until `vcpu` is free, as the scheduler preempts them for a
    pod it cannot place (their Services start them again where room is); the vCPU freed. Their
    photos wait for the Service's other pods: the broker redelivers a request cut short."""
    freed = 0.0
    for victim in sorted(every, key=lambda stage: stage.spec.priority):
        while freed < vcpu and victim.spec.priority < priority and victim.requested:
            if victim.starting:
                victim.starting.pop()
            else:
                victim.ready -= 1
            freed += victim.spec.pod_vcpu
    return freed


def concurrency(stage: _Stage) -> float:
    """Requests in flight, as queue-proxies and the activator report them: every photo
    waiting, and those being processed (a saturated pod holds `containerConcurrency`)."""
    return stage.waiting + stage.busy * stage.ready * stage.spec.container_concurrency


def _average(history: deque, since: float) -> float:
    values = [value for at, value in history if at > since]
    return sum(values) / len(values) if values else 0.0


def _start_ready_pods(stage: _Stage, now: float) -> None:
    ready = [at for at in stage.starting if at <= now]
    stage.ready += len(ready)
    stage.starting = [at for at in stage.starting if at > now]


def smallest_cluster(
    load: Load,
    stages: tuple[StageCapacity, ...],
    node_vcpu: float,
    targets: dict[str, float],
    most_nodes: int = 64,
    bulk: BulkLane | None = None,
) -> Prediction | None:
    """The fewest nodes of `node_vcpu` on which every user's wait meets `targets` (stage ->
    seconds), each stage allowed as many pods as fit; None up to `most_nodes`."""

    def unbounded(specs: tuple[StageCapacity, ...]) -> tuple[StageCapacity, ...]:
        return tuple(replace(spec, max_scale=10**6) for spec in specs)

    lanes = replace(bulk, stages=unbounded(bulk.stages)) if bulk else None
    for nodes in range(1, most_nodes + 1):
        cluster = Cluster(nodes, node_vcpu)
        every_lane = (*stages, *(bulk.stages if bulk else ()))
        if cluster.allocatable_vcpu < sum(spec.pod_vcpu for spec in every_lane):
            continue  # a pod of each Service must fit, or a lane could wait forever
        prediction = simulate(load, unbounded(stages), cluster, bulk=lanes)
        if all(prediction.worst(stage) <= limit for stage, limit in targets.items()):
            return prediction
    return None


def max_pods(prediction: Prediction) -> dict[str, int]:
    return {name: max(count for _, count in pods) for name, pods in prediction.pods.items()}


def plot(prediction: Prediction, path: Path) -> Path:
    """Pods of each stage over time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4))
    for name, pods in prediction.pods.items():
        axes.step([t for t, _ in pods], [n for _, n in pods], where="post", label=name)
    axes.axvline(prediction.load.upload_s, color="grey", linestyle=":", label="uploads end")
    axes.set_xlabel("seconds since the uploads began")
    axes.set_ylabel("ready pods")
    load = prediction.load
    axes.set_title(
        f"{load.users} users x {load.photos} photos at {load.pace:g}/s each, "
        f"{prediction.cluster.nodes} x {prediction.cluster.node_vcpu:g} vCPU nodes"
    )
    axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def report(prediction: Prediction) -> list[str]:
    names = list(dict.fromkeys(spec.pipeline_stage for spec in prediction.stages))
    header = f"{'user':8}" + "".join(f" {'→' + name + ' s':>14}" for name in names)
    lines = [header, "-" * len(header)]
    for user, waits in prediction.waits.items():
        lines.append(f"{user:8}" + "".join(f" {waits[name]:14.1f}" for name in names))
    peaks = ", ".join(f"{name} {count}" for name, count in max_pods(prediction).items())
    lines.append(f"most pods: {peaks}; vCPU-hours: {prediction.vcpu_hours:.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--photos", type=int, default=2000, help="photos per user")
    parser.add_argument(
        "--pace",
        type=float,
        help=f"photos/s each user uploads (default 2; --local: {LOCAL_UPLOADS_PER_S:g} / users)",
    )
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--node-vcpu", type=float, default=4.0)
    parser.add_argument("--embed-vcpu", type=int, choices=(2, 4), default=2)
    parser.add_argument("--target-thumbs-s", type=float, default=10.0)
    parser.add_argument("--target-embeds-s", type=float, default=300.0)
    lane_options = parser.add_argument_group("lanes (not with --local)")
    lane_options.add_argument(
        "--interactive-backlog",
        type=int,
        help="LANE_INTERACTIVE_BACKLOG: a user's uploads go bulk with this many waiting "
        f"(default {DEFAULT_INTERACTIVE_BACKLOG})",
    )
    lane_options.add_argument(
        "--no-lanes", action="store_true", help="one lane, as before issue #14"
    )
    lane_options.add_argument(
        "--small-photos", type=int, help="the small user's photos (default 10)"
    )
    lane_options.add_argument(
        "--small-at", type=float, help="when the small user starts (default: mid-upload)"
    )
    parser.add_argument("--plot", type=Path, default=PLOT)
    local = parser.add_argument_group("this machine's local stack (--local)")
    local.add_argument("--local", action="store_true", help="model this machine's local stack")
    local.add_argument(
        "--cpu-s",
        action="append",
        default=[],
        metavar="STAGE=SECONDS",
        help="a stage's CPU-seconds per photo (e.g. the TEST model pack's embed)",
    )
    for name, value in DEFAULT_LOCAL.items():
        local.add_argument(f"--{name.replace('_', '-')}", type=float, default=value)
    args = parser.parse_args(argv)
    given = (args.interactive_backlog, args.small_photos, args.small_at)
    if args.local and (args.no_lanes or any(option is not None for option in given)):
        parser.error("--local models one lane and no small user: the lane options do not apply")
    if args.local:
        return main_local(args)
    pace = args.pace or 2.0
    small_at = args.photos / pace / 2 if args.small_at is None else args.small_at
    small_photos = 10 if args.small_photos is None else args.small_photos
    given_backlog = args.interactive_backlog
    backlog = DEFAULT_INTERACTIVE_BACKLOG if given_backlog is None else given_backlog
    load = Load(args.users, args.photos, pace, small_photos, small_at)
    lanes = {lane: lane_stages(lane, args.embed_vcpu) for lane in Lane}
    stages_tuple = lanes[Lane.INTERACTIVE]
    bulk = None if args.no_lanes else BulkLane(lanes[Lane.BULK], backlog)
    print(
        "one lane" if bulk is None else f"lanes: bulk from {bulk.interactive_below} waiting",
        f"; {SMALL_USER} uploads {load.small_photos} photos from {small_at:g} s",
    )
    prediction = simulate(load, stages_tuple, Cluster(args.nodes, args.node_vcpu), bulk=bulk)
    print("\n".join(report(prediction)))
    print(f"pods over time: {plot(prediction, args.plot)}")
    targets = {"thumbnail": args.target_thumbs_s, "embed": args.target_embeds_s}
    smallest = smallest_cluster(load, stages_tuple, args.node_vcpu, targets, bulk=bulk)
    if smallest is None:
        print("no cluster up to 64 nodes meets the targets")
        return 1
    peaks = max_pods(smallest)
    print(
        f"capacity: users={load.users} photos={load.photos} embed_vcpu={args.embed_vcpu} "
        f"worst_thumbs_s={prediction.worst('thumbnail'):.1f} "
        f"worst_embeds_s={prediction.worst('embed'):.1f} "
        f"small_thumbs_s={prediction.waits[SMALL_USER]['thumbnail']:.1f} "
        f"smallest_nodes={smallest.cluster.nodes}x{args.node_vcpu:g}vcpu "
        + " ".join(f"max_scale_{name}={count}" for name, count in peaks.items())
        + f" vcpu_hours={smallest.vcpu_hours:.2f}"
    )
    return 0


def lane_stages(lane: Lane, embed_vcpu: int) -> tuple[StageCapacity, ...]:
    """The lane's Services, in pipeline order, with the stages' measured costs."""
    stages = []
    for name, vcpu in (("thumbnail", None), ("embed", embed_vcpu)):
        cpu_s, source = measured_cpu_s(name, vcpu or 1)
        overrides = {"pod_vcpu": float(vcpu)} if vcpu else {}
        service = service_name(name, lane)
        pod_start_s = DEFAULT_POD_START_S[name]
        stages.append(stage_from_manifest(service, cpu_s, pod_start_s, stage=name, **overrides))
        if lane is Lane.INTERACTIVE:
            print(f"{name}: {cpu_s:g} CPU-s per photo from {source}")
    return tuple(stages)


def main_local(args: argparse.Namespace) -> int:
    """`--local`: each user's waits for `args`' load on this machine's local stack."""
    vcpu = len(os.sched_getaffinity(0))
    given = dict(item.split("=", 1) for item in args.cpu_s)
    cpu_s = {}
    for name in ("thumbnail", "embed"):
        # The local embed runs 2 intra-op threads, as a 2-vCPU pod does.
        cost, source = (float(given[name]), "--cpu-s") if name in given else measured_cpu_s(name, 2)
        cpu_s[name] = cost
        print(f"{name}: {cost:g} CPU-s per photo from {source}")
    # Unless given: the demo's users upload as fast as this machine lets them, together.
    pace = args.pace or LOCAL_UPLOADS_PER_S / args.users
    node = SharedNode(vcpu, args.upload_cpu_s, args.hop_cpu_s, args.background_vcpu)
    prediction = local_stack(Load(args.users, args.photos, pace), cpu_s, node)
    print("\n".join(report(prediction)[:-1]))
    print(
        f"capacity: local vcpu={vcpu} users={args.users} photos={args.photos} pace={pace:g} "
        f"worst_thumbs_s={prediction.worst('thumbnail'):.1f} "
        f"worst_embeds_s={prediction.worst('embed'):.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
