"""scripts/measure_core_scaling.py, run as operators run it, on the TEST pack."""

import subprocess
import sys

from devstack.stack import ROOT


def test_it_prints_detection_and_recognition_times_per_core_count_asked_for(test_model_pack):
    command = [sys.executable, "-m", "scripts.measure_core_scaling", "--cores", "1"]
    result = subprocess.run(
        [*command, "--runs", "2", "--pack", str(test_model_pack)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    header, row = result.stdout.splitlines()[-2:]
    assert header.split() == ["cores", "detect", "recognise", "1", "face", "photos/s"]
    cores, detect_ms, recognise_ms, one_face_ms, photos_per_s = map(float, row.split())
    assert cores == 1 and detect_ms > 0 and recognise_ms >= 0
    assert abs(one_face_ms - (detect_ms + recognise_ms)) < 0.2  # each printed to 0.1
    # one_face_ms is printed to 0.1 ms, photos/s (from the unrounded time) to 0.01
    assert 1000 / (one_face_ms + 0.05) - 0.01 <= photos_per_s <= 1000 / (one_face_ms - 0.05) + 0.01


def test_more_cores_than_the_process_may_use_is_refused(test_model_pack):
    command = [sys.executable, "-m", "scripts.measure_core_scaling", "--cores", "4096"]
    result = subprocess.run(
        [*command, "--pack", str(test_model_pack)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "fewer than 4096" in result.stderr
