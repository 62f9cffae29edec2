#!/usr/bin/env bash
# Set up .venv (if needed) and run the safescan end-to-end demo.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup-venv.sh"
exec "$ROOT/.venv/bin/safescan" demo "$@"
