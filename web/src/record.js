// Record the desktop, screen and sound, into an MP4 saved on this computer
// (only where the spec allows it: security.recording). POST
// /v1/environments/<id>/record {"seconds": N} answers once the recording is
// done, with the file and its name in Content-Disposition; the progress shown
// meanwhile is the time since the request.

import { authHeaders, decode, describeError } from './api.js';
import { flash, h, replace } from './dom.js';

export const LENGTHS = [10, 30, 60];

export class Recorder extends EventTarget {
  /** @param {string} envId Events: `change` (state, progress). */
  constructor(envId) {
    super();
    this.envId = envId;
    this.state = 'idle'; // idle | recording | saving | saved | failed
    this.seconds = 0;
    this.started = 0;
    this.message = '';
  }

  get elapsed() {
    return this.state === 'recording' ? Math.min((Date.now() - this.started) / 1000, this.seconds) : 0;
  }

  get busy() {
    return this.state === 'recording' || this.state === 'saving';
  }

  /** Record `seconds`, then save the file as a download; errors end in state `failed`. */
  async record(seconds) {
    if (this.busy) return;
    this.seconds = seconds;
    this.started = Date.now();
    this.set('recording', '');
    const ticker = setInterval(() => this.changed(), 250);
    try {
      const res = await fetch(`/v1/environments/${encodeURIComponent(this.envId)}/record`, {
        method: 'POST',
        headers: authHeaders({ 'Content-Type': 'application/json', Accept: 'video/mp4, application/json' }),
        body: JSON.stringify({ seconds }),
        cache: 'no-store',
      });
      if (!res.ok) await decode(res); // throws the server's error
      this.set('saving', '');
      const blob = await res.blob();
      const name = filenameOf(res.headers.get('Content-Disposition')) ?? `genos-${this.envId}.mp4`;
      download(blob, name);
      this.set('saved', name);
    } catch (exc) {
      const message = exc instanceof TypeError ? 'cannot reach the GenOS server' : describeError(exc);
      this.set('failed', message);
      flash(`Recording: ${message}`);
    } finally {
      clearInterval(ticker);
    }
  }

  set(state, message) {
    this.state = state;
    this.message = message;
    this.changed();
  }

  changed() {
    this.dispatchEvent(new CustomEvent('change'));
  }

  /** Short words for the Record button. */
  label() {
    if (this.state === 'recording') return `Recording ${Math.floor(this.elapsed)}/${this.seconds} s`;
    if (this.state === 'saving') return 'Saving recording...';
    return 'Record';
  }
}

/** The Record panel: the lengths, the progress, the outcome (one element, kept across toggles). */
export function recordPanel(recorder) {
  const choices = LENGTHS.map((n) => h('button', {
    type: 'button', testid: `record-${n}`, onclick: () => recorder.record(n),
  }, `${n} s`));
  const bar = h('progress', { testid: 'record-progress', max: 1, hidden: true });
  const status = h('p', { class: 'muted', testid: 'record-status' }, '');
  const el = h('div', { class: 'record-panel' },
    h('p', null, 'Record the screen and its sound to an MP4 file:'),
    h('div', { class: 'row' }, choices), bar, status);
  const show = () => {
    for (const b of choices) b.disabled = recorder.busy;
    bar.hidden = !recorder.busy;
    bar.max = recorder.seconds || 1;
    if (recorder.state === 'recording') bar.value = recorder.elapsed;
    else bar.removeAttribute('value'); // saving: indeterminate
    el.dataset.state = recorder.state;
    replace(status, statusText(recorder));
  };
  recorder.addEventListener('change', show);
  show();
  return el;
}

function statusText(recorder) {
  switch (recorder.state) {
    case 'recording':
      return `Recording: ${Math.floor(recorder.elapsed)} s of ${recorder.seconds} s`;
    case 'saving':
      return 'Finishing the file...';
    case 'saved':
      return `Saved ${recorder.message}`;
    case 'failed':
      return `Not recorded: ${recorder.message}`;
    default:
      return '';
  }
}

/** The file name of a Content-Disposition header (RFC 6266), or null. */
export function filenameOf(header) {
  if (!header) return null;
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim());
    } catch {
      // fall back to the plain parameter
    }
  }
  const plain = /filename\s*=\s*(?:"([^"]*)"|([^;\s]+))/i.exec(header);
  const name = plain?.[1] ?? plain?.[2];
  return name ? name.replace(/[/\\]/g, '_') : null;
}

function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
