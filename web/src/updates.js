// Holding back noVNC's framebuffer update requests while the video shows.
//
// RFB is pull-based (RFC 6143 7.5.3): a server sends a FramebufferUpdate only
// in answer to a FramebufferUpdateRequest, and noVNC 1.7 sends the next
// incremental request right after each update it has read (the gateway strips
// ContinuousUpdates, so that is the only way updates are asked for). noVNC
// has no API to stop asking, so this module wraps the static helper it sends
// every request with, `RFB.messages.fbUpdateRequest(sock, ...)` (core/rfb.js),
// and drops the incremental ones of a paused connection, found by its
// `rfb._sock`. Nothing inside noVNC changes: its decoders, display and input
// carry on, it simply receives no more pictures. Resuming asks for the whole
// screen (non-incremental), which repaints the canvas exactly. Besides
// `_sock`, `rfb._fbWidth` and `rfb._fbHeight` are read; pointer.js lists the
// same dependencies for a noVNC upgrade.

import RFB from '@novnc/novnc';

const gates = new WeakMap(); // Websock -> UpdateGate
const send = RFB.messages.fbUpdateRequest;

RFB.messages.fbUpdateRequest = function fbUpdateRequest(sock, incremental, ...rest) {
  const gate = gates.get(sock);
  if (gate && !gate.asked(Boolean(incremental))) return;
  send.call(this, sock, incremental, ...rest);
};

/** One noVNC connection's update requests: counted, and held back while paused. */
export class UpdateGate {
  /** @param {RFB} rfb a noVNC connection (one gate each; a reconnect makes a new RFB). */
  constructor(rfb) {
    this.rfb = rfb;
    this.paused = false;
    this.updates = 0; // FramebufferUpdates noVNC has read (it asks again after each)
    this.held = 0; // requests dropped while paused
    this.onUpdate = null; // called after each update noVNC has read
    gates.set(rfb._sock, this);
  }

  /** noVNC wants to send a request; false drops it. */
  asked(incremental) {
    if (!incremental) return true; // the first request, and ours on resume
    this.updates += 1;
    this.onUpdate?.();
    if (!this.paused) return true;
    this.held += 1;
    return false;
  }

  /** Stop asking for updates (the one already asked for still arrives). */
  pause() {
    this.paused = true;
  }

  /** Ask again, for the whole screen: the canvas may be long out of date. */
  resume() {
    if (!this.paused) return;
    this.paused = false;
    this.request(false);
  }

  /** While paused: one incremental update (e.g. to learn a new screen size). */
  poke() {
    if (this.paused) this.request(true);
  }

  request(incremental) {
    const rfb = this.rfb;
    if (!rfb._fbWidth || rfb._rfbConnectionState !== 'connected') return;
    send(rfb._sock, incremental, 0, 0, rfb._fbWidth, rfb._fbHeight);
  }
}
