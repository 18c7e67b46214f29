"""Prometheus `/metrics` on every function of the real local stack (gunicorn, several workers):
stage durations as histograms, outcomes by reason, model load time, stage health; and the
alert rules only name metrics that are exported."""

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests
import yaml
from flask import Flask
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from functions.common import metrics
from functions.common.config import AdminSettings
from functions.common.events import OBJECT_CREATED, PhotoRef, binary_http, new_event, photo_data
from functions.common.metrics import instrument
from functions.common.status_model import Backlog, PipelineSnapshot
from functions.status.admin import read_pipeline
from functions.status.metrics import StageHealthCollector
from functions.status.status_reader import StatusReader

RULES = Path(__file__).resolve().parent.parent / "knative" / "alerts" / "prometheus-rules.yaml"


def scrape(url: str) -> dict[str, list]:
    """Every sample on `url`/metrics, parsed by prometheus-client's own parser, by sample name."""
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(key) == wanted for key, wanted in labels.items())
    )


def missing_photo_event(user_id: str, index: int) -> tuple[dict, bytes]:
    photo = PhotoRef("photos", f"{user_id}/never-uploaded-{index}.jpg", None, user_id)
    return binary_http(new_event(OBJECT_CREATED, "/test", photo, photo_data(photo)))


def post_event(url: str, headers: dict, body: bytes) -> requests.Response:
    return requests.post(url, data=body, headers=headers, timeout=10)


@pytest.mark.parametrize("function", ["thumbnail", "embed", "status", "receiver"])
def test_every_function_serves_metrics_that_prometheus_can_parse(stack, function):
    assert scrape(stack.urls[function])


def test_every_scrape_adds_up_all_gunicorn_workers(stack):
    """The thumbnail function runs 2 workers: whichever answers, it reports both workers'
    counts, or the scrapes would disagree with each other and with the requests sent."""
    url = stack.urls["thumbnail"]
    labels = {"stage": "thumbnail", "outcome": "failed", "reason": "missing"}
    before = value(scrape(url), "photo_stage_outcomes_total", **labels)
    sent = 24
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(
            pool.map(
                lambda i: post_event(url, *missing_photo_event("metrics", i)),
                range(sent),
            )
        )
    assert all(reply.status_code == 200 for reply in replies)
    for _ in range(8):
        samples = scrape(url)
        assert value(samples, "photo_stage_outcomes_total", **labels) - before == sent
        assert (
            value(
                samples, "photo_stage_duration_seconds_count", stage="thumbnail", outcome="failed"
            )
            >= sent
        )


def test_stage_durations_are_histograms_with_the_threshold_buckets(stack):
    samples = scrape(stack.urls["thumbnail"])
    bounds = {s.labels["le"] for s in samples["photo_stage_duration_seconds_bucket"]}
    assert {"0.3", "0.5", "+Inf"} <= bounds


def test_the_embed_function_reports_its_model_load_time(stack):
    samples = scrape(stack.urls["embed"])
    assert value(samples, "embed_model_load_seconds", pack="buffalo_l") > 0


def test_the_status_function_exports_stage_health_and_thresholds(stack):
    samples = scrape(stack.urls["status"])
    assert value(samples, "photo_status_store_up") == 1
    assert value(samples, "photo_stage_threshold", stage="thumbnail", threshold="p95_ms") == 300
    assert value(samples, "photo_stage_threshold", stage="embed", threshold="p95_ms") == 500
    breaches = samples["photo_stage_threshold_breach"]
    assert {(s.labels["stage"], s.labels["threshold"]) for s in breaches} == {
        (stage, key) for stage in ("thumbnail", "embed") for key in ("p95_ms", "backlog_age_s")
    }


def test_redis_memory_is_exported_against_its_bound(redis_server):
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    reader = StatusReader(client)
    client.config_set("maxmemory", "512mb")
    try:
        collected = StageHealthCollector(lambda: read_pipeline(reader, AdminSettings())).collect()
        gauges = {family.name: family.samples[0].value for family in collected if family.samples}
    finally:
        client.config_set("maxmemory", 0)
    assert gauges["photo_status_store_memory_max_bytes"] == 512 * 1024 * 1024
    assert 0 < gauges["photo_status_store_memory_used_bytes"] < 512 * 1024 * 1024


def test_the_alert_rules_only_use_metrics_the_functions_export(stack):
    exported = set()
    for function in ("thumbnail", "status"):
        for name, samples in scrape(stack.urls[function]).items():
            exported.add(name)
            exported.update(s.name for s in samples)
    rules = yaml.safe_load(RULES.read_text())
    assert rules["kind"] == "PrometheusRule"
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            names = set(re.findall(r"\b(photo_[a-z_]+)\b", rule["expr"]))
            assert names, rule["alert"]
            assert names <= exported, (rule["alert"], names - exported)


def test_scrapes_in_quick_succession_read_the_pipeline_once():
    reads = []
    now = [100.0]

    def read():
        reads.append(now[0])
        stages = ("thumbnail", "embed")
        snapshot = PipelineSnapshot(
            now=now[0],
            users=[],
            backlog={stage: Backlog() for stage in stages},
            samples={stage: [] for stage in stages},
            thresholds={},
        )
        return snapshot, AdminSettings().default_thresholds

    collector = StageHealthCollector(read, max_age_s=5.0, clock=lambda: now[0])
    list(collector.collect())
    now[0] = 104.5
    list(collector.collect())
    now[0] = 105.5
    list(collector.collect())
    assert reads == [100.0, 105.5]


def test_concurrent_first_requests_to_a_route_are_all_counted_and_answered(serve, monkeypatch):
    """Two threads meet a route's first request at once; a slow label lookup (a new series
    file in multiprocess mode) must not let one see the series half made."""
    app = Flask("concurrent-first")

    @app.get("/slow-start")
    def slow_start() -> str:
        return "ok"

    instrument(app)
    lookup = metrics.HTTP_DURATION.labels

    def slow_labels(*values: str):
        time.sleep(0.05)
        return lookup(*values)

    monkeypatch.setattr(metrics.HTTP_DURATION, "labels", slow_labels)
    url = serve(app) + "/slow-start"
    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = list(pool.map(lambda _: requests.get(url, timeout=10).status_code, range(4)))
    assert codes == [200] * 4
    labels = {"app": "concurrent-first", "method": "GET", "route": "/slow-start", "status": "200"}
    assert REGISTRY.get_sample_value("http_requests_total", labels) == 4
