// The one module that reaches into noVNC internals for pointer input.
//
// noVNC 1.7 has no public API to send a pointer event; its own mouse and
// gesture handlers call `rfb._sendMouse(x, y, mask)` with canvas-element
// coordinates that it divides by its own scale. We zoom the canvas with a CSS
// transform (pinch), which noVNC does not know about, so we compute
// framebuffer coordinates ourselves from the canvas' on-screen rectangle and
// send them with the static helper `RFB.messages.pointerEvent(sock, x, y, mask)`
// (core/rfb.js) over `rfb._sock`, the same Websock noVNC uses. We read
// `rfb._canvas`, `rfb._fbWidth`, `rfb._fbHeight` and `rfb._rfbConnectionState`.
// If a noVNC upgrade renames any of these, this file is the only one to fix.

import RFB from '@novnc/novnc';

/** RFB button mask bits (RFC 6143 7.5.5): 4-7 are the wheel. */
export const BUTTON = {
  left: 1, middle: 2, right: 4, wheelUp: 8, wheelDown: 16, wheelLeft: 32, wheelRight: 64,
};

export class Pointer {
  /** @param {() => RFB | null} getRfb the current connection (it changes on reconnect). */
  constructor(getRfb) {
    this.getRfb = getRfb;
    this.x = 0;
    this.y = 0;
    this.mask = 0;
  }

  get canvas() {
    return this.getRfb()?._canvas ?? null;
  }

  /** The remote framebuffer size, or null before ServerInit. */
  get size() {
    const rfb = this.getRfb();
    return rfb && rfb._fbWidth ? { w: rfb._fbWidth, h: rfb._fbHeight } : null;
  }

  /** Client (CSS px) point -> framebuffer pixel, clamped; honours CSS transforms. */
  toFramebuffer(clientX, clientY) {
    const rect = this.canvas?.getBoundingClientRect();
    const size = this.size;
    if (!rect || !size || !rect.width || !rect.height) return { x: this.x, y: this.y };
    return {
      x: clamp(Math.floor(((clientX - rect.left) / rect.width) * size.w), 0, size.w - 1),
      y: clamp(Math.floor(((clientY - rect.top) / rect.height) * size.h), 0, size.h - 1),
    };
  }

  /** Framebuffer pixel -> client point (where to draw the trackpad cursor). */
  toClient(x, y) {
    const rect = this.canvas?.getBoundingClientRect();
    const size = this.size;
    if (!rect || !size) return { x: 0, y: 0 };
    return { x: rect.left + ((x + 0.5) / size.w) * rect.width, y: rect.top + ((y + 0.5) / size.h) * rect.height };
  }

  /** Framebuffer pixels per client pixel at the current scale and zoom. */
  get ratio() {
    const rect = this.canvas?.getBoundingClientRect();
    const size = this.size;
    return rect && size && rect.width ? size.w / rect.width : 1;
  }

  moveTo(x, y) {
    const size = this.size;
    this.x = size ? clamp(Math.round(x), 0, size.w - 1) : Math.round(x);
    this.y = size ? clamp(Math.round(y), 0, size.h - 1) : Math.round(y);
    this.send(this.mask);
  }

  moveBy(dx, dy) {
    this.moveTo(this.x + dx, this.y + dy);
  }

  down(button) {
    this.mask |= button;
    this.send(this.mask);
  }

  up(button) {
    this.mask &= ~button;
    this.send(this.mask);
  }

  click(button = BUTTON.left) {
    this.down(button);
    this.up(button);
  }

  /** Wheel steps are a press and release of buttons 4-7 (RFC 6143 7.5.5). */
  wheel(button, steps = 1) {
    for (let i = 0; i < steps; i++) {
      this.send(this.mask | button);
      this.send(this.mask);
    }
  }

  /** Release every button (on cancel or disconnect). */
  release() {
    if (this.mask) this.send(0);
    this.mask = 0;
  }

  send(mask) {
    const rfb = this.getRfb();
    if (!rfb || rfb.viewOnly || rfb._rfbConnectionState !== 'connected') return;
    RFB.messages.pointerEvent(rfb._sock, this.x, this.y, mask);
    // For the overlay and for tests: what was sent, in framebuffer pixels.
    rfb._canvas.dispatchEvent(new CustomEvent('genos:pointer', {
      bubbles: true, detail: { x: this.x, y: this.y, mask },
    }));
  }
}

export function clamp(value, low, high) {
  return Math.min(Math.max(value, low), high);
}
