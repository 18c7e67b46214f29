// Line charts over the polling history, drawn as SVG: newest sample at the right edge.

import { formatSeconds } from "./format.js";
import { svgElement } from "./svg.js";

const SIZE = { width: 560, height: 180 };
const MARGIN = { left: 62, right: 16, top: 14, bottom: 26 };
const GRID_LINES = 4;
// A limit far above the data would flatten every line to the floor: past this multiple of the
// highest sample it is named in a note instead of drawn.
const LIMIT_SHOWN_UP_TO = 4;

/**
 * Draw `series` ([{className, points: [{at, value}]}], value null where there was no sample) and
 * an optional dashed `limit` line; `description` is what a screen reader hears.
 */
export function renderLineChart(svg, { series, formatValue, limit = null, description }) {
  svg.setAttribute("viewBox", `0 0 ${SIZE.width} ${SIZE.height}`);
  svg.setAttribute("aria-label", description);
  svg.replaceChildren();
  const points = series.flatMap((line) => line.points);
  if (points.length === 0) {
    note(svg, "waiting for the first sample");
    return;
  }
  const times = points.map((point) => point.at);
  const dataMax = Math.max(0, ...points.map((point) => point.value ?? 0));
  const limitDrawn = limit !== null && limit <= Math.max(dataMax, 1e-9) * LIMIT_SHOWN_UP_TO;
  const top = niceCeiling(Math.max(dataMax * 1.15, limitDrawn ? limit * 1.1 : 0));
  const x = scale(Math.min(...times), Math.max(...times), MARGIN.left, SIZE.width - MARGIN.right);
  const y = scale(0, top, SIZE.height - MARGIN.bottom, MARGIN.top);
  drawGrid(svg, y, top, formatValue);
  drawTimeAxis(svg, (Math.max(...times) - Math.min(...times)) / 1000);
  if (limitDrawn) drawLimit(svg, y(limit), `limit ${formatValue(limit)}`);
  else if (limit !== null) note(svg, `limit ${formatValue(limit)} is above this range`);
  for (const line of series) drawLine(svg, line, x, y);
}

function drawGrid(svg, y, top, formatValue) {
  const grid = svgElement("g", { class: "chart-grid", "aria-hidden": "true" }, svg);
  for (let index = 0; index <= GRID_LINES; index += 1) {
    const value = (top * index) / GRID_LINES;
    const position = y(value).toFixed(1);
    svgElement(
      "line",
      { x1: MARGIN.left, x2: SIZE.width - MARGIN.right, y1: position, y2: position },
      grid,
    );
    const label = svgElement(
      "text",
      { class: "chart-tick", x: MARGIN.left - 8, y: position, "text-anchor": "end" },
      grid,
    );
    label.textContent = formatValue(value);
  }
}

function drawTimeAxis(svg, spanSeconds) {
  const axis = svgElement("g", { class: "chart-axis", "aria-hidden": "true" }, svg);
  const baseline = SIZE.height - 6;
  const oldest = svgElement("text", { x: MARGIN.left, y: baseline }, axis);
  oldest.textContent = spanSeconds > 0 ? `−${formatSeconds(spanSeconds)}` : "";
  const newest = svgElement(
    "text",
    { x: SIZE.width - MARGIN.right, y: baseline, "text-anchor": "end" },
    axis,
  );
  newest.textContent = "now";
}

function drawLimit(svg, position, text) {
  const limit = svgElement("g", { class: "chart-limit" }, svg);
  svgElement(
    "line",
    { x1: MARGIN.left, x2: SIZE.width - MARGIN.right, y1: position, y2: position },
    limit,
  );
  const label = svgElement(
    "text",
    { x: SIZE.width - MARGIN.right, y: position - 5, "text-anchor": "end" },
    limit,
  );
  label.textContent = text;
}

function drawLine(svg, line, x, y) {
  svgElement("path", { class: `chart-line ${line.className}`, d: linePath(line.points, x, y) }, svg);
  const newest = line.points.at(-1);
  if (newest && newest.value !== null) {
    svgElement(
      "circle",
      { class: `chart-dot ${line.className}`, cx: x(newest.at), cy: y(newest.value), r: 3.5 },
      svg,
    );
  }
}

/** One path, broken wherever a sample is missing. */
function linePath(points, x, y) {
  let path = "";
  let drawing = false;
  for (const { at, value } of points) {
    if (value === null) {
      drawing = false;
      continue;
    }
    path += `${drawing ? "L" : "M"}${x(at).toFixed(1)} ${y(value).toFixed(1)} `;
    drawing = true;
  }
  return path.trim();
}

function note(svg, text) {
  const label = svgElement(
    "text",
    { class: "chart-note", x: SIZE.width - MARGIN.right, y: MARGIN.top + 4, "text-anchor": "end" },
    svg,
  );
  label.textContent = text;
}

/** Map [from, to] onto [start, end]; a single instant lands on `end` (the newest edge). */
function scale(from, to, start, end) {
  const span = to - from;
  return (value) => (span === 0 ? end : start + ((value - from) / span) * (end - start));
}

/** The smallest 1, 2, 4, 6 or 8 × 10^k at or above `value`: quarters of it read as round numbers. */
function niceCeiling(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 4, 6, 8, 10].find((factor) => factor * magnitude >= value);
  return step * magnitude;
}
