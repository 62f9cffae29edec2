#!/usr/bin/env bash
# Create .venv in the repository root if missing and install safescan into it (editable),
# with the test extras. Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2]==(3,11) else 1)'; then
      PY="$cand"; break
    fi
  done
fi
if [[ -z "$PY" ]]; then
  echo "safescan needs Python 3.11 (python3.11 not found)" >&2
  exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
STAMP=".venv/.safescan-installed"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" || ! -x .venv/bin/safescan ]]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
  echo "$WANT" > "$STAMP"
fi
