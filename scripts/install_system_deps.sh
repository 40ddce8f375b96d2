#!/usr/bin/env bash
# Debian packages the embedded corpus needs: TTS engines + voices, sentences, a synthesizer and
# soundfonts, and real human speech (Asterisk's Italian and Russian G.722 prompts, CC-BY-3.0, with their
# transcripts in the plain asterisk-core-sounds-{it,ru} packages; credits in docs/data.md).
# Idempotent and quick when everything is there (checks with dpkg first).
set -euo pipefail
PACKAGES=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts fortunes
          fluidsynth fluid-soundfont-gm timgm6mb-soundfont
          asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722 asterisk-core-sounds-it asterisk-core-sounds-ru)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "[setup] installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "error: need root (or sudo) to install: ${missing[*]}" >&2
    echo "       run as root: apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
  echo "error: apt-get could not install: ${missing[*]} (the corpus commands need them)" >&2
  exit 1
fi
