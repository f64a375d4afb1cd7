// speechstream live captions: microphone -> 16 kHz PCM16 -> WebSocket -> caption events.
//
// Capture uses MediaStreamTrackProcessor where the browser has it (it reads the
// track directly and shows no gaps in Chromium) and an AudioWorklet otherwise;
// force one with ?capture=worklet or ?capture=track.  ?token=T is passed on to
// the WebSocket for servers started with --token.
import { Resampler, floatToPcm16 } from './resampler.js';

const RATE = 16000;
const BLOCK = 320; // 20 ms frames on the wire
const PALETTE = ['#2f6fdf', '#d9480f', '#2b8a3e', '#9c36b5', '#c2255c', '#0b7285', '#e67700', '#5f3dc4'];

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// Everything a person sees, and what the browser test reads.
const ss = (window.speechstream = {
  state: 'idle',
  captureMode: null,
  streamId: null,
  samplesSent: 0,
  maxRms: 0,
  counts: {},
  finals: [], // {segment_id, sample, end_sample, text, speaker}
  partial: null,
  errors: [],
  latency: { partial: [], final: [] },
  srt: () => buildSrt(ss.finals),
  vtt: () => buildVtt(ss.finals),
});

let ws = null;
let stopCapture = null;
const sentLog = []; // [samplesSentAfterFrame, performance.now()] for the latency readout
const speakerColours = new Map();

function setState(s, cls = '') {
  ss.state = s;
  const el = $('state');
  el.textContent = s;
  el.className = 'pill ' + cls;
}

function colourOf(speaker) {
  if (!speakerColours.has(speaker)) speakerColours.set(speaker, PALETTE[speakerColours.size % PALETTE.length]);
  return speakerColours.get(speaker);
}

// ------------------------------------------------------------------ captions

function speakerChip(speaker) {
  const chip = document.createElement('span');
  chip.className = 'spk';
  chip.textContent = speaker;
  chip.style.background = colourOf(speaker);
  return chip;
}

function renderPartial() {
  const el = $('partial');
  el.textContent = ss.partial ? ss.partial.text : '';
  el.style.color = ss.partial && ss.partial.speaker ? colourOf(ss.partial.speaker) + 'aa' : '';
}

function appendFinal(ev) {
  const last = ss.finals[ss.finals.length - 1];
  const f = { segment_id: ev.segment_id, sample: ev.sample, end_sample: ev.end_sample, text: ev.text, speaker: ev.speaker };
  ss.finals.push(f);
  if (!ev.text) return;
  const span = document.createElement('span');
  span.className = 'final';
  span.dataset.segment = ev.segment_id;
  if (ev.speaker && (!last || last.speaker !== ev.speaker)) span.appendChild(speakerChip(ev.speaker));
  if (ev.speaker) span.style.color = colourOf(ev.speaker);
  span.appendChild(document.createTextNode(ev.text));
  $('captions').insertBefore(span, $('partial'));
  $('dl-srt').disabled = $('dl-vtt').disabled = false;
}

function applySpeakerTurn(ev) {
  // A (re)labelled turn recolours the finals whose middle lies inside it.
  for (const f of ss.finals) {
    const mid = (f.sample + f.end_sample) / 2;
    if (mid >= ev.sample && mid < ev.end_sample) {
      f.speaker = ev.speaker;
      const span = document.querySelector(`.final[data-segment="${CSS.escape(f.segment_id)}"]`);
      if (span) span.style.color = colourOf(ev.speaker);
    }
  }
}

// ------------------------------------------------------------------ latency

function sentAt(sample) {
  // When did the frame containing stream sample `sample` leave the page?
  let lo = 0, hi = sentLog.length - 1;
  if (hi < 0 || sentLog[hi][0] < sample) return null;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sentLog[mid][0] >= sample) hi = mid; else lo = mid + 1;
  }
  return sentLog[lo][1];
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : null;
}

function recordLatency(kind, ev) {
  const t = sentAt(ev.end_sample);
  if (t === null) return;
  const list = ss.latency[kind];
  list.push(performance.now() - t);
  if (list.length > 200) list.shift();
  const m = median(list.slice(-20));
  $('lat-' + kind).textContent = `${Math.round(m)} ms`;
}

// ------------------------------------------------------------------ subtitles

