#!/usr/bin/env bash
# Regenerates examples/hello.wav (+ hello.txt, hello.segments.tsv) from text with espeak-ng and sox.
#
#   bash examples/make_example.sh            # writes into examples/
#
# Four sentences, two espeak-ng voices (en-us male, en-us+f3 female) taking turns, with
# 0.6 s of leading silence, pauses of 0.9-1.4 s between sentences and 0.8 s at the end.
# Output: 16 kHz mono 16-bit PCM WAV. No dither (sox -D), so the output is byte-identical
# on every run with the same espeak-ng / sox versions (espeak-ng 1.51, SoX 14.4.2 here).
# hello.segments.tsv lists each sentence's start/end sample (16 kHz) and voice: the
# sentence's synthesised audio with espeak's own edge silences trimmed off.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

rate=16000
# voice|pause-before-seconds|sentence
lines=(
  "en-us|0.6|The quick brown fox jumps over the lazy dog."
  "en-us+f3|1.2|Streaming speech recognition turns audio into text while you talk."
  "en-us|0.9|Every final caption is written to disk as soon as it is ready."
  "en-us+f3|1.4|Thank you for listening."
)
tail_s=0.8

: > "$tmp/list"
: > "$out/hello.txt"
printf 'start_sample\tend_sample\tvoice\ttext\n' > "$out/hello.segments.tsv"
pos=0
i=0
for line in "${lines[@]}"; do
  IFS='|' read -r voice pause text <<< "$line"
  espeak-ng -v "$voice" -s 150 -w "$tmp/raw$i.wav" "$text"
  # 16 kHz mono s16, espeak's leading/trailing near-silence trimmed so the segment times are exact.
  sox -D "$tmp/raw$i.wav" -r "$rate" -c 1 -b 16 "$tmp/s$i.wav" \
      silence 1 0.01 0.1% reverse silence 1 0.01 0.1% reverse
  sox -D -n -r "$rate" -c 1 -b 16 "$tmp/p$i.wav" trim 0 "$pause"
  pause_n=$(soxi -s "$tmp/p$i.wav")
  speech_n=$(soxi -s "$tmp/s$i.wav")
  start=$((pos + pause_n))
  end=$((start + speech_n))
  printf '%s\t%s\t%s\t%s\n' "$start" "$end" "$voice" "$text" >> "$out/hello.segments.tsv"
  echo "$text" >> "$out/hello.txt"
  echo "$tmp/p$i.wav" >> "$tmp/list"
  echo "$tmp/s$i.wav" >> "$tmp/list"
  pos=$end
  i=$((i + 1))
done
sox -D -n -r "$rate" -c 1 -b 16 "$tmp/tail.wav" trim 0 "$tail_s"
echo "$tmp/tail.wav" >> "$tmp/list"
# shellcheck disable=SC2046
sox -D $(cat "$tmp/list") -r "$rate" -c 1 -b 16 -e signed-integer "$out/hello.wav"
echo "wrote $out/hello.wav ($(soxi -D "$out/hello.wav") s), hello.txt, hello.segments.tsv"
