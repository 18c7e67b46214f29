// The thresholds form: reads the current limits, PUTs the edited ones, shows the server's
// validation error as it was given.

import { UnauthorizedError, adminApi } from "./api.js";

export class ThresholdsForm {
  #form;
  #error;
  #status;
  #onSaved;
  #onUnauthorized;

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

  async load() {
    try {
      this.#fill(await adminApi.thresholds());
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

function fieldName(input) {
  const legend = input.closest("fieldset")?.querySelector("legend")?.textContent ?? "";
  return `${legend} ${input.labels[0]?.textContent ?? input.name}`.trim();
}
