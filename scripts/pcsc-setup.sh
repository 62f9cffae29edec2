#!/usr/bin/env bash
# Prepare a machine for the carrier's PC/SC path: the system packages (as root, if missing)
# and the PC/SC extra (pyscard) in .venv. Same steps as the test command's set-up.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/ensure-system-deps.sh"
bash "$ROOT/scripts/setup-venv.sh" test
