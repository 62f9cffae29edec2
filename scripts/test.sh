#!/usr/bin/env bash
# Set up .venv (if needed), then lint, type-check and run the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup-venv.sh
bash scripts/ensure-system-deps.sh
bash scripts/pcsc-setup.sh
echo "== ruff"; .venv/bin/ruff check src tests bench fuzz
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; exec .venv/bin/pytest "$@"
