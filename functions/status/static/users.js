// The per-user progress table: one count column per stage, in pipeline order.

import { htmlElement } from "./dom.js";
import { formatCount, formatPercent, formatSeconds } from "./format.js";
import { stagesKey } from "./pipeline.js";


/** Fill `table`'s body with `users`, its header with a column per one of `stages`. */
export function renderUsers(table, stages, users) {
  renderStageHeadings(table.tHead.rows[0], stages);
  const tbody = table.tBodies[0];
  if (users.length === 0) {
    const columns = table.tHead.rows[0].cells.length;
    const empty = htmlElement("td", { colspan: columns, class: "empty" }, "No active users");
    tbody.replaceChildren(htmlElement("tr", {}, empty));
    return;
  }
  tbody.replaceChildren(...users.map((user) => userRow(user, stages)));
}

/** A heading per stage, before the Failed column; left alone while the stages stay the same. */
function renderStageHeadings(row, stages) {
  const layout = stagesKey(stages);
  if (row.dataset.stages === layout) return;
  row.dataset.stages = layout;
  for (const heading of row.querySelectorAll("th[data-stage]")) heading.remove();
  row.querySelector('th[data-column="failed"]').before(
    ...stages.map((stage) =>
      htmlElement("th", { scope: "col", class: "number", "data-stage": stage.name }, stage.label),
    ),
  );
}

/** How a phase reads: the message of the stage it waits for, as the user sees it. */
function phaseText(phase, stages) {
  if (phase === "idle") return "Idle";
  const stage = stages.find((candidate) => candidate.phase === phase);
  if (stage?.message) return stage.message;
  return typeof phase === "string" ? phase.charAt(0).toUpperCase() + phase.slice(1) : "—";
}

function userRow(user, stages) {
  const progress = Math.min(1, Math.max(0, user.progress ?? 0));
  const bar = htmlElement("progress", {
    max: 1,
    value: progress,
    "aria-label": `${user.user_id}: ${formatPercent(progress)} done`,
  });
  return htmlElement("tr", { "data-testid": "user-row", "data-user-id": user.user_id }, [
    htmlElement("th", { scope: "row" }, user.user_id),
    htmlElement("td", { "data-phase": user.phase }, phaseText(user.phase, stages)),
    htmlElement("td", { class: "progress" }, [bar, htmlElement("span", {}, formatPercent(progress))]),
    htmlElement("td", { class: "number" }, formatCount(user.uploaded)),
    ...stages.map((stage) =>
      htmlElement(
        "td",
        { class: "number", "data-stage": stage.name },
        formatCount(user[`${stage.counted_as}_done`]),
      ),
    ),
    htmlElement("td", { class: "number" }, formatCount(user.failed)),
    htmlElement("td", { class: "number" }, user.phase === "idle" ? "—" : formatSeconds(user.eta_s)),
  ]);
}
