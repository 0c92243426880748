// Touch gestures on the desktop, turned into RFB pointer events (via pointer.js).
//
//   one-finger tap          left click (direct: where the finger is; trackpad: at the cursor)
//   long press (550 ms)     right click
//   two-finger tap          right click
//   one-finger drag         direct: drag with the left button; trackpad: move the cursor
//   tap, then touch + drag  trackpad: drag with the left button
//   two-finger drag         scroll (wheel buttons 4/5 and 6/7)
//   pinch                   zoom the canvas (CSS transform) and pan with the fingers
//
// Listeners sit on the container in the capture phase and stop the events,
// so noVNC's own gesture handler on the canvas never sees them.

import { BUTTON, clamp } from './pointer.js';

const TAP_MOVE = 10; // px a finger may move and still tap
const LONG_PRESS_MS = 550;
const TAP_MS = 400;
const DOUBLE_TAP_MS = 300;
const SCROLL_STEP = 24; // px of two-finger travel per wheel step
const PINCH_START = 24; // px of distance change that makes two fingers a pinch
const MAX_ZOOM = 5;

export class TouchInput {
  /**
   * @param {HTMLElement} container element that holds noVNC's screen.
   * @param {import('./pointer.js').Pointer} pointer
   * @param {{cursor: HTMLElement, mode?: 'direct'|'trackpad'}} options
   *   cursor: the element drawn as the trackpad-mode pointer.
   */
  constructor(container, pointer, { cursor, mode = 'direct' }) {
    this.container = container;
    this.pointer = pointer;
    this.cursor = cursor;
    this.zoom = new Zoom(() => pointer.canvas, () => this.drawCursor());
    this.gesture = null;
    this.lastTap = 0;
    this.onTouch = this.onTouch.bind(this);
    this.mode = mode;
  }

  get mode() {
    return this._mode;
  }

  set mode(mode) {
    this._mode = mode;
    this.container.dataset.inputMode = mode;
    this.drawCursor();
  }

  attach() {
    for (const type of ['touchstart', 'touchmove', 'touchend', 'touchcancel']) {
      this.container.addEventListener(type, this.onTouch, { capture: true, passive: false });
    }
  }

  detach() {
    for (const type of ['touchstart', 'touchmove', 'touchend', 'touchcancel']) {
      this.container.removeEventListener(type, this.onTouch, { capture: true });
    }
    this.cancel();
  }

  onTouch(ev) {
    // Leave the overlay's own buttons alone.
    if (ev.target.closest?.('.overlay-ui')) return;
    ev.preventDefault();
    ev.stopPropagation();
    if (ev.type === 'touchstart') this.start(ev);
    else if (ev.type === 'touchmove') this.move(ev);
    else this.end(ev);
  }

  start(ev) {
    const touches = ev.touches;
    if (touches.length === 1) {
      const t = touches[0];
      const now = performance.now();
      this.gesture = {
        kind: 'pending1', t0: now, x0: t.clientX, y0: t.clientY, x: t.clientX, y: t.clientY,
        afterTap: this.mode === 'trackpad' && now - this.lastTap < DOUBLE_TAP_MS,
      };
      this.gesture.timer = setTimeout(() => this.longPress(), LONG_PRESS_MS);
    } else if (touches.length === 2) {
      this.finishOne();
      const c = centroid(touches);
      const d = distance(touches);
      this.gesture = { kind: 'pending2', t0: performance.now(), c0: c, c, d0: d, d, scrolled: { x: 0, y: 0 } };
    } else {
      this.finishOne();
      this.gesture = { kind: 'ignore' };
    }
  }

  move(ev) {
    const g = this.gesture;
    if (!g) return;
    if (g.kind.endsWith('1') || g.kind === 'drag' || g.kind === 'track') {
      const t = ev.touches[0];
      if (!t) return;
      const dx = t.clientX - g.x;
      const dy = t.clientY - g.y;
      g.x = t.clientX;
      g.y = t.clientY;
      if (g.kind === 'pending1' && Math.hypot(g.x - g.x0, g.y - g.y0) > TAP_MOVE) this.beginDrag(g);
      else if (g.kind === 'drag') this.pointToFinger(g.x, g.y);
      else if (g.kind === 'track') this.trackBy(dx, dy);
    } else if (ev.touches.length === 2 && g.kind !== 'ignore') {
      this.moveTwo(g, centroid(ev.touches), distance(ev.touches));
    }
  }

  end(ev) {
    const g = this.gesture;
    if (!g) return;
    const now = performance.now();
    if (g.kind === 'pending1' && ev.touches.length === 0) {
      clearTimeout(g.timer);
      if (now - g.t0 < TAP_MS || this.mode === 'direct') this.tap(g.x0, g.y0, BUTTON.left);
      this.lastTap = performance.now();
    } else if (g.kind === 'pending2' && now - g.t0 < TAP_MS) {
      this.tap(g.c0.x, g.c0.y, BUTTON.right);
    }
    this.finishOne();
    this.gesture = ev.touches.length ? { kind: 'ignore' } : null;
  }

  cancel() {
    this.finishOne();
    this.pointer.release();
    this.gesture = null;
  }

