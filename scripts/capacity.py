"""The UAT on a Knative cluster, predicted: pods per stage over time, each user's wait after
their upload ends, the vCPU-hours it costs, and the smallest cluster that meets a target.

    python -m scripts.capacity [--users 5] [--photos 2000] [--pace 2] [--nodes 4]
        [--node-vcpu 4] [--embed-vcpu 2] [--target-thumbs-s 10] [--target-embeds-s 300]

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
  loaded: embed's startup probe), and never while the nodes lack the vCPU it requests.

The stage costs come from the benchmarks' result files under var/bench/ where present (the
last `make bench-thumbnail` / `make bench-embed` on this machine class), else from the
defaults below, measured on this machine class; the output says which it used.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

from devstack.stack import service_template
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

# CPU-seconds per photo where no bench result file is there. Thumbnail: the function's
# processes' CPU time per photo on the local stack, `make bench-thumbnail`'s nine photos (12 and
# 24 MP JPEGs, 1080p, PNG, WebP; `function_cpu_s=0.097` on 2026-12-06). Embed: detection, one
# face and the decode at 2 and 4 cores times the cores (docs/embedding.md, "Sizing the embed
# pod"; random-weight graphs of buffalo_l's architectures).
DEFAULT_CPU_S = {"thumbnail": 0.1, "embed": {2: 0.55, 4: 0.71}}
# Seconds from a pod's creation to ready: image cached, gunicorn up; embed loads its model.
DEFAULT_POD_START_S = {"thumbnail": 3.0, "embed": 12.0}


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
    users: int
    photos: int
    pace: float  # photos per second per user

    @property
    def upload_s(self) -> float:
        return self.photos / self.pace


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
    stages: tuple[StageCapacity, ...]
    # Per user and stage: seconds from the end of the user's upload to the stage's last photo.
    waits: dict[str, dict[str, float]]
    pods: dict[str, list[tuple[float, int]]]
    vcpu_hours: float

    def worst(self, stage: str) -> float:
        return max(waits[stage] for waits in self.waits.values())


def stage_from_manifest(name: str, cpu_s: float, pod_start_s: float, **overrides) -> StageCapacity:
    """A stage as knative/app/<name>.yaml scales it."""
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
    }
    return StageCapacity(**(values | overrides))


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]]


def measured_cpu_s(stage: str, pod_vcpu: int) -> tuple[float, str]:
    """CPU-seconds per photo from the stage's bench result file, else the default; and where
    the number came from."""
    result = read_result(stage) or {}
    key = f"cpu_s_per_photo_{pod_vcpu}vcpu" if stage == "embed" else "cpu_s_per_photo"
    if key in result:
        return float(result[key]), f"var/bench/{stage}.json ({result['date']}, {result['machine']})"
    default = DEFAULT_CPU_S[stage]
    value = default[pod_vcpu] if isinstance(default, dict) else default
    return value, "the defaults measured here (scripts/capacity.py, DEFAULT_CPU_S)"


def simulate(load: Load, stages: tuple[StageCapacity, ...], cluster: Cluster) -> Prediction:
    """Run the UAT through `stages` on `cluster` until every photo is done."""
    state = [_Stage(spec, ready=spec.min_scale) for spec in stages]
    uploaded = [0] * load.users
    last_done: list[dict[str, float]] = [{} for _ in range(load.users)]
    total = load.users * load.photos
    done_last = 0
    now, vcpu_seconds, next_tick = 0.0, 0.0, 0.0
    # Photos a stage finished, on their way to the next: (when they get there, stage, user, n).
    handed_on: list[tuple[float, int, int, int]] = []
    while done_last < total:
        _upload(state[0], uploaded, load, now)
        arrived = [item for item in handed_on if item[0] <= now]
        handed_on = [item for item in handed_on if item[0] > now]
        for _, index, user, count in arrived:
            _enqueue(state[index], user, count)
        for index, stage in enumerate(state):
            done_at = now + STEP_S + stage.spec.latency_s
            for user, count in _serve(stage, STEP_S):
                last_done[user][stage.spec.name] = done_at
                if index + 1 < len(state):
                    handed_on.append((done_at, index + 1, user, count))
                else:
                    done_last += count
        if now >= next_tick:
            for stage in state:
                _autoscale(stage, now, cluster, state)
            next_tick += AUTOSCALER_TICK_S
        for stage in state:
            _start_ready_pods(stage, now)
            stage.pods.append((now, stage.ready))
            vcpu_seconds += stage.requested * stage.spec.pod_vcpu * STEP_S
        now += STEP_S
        if now > 30 * 24 * 3600:
            raise RuntimeError("the cluster never finishes this load: add nodes or max-scale")
    waits = {
        f"user{user + 1}": {
            spec.name: max(0.0, last_done[user][spec.name] - load.upload_s) for spec in stages
        }
        for user in range(load.users)
    }
    pods = {stage.spec.name: stage.pods for stage in state}
    return Prediction(load, cluster, stages, waits, pods, vcpu_seconds / 3600)


def _upload(first: _Stage, uploaded: list[int], load: Load, now: float) -> None:
    due = min(load.photos, math.floor((now + STEP_S) * load.pace))
    for user, sent in enumerate(uploaded):
        if due > sent:
            _enqueue(first, user, due - sent)
            uploaded[user] = due


def _enqueue(stage: _Stage, user: int, count: int) -> None:
    if stage.queue and stage.queue[-1][0] == user:
        stage.queue[-1][1] += count
    else:
        stage.queue.append([user, count])
    stage.waiting += count


def _serve(stage: _Stage, seconds: float) -> list[tuple[int, int]]:
    """Photos the ready pods finish in `seconds`, oldest first, by user."""
    possible = stage.ready * stage.spec.photos_per_s_per_pod * seconds
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
        free = cluster.allocatable_vcpu - sum(s.requested * s.spec.pod_vcpu for s in every)
        fits = int(free // spec.pod_vcpu)
        stage.starting += [now + spec.pod_start_s] * min(desired - stage.requested, fits)
    elif desired < stage.requested:
        surplus = stage.requested - desired
        dropped = min(surplus, len(stage.starting))
        stage.starting = stage.starting[: len(stage.starting) - dropped]
        stage.ready -= surplus - dropped


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
) -> Prediction | None:
    """The fewest nodes of `node_vcpu` on which every user's wait meets `targets` (stage ->
    seconds), each stage allowed as many pods as fit; None up to `most_nodes`."""
    for nodes in range(1, most_nodes + 1):
        cluster = Cluster(nodes, node_vcpu)
        if cluster.allocatable_vcpu < sum(spec.pod_vcpu for spec in stages):
            continue
        unbounded = tuple(replace(spec, max_scale=10**6) for spec in stages)
        prediction = simulate(load, unbounded, cluster)
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
    names = [spec.name for spec in prediction.stages]
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
    parser.add_argument("--pace", type=float, default=2.0, help="photos/s each user uploads")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--node-vcpu", type=float, default=4.0)
    parser.add_argument("--embed-vcpu", type=int, choices=(2, 4), default=2)
    parser.add_argument("--target-thumbs-s", type=float, default=10.0)
    parser.add_argument("--target-embeds-s", type=float, default=300.0)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args(argv)
    load = Load(args.users, args.photos, args.pace)
    stages = []
    for name, vcpu in (("thumbnail", None), ("embed", args.embed_vcpu)):
        cpu_s, source = measured_cpu_s(name, vcpu or 1)
        overrides = {"pod_vcpu": float(vcpu)} if vcpu else {}
        stages.append(stage_from_manifest(name, cpu_s, DEFAULT_POD_START_S[name], **overrides))
        print(f"{name}: {cpu_s:g} CPU-s per photo from {source}")
    stages_tuple = tuple(stages)
    prediction = simulate(load, stages_tuple, Cluster(args.nodes, args.node_vcpu))
    print("\n".join(report(prediction)))
    print(f"pods over time: {plot(prediction, args.plot)}")
    targets = {"thumbnail": args.target_thumbs_s, "embed": args.target_embeds_s}
    smallest = smallest_cluster(load, stages_tuple, args.node_vcpu, targets)
    if smallest is None:
        print("no cluster up to 64 nodes meets the targets")
        return 1
    peaks = max_pods(smallest)
    print(
        f"capacity: users={load.users} photos={load.photos} embed_vcpu={args.embed_vcpu} "
        f"worst_thumbs_s={prediction.worst('thumbnail'):.1f} "
        f"worst_embeds_s={prediction.worst('embed'):.1f} "
        f"smallest_nodes={smallest.cluster.nodes}x{args.node_vcpu:g}vcpu "
        f"max_scale_thumbnail={peaks['thumbnail']} max_scale_embed={peaks['embed']} "
        f"vcpu_hours={smallest.vcpu_hours:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
