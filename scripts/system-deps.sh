#!/usr/bin/env bash
# System packages the apps and tests need (Debian, Ubuntu, Raspberry Pi OS).
# As root: installs what is missing with apt. Otherwise: prints the apt command and goes on.
set -euo pipefail
# line 1: the apps (microphone, speech synthesis, Haar cascades) and the delegate test stub (gcc)
# line 2: trigger-word training: real speech (asterisk, CC-BY-SA), festival voices (training), flite (testing), wamerican (the word list for confusable negatives)
# line 3: deploy tests: a real MQTT broker and sshd on 127.0.0.1; line 4: web view tests in headless Chromium
PKGS=(python3-venv libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins espeak-ng opencv-data gcc
      asterisk-core-sounds-en-wav festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite wamerican
      mosquitto mosquitto-clients openssh-server openssh-client
      chromium chromium-driver)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "edgesdk: not a Debian-like system; install the equivalents of: ${missing[*]}" >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  echo "edgesdk: installing system packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "edgesdk: some apps need system packages; run:  sudo apt-get install -y ${missing[*]}" >&2
fi
