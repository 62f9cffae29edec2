#!/usr/bin/env bash
# Prepare the machine for the carrier's PC/SC path (USB smart-card stack):
#   - Debian packages pcscd, vsmartcard-vpcd (the virtual reader driver), libpcsclite-dev and
#     swig (what pyscard needs to build), installed if missing and if we are root;
#   - no system service is left enabled or running: the tests and demos start their own pcscd
#     in the foreground on their own socket (safescan.carrier.pcscd.PcscDaemon);
#   - pyscard (pinned) installed into .venv.
# Without root it only reports what is missing; the PC/SC tests then skip with a reason that
# names it. Idempotent: a second run changes nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYSCARD_PIN="pyscard==2.3.1"

missing=()
command -v pcscd >/dev/null 2>&1 || [[ -x /usr/sbin/pcscd ]] || missing+=(pcscd)
ls /usr/lib/pcsc/drivers/serial/libifdvpcd.so* >/dev/null 2>&1 || missing+=(vsmartcard-vpcd)
[[ -f /usr/include/PCSC/winscard.h ]] || missing+=(libpcsclite-dev)
command -v swig >/dev/null 2>&1 || missing+=(swig)

if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ "$(id -u)" != "0" ]]; then
    echo "note: not root; cannot install ${missing[*]} (the PC/SC tests will skip)" >&2
    exit 0
  fi
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # pkg-config lets pyscard's build find libpcsclite; gcc/python headers come with the image
  apt-get install -y -qq --no-install-recommends "${missing[@]}" pkg-config >/dev/null
fi

# Debian's pcscd is socket-activated by systemd: make sure no system instance is left running
# (we never enable one; our tests run their own pcscd on a private socket).
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  for unit in pcscd.socket pcscd.service; do
    if systemctl is-active --quiet "$unit" 2>/dev/null; then
      echo "stopping $unit (started by the package; the tests run their own pcscd)"
      systemctl stop "$unit" || true
    fi
  done
fi

if [[ -x .venv/bin/python ]] && ! .venv/bin/python -c 'import smartcard.scard' >/dev/null 2>&1; then
  if [[ -f /usr/include/PCSC/winscard.h ]] && command -v swig >/dev/null 2>&1; then
    echo "installing $PYSCARD_PIN into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$PYSCARD_PIN"
  else
    echo "note: cannot build $PYSCARD_PIN (libpcsclite-dev or swig missing)" >&2
  fi
fi
