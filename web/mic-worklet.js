// GenOS microphone capture (an AudioWorklet, loaded by src/microphone.js): the
// input's first channel as 16-bit PCM, posted in 40 ms pieces. The
// AudioContext runs at 16 kHz, so the browser has resampled the device already.

const PIECE = 640; // samples: 40 ms at 16 kHz

class GenosMicrophone extends AudioWorkletProcessor {
  constructor() {
    super();
    this.piece = new Int16Array(PIECE);
    this.filled = 0;
  }

  process(inputs) {
    const samples = inputs[0]?.[0];
    if (samples) {
      for (const s of samples) {
        this.piece[this.filled++] = Math.max(-1, Math.min(1, s)) * 32767;
        if (this.filled === PIECE) {
          this.port.postMessage(this.piece.buffer, [this.piece.buffer]);
          this.piece = new Int16Array(PIECE);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor('genos-microphone', GenosMicrophone);
