#!/usr/bin/env bash
# Prepare a fresh machine: Debian packages for the embedded corpus, then a virtual
# environment in .venv with audiolm_pl installed (editable: conf/ and the code are read in place) and its test extras
# (which include the corpus, whisper, eval and metrics extras).
# Idempotent: a second run only checks. Sourced by scripts/main.sh and scripts/test.sh.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AUDIOLM_PL_VENV:-$REPO/.venv}"

bash "$REPO/scripts/install_system_deps.sh"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi
STAMP="$VENV/.audiolm_pl-installed"
# reinstall when the packaging changes: the editable install's import hook records setup.py's package mapping
if [ ! -f "$STAMP" ] || [ "$REPO/setup.cfg" -nt "$STAMP" ] || [ "$REPO/setup.py" -nt "$STAMP" ] \
   || [ "$REPO/pyproject.toml" -nt "$STAMP" ]; then
  echo "[setup] installing audiolm_pl and its dependencies into $VENV (torch==2.13.0 CPU build)"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  "$VENV/bin/python" -m pip install -q -e "$REPO[test]"
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
