// AudioWorklet processor: microphone render quanta -> 16 kHz PCM16 blocks of 20 ms, posted to the page.
import { Resampler, floatToPcm16 } from './resampler.js';

const OUT_RATE = 16000;
const BLOCK = 320; // 20 ms at 16 kHz

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new Resampler(sampleRate, OUT_RATE); // `sampleRate`: the context's rate (global here)
    this.pending = new Float32Array(0);
    this.running = true;
    this.port.onmessage = (e) => { if (e.data === 'stop') this.running = false; };
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && channel.length) {
      const y = this.resampler.process(channel);
      const merged = new Float32Array(this.pending.length + y.length);
      merged.set(this.pending, 0);
      merged.set(y, this.pending.length);
      let off = 0;
      while (merged.length - off >= BLOCK) {
        const pcm = floatToPcm16(merged.subarray(off, off + BLOCK));
        this.port.postMessage(pcm.buffer, [pcm.buffer]);
        off += BLOCK;
      }
      this.pending = merged.slice(off);
    }
    return this.running;
  }
}

registerProcessor('speechstream-capture', CaptureProcessor);
