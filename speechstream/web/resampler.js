// Streaming windowed-sinc resampler for mono float32 audio.
//
// Used by the AudioWorklet processor and by the MediaStreamTrackProcessor path.
// Output sample n sits at input position n * inRate / outRate; each output is a
// Blackman-windowed sinc of the input low-passed at 0.95 * min(inRate, outRate) / 2,
// so 48 kHz microphone audio is anti-aliased before it becomes 16 kHz.
// State (history and the fractional read position) carries across calls, so
// chunking does not change the result.

export class Resampler {
  constructor(inRate, outRate, zeroCrossings = 8) {
    this.inRate = inRate;
    this.outRate = outRate;
    this.step = inRate / outRate; // input samples per output sample
    this.cutoff = 0.95 * Math.min(1, outRate / inRate); // in cycles per input sample * 2
    this.half = Math.ceil(zeroCrossings / this.cutoff); // kernel half-width, input samples
    this.buf = new Float32Array(this.half); // zeros of history before the first sample
    this.t = this.half; // buffer position of the next output sample
  }

  kernel(d) {
    if (d === 0) return this.cutoff;
    const x = Math.PI * this.cutoff * d;
    const w = 0.42 + 0.5 * Math.cos((Math.PI * d) / this.half) + 0.08 * Math.cos((2 * Math.PI * d) / this.half);
    return (this.cutoff * Math.sin(x) / x) * w;
  }

  process(input) {
    if (this.inRate === this.outRate) return Float32Array.from(input);
    const buf = new Float32Array(this.buf.length + input.length);
    buf.set(this.buf, 0);
    buf.set(input, this.buf.length);
    const out = [];
    let t = this.t;
    while (Math.floor(t) + this.half < buf.length) {
      const i0 = Math.floor(t);
      let acc = 0;
      for (let k = i0 - this.half + 1; k <= i0 + this.half; k++) {
        acc += buf[k] * this.kernel(t - k);
      }
      out.push(acc);
      t += this.step;
    }
    const drop = Math.max(0, Math.floor(t) - this.half);
    this.buf = buf.slice(drop);
    this.t = t - drop;
    return Float32Array.from(out);
  }
}

export function floatToPcm16(x) {
  const y = new Int16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const s = Math.max(-1, Math.min(32767 / 32768, x[i]));
    y[i] = Math.round(s * 32768);
  }
  return y;
}
