"""scripts/bench_embed.py's summary fields, its bare-inference floor and its result file for make
capacity (the timings themselves are `make bench-embed`'s, not the tests')."""

import json
import os

import onnxruntime as ort
import pytest

from devstack.sample_photos import sample_photo
from functions.embed import runtime
from functions.embed.settings import EmbedSettings
from scripts import bench_embed, capacity
from scripts.bench_embed import (
    BareComparison,
    BareInference,
    Load,
    Photo,
    PhotoResult,
    Run,
    StockComparison,
    summary_line,
)
from scripts.bench_results import read_result, write_result


def result(faces, total_ms):
    runs = [Run(decode_ms=ms / 4, analyze_ms=ms * 3 / 4, faces=faces) for ms in total_ms]
    load = Load(runs, photos_per_s=4.0)
    return PhotoResult(Photo(faces, b""), [1.0], [100.0], load, load)


def fields(line):
    assert line.startswith("bench embed: ")
    return dict(item.split("=") for item in line.removeprefix("bench embed: ").split())


def test_the_summary_line_gives_the_issues_fields_in_order():
    results = [result(1, [200.0] * 10), result(5, [400.0] * 10), result(20, [1000.0] * 10)]
    stock = {1: StockComparison([300.0], [200.0]), 5: StockComparison([650.0], [500.0])}
    overhead = BareComparison([220.0], [70.0], [130.0])

    line = summary_line(results, stock, overhead, runtime.OPENVINO)

    assert fields(line) == {
        "p95_ms_1face": "200.0",
        "p95_ms_20faces": "1000.0",
        "photos_per_s_1face": "4.00",
        "stock_ratio": "1.50",
        "stock_ratio_5faces": "1.30",
        "overhead_ratio": "1.100",
        "provider": "OpenVINOExecutionProvider",
    }


def test_the_overhead_ratio_is_our_median_over_the_bare_decode_and_inference_medians():
    overhead = BareComparison([230.0, 210.0, 260.0], [60.0, 70.0, 90.0], [150.0, 130.0, 140.0])

    assert overhead.floor_ms == 70.0 + 140.0
    assert overhead.ratio == pytest.approx(230.0 / 210.0)


def test_the_bare_floor_runs_the_packs_graphs_on_the_functions_providers(test_model_pack):
    settings = EmbedSettings(model_root=test_model_pack.parent, model_pack=test_model_pack.name)

    bare = BareInference(settings, faces=3)
    bare()

    (detector, detector_feed), (recognizer, recognizer_feed) = bare.runs
    expected = runtime.providers(settings)
    assert detector.get_providers() == recognizer.get_providers() == expected
    assert next(iter(detector_feed.values())).shape == (1, 3, 640, 640)
    assert next(iter(recognizer_feed.values())).shape[0] == 3
    assert (runtime.OPENVINO in expected) == (runtime.OPENVINO in ort.get_available_providers())


def test_the_result_file_holds_the_cpu_seconds_capacity_reads_per_pod_size(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_embed.os, "sched_getaffinity", lambda pid: {0, 1})
    path = write_result("embed", bench_embed.cpu_result({2: 0.61234}), tmp_path)
    monkeypatch.setattr(capacity, "read_result", lambda name: read_result(name, tmp_path))

    result = json.loads(path.read_text())
    assert result["cpu_s_per_photo_2vcpu"] == 0.6123
    assert "cpu_s_per_photo_4vcpu" not in result
    assert result["not_measured"] == "4 vCPU: this machine has 2 CPUs"
    assert {"date", "machine", "photo"} <= result.keys()
    cost, source = capacity.measured_cpu_s("embed", 2)
    assert (cost, source.split(" ")[0]) == (0.6123, "var/bench/embed.json")
    cost, source = capacity.measured_cpu_s("embed", 4)
    assert cost == capacity.DEFAULT_CPU_S["embed"][4]
    assert source.endswith("did not measure 4 vCPU: this machine has 2 CPUs")


def test_a_machine_with_the_cpus_measures_every_pod_size(monkeypatch):
    monkeypatch.setattr(bench_embed.os, "sched_getaffinity", lambda pid: set(range(8)))
    fields = bench_embed.cpu_result({2: 0.6, 4: 0.7})
    assert (fields["cpu_s_per_photo_2vcpu"], fields["cpu_s_per_photo_4vcpu"]) == (0.6, 0.7)
    assert "not_measured" not in fields


def test_the_cpu_time_per_photo_is_measured_at_the_sizes_this_machine_can_pin(test_model_pack):
    settings = EmbedSettings(model_root=test_model_pack.parent, model_pack=test_model_pack.name)
    photo = Photo(1, sample_photo(seed=1, faces=1, size=(1200, 800)))
    allowed = os.sched_getaffinity(0)

    costs = bench_embed.cpu_per_photo(settings, photo, count=2)

    assert set(costs) == {vcpu for vcpu in bench_embed.POD_VCPUS if vcpu <= len(allowed)}
    assert all(cost > 0 for cost in costs.values())
    assert os.sched_getaffinity(0) == allowed
