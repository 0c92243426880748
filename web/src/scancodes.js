// KeyboardEvent.code -> PC/AT scan code set 1, the codes SPICE's inputs
// channel carries. A code names a physical key, so the guest applies its own
// layout. Extended keys are 0xE0xx; Pause (a six-byte sequence) is left out.

const ROWS = [
  // Row by row, left to right: a name, then its scan code; names that only
  // differ by a suffix are generated below.
  ['Escape', 0x01, 'Minus', 0x0c, 'Equal', 0x0d, 'Backspace', 0x0e, 'Tab', 0x0f],
  ['BracketLeft', 0x1a, 'BracketRight', 0x1b, 'Enter', 0x1c, 'ControlLeft', 0x1d],
  ['Semicolon', 0x27, 'Quote', 0x28, 'Backquote', 0x29, 'ShiftLeft', 0x2a, 'Backslash', 0x2b],
  ['Comma', 0x33, 'Period', 0x34, 'Slash', 0x35, 'ShiftRight', 0x36, 'NumpadMultiply', 0x37],
  ['AltLeft', 0x38, 'Space', 0x39, 'CapsLock', 0x3a, 'NumLock', 0x45, 'ScrollLock', 0x46],
  ['Numpad7', 0x47, 'Numpad8', 0x48, 'Numpad9', 0x49, 'NumpadSubtract', 0x4a],
  ['Numpad4', 0x4b, 'Numpad5', 0x4c, 'Numpad6', 0x4d, 'NumpadAdd', 0x4e],
  ['Numpad1', 0x4f, 'Numpad2', 0x50, 'Numpad3', 0x51, 'Numpad0', 0x52, 'NumpadDecimal', 0x53],
  ['IntlBackslash', 0x56, 'F11', 0x57, 'F12', 0x58, 'IntlRo', 0x73, 'IntlYen', 0x7d],
  ['NumpadEnter', 0xe01c, 'ControlRight', 0xe01d, 'NumpadDivide', 0xe035, 'PrintScreen', 0xe037],
  ['AltRight', 0xe038, 'Home', 0xe047, 'ArrowUp', 0xe048, 'PageUp', 0xe049, 'ArrowLeft', 0xe04b],
  ['ArrowRight', 0xe04d, 'End', 0xe04f, 'ArrowDown', 0xe050, 'PageDown', 0xe051],
  ['Insert', 0xe052, 'Delete', 0xe053, 'MetaLeft', 0xe05b, 'MetaRight', 0xe05c, 'ContextMenu', 0xe05d],
];

/** code -> scan code. */
export const SCANCODES = new Map();
for (const row of ROWS) {
  for (let i = 0; i < row.length; i += 2) SCANCODES.set(row[i], row[i + 1]);
}
'1234567890'.split('').forEach((d, i) => SCANCODES.set(`Digit${d}`, 0x02 + i));
'QWERTYUIOP'.split('').forEach((k, i) => SCANCODES.set(`Key${k}`, 0x10 + i));
'ASDFGHJKL'.split('').forEach((k, i) => SCANCODES.set(`Key${k}`, 0x1e + i));
'ZXCVBNM'.split('').forEach((k, i) => SCANCODES.set(`Key${k}`, 0x2c + i));
for (let n = 1; n <= 10; n++) SCANCODES.set(`F${n}`, 0x3a + n);

/**
 * The 32-bit code of a SPICE key message: the scan code's bytes in wire order
 * (spice-protocol's SpiceMsgcKeyDown), with the break bit set on release.
 * @param {number} scancode from SCANCODES.
 * @param {boolean} down press or release.
 */
export function spiceKeyCode(scancode, down) {
  const brk = down ? 0 : 0x80;
  if (scancode > 0xff) return 0xe0 | (((scancode & 0xff) | brk) << 8);
  return scancode | brk;
}
