// The admin API of the status function. The session is the HttpOnly `admin_session` cookie,
// which the browser sends on these same-origin requests by itself.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The session is missing or expired: the caller shows the sign-in form. */
export class UnauthorizedError extends ApiError {}

async function request(method, path, body) {
  const init = { method, headers: { Accept: "application/json" }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const payload = await response.json().catch(() => null);
  if (response.status === 401) {
    throw new UnauthorizedError(401, payload?.error ?? "not signed in");
  }
  if (!response.ok) {
    throw new ApiError(response.status, payload?.error ?? `${method} ${path} answered ${response.status}`);
  }
  return payload;
}

export const adminApi = {
  login: (password) => request("POST", "/v1/admin/login", { password }),
  logout: () => request("POST", "/v1/admin/logout"),
  overview: () => request("GET", "/v1/admin/overview"),
  thresholds: () => request("GET", "/v1/admin/thresholds"),
  saveThresholds: (thresholds) => request("PUT", "/v1/admin/thresholds", thresholds),
};
