// The galaxy map: the pipeline drawn as a constellation, one star per stage. A star's glow
// follows the stage's throughput and its colour the stage's health against the thresholds.
// The stages are the overview's `pipeline` list: the stars are laid out from their count.

import { fillDefinitions, htmlElement } from "./dom.js";
import { formatHealth, formatMs, formatRate, formatSeconds } from "./format.js";
import { stagesKey, stagesOf } from "./pipeline.js";
import { seededRandom, svgElement } from "./svg.js";

const VIEW = { x: 0, y: 0, width: 1200, height: 500 };
const SOURCE = { label: "Uploads", caption: "B2 webhooks", x: 170, y: 300 };
// The stars share the span from the source to `lastX` evenly, in pipeline order; they zigzag,
// the first (and every other one after it) raised to `raisedY`, the rest on the source's level.
const ROUTE = { lastX: 1010, raisedY: 190 };
// Throughput at which a star glows its fullest; below it the glow grows logarithmically.
const FULL_GLOW_PER_MIN = 600;
// A zoomed view is ZOOM.width wide with the star at ZOOM.anchor of it, leaving room for the
// stage's charts on the right.
const ZOOM = { width: 600, anchor: 0.27, durationMs: 700 };
const SKY_STARS = 240;

/** Where each of `stages` ([{name, label}], in pipeline order) stands on the map. */
export function layoutStars(stages) {
  const step = (ROUTE.lastX - SOURCE.x) / Math.max(1, stages.length);
  return stages.map((stage, index) => ({
    id: stage.name,
    label: stage.label,
    x: Math.round(SOURCE.x + step * (index + 1)),
    y: index % 2 === 0 ? ROUTE.raisedY : SOURCE.y,
  }));
}

/** 0 for an idle stage, 1 at FULL_GLOW_PER_MIN and above. */
export function glowStrength(perMinute) {
  const rate = Math.max(0, perMinute ?? 0);
  return Math.min(1, Math.log1p(rate) / Math.log1p(FULL_GLOW_PER_MIN));
}

export class GalaxyMap {
  #svg;
  #tooltip;
  #onSelect;
  #route;
  #stars = new Map();
  #flows = new Map();
  #layout = stagesKey([]);
  #viewBox = { ...VIEW };
  #overview = null;
  #hovered = null;
  #animation = 0;

  constructor(svg, tooltip, onSelect) {
    this.#svg = svg;
    this.#tooltip = tooltip;
    this.#onSelect = onSelect;
    this.#setViewBox(VIEW);
    drawDefinitions(svg);
    drawSky(svg);
    // Empty until the first overview names the stages.
    this.#route = svgElement("g", { class: "route", "aria-hidden": "true" }, svg);
    drawSource(svg);
  }

  /** The label of a drawn stage (undefined for one the overview does not name). */
  stageLabel(stageId) {
    return this.#stars.get(stageId)?.label;
  }

  update(overview) {
    this.#overview = overview;
    const stages = stagesOf(overview);
    const layout = stagesKey(stages);
    if (layout !== this.#layout) this.#drawStages(stages, layout);
    for (const [id, star] of this.#stars) {
      const stage = overview.stages?.[id];
      updateStar(star, stage);
      const flow = this.#flows.get(id);
      const strength = glowStrength(stage?.throughput_per_min);
      flow.classList.toggle("route-flow-idle", strength === 0);
      flow.style.animationDuration = `${(7 - 6 * strength).toFixed(2)}s`;
    }
    if (this.#hovered) this.#showTooltip(this.#hovered);
  }

  zoomTo(stageId) {
    const star = this.#stars.get(stageId);
    if (!star) return;
    const height = (ZOOM.width * VIEW.height) / VIEW.width;
    this.#hideTooltip();
    this.#svg.dataset.zoomed = stageId;
    for (const [id, other] of this.#stars) {
      other.group.setAttribute("aria-expanded", String(id === stageId));
    }
    this.#animateTo({
      x: star.x - ZOOM.width * ZOOM.anchor,
      y: star.y - height / 2 + 24,
      width: ZOOM.width,
      height,
    });
  }

