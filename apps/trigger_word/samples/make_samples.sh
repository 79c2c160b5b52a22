#!/bin/sh
# Rebuilds the bundled demo samples (16 kHz mono 16-bit WAV) with espeak-ng and sox.
#   activate.wav: "Okay, activate the lights." over quiet pink noise (the word once)
#   other.wav:    "Okay, turn on the lights." over the same noise (no trigger word)
# Deterministic: fixed voice, speed and pitch; sox -R makes the noise repeatable.
# Usage: sh apps/trigger_word/samples/make_samples.sh   (needs: apt-get install espeak-ng sox)
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make() {  # make NAME "TEXT"
    espeak-ng -v en-us -s 150 -p 50 -w "$tmp/$1_tts.wav" "$2"
    sox -R "$tmp/$1_tts.wav" -r 16000 -c 1 -b 16 "$tmp/$1_speech.wav" pad 1.0 1.0 norm -3
    len=$(soxi -D "$tmp/$1_speech.wav")
    sox -R -n -r 16000 -c 1 -b 16 "$tmp/$1_noise.wav" synth "$len" pinknoise vol 0.03
    sox -R -m "$tmp/$1_speech.wav" "$tmp/$1_noise.wav" -b 16 "$1.wav" norm -3
}
make activate "Okay, activate the lights."
make other "Okay, turn on the lights."
soxi -D activate.wav other.wav
