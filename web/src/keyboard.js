// The on-screen keyboard: a hidden text input whose focus raises the phone's
// keyboard; what is typed into it is forwarded as X11 keysyms with rfb.sendKey.
// A row of extra keys (Esc, Tab, Ctrl, Alt, arrows) covers what phones lack;
// Ctrl and Alt latch until the next key.

import { h } from './dom.js';
import { NAMED, keysymForChar } from './keysym.js';

export class ScreenKeyboard {
  /** @param {() => any} getRfb the current noVNC RFB (or null). */
  constructor(getRfb) {
    this.getRfb = getRfb;
    this.latched = new Set();
    this.input = h('input', {
      class: 'kbd-input', testid: 'kbd-input', type: 'text', autocomplete: 'off',
      autocapitalize: 'none', autocorrect: 'off', spellcheck: 'false', 'aria-label': 'Type into the desktop',
      enterkeyhint: 'send',
    });
    this.input.addEventListener('keydown', (ev) => this.onKeyDown(ev));
    this.input.addEventListener('input', (ev) => this.onInput(ev));
    this.keys = h('div', { class: 'kbd-keys overlay-ui', testid: 'kbd-keys', hidden: true },
      ['Escape', 'Tab', 'Control', 'Alt', 'ArrowLeft', 'ArrowUp', 'ArrowDown', 'ArrowRight'].map((key) => h('button', {
        type: 'button', dataset: { key }, testid: `kbd-${key.toLowerCase()}`,
        onpointerdown: (ev) => ev.preventDefault(), // keep the input (and the phone keyboard) focused
        onclick: (ev) => this.extraKey(key, ev.currentTarget),
      }, LABELS[key] ?? key)));
    this.input.addEventListener('blur', () => {
      this.keys.hidden = true;
    });
  }

  get open() {
    return document.activeElement === this.input;
  }

  toggle() {
    if (this.open) this.input.blur();
    else {
      this.keys.hidden = false;
      this.input.focus({ preventScroll: true });
    }
  }

  onKeyDown(ev) {
    if (ev.isComposing || ev.keyCode === 229) return;
    const keysym = NAMED[ev.key];
    if (keysym && !['Shift', 'Control', 'Alt', 'Meta'].includes(ev.key)) {
      ev.preventDefault();
      this.press(keysym);
    } else if (ev.key.length === 1 && (ev.ctrlKey || ev.altKey)) {
      ev.preventDefault();
      this.press(keysymForChar(ev.key), [ev.ctrlKey && NAMED.Control, ev.altKey && NAMED.Alt]);
    }
  }

  onInput(ev) {
    if (ev.isComposing) return;
    if (ev.inputType === 'deleteContentBackward') this.press(NAMED.Backspace);
    else if (ev.inputType === 'insertLineBreak') this.press(NAMED.Enter);
    else {
      const text = ev.data ?? this.input.value;
      for (const ch of text ?? '') this.press(keysymForChar(ch));
    }
    this.input.value = '';
  }

  extraKey(key, button) {
    if (key === 'Control' || key === 'Alt') {
      if (this.latched.has(key)) this.latched.delete(key);
      else this.latched.add(key);
      button.classList.toggle('on', this.latched.has(key));
      return;
    }
    this.press(NAMED[key]);
  }

  /** Press and release `keysym`, holding `modifiers` and any latched Ctrl/Alt. */
  press(keysym, modifiers = []) {
    const rfb = this.getRfb();
    if (!rfb) return;
    const held = [...new Set([...modifiers.filter(Boolean), ...[...this.latched].map((k) => NAMED[k])])];
    for (const mod of held) rfb.sendKey(mod, null, true);
    rfb.sendKey(keysym, null);
    for (const mod of held.reverse()) rfb.sendKey(mod, null, false);
    // For tests and debugging: what was typed, as keysyms.
    this.input.dispatchEvent(new CustomEvent('genos:key', { bubbles: true, detail: { keysym, held } }));
    if (this.latched.size) {
      this.latched.clear();
      for (const b of this.keys.querySelectorAll('.on')) b.classList.remove('on');
    }
  }
}

const LABELS = {
  Escape: 'Esc', Control: 'Ctrl', ArrowLeft: '←', ArrowUp: '↑', ArrowDown: '↓', ArrowRight: '→',
};