  zoomOut() {
    delete this.#svg.dataset.zoomed;
    for (const star of this.#stars.values()) star.group.setAttribute("aria-expanded", "false");
    this.#animateTo(VIEW);
  }

  focusStar(stageId) {
    this.#stars.get(stageId)?.group.focus();
  }

  /** (Re)draw the stars and the route from the source through each of them in order. */
  #drawStages(stages, layout) {
    this.#layout = layout;
    if (this.#hovered) this.#hideTooltip();
    for (const star of this.#stars.values()) star.group.remove();
    this.#stars.clear();
    this.#flows.clear();
    this.#route.replaceChildren();
    let previous = SOURCE;
    for (const star of layoutStars(stages)) {
      const path = curve(previous, star);
      svgElement("path", { class: "route-line", d: path }, this.#route);
      this.#flows.set(star.id, svgElement("path", { class: "route-flow", d: path }, this.#route));
      this.#stars.set(star.id, this.#drawStar(star));
      previous = star;
    }
    const zoomed = this.#svg.dataset.zoomed;
    if (zoomed && this.#stars.has(zoomed)) this.zoomTo(zoomed);
    else if (zoomed) this.zoomOut();
  }

  #drawStar(stage) {
    const group = svgElement(
      "g",
      {
        class: "star",
        transform: `translate(${stage.x} ${stage.y})`,
        role: "button",
        tabindex: 0,
        "aria-describedby": "star-tooltip",
        "aria-controls": "stage-detail",
        "aria-expanded": "false",
        "aria-label": `${stage.label} stage`,
        "data-testid": `star-${stage.id}`,
        "data-stage": stage.id,
        "data-health": "unknown",
      },
      this.#svg,
    );
    const glow = svgElement("circle", { class: "star-glow", r: 40 }, group);
    svgElement("circle", { class: "star-ring", r: 24 }, group);
    const spikes = svgElement("path", { class: "star-spikes", d: spikePath(36, 3) }, group);
    svgElement("circle", { class: "star-core", r: 9 }, group);
    svgElement("text", { class: "star-label", y: 72 }, group).textContent = stage.label;
    const reading = svgElement("text", { class: "star-reading", y: 94 }, group);
    this.#listen(stage.id, group);
    return { ...stage, group, glow, spikes, reading };
  }

  #listen(stageId, group) {
    const show = () => this.#showTooltip(stageId);
    const hide = () => this.#hideTooltip();
    group.addEventListener("pointerenter", show);
    group.addEventListener("focus", show);
    group.addEventListener("pointerleave", hide);
    group.addEventListener("blur", hide);
    group.addEventListener("click", () => this.#onSelect(stageId));
    group.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        this.#onSelect(stageId);
      }
    });
  }

  #showTooltip(stageId) {
    this.#hovered = stageId;
    const stage = this.#overview?.stages?.[stageId];
    // Zoomed in, the stage's panel shows these numbers and more.
    if (!stage || this.#svg.dataset.zoomed) return;
    const star = this.#stars.get(stageId);
    const limits = this.#overview.thresholds?.[stageId] ?? {};
    const details = htmlElement("dl");
    fillDefinitions(details, tooltipRows(stage, limits));
    this.#tooltip.dataset.health = stage.health;
    this.#tooltip.replaceChildren(htmlElement("strong", {}, `${star.label} stage`), details);
    this.#tooltip.hidden = false;
    this.#placeTooltip(star);
  }

  #placeTooltip(star) {
    const frame = this.#tooltip.offsetParent.getBoundingClientRect();
    const core = star.group.querySelector(".star-core").getBoundingClientRect();
    const gap = 28;
    let left = core.right - frame.left + gap;
    if (left + this.#tooltip.offsetWidth > frame.width) {
      left = core.left - frame.left - gap - this.#tooltip.offsetWidth;
    }
    const top = core.top - frame.top - this.#tooltip.offsetHeight / 2;
    this.#tooltip.style.left = `${Math.max(8, left)}px`;
    this.#tooltip.style.top = `${Math.max(8, top)}px`;
  }

  #hideTooltip() {
    this.#hovered = null;
    this.#tooltip.hidden = true;
  }

  #animateTo(target) {
    cancelAnimationFrame(this.#animation);
    if (window.matchMedia("(prefers-reduced-motion: reduce)").matches) {
      this.#setViewBox(target);
      return;
    }
    const from = { ...this.#viewBox };
    const start = performance.now();
    const step = (now) => {
      const progress = Math.min(1, (now - start) / ZOOM.durationMs);
      this.#setViewBox(interpolateBox(from, target, easeInOut(progress)));
      if (progress < 1) this.#animation = requestAnimationFrame(step);
    };
    this.#animation = requestAnimationFrame(step);
  }

  #setViewBox(box) {
    this.#viewBox = { ...box };
    this.#svg.setAttribute("viewBox", `${box.x} ${box.y} ${box.width} ${box.height}`);
  }
}

function updateStar(star, stage) {
  const health = stage?.health ?? "unknown";
  const strength = glowStrength(stage?.throughput_per_min);
  star.group.dataset.health = health;
  // An idle star still glows enough to show its health's colour.
  star.glow.setAttribute("r", (48 + 52 * strength).toFixed(1));
  star.glow.style.opacity = (0.6 + 0.4 * strength).toFixed(2);
  star.spikes.setAttribute("transform", `scale(${(0.7 + 0.6 * strength).toFixed(2)})`);
  const reading = `${formatRate(stage?.throughput_per_min)} · ${formatHealth(health)}`;
  star.reading.textContent = reading;
  star.group.setAttribute("aria-label", `${star.label} stage: ${reading}`);
}