function ts(sample, sep) {
  const ms = Math.round((sample / RATE) * 1000);
  const h = Math.floor(ms / 3600000), m = Math.floor(ms / 60000) % 60, s = Math.floor(ms / 1000) % 60;
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${pad(h)}:${pad(m)}:${pad(s)}${sep}${pad(ms % 1000, 3)}`;
}

function cues(finals) {
  return finals.filter((f) => f.text).map((f) => ({ ...f, end_sample: Math.max(f.end_sample, f.sample + RATE / 10) }));
}

export function buildSrt(finals) {
  return cues(finals)
    .map((f, i) => `${i + 1}\n${ts(f.sample, ',')} --> ${ts(f.end_sample, ',')}\n${f.speaker ? f.speaker + ': ' : ''}${f.text}\n`)
    .join('\n');
}

export function buildVtt(finals) {
  const body = cues(finals)
    .map((f) => `${ts(f.sample, '.')} --> ${ts(f.end_sample, '.')}\n${f.speaker ? `<v ${f.speaker}>` : ''}${f.text}\n`)
    .join('\n');
  return 'WEBVTT\n\n' + body;
}

function download(name, text, type) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// ------------------------------------------------------------------ events

function onEvent(ev) {
  ss.counts[ev.type] = (ss.counts[ev.type] || 0) + 1;
  switch (ev.type) {
    case 'ready':
      ss.streamId = ev.stream_id;
      $('stream-id').textContent = ev.stream_id;
      setState('live', 'live');
      break;
    case 'partial_transcript':
      ss.partial = ev;
      renderPartial();
      recordLatency('partial', ev);
      break;
    case 'final_transcript':
      if (ss.partial && ss.partial.segment_id === ev.segment_id) ss.partial = null;
      renderPartial();
      appendFinal(ev);
      recordLatency('final', ev);
      break;
    case 'speaker_turn':
      applySpeakerTurn(ev);
      break;
    case 'speech_started':
      $('vad').textContent = 'speech';
      $('vad').className = 'pill on';
      break;
    case 'speech_ended':
      $('vad').textContent = 'silence';
      $('vad').className = 'pill off';
      break;
    case 'error':
    case 'queue_overflow': {
      ss.errors.push(ev);
      const box = $('errors');
      box.hidden = false;
      box.textContent = ev.type === 'error' ? `${ev.code}: ${ev.message}` : `dropped ${ev.dropped_total} on ${ev.edge}`;
      break;
    }
    case 'end_of_stream':
      setState('done', '');
      break;
  }
}

// ------------------------------------------------------------------ capture

function sendPcm(pcm16) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  let sum = 0;
  for (let i = 0; i < pcm16.length; i++) sum += (pcm16[i] / 32768) ** 2;
  const rms = Math.sqrt(sum / Math.max(1, pcm16.length));
  ss.maxRms = Math.max(ss.maxRms, rms);
  $('level').value = Math.min(1, rms * 4);
  ws.send(pcm16.buffer);
  ss.samplesSent += pcm16.length;
  sentLog.push([ss.samplesSent, performance.now()]);
  $('audio-sent').textContent = `${(ss.samplesSent / RATE).toFixed(1)} s`;
}

async function captureWithTrackProcessor(track) {
  const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
  let resampler = null;
  let pending = new Float32Array(0);
  let running = true;
  (async () => {
    while (running) {
      const { value: frame, done } = await reader.read();
      if (done) break;
      const n = frame.numberOfFrames;
      const x = new Float32Array(n);
      frame.copyTo(x, { planeIndex: 0, format: 'f32-planar' }); // channel 0
      if (!resampler) resampler = new Resampler(frame.sampleRate, RATE);
      frame.close();
      const y = resampler.process(x);
      const merged = new Float32Array(pending.length + y.length);
      merged.set(pending, 0);
      merged.set(y, pending.length);
      let off = 0;
      for (; merged.length - off >= BLOCK; off += BLOCK) sendPcm(floatToPcm16(merged.subarray(off, off + BLOCK)));
      pending = merged.slice(off);
    }
  })();
  return () => { running = false; reader.cancel(); };
}

async function captureWithWorklet(stream) {
  const ctx = new AudioContext();
  await ctx.audioWorklet.addModule('capture-worklet.js');
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, 'speechstream-capture', { numberOfInputs: 1, numberOfOutputs: 0 });
  node.port.onmessage = (e) => sendPcm(new Int16Array(e.data));
  source.connect(node);
  return () => { node.port.postMessage('stop'); source.disconnect(); ctx.close(); };
}

async function start() {
  $('start').disabled = true;
  setState('connecting');
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const token = params.get('token');
    ws = new WebSocket(`${proto}://${location.host}/ws${token ? '?token=' + encodeURIComponent(token) : ''}`);
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (m) => { if (typeof m.data === 'string') onEvent(JSON.parse(m.data)); };
    ws.onclose = (e) => {
      if (ss.state !== 'done') setState(e.code === 1000 ? 'closed' : `closed ${e.code} ${e.reason}`, e.code === 1000 ? '' : 'err');
      if (stopCapture) stopCapture();
      stopCapture = null;
      stream.getTracks().forEach((t) => t.stop());
      $('start').disabled = false;
      $('stop').disabled = true;
    };
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error('WebSocket failed')); });
    ws.send(JSON.stringify({ type: 'start', sample_rate_hz: RATE, format: 's16' }));
    const track = stream.getAudioTracks()[0];
    const want = params.get('capture');
    const useTrack = want === 'track' || (want !== 'worklet' && typeof MediaStreamTrackProcessor !== 'undefined');
    ss.captureMode = useTrack ? 'track' : 'worklet';
    $('capture-mode').textContent = useTrack ? 'MediaStreamTrackProcessor' : 'AudioWorklet';
    stopCapture = useTrack ? await captureWithTrackProcessor(track) : await captureWithWorklet(stream);
    $('stop').disabled = false;
  } catch (err) {
    setState('error', 'err');
    ss.errors.push({ code: 'client', message: String(err) });
    $('errors').hidden = false;
    $('errors').textContent = String(err);
    $('start').disabled = false;
  }
}

function stop() {
  $('stop').disabled = true;
  if (stopCapture) stopCapture();
  stopCapture = null;
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({ type: 'end' }));
    setState('finishing', 'live');
  }
}

$('start').onclick = start;
$('stop').onclick = stop;
$('dl-srt').onclick = () => download('captions.srt', buildSrt(ss.finals), 'application/x-subrip');
$('dl-vtt').onclick = () => download('captions.vtt', buildVtt(ss.finals), 'text/vtt');
if (params.get('autostart') === '1') start();
