// Drives the poller against a real status function (tests/test_frontend_example.py starts
// one on a real redis-server, and beside it the dead-letter sink on the same store, and passes
// their URLs and a user's token here).
import assert from "node:assert/strict";
import { test } from "node:test";

import { createStatusPoller, MESSAGES } from "./statusPoller.js";

const { STATUS_URL, STATUS_TOKEN, STATUS_USER, DEAD_LETTER_URL } = process.env;
const skip = STATUS_URL
  ? false
  : "needs STATUS_URL, DEAD_LETTER_URL, STATUS_TOKEN, STATUS_USER (live servers)";

function recorder() {
  const statuses = [];
  const errors = [];
  let notify = () => {};
  return {
    statuses,
    errors,
    onStatus: (status) => {
      statuses.push(status);
      notify();
    },
    onError: (error) => {
      errors.push(error);
      notify();
    },
    until(predicate, timeoutMs = 10000) {
      return new Promise((resolve, reject) => {
        const timeout = setTimeout(() => reject(new Error("timed out")), timeoutMs);
        const check = () => {
          if (predicate()) {
            clearTimeout(timeout);
            resolve();
          }
        };
        notify = check;
        check();
      });
    },
  };
}

// The broker's dead-letter delivery of the photo's upload event (to the cluster-local
// status-dead-letter Service): the photo ends, failed.
async function deadLetter(key) {
  const response = await fetch(`${DEAD_LETTER_URL}/v1/dead-letter`, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "ce-specversion": "1.0",
      "ce-type": "com.backblaze.b2.object.created",
      "ce-source": "/frontend-example-test",
      "ce-id": `${key}-dead`,
      "ce-knativeerrorcode": "503",
    },
    body: JSON.stringify({ bucket: "photos", key, user_id: STATUS_USER }),
  });
  assert.equal(response.status, 200);
}

test("messages map each phase to what the user reads", () => {
  assert.equal(MESSAGES.processing, "Processing your photos");
  assert.equal(MESSAGES.indexing, "Indexing with AI");
  assert.equal(MESSAGES.idle, "");
});

test("a declared upload shows processing, then polling stops once the run is idle", { skip }, async () => {
  const seen = recorder();
  const poller = createStatusPoller({
    baseUrl: STATUS_URL,
    getToken: () => STATUS_TOKEN,
    intervalMs: 50,
    maxIntervalMs: 200,
    ...seen,
  });
  await poller.declareUpload(1);
  assert.equal(seen.statuses[0].phase, "processing");
  assert.equal(MESSAGES[seen.statuses[0].phase], "Processing your photos");
  assert.equal(seen.statuses[0].run.expected, 1);
  assert.ok(poller.running);

  await deadLetter(`${STATUS_USER}/photos/a.jpg`);
  await seen.until(() => seen.statuses.at(-1).phase === "idle");
  assert.equal(poller.running, false);
  const last = seen.statuses.at(-1);
  assert.equal(last.run.progress, 1);
  assert.equal(last.failures[0].reason, "delivery_failed");
  assert.deepEqual(seen.errors, []);
});

test("an unchanged status is not reported again (304 on the ETag)", { skip }, async () => {
  const seen = recorder();
  let requests = 0;
  const poller = createStatusPoller({
    baseUrl: STATUS_URL,
    getToken: () => STATUS_TOKEN,
    intervalMs: 20,
    maxIntervalMs: 40,
    fetchImpl: (...args) => {
      requests += 1;
      return fetch(...args);
    },
    ...seen,
  });
  await poller.declareUpload(1);
  await new Promise((resolve) => setTimeout(resolve, 300));
  poller.stop();
  assert.ok(requests >= 4, `${requests} requests`);
  assert.equal(seen.statuses.length, 1);
  await deadLetter(`${STATUS_USER}/photos/b.jpg`);
});

test("a rejected token stops polling and reports 401", { skip }, async () => {
  const seen = recorder();
  const poller = createStatusPoller({
    baseUrl: STATUS_URL,
    getToken: () => "not-a-token",
    intervalMs: 20,
    ...seen,
  });
  poller.start();
  await seen.until(() => seen.errors.length > 0);
  assert.equal(seen.errors[0].status, 401);
  assert.equal(poller.running, false);
});
