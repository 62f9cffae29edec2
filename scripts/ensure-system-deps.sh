#!/usr/bin/env bash
# Install the system packages the test suite drives for real, if they are missing:
# PostgreSQL (the institution's production store), Chromium (browser tests of the POS pages).
# Needs root (CI runs as root); without root it only reports what is missing, and the tests
# that need a missing part skip with a reason that says so.
set -euo pipefail
missing=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if [[ "$(id -u)" != "0" ]]; then
  echo "note: not root; cannot install ${missing[*]} (tests needing them will skip)" >&2
  exit 0
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a PostgreSQL cluster on install; the tests run their own throwaway cluster.
if command -v pg_ctlcluster >/dev/null 2>&1; then
  for conf in /etc/postgresql/*/main; do
    [[ -d "$conf" ]] || continue
    ver="$(basename "$(dirname "$conf")")"
    pg_ctlcluster "$ver" main stop >/dev/null 2>&1 || true
  done
fi