function tooltipRows(stage, limits) {
  const rows = [
    ["Health", formatHealth(stage.health)],
    ["Throughput", formatRate(stage.throughput_per_min)],
    ["p95 latency", `${formatMs(stage.latency_ms?.p95)} (limit ${formatMs(limits.p95_ms)})`],
    [
      "Backlog",
      `${stage.backlog?.pending ?? 0} pending, oldest ${formatSeconds(stage.backlog?.oldest_age_s)}`,
    ],
  ];
  for (const breach of stage.breaches ?? []) rows.push(["Breach", breach]);
  return rows;
}

function drawDefinitions(svg) {
  const defs = svgElement("defs", {}, svg);
  gradient(defs, "glow-ok", [
    [0, "#F4F8FF", 0.95],
    [0.3, "#8DB8F2", 0.55],
    [1, "#0F3460", 0],
  ]);
  gradient(defs, "glow-breach", [
    [0, "#FFE3E8", 0.95],
    [0.3, "#E94560", 0.6],
    [1, "#53354A", 0],
  ]);
  gradient(defs, "glow-unknown", [
    [0, "#B9A9B4", 0.6],
    [1, "#53354A", 0],
  ]);
  gradient(defs, "nebula-accent", [
    [0, "#0F3460", 0.75],
    [1, "#0F3460", 0],
  ]);
  gradient(defs, "nebula-muted", [
    [0, "#53354A", 0.6],
    [1, "#53354A", 0],
  ]);
}

function gradient(defs, id, stops) {
  const radial = svgElement("radialGradient", { id }, defs);
  for (const [offset, color, opacity] of stops) {
    svgElement("stop", { offset, "stop-color": color, "stop-opacity": opacity }, radial);
  }
}

function drawSky(svg) {
  const sky = svgElement("g", { class: "sky", "aria-hidden": "true" }, svg);
  const margin = VIEW.width;
  svgElement(
    "rect",
    { class: "sky-backdrop", x: -margin, y: -margin, width: 3 * margin, height: 3 * margin },
    sky,
  );
  const nebulae = [
    ["nebula-accent", 420, 230, 380, 190],
    ["nebula-muted", 860, 330, 300, 150],
    ["nebula-accent", 1080, 120, 220, 120],
    ["nebula-muted", 160, 120, 200, 110],
  ];
  for (const [fill, cx, cy, rx, ry] of nebulae) {
    svgElement("ellipse", { cx, cy, rx, ry, fill: `url(#${fill})` }, sky);
  }
  const random = seededRandom(1746);
  for (let index = 0; index < SKY_STARS; index += 1) {
    svgElement(
      "circle",
      {
        class: index % 9 === 0 ? "sky-star sky-star-twinkle" : "sky-star",
        cx: (random() * VIEW.width).toFixed(1),
        cy: (random() * VIEW.height).toFixed(1),
        r: (0.4 + random() * random() * 1.8).toFixed(2),
        opacity: (0.25 + random() * 0.7).toFixed(2),
      },
      sky,
    );
  }
}

function drawSource(svg) {
  const group = svgElement(
    "g",
    {
      class: "source",
      transform: `translate(${SOURCE.x} ${SOURCE.y})`,
      role: "img",
      "aria-label": "Uploads arrive from B2 webhooks, the start of the pipeline",
    },
    svg,
  );
  svgElement("circle", { class: "source-halo", r: 26 }, group);
  svgElement("circle", { class: "source-core", r: 7 }, group);
  svgElement("text", { class: "star-label", y: 60 }, group).textContent = SOURCE.label;
  svgElement("text", { class: "star-reading", y: 82 }, group).textContent = SOURCE.caption;
}

function curve(from, to) {
  const bend = (to.x - from.x) * 0.45;
  return `M${from.x} ${from.y} C${from.x + bend} ${from.y} ${to.x - bend} ${to.y} ${to.x} ${to.y}`;
}

function spikePath(length, waist) {
  return (
    `M0 ${-length} L${waist} ${-waist} L${length} 0 L${waist} ${waist} ` +
    `L0 ${length} L${-waist} ${waist} L${-length} 0 L${-waist} ${-waist} Z`
  );
}

function interpolateBox(from, to, fraction) {
  const mix = (key) => from[key] + (to[key] - from[key]) * fraction;
  return { x: mix("x"), y: mix("y"), width: mix("width"), height: mix("height") };
}

function easeInOut(progress) {
  return progress < 0.5 ? 4 * progress ** 3 : 1 - (-2 * progress + 2) ** 3 / 2;
}
