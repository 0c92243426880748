// Mouse and keyboard of a SPICE desktop, sent on spice-html5's inputs channel.
//
// spice-html5 hooks its own handlers on the canvas, but they take positions
// from offsetX/offsetY (wrong once the canvas is scaled to fit), map keys by
// the deprecated keyCode through a US table (an alert() for any other key,
// garbled bytes for arrows and the like), blur the canvas when the mouse
// leaves it, and its sendCtrlAltDel() reads a global `sc` and never releases
// the keys. So these listeners sit on the screen's host in the capture phase
// and stop every event before the canvas sees it; the messages themselves are
// built with the library's own types.

import { SCANCODES, spiceKeyCode } from './scancodes.js';

const STOPPED = ['mousedown', 'mouseup', 'mousemove', 'wheel', 'contextmenu', 'mouseover',
  'mouseout', 'keydown', 'keyup'];
const WHEEL_STEP = 50; // pixels of wheel travel per SPICE wheel click

export class SpiceInput {
  /**
   * @param {HTMLElement} host the element spice-html5 draws its canvas into (focusable).
   * @param {object} main the SpiceMainConn (its `inputs` channel and `mouse_mode`).
   * @param {object} lib the spice-html5 module (vendor/spice-html5.js).
   */
  constructor(host, main, lib) {
    this.host = host;
    this.main = main;
    this.lib = lib;
    this.buttons = 0;
    this.held = new Set();
    this.wheel = 0;
    this.last = null;
    this.onEvent = (ev) => this.handle(ev);
    this.onFocusOut = (ev) => {
      if (!host.contains(ev.relatedTarget)) this.releaseAll();
    };
    for (const type of STOPPED) host.addEventListener(type, this.onEvent, { capture: true });
    host.addEventListener('focusout', this.onFocusOut);
  }

  detach() {
    for (const type of STOPPED) this.host.removeEventListener(type, this.onEvent, { capture: true });
    this.host.removeEventListener('focusout', this.onFocusOut);
  }

  handle(ev) {
    ev.stopPropagation();
    if (ev.type === 'mouseover' || ev.type === 'mouseout') return;
    ev.preventDefault();
    if (ev.type === 'keydown' || ev.type === 'keyup') {
      this.key(ev.code, ev.type === 'keydown');
    } else if (ev.type === 'wheel') {
      this.scroll(ev);
    } else if (ev.type !== 'contextmenu') {
      if (ev.type === 'mousedown') this.host.focus({ preventScroll: true });
      this.pointer(ev);
    }
  }

  /** Press or release a key by its KeyboardEvent.code; unknown keys are ignored. */
  key(code, down) {
    const scancode = SCANCODES.get(code);
    if (scancode === undefined) return;
    if (down) this.held.add(code);
    else if (!this.held.delete(code)) return; // a release of a key pressed elsewhere
    const body = down ? new this.lib.SpiceMsgcKeyDown() : new this.lib.SpiceMsgcKeyUp();
    body.code = spiceKeyCode(scancode, down);
    const { SPICE_MSGC_INPUTS_KEY_DOWN: DOWN, SPICE_MSGC_INPUTS_KEY_UP: UP } = this.lib.Constants;
    this.send(down ? DOWN : UP, body);
  }

  /** Ctrl-Alt-Del: press the three, then release them in reverse. */
  ctrlAltDel() {
    const keys = ['ControlLeft', 'AltLeft', 'Delete'];
    for (const code of keys) this.key(code, true);
    for (const code of keys.reverse()) this.key(code, false);
  }

  /** Release every key still held (the page lost the focus in between). */
  releaseAll() {
    for (const code of [...this.held]) this.key(code, false);
  }

