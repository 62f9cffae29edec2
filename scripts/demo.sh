#!/usr/bin/env bash
# Set up .venv (runtime dependencies only, from wheels) if needed and run the end-to-end demo.
# Needs Python 3.11 and nothing else: no compiler, no system headers, no root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup-venv.sh" runtime
exec "$ROOT/.venv/bin/safescan" demo "$@"
