// A SPICE VM's desktop: spice-html5 over the API's /spice WebSocket, our own
// input (spiceinput.js), a status line and reconnect on demand.
//
// spice-html5 opens one WebSocket per SPICE channel (main, display, inputs,
// cursor, sound, ...), all to the main channel's URL, so one control token
// serves them all. It is loaded on first use from its own file (see
// vendor/spice-html5.js): the VNC path never loads it.

import { describeError } from './api.js';
import { websocketUrl } from './desktop.js';
import { h } from './dom.js';
import { SpiceInput } from './spiceinput.js';

const LIBRARY = './spice-html5.js'; // beside app.js in dist/ (build.sh), never bundled into it
const CHANNELS = ['display', 'inputs', 'cursor']; // the main connection's fields holding channels
let library = null;
let screens = 0;

/** spice-html5, imported once. */
export function loadSpice() {
  library ??= import(LIBRARY).catch((exc) => {
    library = null;
    throw exc;
  });
  return library;
}

export class SpiceSession extends EventTarget {
  /**
   * @param {HTMLElement} container holds the screen (data-testid=desktop).
   * @param {{getPath: () => Promise<string>}} options
   *   getPath: the /spice WebSocket path with a fresh control token (called per connect).
   * Events: `status` (detail {state: connecting|connected|closed, reason}).
   */
  constructor(container, { getPath }) {
    super();
    this.container = container;
    this.getPath = getPath;
    this.link = null;
    this.active = false;
    this.state = 'closed';
  }

  /** Connect, unless already connecting or connected. */
  start() {
    if (this.active) return;
    this.active = true;
    this.connect();
  }

  /** Connect again (a fresh token, new channels), e.g. after the connection closed. */
  reconnect() {
    this.active = true;
    this.connect();
  }

  /** Close the connection (e.g. the environment was suspended). */
  stop(reason = '') {
    this.active = false;
    this.drop();
    this.setState('closed', reason);
  }

  destroy() {
    this.stop();
  }

  async connect() {
    this.drop();
    const link = { input: null, main: null, host: null, channels: new Set(), closeReason: '' };
    this.link = link;
    this.setState('connecting');
    let lib;
    let path;
    try {
      [lib, path] = await Promise.all([loadSpice(), this.getPath()]);
    } catch (exc) {
      this.closed(link, describeError(exc));
      return;
    }
    if (this.link !== link) return;
    link.host = h('div', { class: 'spice-screen', id: `spice-screen-${++screens}`, tabindex: '0' });
    this.container.prepend(link.host);
    // A WebSocket's error event (a bare Event) is followed by its close, which
    // spice-html5 reports again as an Error with words: wait for that one.
    const onerror = (exc) => {
      if (exc instanceof Error) setTimeout(() => this.closed(link, link.closeReason || why(exc)));
    };
    try {
      link.main = new lib.SpiceMainConn({
        uri: websocketUrl(path),
        password: '', // the gateway checked the token; QEMU's SPICE server has no ticket
        screen_id: link.host.id,
        onerror,
        onsuccess: () => {
          if (this.link === link) this.setState('connected');
        },
      });
    } catch (exc) {
      this.closed(link, describeError(exc));
      return;
    }
    link.main.ws.addEventListener('close', (ev) => {
      link.closeReason = ev.reason; // the gateway says why it closed, when it does
    });
    adoptChannels(link.main, link.channels, onerror);
    link.input = new SpiceInput(link.host, link.main, lib);
  }

  closed(link, reason) {
    if (this.link !== link) return; // an earlier connection, already dropped
    this.drop();
    this.setState('closed', reason);
  }

  /** Close every channel of the current connection and remove its screen. */
  drop() {
    const link = this.link;
    this.link = null;
    if (!link) return;
    link.input?.detach();
    const main = link.main;
    if (main) {
      // stop() removes the canvas through the screen's id: the host is still in the page.
      quietly(() => main.stop());
      const extra = Object.values(main.extra_channels ?? {});
      for (const channel of [...link.channels, ...(main.ports ?? []), ...extra]) {
        quietly(() => channel.cleanup());
      }
    }
    link.host?.remove();
  }

  setState(state, reason = '') {
    this.state = state;
    this.dispatchEvent(new CustomEvent('status', { detail: { state, reason } }));
  }

  sendCtrlAltDel() {
    this.link?.input?.ctrlAltDel();
  }

  /** The canvas as a PNG data URL (for the screenshot action). */
  screenshot() {
    const canvas = this.link?.host?.querySelector('canvas');
    return canvas ? canvas.toDataURL('image/png') : null;
  }
}

/**
 * Give every channel spice-html5 opens an error handler (without one it
 * throws from a WebSocket callback) and remember it for `drop()`: its main
 * connection forgets some (a sound channel overwrites `cursor`) and never
 * closes its port channels.
 */
function adoptChannels(main, channels, onerror) {
  const adopt = (channel) => {
    if (!channel || channels.has(channel)) return;
    channel.onerror = onerror;
    channels.add(channel);
  };
  for (const name of CHANNELS) {
    let value;
    Object.defineProperty(main, name, {
      configurable: true,
      enumerable: true,
      get: () => value,
      set: (channel) => {
        adopt(channel);
        value = channel;
      },
    });
  }
  const process = main.process_channel_message;
  main.process_channel_message = function processAndAdopt(msg) {
    const handled = process.call(this, msg);
    for (const channel of [...(this.ports ?? []), ...Object.values(this.extra_channels ?? {})]) {
      adopt(channel);
    }
    return handled;
  };
}

/** Words for spice-html5's errors. */
function why(exc) {
  const message = exc.message.replace(/\.$/, '');
  if (message === 'Connection refused') return 'refused (no SPICE server there, the VM is not running, or the token was refused)';
  if (message.startsWith('Unexpected close while')) return 'the VM closed the connection';
  if (message === 'Unexpected protocol mismatch') return 'no SPICE server answered';
  if (message === 'Connection timed out') return 'timed out';
  return message || 'connection failed';
}

function quietly(fn) {
  try {
    fn();
  } catch {
    // already closed or half made: nothing more to release
  }
}
