#!/usr/bin/env bash
# Install the system packages the tests drive (as root, only if missing), then set up .venv
# with the test tools, then lint, type-check and run the whole test suite.
# System packages come first: the PC/SC extra (pyscard) builds against libpcsclite-dev.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/ensure-system-deps.sh
bash scripts/setup-venv.sh test
echo "== ruff"; .venv/bin/ruff check src tests bench fuzz
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; exec .venv/bin/pytest "$@"
