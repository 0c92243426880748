// Hash routes (docs/api.md: #/, #/envs, #/env/<id>, #/view/<id>/<token>).
//
// A page is `(root, params, ctx) => void`; `ctx` gives it an AbortSignal and
// cleanup hooks that run when the route changes, so pages never leak timers,
// streams or WebSockets.

import { session } from './api.js';
import { flash } from './dom.js';

const table = [];
let outlet = null;
let current = null;
let loginPage = null;

/** Register a page for a pattern like `#/env/:id`. `auth: false` pages need no sign-in. */
export function route(pattern, page, { auth = true } = {}) {
  const names = [];
  const source = pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/:(\w+)/g, (_m, name) => {
    names.push(name);
    return '([^/]+)';
  });
  table.push({ regex: new RegExp(`^${source}/?$`), names, page, auth });
}

/** Start routing into `root`; `login` renders when a page needs a session. */
export function start(root, login) {
  outlet = root;
  loginPage = login;
  window.addEventListener('hashchange', render);
  window.addEventListener('genos:unauthorized', () => {
    session.clear();
    render();
  });
  render();
}

/** Navigate (re-rendering even if the hash is already `hash`). */
export function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

/** Re-render the current route. */
export function render() {
  current?.cleanup();
  flash(null);
  const hash = location.hash || '#/';
  const match = find(hash) ?? find('#/');
  const ctx = context();
  current = ctx;
  outlet.replaceChildren();
  document.body.classList.remove('desktop-mode');
  document.body.classList.toggle('signed-in', Boolean(session.token));
  if (match.auth && !session.token) {
    loginPage(outlet, { next: hash }, ctx);
  } else {
    match.page(outlet, match.params, ctx);
  }
}

function find(hash) {
  const path = hash.split('?')[0];
  for (const entry of table) {
    const m = entry.regex.exec(path);
    if (m) {
      const params = {};
      entry.names.forEach((name, i) => {
        params[name] = decodeURIComponent(m[i + 1]);
      });
      return { ...entry, params };
    }
  }
  return null;
}

function context() {
  const controller = new AbortController();
  const cleanups = [];
  return {
    signal: controller.signal,
    onCleanup: (fn) => cleanups.push(fn),
    every(ms, fn) {
      const timer = setInterval(fn, ms);
      cleanups.push(() => clearInterval(timer));
    },
    cleanup() {
      controller.abort();
      for (const fn of cleanups.splice(0).reverse()) {
        try {
          fn();
        } catch (exc) {
          console.error(exc);
        }
      }
    },
  };
}
