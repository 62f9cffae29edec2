"""In-process transport: the host driver talks straight to a :class:`Card` object.

For fast tests and for tools that embed a card; behaves like a reader with the card inserted.
"""

from __future__ import annotations

from safescan.carrier.device import Card
from safescan.carrier.errors import CarrierDisconnected
from safescan.carrier.transport.base import Control


class LoopbackTransport:
    """A :class:`~safescan.carrier.transport.Transport` wired to a card in this process."""

    def __init__(self, card: Card) -> None:
        from safescan.carrier.server import CardLink

        self.url = "loopback:"
        self.link = CardLink(card)
        self.closed = False

    def transmit(self, apdu: bytes) -> bytes:
        """Run the APDU on the card."""
        if self.closed:
            raise CarrierDisconnected("the loopback link is closed")
        return self.link.apdu(apdu)

    def control(self, message: Control) -> bytes:
        """Apply a control message."""
        if self.closed:
            raise CarrierDisconnected("the loopback link is closed")
        return self.link.control(int(message))

    def close(self) -> None:
        """Remove the card from the reader (power off)."""
        if not self.closed:
            self.link.card.power_off()
        self.closed = True
