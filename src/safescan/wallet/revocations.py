"""Handing the institution's revocation list to the key carrier, failing closed.

The card checks merchant certificates against its own copy of the list, offline. It gets the
*merchant-scoped* list (``/v1/revocation-list?scope=merchant``: revoked merchants as one entry
each, never other parties' revocations), so what one customer or merchant does cannot fill
it. When the card still cannot take the newest list (too many entries, too large, refused),
nothing carries on as if it were checked: the card marks itself stale and refuses
merchant-signed codes, and the wallet refuses them before asking anything
(:attr:`CardRevocations.stale`). A wallet whose own list is older than the one its card
already took (``crl.cbor`` rolled back or removed while offline) refuses with
:class:`RevocationListInvalid` (``tests/test_wallet_crl_cache.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from safescan.carrier import rom
from safescan.carrier.client import CarrierClient
from safescan.carrier.errors import CardStatusError, CarrierError
from safescan.client.wallet import WalletClient
from safescan.code.certs import RevocationList, TrustStore
from safescan.code.errors import SafescanError
from safescan.wallet.errors import PaymentNotMade, RevocationListInvalid


@dataclass
class CardRevocations:
    """What happened when the card was brought up to date."""

    stale: bool = False  # the card does not hold the newest merchant revocations
    notices: list[str] = field(default_factory=list)


def update_card(
    api: WalletClient, trust: TrustStore, carrier: CarrierClient, card_sequence: int
) -> CardRevocations:
    """Give the card the newest merchant-scoped list it does not have yet."""
    out = CardRevocations()
    if card_sequence > 0 and trust.crl_sequence < card_sequence:
        # the card took list `card_sequence` from this wallet: a wallet list older than that
        # (or none at all) was rolled back or deleted; never "nothing is revoked"
        carrier.close()
        raise RevocationListInvalid(
            f"this wallet's revocation list ({max(trust.crl_sequence, 0)}) is older than the"
            f" one its key carrier already holds ({card_sequence}): crl.cbor was rolled back"
            " or removed; connect to the institution and try again (nothing was paid)"
        )
    if trust.crl_sequence <= card_sequence:
        return out
    raw: bytes | None = None
    try:
        raw = api.revocations.signed("merchant")
    except SafescanError:  # unreachable or refused: reported below, the card marked stale
        raw = None
    refusal: str | None = None
    crl: RevocationList | None = None
    if raw is not None:
        try:
            crl = RevocationList.from_bytes(raw, trust)
        except SafescanError as exc:
            refusal = f"the institution's card list does not verify: {exc.message}"
    if crl is None and refusal is None:
        refusal = "the institution's card list could not be fetched"
    elif crl is not None and crl.sequence <= card_sequence:
        return out
    elif crl is not None and (
        crl.entries > rom.MAX_REVOKED_SERIALS or len(raw or b"") > rom.MAX_COMMAND_DATA
    ):
        refusal = f"the list names more than the {rom.MAX_REVOKED_SERIALS} entries it can keep"
    elif crl is not None:
        try:
            carrier.update_revocations(raw or b"")
        except CardStatusError as exc:
            refusal = exc.message
        except CarrierError as exc:
            carrier.close()
            raise PaymentNotMade(
                f"the key carrier stopped answering: {exc.message}", cause=exc.code
            ) from None
    if refusal is not None and (crl is None or crl.sequence > card_sequence):
        out.stale = True
        out.notices.append(
            f"the key carrier could not take the newest revocation list ({refusal}):"
            " merchant-signed codes are refused until it can"
        )
    return out
