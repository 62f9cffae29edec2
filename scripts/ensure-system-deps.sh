#!/usr/bin/env bash
# Install, as root and only if missing, the Debian packages the test suite drives for real:
#   - PostgreSQL (the institution's production store; the tests run their own throwaway cluster),
#   - Chromium (browser tests of the web pages),
#   - pcscd + vsmartcard-vpcd (the carrier as a smart card behind a real PC/SC stack), with
#     libpcsclite-dev, swig and pkg-config, which the PC/SC extra (pyscard) builds against,
#   - opensc and pcsc-tools (PC/SC clients nobody here wrote, used to check the carrier),
#   - patroni, etcd-server and haproxy (the institution's HA cluster: scripts/cluster.sh and
#     tests/cluster run their own instances on loopback), with python3-idna (a Recommends of
#     Debian's urllib3 that Patroni needs to reach etcd and its peers over https),
#   - faketime (libfaketime: the fault tests jump a real server's wall clock),
#   - softhsm2 (a PKCS#11 token in software: the institution's signing keys in an HSM),
#   - fonts-dejavu-core (the shop's name on the web POS's printable shop-front codes),
#   - curl and openssl (docs/merchant-api.md's examples, run as written by a test).
# No system service is left enabled or running: the tests start their own servers.
# Without root it only reports what is missing; the tests needing a missing part skip with a
# reason that names it. Idempotent: a second run changes nothing.
set -euo pipefail
missing=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v pcscd >/dev/null 2>&1 || [[ -x /usr/sbin/pcscd ]] || missing+=(pcscd)
ls /usr/lib/pcsc/drivers/serial/libifdvpcd.so* >/dev/null 2>&1 || missing+=(vsmartcard-vpcd)
[[ -f /usr/include/PCSC/winscard.h ]] || missing+=(libpcsclite-dev)
command -v swig >/dev/null 2>&1 || missing+=(swig)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v opensc-tool >/dev/null 2>&1 || missing+=(opensc)
command -v scriptor >/dev/null 2>&1 || missing+=(pcsc-tools)
command -v patroni >/dev/null 2>&1 || missing+=(patroni)
/usr/bin/python3 -c "import idna" >/dev/null 2>&1 || missing+=(python3-idna)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
command -v softhsm2-util >/dev/null 2>&1 || missing+=(softhsm2)
[[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)

if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ "$(id -u)" != "0" ]]; then
    echo "note: not root; cannot install ${missing[*]} (tests needing them will skip)" >&2
    exit 0
  fi
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Services must not start on install (etcd, haproxy, patroni, postgresql, pcscd would):
  # policy-rc.d exit 101 tells invoke-rc.d and deb-systemd-invoke to leave them stopped.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ "$own_policy" == 1 ]]; then rm -f "$policy"; fi
fi

# Debian starts a PostgreSQL cluster on install; the tests run their own throwaway cluster.
if command -v pg_ctlcluster >/dev/null 2>&1; then
  for conf in /etc/postgresql/*/main; do
    [[ -d "$conf" ]] || continue
    ver="$(basename "$(dirname "$conf")")"
    pg_ctlcluster "$ver" main stop >/dev/null 2>&1 || true
  done
fi
# Debian's pcscd is socket-activated by systemd: no system instance may be left running
# (the tests run their own pcscd on a private socket). Debian enables etcd, haproxy and
# patroni at boot: disable them (the cluster tooling runs its own on loopback).
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  for unit in pcscd.socket pcscd.service; do
    if systemctl is-active --quiet "$unit" 2>/dev/null; then
      systemctl stop "$unit" || true
    fi
  done
  for unit in etcd.service haproxy.service patroni.service; do
    if systemctl is-enabled --quiet "$unit" 2>/dev/null || systemctl is-active --quiet "$unit" 2>/dev/null; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
  done
fi
