"""A benchmark's result file, as make capacity reads it."""

from scripts import capacity
from scripts.bench_results import read_result, write_result


def test_a_result_is_read_back_dated_with_the_machine(tmp_path):
    write_result("thumbnail", {"cpu_s_per_photo": 0.042}, tmp_path)
    result = read_result("thumbnail", tmp_path)
    assert result["cpu_s_per_photo"] == 0.042
    assert {"date", "machine"} <= result.keys()


def test_no_run_reads_as_none(tmp_path):
    assert read_result("embed", tmp_path) is None


def test_capacity_takes_a_stages_cost_from_its_result_file(tmp_path, monkeypatch):
    write_result("thumbnail", {"cpu_s_per_photo": 0.042}, tmp_path)
    monkeypatch.setattr(capacity, "read_result", lambda name: read_result(name, tmp_path))
    cost, source = capacity.measured_cpu_s("thumbnail", 1)
    assert (cost, source.split(" ")[0]) == (0.042, "var/bench/thumbnail.json")


def test_capacity_falls_back_to_its_measured_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr(capacity, "read_result", lambda name: read_result(name, tmp_path))
    assert capacity.measured_cpu_s("embed", 4)[0] == capacity.DEFAULT_CPU_S["embed"][4]