  pointer(ev) {
    const at = this.position(ev);
    if (!at) return;
    const C = this.lib.Constants;
    if (ev.type === 'mousemove') {
      this.move(at);
      return;
    }
    if (ev.button > 2) return; // back and forward: SPICE's buttons 4 and 5 are the wheel
    this.move(at); // the press lands where the pointer is now
    const button = ev.button + 1; // DOM 0/1/2 -> SPICE left/middle/right
    const mask = 1 << ev.button;
    const down = ev.type === 'mousedown';
    this.buttons = down ? this.buttons | mask : this.buttons & ~mask;
    const body = down ? new this.lib.SpiceMsgcMousePress(this.main) : new this.lib.SpiceMsgcMouseRelease(this.main);
    body.button = button;
    body.buttons_state = this.buttons;
    this.send(down ? C.SPICE_MSGC_INPUTS_MOUSE_PRESS : C.SPICE_MSGC_INPUTS_MOUSE_RELEASE, body);
  }

  /** An absolute position (client mouse mode) or a relative motion (server mode). */
  move({ x, y }) {
    const C = this.lib.Constants;
    const inputs = this.main.inputs;
    // Motion is acknowledged in bunches: stay at most two bunches ahead, as spice-html5 does.
    if (!inputs || inputs.waiting_for_ack >= 2 * C.SPICE_INPUT_MOTION_ACK_BUNCH) return;
    let body;
    let type;
    if (this.main.mouse_mode === C.SPICE_MOUSE_MODE_CLIENT) {
      body = new this.lib.SpiceMsgcMousePosition(this.main);
      [body.x, body.y, type] = [x, y, C.SPICE_MSGC_INPUTS_MOUSE_POSITION];
    } else {
      body = new this.lib.SpiceMsgcMouseMotion(this.main);
      const from = this.last ?? { x, y };
      [body.x, body.y, type] = [x - from.x, y - from.y, C.SPICE_MSGC_INPUTS_MOUSE_MOTION];
    }
    this.last = { x, y };
    body.buttons_state = this.buttons;
    if (this.send(type, body)) inputs.waiting_for_ack += 1;
  }

  scroll(ev) {
    const C = this.lib.Constants;
    this.wheel += ev.deltaMode === 0 ? ev.deltaY : Math.sign(ev.deltaY) * WHEEL_STEP;
    while (Math.abs(this.wheel) >= WHEEL_STEP) {
      const button = this.wheel < 0 ? C.SPICE_MOUSE_BUTTON_UP : C.SPICE_MOUSE_BUTTON_DOWN;
      this.wheel -= Math.sign(this.wheel) * WHEEL_STEP;
      for (const [Body, type] of [[this.lib.SpiceMsgcMousePress, C.SPICE_MSGC_INPUTS_MOUSE_PRESS],
        [this.lib.SpiceMsgcMouseRelease, C.SPICE_MSGC_INPUTS_MOUSE_RELEASE]]) {
        const body = new Body(this.main);
        body.button = button;
        body.buttons_state = this.buttons;
        this.send(type, body);
      }
    }
  }

  /** The event's position in guest pixels, from the canvas' on-screen box (null off it). */
  position(ev) {
    const canvas = this.host.querySelector('canvas');
    if (!canvas?.width) return null;
    const box = canvas.getBoundingClientRect();
    if (!box.width || !box.height) return null;
    const clamp = (v, max) => Math.min(Math.max(Math.floor(v), 0), max - 1);
    return {
      x: clamp(((ev.clientX - box.left) * canvas.width) / box.width, canvas.width),
      y: clamp(((ev.clientY - box.top) * canvas.height) / box.height, canvas.height),
    };
  }

  /** Send one message on the inputs channel; false while it is not ready. */
  send(type, body) {
    const inputs = this.main.inputs;
    if (!inputs || inputs.state !== 'ready') return false;
    const msg = new this.lib.SpiceMiniData();
    msg.build_msg(type, body);
    inputs.send_msg(msg);
    this.host.dispatchEvent(new CustomEvent('genos:spice-input', { bubbles: true, detail: { type, ...body } }));
    return true;
  }
}
