// How numbers read on the dashboard. A missing value (no samples yet) reads as an em dash.

const MISSING = "—";

function isNumber(value) {
  return typeof value === "number" && Number.isFinite(value);
}

export function formatMs(ms) {
  if (!isNumber(ms)) return MISSING;
  if (ms === 0) return "0 ms";
  if (ms < 10) return `${ms.toFixed(ms < 1 ? 2 : 1)} ms`;
  if (ms < 10_000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

export function formatSeconds(seconds) {
  if (!isNumber(seconds)) return MISSING;
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function formatRate(perMinute) {
  if (!isNumber(perMinute)) return MISSING;
  if (perMinute === 0) return "0/min";
  return `${perMinute.toFixed(perMinute < 10 ? 1 : 0)}/min`;
}

export function formatPercent(fraction) {
  if (!isNumber(fraction)) return MISSING;
  return `${(fraction * 100).toFixed(fraction > 0 && fraction < 0.1 ? 1 : 0)} %`;
}

export function formatCount(count) {
  return isNumber(count) ? count.toLocaleString("en") : MISSING;
}

/** `generated_at` as epoch milliseconds, whether the API sends ISO 8601 or epoch seconds. */
export function toEpochMs(timestamp) {
  if (isNumber(timestamp)) return timestamp < 1e12 ? timestamp * 1000 : timestamp;
  const parsed = Date.parse(timestamp);
  return Number.isNaN(parsed) ? Date.now() : parsed;
}

export function formatHealth(health) {
  return { ok: "OK", breach: "Breach" }[health] ?? "No data";
}
