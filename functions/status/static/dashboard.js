// The admin dashboard: sign-in, then the galaxy map, the stage charts, the users' progress and
// the thresholds form, all refreshed by polling the admin overview.

import { UnauthorizedError, adminApi } from "./api.js";
import { toEpochMs } from "./format.js";
import { GalaxyMap } from "./galaxy.js";
import { MetricsHistory } from "./history.js";
import { stagesOf } from "./pipeline.js";
import { Poller } from "./poller.js";
import { StageDetail } from "./stage-detail.js";
import { ThresholdsForm } from "./thresholds.js";
import { renderUsers } from "./users.js";

const POLL_INTERVAL_MS = 2000;
const HISTORY_SAMPLES = 150; // five minutes of polls

const byId = (id) => document.getElementById(id);
const loginView = byId("login-view");
const dashboardView = byId("dashboard-view");
const loginForm = byId("login-form");
const loginError = byId("login-error");
const password = byId("login-password");
const connection = byId("connection");
const logoutButton = byId("logout");
const usersTable = byId("users-table");

const history = new MetricsHistory(HISTORY_SAMPLES);
const galaxy = new GalaxyMap(byId("galaxy-map"), byId("star-tooltip"), openStage);
const detail = new StageDetail(byId("stage-detail"), closeStage);
const thresholdsForm = new ThresholdsForm(byId("thresholds-form"), {
  onSaved: () => poller.now(),
  onUnauthorized: showLogin,
});
const poller = new Poller(refresh, POLL_INTERVAL_MS);
let latest = null;

async function refresh() {
  try {
    const overview = await adminApi.overview();
    if (dashboardView.hidden) showDashboard();
    latest = overview;
    const stages = stagesOf(overview);
    history.record(overview);
    galaxy.update(overview);
    // A stage gone from the pipeline takes its zoomed view with it.
    if (detail.stageId && !galaxy.stageLabel(detail.stageId)) closeStage();
    detail.update(overview, history);
    renderUsers(usersTable, stages, overview.users ?? []);
    thresholdsForm.layout(stages, overview.thresholds);
    const updated = new Date(toEpochMs(overview.generated_at)).toLocaleTimeString();
    showConnection("live", `Live · updated ${updated}`);
  } catch (error) {
    if (error instanceof UnauthorizedError) showLogin();
    else showConnection("lost", `Connection lost (${error.message}), retrying`);
  }
}

function showDashboard() {
  loginView.hidden = true;
  dashboardView.hidden = false;
  logoutButton.hidden = false;
  thresholdsForm.load();
}

function showLogin() {
  poller.stop();
  detail.close();
  galaxy.zoomOut();
  history.clear();
  dashboardView.hidden = true;
  connection.hidden = true;
  logoutButton.hidden = true;
  loginView.hidden = false;
  password.focus();
}

function showConnection(state, text) {
  connection.dataset.state = state;
  connection.textContent = text;
  connection.hidden = false;
}

function openStage(stageId) {
  galaxy.zoomTo(stageId);
  detail.open(stageId, galaxy.stageLabel(stageId) ?? stageId, latest, history);
}

function closeStage() {
  const stageId = detail.stageId;
  detail.close();
  galaxy.zoomOut();
  if (stageId) galaxy.focusStar(stageId);
}

async function signIn(event) {
  event.preventDefault();
  loginError.textContent = "";
  try {
    await adminApi.login(password.value);
    password.value = "";
    poller.start();
  } catch (error) {
    loginError.textContent = `Sign-in refused: ${error.message}`;
    password.select();
  }
}

async function signOut() {
  try {
    await adminApi.logout();
  } finally {
    showLogin();
  }
}

loginForm.addEventListener("submit", signIn);
logoutButton.addEventListener("click", signOut);
poller.start();
