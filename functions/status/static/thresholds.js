// The thresholds form: one fieldset per stage of the overview's pipeline, an input per key of
// its `thresholds`; reads the current limits, PUTs the edited ones, shows the server's
// validation error as it was given.

import { UnauthorizedError, adminApi } from "./api.js";
import { htmlElement } from "./dom.js";

// How each threshold key reads, in the order the inputs stand (`id` ends the input's id). A key
// not named here still gets an input, after these, labelled with its name.
const FIELDS = {
  p95_ms: { label: "p95 latency (ms)", id: "p95" },
  backlog_age_s: { label: "oldest backlog age (s)", id: "backlog" },
};

export class ThresholdsForm {
  #form;
  #error;
  #status;
  #onSaved;
  #onUnauthorized;
  #layout = "[]";
  #loaded = null;

  constructor(form, { onSaved, onUnauthorized }) {
    this.#form = form;
    this.#error = form.querySelector("#thresholds-error");
    this.#status = form.querySelector("#thresholds-status");
    this.#onSaved = onSaved;
    this.#onUnauthorized = onUnauthorized;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#save();
    });
  }

  /**
   * One fieldset per one of `stages` (the overview's pipeline) with an input per key of its
   * `thresholds`; rebuilt only when those change, so an edit in progress survives each poll.
   */
  layout(stages, thresholds) {
    const fieldsets = stages
      .map((stage) => ({ stage, keys: thresholdKeys(thresholds?.[stage.name]) }))
      .filter(({ keys }) => keys.length > 0);
    const layout = JSON.stringify(
      fieldsets.map(({ stage, keys }) => [stage.name, stage.label, keys]),
    );
    if (layout === this.#layout) return;
    this.#layout = layout;
    for (const old of this.#form.querySelectorAll("fieldset")) old.remove();
    this.#error.before(...fieldsets.map(({ stage, keys }) => stageFieldset(stage, keys)));
    if (this.#loaded) this.#fill(this.#loaded);
  }

  async load() {
    try {
      this.#loaded = await adminApi.thresholds();
      this.#fill(this.#loaded);
    } catch (error) {
      this.#fail(error);
    }
  }

  #fill(thresholds) {
    for (const input of this.#inputs()) {
      const [stage, field] = input.name.split(".");
      input.value = thresholds?.[stage]?.[field] ?? "";
    }
  }

  async #save() {
    this.#error.textContent = "";
    this.#status.textContent = "";
    const unreadable = this.#inputs().filter((input) => input.validity.badInput);
    if (unreadable.length > 0) {
      this.#error.textContent = `Not a number: ${unreadable.map(fieldName).join(", ")}`;
      return;
    }
    // Nothing can be edited while a save is in flight: the reload after it would overwrite it.
    const controls = this.#form.querySelectorAll("fieldset, button[type=submit]");
    this.#setDisabled(controls, true);
    try {
      await adminApi.saveThresholds(this.#edited());
      await this.load();
      this.#status.textContent = `Saved at ${new Date().toLocaleTimeString()}`;
      this.#onSaved();
    } catch (error) {
      this.#fail(error);
    } finally {
      this.#setDisabled(controls, false);
    }
  }

  #setDisabled(controls, disabled) {
    for (const control of controls) control.disabled = disabled;
  }

  /** The filled-in fields as the API's partial thresholds object; empty fields stay as they are. */
  #edited() {
    const thresholds = {};
    for (const input of this.#inputs()) {
      if (input.value === "") continue;
      const [stage, field] = input.name.split(".");
      thresholds[stage] ??= {};
      thresholds[stage][field] = input.valueAsNumber;
    }
    return thresholds;
  }

  #fail(error) {
    if (error instanceof UnauthorizedError) this.#onUnauthorized();
    else this.#error.textContent = error.message;
  }

  #inputs() {
    return [...this.#form.querySelectorAll("input[name]")];
  }
}

/** The keys of one stage's limits, those FIELDS names first and in its order. */
function thresholdKeys(limits) {
  const keys = Object.keys(limits ?? {});
  return [
    ...Object.keys(FIELDS).filter((key) => keys.includes(key)),
    ...keys.filter((key) => !(key in FIELDS)),
  ];
}

function stageFieldset(stage, keys) {
  return htmlElement("fieldset", {}, [
    htmlElement("legend", {}, stage.label),
    ...keys.map((key) => {
      const id = `threshold-${stage.name}-${FIELDS[key]?.id ?? key}`;
      return htmlElement("div", { class: "field" }, [
        htmlElement("label", { for: id }, FIELDS[key]?.label ?? key),
        htmlElement("input", {
          id,
          name: `${stage.name}.${key}`,
          type: "number",
          step: "any",
          inputmode: "decimal",
          "aria-describedby": "thresholds-error",
          "data-testid": `threshold-${stage.name}-${key}`,
        }),
      ]);
    }),
  ]);
}

function fieldName(input) {
  const legend = input.closest("fieldset")?.querySelector("legend")?.textContent ?? "";
  return `${legend} ${input.labels[0]?.textContent ?? input.name}`.trim();
}
