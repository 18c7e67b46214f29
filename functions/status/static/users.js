// The per-user progress table.

import { htmlElement } from "./dom.js";
import { formatCount, formatPercent, formatSeconds } from "./format.js";

const PHASES = {
  processing: "Processing photos",
  indexing: "Indexing with AI",
  idle: "Idle",
};

export function renderUsers(tbody, users) {
  if (users.length === 0) {
    const empty = htmlElement("td", { colspan: 8, class: "empty" }, "No active users");
    tbody.replaceChildren(htmlElement("tr", {}, empty));
    return;
  }
  tbody.replaceChildren(...users.map(userRow));
}

function userRow(user) {
  const progress = Math.min(1, Math.max(0, user.progress ?? 0));
  const bar = htmlElement("progress", {
    max: 1,
    value: progress,
    "aria-label": `${user.user_id}: ${formatPercent(progress)} done`,
  });
  return htmlElement("tr", { "data-testid": "user-row", "data-user-id": user.user_id }, [
    htmlElement("th", { scope: "row" }, user.user_id),
    htmlElement("td", { "data-phase": user.phase }, PHASES[user.phase] ?? user.phase),
    htmlElement("td", { class: "progress" }, [bar, htmlElement("span", {}, formatPercent(progress))]),
    htmlElement("td", { class: "number" }, formatCount(user.uploaded)),
    htmlElement("td", { class: "number" }, formatCount(user.thumbnails_done)),
    htmlElement("td", { class: "number" }, formatCount(user.embeddings_done)),
    htmlElement("td", { class: "number" }, formatCount(user.failed)),
    htmlElement("td", { class: "number" }, user.phase === "idle" ? "—" : formatSeconds(user.eta_s)),
  ]);
}