  beginDrag(g) {
    clearTimeout(g.timer);
    if (this.mode === 'direct') {
      this.pointToFinger(g.x0, g.y0);
      this.pointer.down(BUTTON.left);
      this.pointToFinger(g.x, g.y);
      g.kind = 'drag';
    } else {
      if (g.afterTap) this.pointer.down(BUTTON.left);
      this.trackBy(g.x - g.x0, g.y - g.y0);
      g.kind = 'track';
    }
  }

  longPress() {
    const g = this.gesture;
    if (g?.kind !== 'pending1') return;
    this.tap(g.x0, g.y0, BUTTON.right);
    g.kind = 'ignore';
  }

  moveTwo(g, c, d) {
    if (g.kind === 'pending2') {
      if (Math.abs(d - g.d0) > PINCH_START) g.kind = 'pinch';
      else if (Math.hypot(c.x - g.c0.x, c.y - g.c0.y) > TAP_MOVE) g.kind = 'scroll';
      else return;
    }
    if (g.kind === 'pinch') {
      this.zoom.change(d / g.d, c, { x: c.x - g.c.x, y: c.y - g.c.y });
    } else if (g.kind === 'scroll') {
      if (this.mode === 'direct') this.pointToFinger(g.c0.x, g.c0.y);
      // Fingers moving down pull the page down: wheel up (as noVNC does).
      g.scrolled.x += c.x - g.c.x;
      g.scrolled.y += c.y - g.c.y;
      g.scrolled.y = this.scrollAxis(g.scrolled.y, BUTTON.wheelUp, BUTTON.wheelDown);
      g.scrolled.x = this.scrollAxis(g.scrolled.x, BUTTON.wheelLeft, BUTTON.wheelRight);
    }
    g.c = c;
    g.d = d;
  }

  scrollAxis(travel, positive, negative) {
    const steps = Math.trunc(travel / SCROLL_STEP);
    if (steps > 0) this.pointer.wheel(positive, steps);
    if (steps < 0) this.pointer.wheel(negative, -steps);
    return travel - steps * SCROLL_STEP;
  }

  /** Release a one-finger drag in progress. */
  finishOne() {
    const g = this.gesture;
    if (!g) return;
    clearTimeout(g.timer);
    if ((g.kind === 'drag' || g.kind === 'track') && this.pointer.mask & BUTTON.left) {
      this.pointer.up(BUTTON.left);
    }
  }

  tap(clientX, clientY, button) {
    if (this.mode === 'direct') this.pointToFinger(clientX, clientY);
    this.pointer.click(button);
  }

  pointToFinger(clientX, clientY) {
    const p = this.pointer.toFramebuffer(clientX, clientY);
    this.pointer.moveTo(p.x, p.y);
  }

  trackBy(dx, dy) {
    // Trackpad speed: one finger pixel moves the cursor 1.5 screen pixels.
    const k = 1.5 * this.pointer.ratio;
    this.pointer.moveBy(dx * k, dy * k);
    this.drawCursor();
  }

  /** Put the trackpad cursor element where the remote pointer is. */
  drawCursor() {
    const on = this.mode === 'trackpad' && this.pointer.size;
    this.cursor.hidden = !on;
    if (!on) return;
    const p = this.pointer.toClient(this.pointer.x, this.pointer.y);
    const box = this.container.getBoundingClientRect();
    this.cursor.style.transform = `translate(${p.x - box.left}px, ${p.y - box.top}px)`;
  }
}

/** Pinch zoom: a CSS transform on noVNC's canvas, kept covering its own box. */
export class Zoom {
  constructor(getCanvas, onChange) {
    this.getCanvas = getCanvas;
    this.onChange = onChange;
    this.scale = 1;
    this.tx = 0;
    this.ty = 0;
  }

  /** Multiply the zoom by `factor` around client point `at`, then pan by `pan`. */
  change(factor, at, pan) {
    const canvas = this.getCanvas();
    if (!canvas) return;
    const rect = canvas.getBoundingClientRect();
    const originX = rect.left - this.tx;
    const originY = rect.top - this.ty;
    const scale = clamp(this.scale * factor, 1, MAX_ZOOM);
    // Keep the canvas point under `at` under it: at = origin + t + scale * p.
    const px = (at.x - originX - this.tx) / this.scale;
    const py = (at.y - originY - this.ty) / this.scale;
    this.scale = scale;
    this.tx = at.x - originX - scale * px + pan.x;
    this.ty = at.y - originY - scale * py + pan.y;
    this.apply(canvas);
  }

  reset() {
    this.scale = 1;
    this.tx = 0;
    this.ty = 0;
    const canvas = this.getCanvas();
    if (canvas) this.apply(canvas);
  }

  apply(canvas) {
    if (this.scale < 1.02) {
      this.scale = 1;
    }
    const w = canvas.offsetWidth;
    const h = canvas.offsetHeight;
    this.tx = clamp(this.tx, w * (1 - this.scale), 0);
    this.ty = clamp(this.ty, h * (1 - this.scale), 0);
    canvas.style.transformOrigin = '0 0';
    canvas.style.transform = this.scale === 1 ? '' : `translate(${this.tx}px, ${this.ty}px) scale(${this.scale})`;
    this.onChange();
  }
}

function centroid(touches) {
  return { x: (touches[0].clientX + touches[1].clientX) / 2, y: (touches[0].clientY + touches[1].clientY) / 2 };
}

function distance(touches) {
  return Math.hypot(touches[0].clientX - touches[1].clientX, touches[0].clientY - touches[1].clientY);
}
