#!/usr/bin/env bash
# The main job on the embedded default corpus, end to end (see README "The main job").
# Installs what it needs (scripts/setup_env.sh), then runs `audiolm-pl main`.
# Extra arguments go to `audiolm-pl main` as overrides (e.g. speech_hours=5 size=small).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup_env.sh"
cd "$REPO"
audiolm-pl main "$@"
