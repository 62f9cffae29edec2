#!/usr/bin/env bash
# Create .venv in the repository root if missing and install safescan into it (editable).
#
#   bash scripts/setup-venv.sh            # runtime only: what the demo needs, from wheels only
#   bash scripts/setup-venv.sh test       # + the test tools and the PC/SC extra (pyscard)
#
# The runtime install never compiles anything (pip --only-binary :all:), so it works on a
# machine with Python 3.11 and nothing else: no compiler, no system headers, no root.
# The test install adds `.[test]` and, when the PC/SC build requirements are on the machine
# (scripts/ensure-system-deps.sh installs them first), `.[pcsc]` (pyscard has no Linux wheel).
# Re-installs only when pyproject.toml or the requested set changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE="${1:-runtime}"
case "$MODE" in
  runtime|test) ;;
  *) echo "usage: setup-venv.sh [runtime|test]" >&2; exit 2 ;;
esac
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
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
HASH="$(sha256sum pyproject.toml | cut -d' ' -f1)"
STAMP_RUNTIME=".venv/.safescan-runtime"
STAMP_TEST=".venv/.safescan-test"
stamp_ok() { [[ -f "$1" && "$(cat "$1")" == "$HASH" && -x .venv/bin/safescan ]]; }

if [[ "$MODE" == "runtime" ]]; then
  # a test install holds everything the runtime needs
  if stamp_ok "$STAMP_RUNTIME" || stamp_ok "$STAMP_TEST"; then exit 0; fi
  # wheels only: a dependency that would need a compiler is a bug, not a build step
  PIP_ONLY_BINARY=":all:" "${PIP[@]}" -e .
  echo "$HASH" > "$STAMP_RUNTIME"
  exit 0
fi

# test mode
pcsc_buildable() { [[ -f /usr/include/PCSC/winscard.h ]] && command -v swig >/dev/null 2>&1; }
if ! stamp_ok "$STAMP_TEST"; then
  # one pip run for the test tools and, where it can be built, the PC/SC extra: a second run
  # resolved and installed the whole set again (~9 s of CPU, 10-17 s of a clean clone's CI)
  if pcsc_buildable; then
    echo "installing the test tools and the PC/SC extra (pyscard, built against libpcsclite-dev) into .venv"
    "${PIP[@]}" -e ".[test,pcsc]"
  else
    "${PIP[@]}" -e ".[test]"
  fi
  echo "$HASH" > "$STAMP_TEST"
fi
if ! .venv/bin/python -c 'import smartcard.scard' >/dev/null 2>&1; then
  if pcsc_buildable; then
    echo "installing the PC/SC extra (pyscard, built against libpcsclite-dev) into .venv"
    "${PIP[@]}" -e ".[test,pcsc]"
  else
    echo "note: PC/SC extra not installed (libpcsclite-dev or swig missing; run" \
         "scripts/ensure-system-deps.sh as root); the PC/SC tests will skip" >&2
  fi
fi
