#!/usr/bin/env bash
# The test suite: installs what it needs (scripts/setup_env.sh), then runs pytest on CPU.
# Slow tests: bash scripts/test.sh --runslow. Extra arguments go to pytest.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup_env.sh"
cd "$REPO"
python -m pytest -q --timeout 900 "$@"
