// Calls to this node's JSON API. The token the user pasted is kept in
// sessionStorage (gone when the tab closes) and sent only as a Bearer header
// to this same origin; the console never loads anything from elsewhere.

const KEY = "hypercore.token";
let onUnauthorized = () => {};

export const session = {
  token: () => sessionStorage.getItem(KEY),
  save: (token) => sessionStorage.setItem(KEY, token),
  clear: () => sessionStorage.removeItem(KEY),
  whenRefused: (fn) => { onUnauthorized = fn; },
};

export class ApiError extends Error {
  constructor(status, code, message, problems = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.problems = problems;
  }
}

async function call(method, path, body, asText) {
  const headers = { Accept: asText ? "text/plain" : "application/json" };
  const token = session.token();
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  if (!response.ok) {
    let error = {};
    try { error = JSON.parse(text).error || {}; } catch { /* not JSON: keep the text */ }
    const err = new ApiError(response.status, error.code || `HTTP ${response.status}`,
      error.message || text || response.statusText, Array.isArray(error.problems) ? error.problems : []);
    if (response.status === 401) onUnauthorized(err);
    throw err;
  }
  return asText ? text : (text ? JSON.parse(text) : null);
}

export const api = {
  get: (path) => call("GET", path),
  post: (path, body) => call("POST", path, body === undefined ? {} : body),
  del: (path) => call("DELETE", path),
  text: (path) => call("GET", path, undefined, true),
};
