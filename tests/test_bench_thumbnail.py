"""The thumbnail bench's pairing and ratios (scripts/bench_thumbnail.py), without sharp."""

import math
import os

import pytest

from scripts.bench_thumbnail import (
    FunctionTimes,
    Photo,
    Result,
    _idlest_cpu,
    _on_cpu,
    format_ratios,
    interleaved,
    summary_line,
)


def result(name: str, kind: str, ours: list[float], sharp: list[float]) -> Result:
    photo = Photo(name, kind, b"", (4000, 3000))
    return Result(photo, tuple(ours), tuple(sharp), dims_equal=True, psnr_db=42.0)


def test_the_sides_alternate_which_goes_first_after_one_untimed_run_each():
    calls = []

    def side(name: str, ms: float):
        def run() -> float:
            calls.append(name)
            return ms

        return run

    timings = interleaved(3, {"sharp": side("sharp", 2.0), "ours": side("ours", 1.0)})

    assert calls == ["sharp", "ours", "sharp", "ours", "ours", "sharp", "sharp", "ours"]
    assert timings == {"sharp": [2.0, 2.0, 2.0], "ours": [1.0, 1.0, 1.0]}


def test_a_photos_ratio_is_ours_over_sharp_of_the_medians():
    r = result("a", "jpeg12mp", [10, 30, 20], [40, 20, 100])

    assert r.ratio == pytest.approx(20 / 40)


def test_the_floor_is_our_decoding_alone_over_sharps_whole_thumbnail():
    photo = Photo("a", "jpeg12mp", b"", (4000, 3000))
    r = Result(photo, (10, 12), (20, 20), dims_equal=True, psnr_db=42.0, decode_ms=(8, 9, 10))

    assert r.floor == pytest.approx(9 / 20)


def test_a_formats_ratio_is_the_median_of_its_photos_and_the_worst_jpeg_is_reported():
    results = [
        result("a", "jpeg12mp", [9], [10]),
        result("b", "jpeg12mp", [12], [10]),
        result("c", "jpeg", [8], [10]),
        result("d", "png", [11], [10]),
        result("e", "webp", [14], [10]),
    ]

    assert format_ratios(results) == {
        "jpeg": pytest.approx([0.9, 1.2, 0.8]),
        "png": pytest.approx([1.1]),
        "webp": pytest.approx([1.4]),
    }
    line = summary_line(results, FunctionTimes(ms=[5.0, 7.0], cpu_s_per_photo=0.04))
    assert line.startswith("bench thumbnail: ")
    fields = dict(field.split("=") for field in line.removeprefix("bench thumbnail: ").split())
    assert fields["jpeg_ratio"] == "0.90"
    assert fields["worst_jpeg_ratio"] == "1.20"
    assert fields["png_ratio"] == "1.10"
    assert fields["webp_ratio"] == "1.40"
    assert fields["mixed_ratio"] == "1.10"
    assert fields["dims_equal"] == "5/5"
    assert fields["function_p50_ms"] == "6.0"
    assert fields["function_cpu_s"] == "0.040"


def test_a_format_with_no_photos_is_left_as_nan():
    line = summary_line([result("a", "jpeg12mp", [9], [10])], FunctionTimes([], math.nan))

    assert "png_ratio=nan" in line
    assert "function_p50_ms" not in line
    assert not math.isnan(float(line.split("jpeg_ratio=")[1].split()[0]))


def test_both_sides_are_timed_on_one_cpu_and_the_process_is_freed_after():
    allowed = os.sched_getaffinity(0)
    cpu = _idlest_cpu(seconds=0.05)
    assert cpu in allowed

    with _on_cpu(cpu):
        assert os.sched_getaffinity(0) == {cpu}

    assert os.sched_getaffinity(0) == allowed
