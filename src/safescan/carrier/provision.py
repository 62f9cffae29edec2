"""Host-side personalisation: the flow a wallet or an institution desk runs on a BLANK carrier.

1. open the secure channel (authenticated by the carrier's attestation key, optionally pinned);
2. GENERATE KEYS on the device (signing + transport keys): the attestation statement over them
   and the enrollment challenge comes back (the chip must have been attested at the factory);
3. ``make_bundle(keys)``: the institution checks the attestation chain, certifies the signing
   key and seals a provisioning bundle to the transport key (see
   :func:`safescan.code.seal_bundle`);
4. PERSONALIZE with the bundle, the customer's PIN and the retry limit; the carrier locks.
"""

from __future__ import annotations

from collections.abc import Callable

from safescan.carrier import rom
from safescan.carrier.client import CarrierClient, CarrierInfo, GeneratedKeys
from safescan.carrier.eeprom import Lifecycle
from safescan.carrier.errors import ConditionsNotSatisfied
from safescan.code.keys import VerifyKey

#: Given the carrier's attested public keys, return the sealed provisioning bundle.
MakeBundle = Callable[[GeneratedKeys], bytes]


def personalize(
    client: CarrierClient,
    make_bundle: MakeBundle,
    pin: str,
    retry_limit: int = rom.RETRY_LIMIT_DEFAULT,
    *,
    attestation_key: VerifyKey | None = None,
    challenge: bytes | None = None,
) -> CarrierInfo:
    """Personalise a BLANK carrier end to end; returns its info afterwards (PERSONALIZED).

    ``challenge`` is what the institution wants attested (e.g.
    :func:`safescan.code.attestation.enrollment_challenge` of the enrollment token)."""
    client.select()
    if client.get_info().lifecycle is not Lifecycle.BLANK:
        raise ConditionsNotSatisfied("the carrier is already personalised")
    client.open_session(attestation_key=attestation_key)
    keys = client.generate_keys(challenge)
    bundle = make_bundle(keys)
    client.personalize(bundle, pin, retry_limit)
    return client.get_info()
