"""Everything ``wallet enroll`` can check on this machine, checked before anything remote.

The enrollment token is single-use: the institution spends it when it registers the carrier.
A mistake found after that (a PIN of the wrong form, a wallet directory that cannot be
written) would leave a registered carrier that was never personalised and a spent token. So
every local input is checked first, and nothing has been sent when one is refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from safescan.carrier import rom
from safescan.carrier.errors import TransportError
from safescan.carrier.pin import PinFormatError, check_pin
from safescan.carrier.transport import parse_tcp_url, serial_path, shown
from safescan.wallet.errors import WalletError
from safescan.web.pki import InvalidUrl, origin_of

TOKEN_RE = re.compile(r"[A-Za-z0-9_\-]{8,128}")
CUSTOMER_ID_RE = re.compile(r"[A-Za-z0-9._:\-]{1,40}")
CARRIER_SCHEMES = ("tcp://", "serial://", "pcsc://", "audio://")


class EnrollmentInputError(WalletError):
    """An input to ``wallet enroll`` is invalid; nothing was sent anywhere."""

    code = "enrollment_input_invalid"


def _refuse(message: str) -> EnrollmentInputError:
    return EnrollmentInputError(f"{message}; nothing was sent, the token is still unused")


def check_inputs(
    *,
    directory: Path,
    institution_url: str,
    carrier_url: str,
    token: str,
    pin: str,
    retry_limit: int,
    customer_id: str | None,
) -> None:
    """Raise :class:`EnrollmentInputError` for the first invalid input."""
    try:
        check_pin(pin)
    except PinFormatError as exc:
        raise _refuse(f"the PIN is not valid ({exc})") from None
    if not rom.RETRY_LIMIT_MIN <= retry_limit <= rom.RETRY_LIMIT_MAX:
        low, high = rom.RETRY_LIMIT_MIN, rom.RETRY_LIMIT_MAX
        raise _refuse(f"the retry limit must be {low}-{high}, got {retry_limit}")
    if not TOKEN_RE.fullmatch(token or ""):
        raise _refuse("the enrollment token is malformed (expected enr_... from your institution)")
    if customer_id is not None and not CUSTOMER_ID_RE.fullmatch(customer_id):
        raise _refuse(f"the customer id {customer_id!r} is malformed")
    try:
        origin_of(institution_url)
    except InvalidUrl as exc:
        raise _refuse(f"the institution URL must be http(s)://HOST[:PORT]: {exc.message}") from None
    _check_carrier_url(carrier_url)
    _check_directory(directory)


def _check_carrier_url(url: str) -> None:
    try:
        if url.startswith("tcp://"):
            parse_tcp_url(url)
        elif url.startswith("serial://"):
            serial_path(url)
        elif not url.startswith(CARRIER_SCHEMES) or len(url) <= len("pcsc://"):
            raise TransportError(f"unknown carrier address {shown(url)}")
    except TransportError as exc:
        raise _refuse(
            f"the carrier address is not valid: {exc.message} (use tcp://HOST:PORT,"
            " serial:///DEVICE, pcsc://READER or audio://HOST:PORT)"
        ) from None


def _check_directory(directory: Path) -> None:
    if (directory / "wallet.json").exists():
        raise _refuse(f"{directory} already holds an enrolled wallet")
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise _refuse(f"the wallet directory {directory} cannot be created or written")
