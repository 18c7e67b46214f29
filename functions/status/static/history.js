// What the stage charts draw: each stage's numbers from the most recent polls.

import { toEpochMs } from "./format.js";

export class MetricsHistory {
  #limit;
  #samples = new Map();

  constructor(limit) {
    this.#limit = limit;
  }

  record(overview) {
    const at = toEpochMs(overview.generated_at);
    for (const [stageId, stage] of Object.entries(overview.stages ?? {})) {
      const samples = this.#samples.get(stageId) ?? [];
      if (samples.at(-1)?.at === at) continue;
      samples.push({
        at,
        p50: stage.latency_ms?.p50 ?? null,
        p95: stage.latency_ms?.p95 ?? null,
        p99: stage.latency_ms?.p99 ?? null,
        throughput: stage.throughput_per_min ?? null,
      });
      samples.splice(0, Math.max(0, samples.length - this.#limit));
      this.#samples.set(stageId, samples);
    }
  }

  /** [{at, value}] of one metric (p50, p95, p99 or throughput) of one stage, oldest first. */
  points(stageId, metric) {
    return (this.#samples.get(stageId) ?? []).map((sample) => ({
      at: sample.at,
      value: sample[metric],
    }));
  }

  clear() {
    this.#samples.clear();
  }
}
