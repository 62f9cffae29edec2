"""safescan.carrier: the key carrier (an emulated security token) and its host driver.

Card side: :mod:`.device` (the card), :mod:`.eeprom`, :mod:`.channel`, :mod:`.apdu`,
:mod:`.server` (the process). Host side: :class:`CarrierClient` and :func:`personalize`.
Names are imported lazily so that the carrier process starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safescan.carrier.client import CarrierClient, CarrierInfo, CodeContents, GeneratedKeys
    from safescan.carrier.provision import personalize

__all__ = ["CarrierClient", "CarrierInfo", "CodeContents", "GeneratedKeys", "personalize"]


def __getattr__(name: str) -> Any:
    if name == "personalize":
        from safescan.carrier import provision

        return provision.personalize
    if name in {"CarrierClient", "CarrierInfo", "CodeContents", "GeneratedKeys"}:
        from safescan.carrier import client

        return getattr(client, name)
    raise AttributeError(f"module 'safescan.carrier' has no attribute {name!r}")
