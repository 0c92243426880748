// Server-sent events over fetch: EventSource cannot send an Authorization
// header, so this reads the text/event-stream body itself (WHATWG HTML
// "9.2 Server-sent events" parsing rules) and reconnects with Last-Event-ID.

import { authHeaders, decode } from './api.js';
import { sleep } from './dom.js';

/** Incremental parser: feed text chunks, get `{id, event, data}` messages. */
export class SSEParser {
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.buffer = '';
    this.reset();
    this.lastId = null;
  }

  reset() {
    this.data = [];
    this.event = '';
    this.id = null;
  }

  push(chunk) {
    let text = this.buffer + chunk;
    // A trailing "\r" may be half of "\r\n": hold it back for the next chunk.
    const hold = text.endsWith('\r') ? '\r' : '';
    if (hold) text = text.slice(0, -1);
    const lines = text.split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + hold;
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id' && !value.includes('\0')) this.id = value;
    return undefined;
  }

  dispatch() {
    if (this.id !== null) this.lastId = this.id;
    if (this.data.length) {
      this.onMessage({ id: this.lastId, event: this.event || 'message', data: this.data.join('\n') });
    }
    this.reset();
  }
}

/**
 * Follow an event stream until `signal` aborts or `isDone()` says the stream
 * has nothing more to say (e.g. after a final state).
 * @param {string} path the stream's URL path.
 * @param {{onEvent: (event: object) => void, onError?: (exc: Error) => void,
 *          isDone?: () => boolean, signal: AbortSignal}} handlers
 *   onEvent gets the decoded JSON of each `data:`; onError gets a 4xx
 *   answer (after which the stream is not retried) or a transient failure.
 */
export async function followEvents(path, { onEvent, onError = () => {}, isDone = () => false, signal }) {
  let lastId = null;
  let backoff = 500;
  while (!signal.aborted && !isDone()) {
    try {
      const headers = authHeaders({ Accept: 'text/event-stream' });
      if (lastId !== null) headers['Last-Event-ID'] = lastId;
      const res = await fetch(path, { headers, signal, cache: 'no-store' });
      if (!res.ok) await decode(res);
      backoff = 500;
      const parser = new SSEParser((msg) => {
        lastId = msg.id ?? lastId;
        try {
          onEvent(JSON.parse(msg.data));
        } catch (exc) {
          console.error('bad event', msg, exc);
        }
      });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
      }
    } catch (exc) {
      if (signal.aborted) return;
      onError(exc);
      if (exc.status >= 400 && exc.status < 500) return;
    }
    if (isDone()) return;
    try {
      await sleep(backoff, signal);
    } catch {
      return;
    }
    backoff = Math.min(backoff * 2, 8000);
  }
}
