"""knative/observability/grafana-dashboard.json is a Grafana dashboard on a Prometheus data
source chosen when it is imported, and every query in it is PromQL over series the functions
export: per stage, throughput, latency p50/p95, backlog and failures; the receiver's events."""

from __future__ import annotations

import json
from functools import cache

import promql_parser
import pytest
from prometheus_client.metrics import MetricWrapperBase

import eventing.receiver
import functions.common.metrics
from functions.common.config import AdminSettings
from functions.common.pipeline import PIPELINE
from functions.common.status_model import Backlog, PipelineSnapshot
from functions.status.metrics import StageHealthCollector
from tests.knative_manifests import ROOT

DASHBOARD = ROOT / "knative" / "observability" / "grafana-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's interval variables, which Grafana replaces before Prometheus parses a query.
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "6h"}
# The series each kind of prometheus-client metric exports, by suffix of the metric's name.
SERIES_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


@cache
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def targets() -> list[dict]:
    return [target for panel in dashboard()["panels"] for target in panel["targets"]]


def promql(expression: str) -> object:
    """A dashboard query parsed as Prometheus parses it; ValueError when it is not PromQL."""
    for variable, value in GRAFANA_INTERVALS.items():
        expression = expression.replace(variable, value)
    return promql_parser.parse(expression)


def selectors(expression: str) -> list[promql_parser.VectorSelector]:
    """The series selectors of a dashboard query."""
    found = []

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(promql(expression), visit)
    return found


def metric_names(expression: str) -> set[str]:
    return {selector.name for selector in selectors(expression)}


@cache
def exported_series() -> frozenset[str]:
    """Every series name the functions' /metrics can show: the shared metrics' and those the
    status function computes at each scrape."""
    names = {
        family.name + suffix
        for metric in vars(functions.common.metrics).values()
        if isinstance(metric, MetricWrapperBase)
        for family in metric.describe()
        for suffix in SERIES_SUFFIXES.get(family.type, ("",))
    }
    empty = PipelineSnapshot(
        now=0.0,
        users=[],
        backlog={stage: Backlog() for stage in PIPELINE.names},
        samples={stage: [] for stage in PIPELINE.names},
        thresholds={},
    )
    collector = StageHealthCollector(lambda: (empty, AdminSettings().default_thresholds))
    return frozenset(names | {family.name for family in collector.collect()})


def test_every_panel_has_a_type_a_title_a_place_and_prometheus_queries():
    for panel in dashboard()["panels"]:
        assert panel["type"] and panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["targets"]
        assert all(target["refId"] and target["expr"] for target in panel["targets"])


def test_panel_ids_are_unique():
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_every_query_runs_on_the_prometheus_chosen_in_the_datasource_variable():
    (variable,) = dashboard()["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    assert all(panel["datasource"] == DATASOURCE for panel in dashboard()["panels"])
    assert all(target["datasource"] == DATASOURCE for target in targets())


@pytest.mark.parametrize("expression", [t["expr"] for t in targets()])
def test_every_query_is_promql_over_series_the_functions_export(expression):
    names = metric_names(expression)
    assert names
    assert names - exported_series() == set()


def test_a_query_on_a_series_nobody_exports_is_caught():
    assert "receiver_events_ignored" not in exported_series()  # a counter's series end _total
    assert "photo_stage_latency_seconds_bucket" not in exported_series()


def test_a_query_that_is_not_promql_is_caught():
    with pytest.raises(ValueError):
        metric_names("sum by (stage (rate(photo_stage_outcomes_total[$__rate_interval]))")


def test_the_dashboard_shows_throughput_backlog_and_failures_per_stage_and_the_receivers_events():
    used = set().union(*(metric_names(target["expr"]) for target in targets()))
    assert {
        "photo_stage_outcomes_total",
        "photo_stage_backlog_pending",
        "photo_stage_backlog_oldest_age_seconds",
        "receiver_events_ignored_total",
        "receiver_events_failed_total",
        "receiver_events_duplicate_total",
    } <= used


def stage_latency_quantile(expression: str) -> float | None:
    """The quantile of each stage's photo duration a query shows; None if it shows none."""
    query = promql(expression)
    if not (isinstance(query, promql_parser.Call) and query.func.name == "histogram_quantile"):
        return None
    quantile, buckets = query.args
    by_stage = buckets.modifier.labels == ["stage", "le"]
    histogram = metric_names(expression) == {"photo_stage_duration_seconds_bucket"}
    return quantile.val if by_stage and histogram else None


def test_the_dashboard_shows_each_stages_p50_and_p95_latency_from_the_histogram():
    assert {stage_latency_quantile(target["expr"]) for target in targets()} - {None} == {0.5, 0.95}


def test_the_receivers_requests_are_selected_by_the_receivers_app_name():
    (selector,) = [
        s for t in targets() for s in selectors(t["expr"]) if s.name == "http_requests_total"
    ]
    labels = {matcher.name: matcher.value for matcher in selector.matchers.matchers}
    assert labels["app"] == eventing.receiver.create_app.__module__
