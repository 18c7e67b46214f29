// The zoomed-in view of one stage: its numbers now, and charts of its recent history.

import { renderLineChart } from "./charts.js";
import { fillDefinitions, htmlElement } from "./dom.js";
import { formatHealth, formatMs, formatPercent, formatRate, formatSeconds } from "./format.js";

const LATENCY_SERIES = ["p50", "p95", "p99"];

export class StageDetail {
  #section;
  #title;
  #facts;
  #latencyChart;
  #throughputChart;
  #errors;
  #breaches;
  #stageId = null;

  constructor(section, onClose) {
    this.#section = section;
    this.#title = section.querySelector("#stage-detail-title");
    this.#facts = section.querySelector("#stage-facts");
    this.#latencyChart = section.querySelector("#latency-chart");
    this.#throughputChart = section.querySelector("#throughput-chart");
    this.#errors = section.querySelector("#stage-errors");
    this.#breaches = section.querySelector("#stage-breaches");
    section.querySelector("#stage-detail-close").addEventListener("click", onClose);
    section.addEventListener("keydown", (event) => {
      if (event.key === "Escape") onClose();
    });
  }

  get stageId() {
    return this.#stageId;
  }

  open(stageId, label, overview, history) {
    this.#stageId = stageId;
    this.#title.textContent = `${label} stage`;
    this.#section.hidden = false;
    this.update(overview, history);
    this.#title.focus({ preventScroll: true });
  }

  close() {
    this.#stageId = null;
    this.#section.hidden = true;
  }

  update(overview, history) {
    const stage = overview?.stages?.[this.#stageId];
    if (!stage) return;
    const limits = overview.thresholds?.[this.#stageId] ?? {};
    this.#section.dataset.health = stage.health;
    fillDefinitions(this.#facts, factRows(stage, limits));
    this.#breaches.replaceChildren(
      ...(stage.breaches ?? []).map((breach) => htmlElement("li", {}, breach)),
    );
    this.#renderCharts(stage, limits, history);
    this.#renderErrors(stage.errors_by_reason ?? {});
  }

  #renderCharts(stage, limits, history) {
    const latency = stage.latency_ms ?? {};
    renderLineChart(this.#latencyChart, {
      series: LATENCY_SERIES.map((metric) => ({
        className: `series-${metric}`,
        points: history.points(this.#stageId, metric),
      })),
      formatValue: formatMs,
      limit: limits.p95_ms ?? null,
      description:
        `Latency now: p50 ${formatMs(latency.p50)}, p95 ${formatMs(latency.p95)}, ` +
        `p99 ${formatMs(latency.p99)}; p95 limit ${formatMs(limits.p95_ms)}`,
    });
    renderLineChart(this.#throughputChart, {
      series: [
        { className: "series-throughput", points: history.points(this.#stageId, "throughput") },
      ],
      formatValue: formatRate,
      description: `Throughput now: ${formatRate(stage.throughput_per_min)}`,
    });
  }

  #renderErrors(errorsByReason) {
    const reasons = Object.entries(errorsByReason).sort(([, a], [, b]) => b - a);
    this.#errors.replaceChildren(
      ...(reasons.length
        ? reasons.map(([reason, count]) =>
            htmlElement("li", { "data-reason": reason }, [
              htmlElement("span", {}, reason),
              htmlElement("span", { class: "count" }, String(count)),
            ]),
          )
        : [htmlElement("li", { class: "empty" }, "No errors in the window")]),
    );
  }
}

function factRows(stage, limits) {
  const latency = stage.latency_ms ?? {};
  return [
    ["Health", formatHealth(stage.health)],
    ["Throughput", formatRate(stage.throughput_per_min)],
    ["p50", formatMs(latency.p50)],
    ["Pending", String(stage.backlog?.pending ?? 0)],
    ["p95", `${formatMs(latency.p95)} (limit ${formatMs(limits.p95_ms)})`],
    [
      "Oldest",
      `${formatSeconds(stage.backlog?.oldest_age_s)} (limit ${formatSeconds(limits.backlog_age_s)})`,
    ],
    ["p99", formatMs(latency.p99)],
    ["Error rate", formatPercent(stage.error_rate)],
  ];
}
