#!/usr/bin/env bash
# The institution on a PostgreSQL HA cluster on this machine (loopback only):
#   bash scripts/cluster.sh up     [--state DIR] [--base-port N] ...   start (first run: create)
#   bash scripts/cluster.sh status [--state DIR] [--json]              who runs, who is primary
#   bash scripts/cluster.sh kill primary|etcd1|api0|... [--state DIR]  fault injection
#   bash scripts/cluster.sh down   [--state DIR] [--wipe]              stop everything
# Needs the Debian packages patroni, etcd-server, haproxy and postgresql
# (scripts/ensure-system-deps.sh installs them). Same as `.venv/bin/safescan cluster ...`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ ! -x "$ROOT/.venv/bin/python" ]]; then
  bash "$ROOT/scripts/setup-venv.sh"
fi
exec "$ROOT/.venv/bin/python" -m safescan.cluster "$@"
