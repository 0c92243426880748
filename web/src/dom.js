// Tiny DOM helpers: build elements without HTML strings (CSP-friendly, no innerHTML).

/**
 * Create an element.
 * props: `class`, `testid` (-> data-testid), `dataset`, `on<event>` listeners,
 * `hidden`/`disabled`/`value`/... (set as properties), everything else as attributes.
 * children: strings, nodes, arrays, null/false (skipped).
 */
export function h(tag, props = null, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'testid') el.setAttribute('data-testid', value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (PROPS.has(key)) el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

const PROPS = new Set(['hidden', 'disabled', 'value', 'checked', 'readOnly', 'autofocus', 'max']);

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Show a one-line message in the page's flash bar (errors by default). */
export function flash(message, kind = 'error') {
  const bar = document.getElementById('flash');
  if (!bar) return;
  bar.textContent = message ?? '';
  bar.className = `flash ${kind}`;
  bar.hidden = !message;
}

/** Resolve after `ms`, or reject with AbortError when `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}
