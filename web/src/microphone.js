// The viewer's microphone into the desktop (only when the spec allows it:
// security.microphone). The browser asks for permission; the sound is
// resampled to 16 kHz mono by an AudioContext at that rate, turned into
// 16-bit PCM by an AudioWorklet (mic-worklet.js) and sent over its own
// WebSocket (the display token, control only) in 40 ms messages. The gateway
// bounds size and rate; inside, it is the desktop's default source.

import { websocketUrl } from './desktop.js';

export class MicrophoneChannel extends EventTarget {
  /** @param {() => Promise<string>} getPath the microphone WebSocket path with a fresh token. */
  constructor(getPath) {
    super();
    this.getPath = getPath;
    this.on = false;
    this.sent = 0;
  }

  get supported() {
    return Boolean(navigator.mediaDevices?.getUserMedia) && typeof AudioWorkletNode !== 'undefined';
  }

  /** Ask for the microphone and start sending; throws (with the browser's words) if refused. */
  async start() {
    if (this.on) return;
    this.on = true;
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
      });
      this.ctx = new AudioContext({ sampleRate: 16000, latencyHint: 'interactive' });
      await this.ctx.audioWorklet.addModule('mic-worklet.js');
      const source = this.ctx.createMediaStreamSource(this.stream);
      this.node = new AudioWorkletNode(this.ctx, 'genos-microphone');
      this.node.port.onmessage = (ev) => this.send(ev.data);
      source.connect(this.node);
      await this.ctx.resume();
      await this.connect();
    } catch (exc) {
      this.stop();
      throw exc;
    }
  }

  async connect() {
    const ws = new WebSocket(websocketUrl(await this.getPath()), ['binary']);
    ws.binaryType = 'arraybuffer';
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.dispatchEvent(new CustomEvent('closed', { detail: { reason: ev.reason } }));
      this.stop();
    };
    this.ws = ws;
  }

  send(buffer) {
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    this.ws.send(buffer);
    this.sent += buffer.byteLength;
  }

  stop() {
    this.on = false;
    const ws = this.ws;
    this.ws = null;
    ws?.close();
    this.node?.port.close();
    this.node = null;
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.stream = null;
    this.ctx?.close();
    this.ctx = null;
  }
}
