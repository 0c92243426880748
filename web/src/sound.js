// The desktop's sound: Opus in Ogg pages over its own WebSocket (the display
// token admits it), decoded with WebCodecs and played through Web Audio with a
// short jitter buffer. Mute is a gain of 0; the level (before the gain) is
// what window.genosSound.level() reports.

import { websocketUrl } from './desktop.js';

const LEAD = 0.06; // seconds of sound held before playing (jitter buffer)
const MAX_LEAD = 0.5; // past this the queue is dropped and restarted
// A late packet restarts the schedule at LEAD, and the packets held up behind it
// then arrive together and queue after it, so the lead grows by the stall and
// would stay there. Held above HIGH_LEAD (100 ms) for SHRINK_AFTER packets in a row, it
// is cut back a packet at a time (each dropped packet takes its 20 ms off).
const HIGH_LEAD = 0.1;
const SHRINK_AFTER = 25;

export class SoundChannel {
  /** @param {() => Promise<string>} getPath the audio WebSocket path with a fresh token. */
  constructor(getPath) {
    this.getPath = getPath;
    this.muted = false;
    this.packets = 0;
    this.ws = null;
    this.active = false;
  }

  get supported() {
    return typeof AudioDecoder !== 'undefined' && typeof AudioContext !== 'undefined';
  }

  async start() {
    if (this.active || !this.supported) return;
    this.active = true;
    this.ctx = new AudioContext({ sampleRate: 48000, latencyHint: 'interactive' });
    this.analyser = this.ctx.createAnalyser();
    this.analyser.fftSize = 2048;
    this.gain = this.ctx.createGain();
    this.gain.gain.value = this.muted ? 0 : 1;
    this.analyser.connect(this.gain).connect(this.ctx.destination);
    this.next = 0;
    this.high = 0; // packets in a row with the lead above HIGH_LEAD
    this.dropped = 0; // packets dropped to bring the lead back
    // Browsers start audio only after a gesture on the page.
    const resume = () => this.ctx?.resume();
    for (const type of ['pointerdown', 'keydown', 'touchend']) {
      document.addEventListener(type, resume, { capture: true });
    }
    this.resumeHandler = resume;
    this.connect();
  }

  async connect() {
    if (!this.active) return;
    let path;
    try {
      path = await this.getPath();
    } catch {
      this.retry();
      return;
    }
    this.decoder = new AudioDecoder({ output: (data) => this.play(data), error: () => this.retry() });
    this.decoder.configure({ codec: 'opus', sampleRate: 48000, numberOfChannels: 2 });
    this.partial = [];
    this.timestamp = 0;
    const ws = new WebSocket(websocketUrl(path), ['binary']);
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (ev) => this.page(new Uint8Array(ev.data));
    ws.onclose = () => {
      if (this.ws === ws) this.retry();
    };
    this.ws = ws;
  }

  retry() {
    if (!this.active) return;
    this.drop();
    setTimeout(() => this.connect(), 2000);
  }

  drop() {
    const ws = this.ws;
    this.ws = null;
    ws?.close();
    if (this.decoder?.state !== 'closed') this.decoder?.close();
    this.decoder = null;
  }

  stop() {
    this.active = false;
    this.drop();
    for (const type of ['pointerdown', 'keydown', 'touchend']) {
      document.removeEventListener(type, this.resumeHandler, { capture: true });
    }
    this.ctx?.close();
    this.ctx = null;
  }

  setMuted(muted) {
    this.muted = muted;
    if (this.gain) this.gain.gain.value = muted ? 0 : 1;
    this.ctx?.resume();
  }

  /** One Ogg page (RFC 3533): its packets, joined across segments and pages. */
  page(d) {
    if (d.length < 27 || d[0] !== 0x4f || d[1] !== 0x67 || d[2] !== 0x67 || d[3] !== 0x53) return;
    const segments = d[26];
    let at = 27 + segments;
    for (let i = 0; i < segments; i++) {
      const len = d[27 + i];
      this.partial.push(d.subarray(at, at + len));
      at += len;
      if (len < 255) {
        this.packet(join(this.partial));
        this.partial = [];
      }
    }
  }

  packet(data) {
    const head = String.fromCharCode(...data.subarray(0, 8));
    if (head === 'OpusHead' || head === 'OpusTags' || !this.decoder) return;
    this.packets += 1;
    this.decoder.decode(new EncodedAudioChunk({ type: 'key', timestamp: this.timestamp, data }));
    this.timestamp += 20000; // genos-audio sends 20 ms packets
  }

  play(audio) {
    const ctx = this.ctx;
    if (!ctx) {
      audio.close();
      return;
    }
    const buffer = ctx.createBuffer(audio.numberOfChannels, audio.numberOfFrames, audio.sampleRate);
    for (let c = 0; c < audio.numberOfChannels; c++) {
      const samples = new Float32Array(audio.numberOfFrames);
      audio.copyTo(samples, { planeIndex: c, format: 'f32-planar' });
      buffer.copyToChannel(samples, c);
    }
    audio.close();
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.analyser);
    const now = ctx.currentTime;
    if (this.next < now || this.next > now + MAX_LEAD) {
      this.next = now + LEAD;
      this.high = 0;
    } else if (this.next - now > HIGH_LEAD) {
      this.high += 1;
      if (this.high >= SHRINK_AFTER) {
        this.dropped += 1;
        return;
      }
    } else {
      this.high = 0;
    }
    source.start(this.next);
    this.next += buffer.duration;
  }

  /** RMS of what is playing now (0..1), before the mute. */
  level() {
    if (!this.analyser) return 0;
    const samples = new Float32Array(this.analyser.fftSize);
    this.analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    return Math.sqrt(sum / samples.length);
  }
}

function join(parts) {
  if (parts.length === 1) return parts[0].slice();
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
