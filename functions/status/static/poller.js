/** Runs `task` every `intervalMs` after the previous run ends; `now()` runs it at once. */
export class Poller {
  #task;
  #intervalMs;
  #timer = 0;
  #running = false;
  #inFlight = false;
  #rerun = false;

  constructor(task, intervalMs) {
    this.#task = task;
    this.#intervalMs = intervalMs;
  }

  start() {
    this.#running = true;
    this.now();
  }

  stop() {
    this.#running = false;
    clearTimeout(this.#timer);
  }

  async now() {
    if (!this.#running) return;
    if (this.#inFlight) {
      this.#rerun = true;
      return;
    }
    clearTimeout(this.#timer);
    this.#inFlight = true;
    try {
      await this.#task();
    } finally {
      this.#inFlight = false;
      this.#scheduleNext();
    }
  }

  #scheduleNext() {
    if (!this.#running) return;
    if (this.#rerun) {
      this.#rerun = false;
      this.now();
      return;
    }
    this.#timer = setTimeout(() => this.now(), this.#intervalMs);
  }
}
