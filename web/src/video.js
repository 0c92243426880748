// The desktop as H.264 video: its own WebSocket (the display token admits it),
// decoded with WebCodecs and drawn onto a canvas of our own. The wire format
// (docs/api.md, video mode): a binary message per frame, an 8-byte header
// [1, flags, seq u32 BE, 0, 0] then an Annex B access unit; flags bit0 = key
// (an IDR: a decoder starts here), bit1 = new stream (reset the decoder
// first). A text message {"type": "levels", ...} says the frame rate and
// bitrate now sent. We ack each frame's seq (4 bytes BE) once the decoder has
// output it, or when we drop it: the gateway paces and adapts by the acks.

import { websocketUrl } from './desktop.js';

export const CONFIG = { codec: 'avc1.42E033', optimizeForLatency: true };
const FRAME = 1;
const KEY = 1;
const NEW_STREAM = 2;
const HEADER = 8;
// The stream has one IDR, at its start (then intra refresh): a decoder that
// failed mid-stream waits this long for a key frame, then opens a new stream.
const KEY_WAIT_MS = 1500;

/**
 * Can this browser decode the stream?
 * @returns {Promise<{ok: boolean, why: string}>} why: a sentence when not.
 */
export async function videoSupport() {
  if (typeof VideoDecoder === 'undefined' || typeof EncodedVideoChunk === 'undefined') {
    return { ok: false, why: 'this browser has no WebCodecs video decoder' };
  }
  try {
    const answer = await VideoDecoder.isConfigSupported(CONFIG);
    if (answer.supported) return { ok: true, why: '' };
  } catch {
    // an old WebCodecs that rejects the config outright
  }
  return { ok: false, why: 'this browser cannot decode H.264 video' };
}

/**
 * One video stream onto one canvas, reconnecting until stop().
 * Events: `frame` (detail {width, height}) after each frame drawn,
 * `levels` (detail: the levels message), `closed` (detail {code, reason}).
 */
export class VideoChannel extends EventTarget {
  /**
   * @param {HTMLCanvasElement} canvas drawn at the stream's size (the caller sizes it on screen).
   * @param {() => Promise<string>} getPath the video WebSocket path with a fresh token.
   */
  constructor(canvas, getPath) {
    super();
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { alpha: false });
    this.getPath = getPath;
    this.active = false;
    this.ws = null;
    this.decoder = null;
    this.levels = null;
    this.stats = null;
    this.framesDrawn = 0;
    this.framesDropped = 0;
    this.framesReceived = 0;
    this.bytesReceived = 0;
    this.pending = []; // seqs given to the decoder, not output yet
    this.needKey = true;
    this.attempt = 0;
  }

  start() {
    if (this.active) return;
    this.active = true;
    this.connect();
  }

  stop() {
    this.active = false;
    clearTimeout(this.retryTimer);
    this.drop();
  }

  async connect() {
    if (!this.active) return;
    let path;
    try {
      path = await this.getPath();
    } catch (exc) {
      this.retry({ code: 0, reason: exc.message ?? String(exc) });
      return;
    }
    if (!this.active || this.ws) return;
    const ws = new WebSocket(websocketUrl(path), ['binary']);
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (ev) => {
      if (this.ws === ws) this.message(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.drop();
      this.retry({ code: ev.code, reason: ev.reason });
    };
    this.ws = ws;
    this.needKey = true;
  }

  retry(detail) {
    this.dispatchEvent(new CustomEvent('closed', { detail }));
    if (!this.active) return;
    this.attempt += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), Math.min(1000 * 2 ** (this.attempt - 1), 15000));
  }

  drop() {
    clearTimeout(this.keyTimer);
    const ws = this.ws;
    this.ws = null;
    ws?.close();
    this.closeDecoder();
  }

  message(data) {
    if (typeof data === 'string') {
      let msg = null;
      try {
        msg = JSON.parse(data);
      } catch {
        return;
      }
      if (msg?.type === 'levels') {
        this.levels = msg;
        this.dispatchEvent(new CustomEvent('levels', { detail: msg }));
      } else if (msg?.type === 'stats') {
        this.stats = msg; // the gateway's figures of this link, every 2 s
      }
      return;
    }
    const bytes = new Uint8Array(data);
    if (bytes.length < HEADER || bytes[0] !== FRAME) return;
    const flags = bytes[1];
    const seq = new DataView(data).getUint32(2);
    this.framesReceived += 1;
    this.bytesReceived += bytes.length;
    if (flags & NEW_STREAM) this.restart();
    if (this.needKey && !(flags & KEY)) {
      this.drop1(seq);
      return;
    }
    if (flags & KEY) {
      this.needKey = false;
      clearTimeout(this.keyTimer);
    }
    this.decode(seq, flags & KEY, bytes.subarray(HEADER));
  }

  decode(seq, key, payload) {
    if (!this.decoder) {
      this.decoder = new VideoDecoder({
        output: (frame) => this.output(frame),
        error: () => this.failed(),
      });
      this.decoder.configure(CONFIG);
    }
    this.pending.push(seq);
    try {
      // seq as the timestamp: the output frame says which one it is.
      this.decoder.decode(new EncodedVideoChunk({ type: key ? 'key' : 'delta', timestamp: seq, data: payload }));
    } catch {
      this.failed();
    }
  }

  output(frame) {
    const seq = frame.timestamp;
    const width = frame.displayWidth;
    const height = frame.displayHeight;
    try {
      if (this.canvas.width !== width || this.canvas.height !== height) {
        this.canvas.width = width;
        this.canvas.height = height;
      }
      this.ctx.drawImage(frame, 0, 0);
    } finally {
      frame.close();
    }
    this.framesDrawn += 1;
    // Baseline H.264 outputs in decode order: anything older was dropped by the decoder.
    while (this.pending.length && this.pending[0] <= seq) this.ack(this.pending.shift());
    this.attempt = 0;
    this.dispatchEvent(new CustomEvent('frame', { detail: { width, height } }));
  }

  /** The decoder gave up (it is closed now): start again at the next key frame. */
  failed() {
    this.closeDecoder();
    clearTimeout(this.keyTimer);
    this.keyTimer = setTimeout(() => {
      if (!this.needKey || !this.ws) return;
      this.drop(); // a new WebSocket starts a new stream, with an IDR
      this.connect();
    }, KEY_WAIT_MS);
  }

  /** A new stream (the encoder restarted): reset and reconfigure, then wait for its IDR. */
  restart() {
    if (this.decoder?.state !== 'configured') {
      this.closeDecoder();
      return;
    }
    this.decoder.reset(); // pending decodes are abandoned: no output for them
    this.decoder.configure(CONFIG);
    this.needKey = true;
    for (const seq of this.pending.splice(0)) this.drop1(seq);
  }

  closeDecoder() {
    const decoder = this.decoder;
    this.decoder = null;
    this.needKey = true;
    if (decoder && decoder.state !== 'closed') {
      try {
        decoder.close(); // pending decodes are abandoned: no output for them
      } catch {
        // closed meanwhile
      }
    }
    for (const seq of this.pending.splice(0)) this.drop1(seq);
  }

  drop1(seq) {
    this.framesDropped += 1;
    this.ack(seq);
  }

  ack(seq) {
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    const msg = new ArrayBuffer(4);
    new DataView(msg).setUint32(0, seq);
    this.ws.send(msg);
  }
}
