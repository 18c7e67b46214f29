// Polls the status function for the signed-in user's processing status. No framework: the
// React hook in useProcessingStatus.js wraps it, and node's test runner drives it directly.

export const MESSAGES = {
  processing: "Processing your photos",
  indexing: "Indexing with AI",
  idle: "",
};

const RETRY_STATUSES = new Set([429, 502, 503, 504]);

/**
 * @param {object} options
 * @param {string} options.baseUrl - the status function, e.g. "https://status.example.com"
 * @param {() => string | Promise<string>} options.getToken - the user's bearer JWT (called
 *   before every request, so a refreshed token is picked up)
 * @param {(status: object) => void} options.onStatus - each new status body
 * @param {(error: Error) => void} [options.onError] - a request failed (polling goes on, slower)
 * @param {number} [options.intervalMs=2000] - delay between polls while the status changes
 * @param {number} [options.maxIntervalMs=30000] - backoff ceiling (no change, or errors)
 */
export function createStatusPoller({
  baseUrl,
  getToken,
  onStatus,
  onError = () => {},
  intervalMs = 2000,
  maxIntervalMs = 30000,
  fetchImpl = globalThis.fetch,
}) {
  let etag = null;
  let delayMs = intervalMs;
  let timer = null;
  let running = false;
  let generation = 0; // a stop() or start() ends the loop of an earlier start()

  async function request(path, init = {}) {
    const headers = { Authorization: `Bearer ${await getToken()}`, ...init.headers };
    return fetchImpl(`${baseUrl}${path}`, { ...init, headers, cache: "no-store" });
  }

  async function pollOnce() {
    const response = await request("/v1/status", {
      headers: etag ? { "If-None-Match": etag } : {},
    });
    if (response.status === 304) return null;
    if (!response.ok) {
      const error = new Error(`status ${response.status}`);
      error.status = response.status;
      throw error;
    }
    etag = response.headers.get("ETag");
    return response.json();
  }

  function schedule(loop) {
    if (running && loop === generation) timer = setTimeout(() => tick(loop), delayMs);
  }

  async function tick(loop) {
    timer = null;
    try {
      const status = await pollOnce();
      if (loop !== generation) return; // stopped while the request was in flight
      if (status === null) {
        delayMs = Math.min(delayMs * 1.5, maxIntervalMs); // unchanged: back off
      } else {
        delayMs = intervalMs;
        onStatus(status);
        if (status.phase === "idle") running = false; // the run ended: stop
      }
    } catch (error) {
      if (loop !== generation) return;
      onError(error);
      if (error.status === 401 || error.status === 403) {
        running = false; // the token is not accepted: polling again cannot help
      } else if (error.status === undefined || RETRY_STATUSES.has(error.status)) {
        delayMs = Math.min(delayMs * 2, maxIntervalMs) * (0.8 + Math.random() * 0.4);
      } else {
        running = false;
      }
    }
    schedule(loop);
  }

  return {
    /** Poll now, then keep polling until the user's run is idle. */
    start() {
      if (running) return;
      running = true;
      delayMs = intervalMs;
      tick(++generation);
    },
    stop() {
      running = false;
      generation += 1;
      if (timer !== null) clearTimeout(timer);
      timer = null;
    },
    get running() {
      return running;
    },
    /** Call before uploading `count` photos: the phase is "processing" at once. */
    async declareUpload(count) {
      const response = await request("/v1/uploads", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ expected: count }),
      });
      if (!response.ok) throw new Error(`declaring the upload failed: ${response.status}`);
      etag = response.headers.get("ETag");
      onStatus(await response.json());
      this.start();
    },
  };
}
