// One environment's display: noVNC's RFB over the API's WebSocket, with
// reconnects (a fresh display token each time) and our touch input.

import RFB from '@novnc/novnc';

import { h, sleep } from './dom.js';
import { Pointer } from './pointer.js';
import { TouchInput } from './touch.js';

/** ws(s):// URL for an API path, on the page's own host. */
export function websocketUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

export class DesktopSession extends EventTarget {
  /**
   * @param {HTMLElement} container holds noVNC's screen (data-testid=desktop).
   * @param {{getPath: () => Promise<string>, viewOnly?: boolean}} options
   *   getPath: the display WebSocket path with a valid token (called per connect).
   * Events: `status` (detail {state: connecting|connected|reconnecting|disconnected, reason}),
   * `clipboard` (detail {text}).
   */
  constructor(container, { getPath, viewOnly = false }) {
    super();
    this.container = container;
    this.getPath = getPath;
    this.viewOnly = viewOnly;
    this.rfb = null;
    this.active = false;
    this.state = 'disconnected';
    this.attempt = 0;
    this.cursor = h('div', { class: 'vpointer', hidden: true, 'aria-hidden': 'true' });
    container.append(this.cursor);
    this.pointer = new Pointer(() => this.rfb);
    this.touch = new TouchInput(container, this.pointer, { cursor: this.cursor });
    if (!viewOnly) this.touch.attach();
    this.resizeObserver = new ResizeObserver(() => this.touch.zoom.reset());
    this.resizeObserver.observe(container);
  }

  /** Connect, and keep reconnecting until `stop()`. */
  start() {
    if (this.active) return;
    this.active = true;
    this.abort = new AbortController();
    this.connect();
  }

  /** Disconnect and stop reconnecting (e.g. the environment was suspended). */
  stop(reason = '') {
    this.active = false;
    this.abort?.abort();
    this.drop();
    this.setState('disconnected', reason);
  }

  destroy() {
    this.stop();
    this.touch.detach();
    this.resizeObserver.disconnect();
  }

  async connect() {
    const signal = this.abort.signal;
    this.setState(this.attempt ? 'reconnecting' : 'connecting');
    let path;
    try {
      path = await this.getPath();
    } catch (exc) {
      if (!signal.aborted) this.retry(exc.message);
      return;
    }
    if (signal.aborted) return;
    this.drop();
    const host = h('div', { class: 'screen-host' });
    this.container.prepend(host);
    const rfb = new RFB(host, websocketUrl(path), { wsProtocols: ['binary'], shared: true });
    rfb.scaleViewport = true;
    // The remote screen follows this container (RFB SetDesktopSize); the
    // gateway passes it within the spec's display.resize/max_resolution.
    rfb.resizeSession = !this.viewOnly;
    rfb.viewOnly = this.viewOnly;
    rfb.background = 'transparent';
    rfb.addEventListener('connect', () => {
      this.attempt = 0;
      this.touch.zoom.reset();
      this.setState('connected');
    });
    rfb.addEventListener('disconnect', (ev) => {
      if (this.rfb !== rfb) return;
      this.pointer.release();
      const reason = this.failure ?? (ev.detail.clean ? 'the display closed' : 'connection lost');
      this.failure = null;
      this.retry(reason);
    });
    rfb.addEventListener('securityfailure', (ev) => {
      this.failure = ev.detail.reason ?? 'refused by the display';
    });
    rfb.addEventListener('clipboard', (ev) => {
      this.dispatchEvent(new CustomEvent('clipboard', { detail: { text: ev.detail.text } }));
    });
    this.rfb = rfb;
    this.host = host;
  }

  async retry(reason) {
    if (!this.active) return;
    this.attempt += 1;
    this.setState('reconnecting', reason);
    try {
      await sleep(Math.min(500 * 2 ** Math.min(this.attempt - 1, 4), 8000), this.abort.signal);
    } catch {
      return;
    }
    if (this.active) this.connect();
  }

  drop() {
    const rfb = this.rfb;
    this.rfb = null;
    if (rfb) {
      try {
        rfb.disconnect();
      } catch {
        // already closed
      }
    }
    this.host?.remove();
    this.host = null;
  }

  setState(state, reason = '') {
    this.state = state;
    this.dispatchEvent(new CustomEvent('status', { detail: { state, reason } }));
  }

  /** The canvas as a PNG data URL (for the screenshot action). */
  screenshot() {
    if (!this.rfb) return null;
    return this.rfb.toDataURL('image/png');
  }
}
