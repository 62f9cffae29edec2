#!/usr/bin/env bash
# Install the system packages the tests drive (as root, only if missing), then set up .venv
# with the test tools, then lint, type-check and run the whole test suite.
# System packages come first: the PC/SC extra (pyscard) builds against libpcsclite-dev.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Byte-code caching on: with PYTHONDONTWRITEBYTECODE set (as on the CI machine) every Python
# process compiled safescan's modules again, and every pytest worker rewrote the asserts of all
# ~460 test modules at collection (20 s of CPU per worker; 7 s from the cache). The .pyc files
# go to __pycache__/ (git-ignored; tests/test_wheel.py and test_fresh_clone.py leave them out).
unset PYTHONDONTWRITEBYTECODE
bash scripts/ensure-system-deps.sh
bash scripts/setup-venv.sh test
echo "== ruff"; .venv/bin/ruff check src tests bench fuzz
# 4 worker processes (pytest-xdist), one test file per worker at a time: most of the suite's
# time is spent waiting on the servers, carriers and browsers it starts, so 4 beat 2 on 2 cores.
# The longest files start first (tests/conftest.py; --no-loadscope-reorder keeps that order).
# --durations=30: every run prints its 30 slowest tests (docs/operations.md, "Test suite wall
# time"). SAFESCAN_TEST_WORKERS=0 runs everything in this one process.
WORKERS="${SAFESCAN_TEST_WORKERS:-4}"
if [ "$WORKERS" = "0" ]; then
    echo "== mypy"; .venv/bin/mypy
    echo "== pytest"; exec .venv/bin/pytest --durations=30 "$@"
fi
# mypy runs beside pytest, not before it: ~25 s of one core on a clean clone (no cache), while
# pytest keeps ~1.7 of the 2 cores busy; its output and status come after pytest's, and the
# run fails if either failed.
MYPY_OUT="$(mktemp "${TMPDIR:-/tmp}/safescan-mypy-XXXXXX.txt")"
.venv/bin/mypy >"$MYPY_OUT" 2>&1 &
MYPY_PID=$!
# Every run also writes the CPU report (tests/conftest.py: a JSON line a test, its CPU and wall
# seconds) and prints its 50 longest files by summed wall seconds at the end: the figures
# LONGEST is taken from (docs/operations.md, "Test suite wall time"). SAFESCAN_CPU_REPORT set
# by the caller: that file instead of a temporary one (removed at the end).
REPORT="${SAFESCAN_CPU_REPORT:-}"
OWN_REPORT=""
if [ -z "$REPORT" ]; then
    REPORT="$(mktemp "${TMPDIR:-/tmp}/safescan-cpu-XXXXXX.jsonl")"
    OWN_REPORT="$REPORT"
fi
cleanup() {
    kill "$MYPY_PID" 2>/dev/null || true  # still running only if pytest was interrupted
    rm -f "$MYPY_OUT"
    if [ -n "$OWN_REPORT" ]; then rm -f "$OWN_REPORT"; fi
}
trap cleanup EXIT
echo "== pytest ($WORKERS workers)"
status=0
SAFESCAN_CPU_REPORT="$REPORT" .venv/bin/pytest -n "$WORKERS" --dist loadfile \
    --no-loadscope-reorder --durations=30 "$@" || status=$?
if [ -s "$REPORT" ]; then
    echo "== test files by wall seconds (scripts/test-cpu-report.py --by wall)"
    python3 scripts/test-cpu-report.py "$REPORT" --by wall --top 50 | head -n 55 || true
fi
echo "== mypy"
mypy_status=0
wait "$MYPY_PID" || mypy_status=$?
cat "$MYPY_OUT"
if [ "$status" = "0" ]; then
    status="$mypy_status"
fi
exit "$status"
