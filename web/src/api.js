// The HTTP API client (docs/api.md): bearer token, JSON in and out, one error type.

const KEY = 'genos.session';

/** An error answer `{"error": {"code", "message"}}`, or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/**
 * The signed-in session: `{token, user}`. Kept in sessionStorage, or in
 * localStorage when the user asked to stay signed in; sign-out clears both.
 */
export const session = {
  get() {
    const raw = sessionStorage.getItem(KEY) ?? localStorage.getItem(KEY);
    try {
      return raw ? JSON.parse(raw) : null;
    } catch {
      return null;
    }
  },
  get token() {
    return this.get()?.token ?? null;
  },
  get user() {
    return this.get()?.user ?? null;
  },
  save(value, remember = false) {
    this.clear();
    (remember ? localStorage : sessionStorage).setItem(KEY, JSON.stringify(value));
  },
  clear() {
    sessionStorage.removeItem(KEY);
    localStorage.removeItem(KEY);
  },
};

/** Headers for an authenticated call (also used by the SSE reader). */
export function authHeaders(extra = {}) {
  const token = session.token;
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

/**
 * Call the API.
 * @param {string} method HTTP method.
 * @param {string} path e.g. `/v1/environments`.
 * @param {object} [body] sent as JSON.
 * @param {{signal?: AbortSignal}} [options]
 * @returns {Promise<any>} the decoded JSON answer (null for 204).
 * @throws {ApiError} for every non-2xx answer and for network failures.
 */
export async function api(method, path, body = undefined, { signal } = {}) {
  const headers = authHeaders({ Accept: 'application/json' });
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
  } catch (exc) {
    if (exc.name === 'AbortError') throw exc;
    throw new ApiError(0, 'network', 'cannot reach the GenOS server');
  }
  return decode(res);
}

/** Turn a Response into JSON data or an ApiError (shared with the SSE reader). */
export async function decode(res) {
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (res.ok) return data;
  const err = data?.error ?? {};
  const error = new ApiError(
    res.status,
    err.code ?? `http_${res.status}`,
    err.message ?? `${res.status} ${res.statusText || 'error'}`.trim(),
  );
  if (res.status === 401 && error.code === 'unauthorized') {
    window.dispatchEvent(new CustomEvent('genos:unauthorized'));
  }
  throw error;
}

/** A one-line message for any thrown value. */
export function describeError(exc) {
  if (exc instanceof ApiError) return exc.message;
  return exc?.message ?? String(exc);
}

// The routes the client uses, named after docs/api.md.
const env = (id) => `/v1/environments/${encodeURIComponent(id)}`;

export const routes = {
  login: (username, password, totp) =>
    api('POST', '/v1/login', { username, password, ...(totp ? { totp } : {}) }),
  redeemLink: (code) => api('POST', '/v1/login', { link: code }),
  logout: () => api('POST', '/v1/logout'),
  me: () => api('GET', '/v1/me'),
  compose: (prompt, answers) =>
    api('POST', '/v1/compose', { prompt, ...(answers && Object.keys(answers).length ? { answers } : {}) }),
  launch: (spec) => api('POST', '/v1/environments', { spec }),
  list: (all = false) => api('GET', `/v1/environments?limit=100${all ? '&all=true' : ''}`),
  get: (id, opts) => api('GET', env(id), undefined, opts),
  suspend: (id) => api('POST', `${env(id)}/suspend`),
  resume: (id) => api('POST', `${env(id)}/resume`),
  terminate: (id) => api('DELETE', env(id)),
  displayToken: (id, permission) => api('POST', `${env(id)}/display-token`, { permission }),
  connections: (id, opts) => api('GET', `${env(id)}/connections`, undefined, opts),
  eventsPath: (id) => `${env(id)}/events`,
  recordings: (id) => api('GET', `${env(id)}/recordings`),
  replayToken: (id, name) =>
    api('POST', `${env(id)}/recordings/${encodeURIComponent(name)}/token`),
  lease: (id, opts) => api('GET', `${env(id)}/computer/lease`, undefined, opts),
  giveBack: (id) => api('POST', `${env(id)}/computer/lease/release`),
  approvals: (id, opts) => api('GET', `${env(id)}/computer/approvals`, undefined, opts),
  decide: (id, approval, decision) =>
    api('POST', `${env(id)}/computer/approvals/${encodeURIComponent(approval)}`, { decision }),
  displayPath: (id, token) => `${env(id)}/display?token=${encodeURIComponent(token)}`,
  /** The SPICE path for the `websocket` of a display-token answer (same token, control only). */
  spicePath: (websocket) => websocket.replace('/display?', '/spice?'),
};
