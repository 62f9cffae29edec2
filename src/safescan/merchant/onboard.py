"""Administrator calls used to set a terminal (and, in demos, a customer) up.

:class:`~safescan.client.AdminClient` wraps the institution's administrator API;
:func:`check_merchant_details` checks the country, MCC and IBAN before anything is sent;
:func:`onboard_merchant` makes a merchant with an API key generated *here* (only its public
half is sent) and returns a ready :class:`~safescan.merchant.config.PosConfig`.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from stdnum import iban
from stdnum.exceptions import InvalidChecksum, ValidationError

from safescan.api.errors import InvalidRequest
from safescan.client.admin import AdminClient
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import SafescanError
from safescan.code.keys import SigningKey
from safescan.merchant.config import PosConfig

__all__ = ["check_merchant_details", "onboard_merchant"]

_COUNTRY_RE = re.compile(r"[A-Z]{2}")
_IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")


def check_merchant_details(
    *, country: str, mcc: int, settlement_account: str, currency: str
) -> dict[str, Any]:
    """Check what a merchant is onboarded with, before anything is sent; returns the values
    in the form the institution takes (IBAN without spaces, country and currency upper case).

    The settlement account must be an IBAN whose format and mod-97 check digits are right
    (``python-stdnum``); the country an ISO 3166 alpha-2 code; the MCC 0-9999.
    """
    code = country.strip().upper()
    if not _COUNTRY_RE.fullmatch(code):
        raise InvalidRequest(
            f"the country must be an ISO 3166 two-letter code such as FR, got {country!r}",
            param="country",
        )
    if not 0 <= mcc <= 9999:
        raise InvalidRequest(f"the MCC is 4 digits (0000-9999), got {mcc}", param="mcc")
    if not _IBAN_SHAPE.fullmatch(iban.compact(settlement_account)):
        raise InvalidRequest(
            f"the settlement account {settlement_account!r} is not a valid IBAN (two letters,"
            " two check digits, then up to 30 letters and digits)",
            param="settlement_account",
        )
    try:
        account = iban.validate(settlement_account)
    except InvalidChecksum:
        raise InvalidRequest(
            f"the IBAN {settlement_account!r} has wrong check digits (mod 97): mistyped?",
            param="settlement_account",
        ) from None
    except ValidationError as exc:
        raise InvalidRequest(
            f"the settlement account {settlement_account!r} is not a valid IBAN ({exc})",
            param="settlement_account",
        ) from None
    try:
        alpha = lookup_currency(currency).alpha
    except SafescanError as exc:
        raise InvalidRequest(exc.message, param="currency") from None
    return {"country": code, "mcc": mcc, "settlement_account": account, "currency": alpha}


def onboard_merchant(
    admin: AdminClient,
    *,
    name: str,
    city: str,
    country: str,
    mcc: int,
    settlement_account: str,
    currency: str = "EUR",
) -> PosConfig:
    """Create a merchant whose API key is generated locally; returns the POS configuration."""
    seed = secrets.token_bytes(32)
    public = SigningKey.from_seed(seed).public_key
    created = admin.merchants.create(
        name=name,
        city=city,
        country=country,
        mcc=mcc,
        settlement_account=settlement_account,
        api_public_key=public,
    )
    return PosConfig(
        institution_url=admin.base_url,
        merchant_id=created.id,
        api_seed=seed,
        trust=admin.keys.root_keys(),
        currency=currency,
    )
