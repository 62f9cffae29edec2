"""PC/SC: the carrier as a smart card in a reader managed by ``pcscd`` (pyscard).

URL: ``pcsc://READER`` where READER is a reader name (URL-encoded: ``%20`` for spaces; a unique
prefix of the name is enough) or an index into the reader list; ``pcsc://`` alone takes the
first reader. The client library finds ``pcscd`` through the ``PCSCLITE_CSOCK_NAME``
environment variable (default ``/run/pcscd/pcscd.comm``), read once per process.

The card is opened in exclusive mode (the secure channel must not be interleaved with another
application). Reader control messages map to PC/SC calls:

- power on: ``SCardConnect`` (pcscd powers the card), or, when already connected, a cold reset
  (``SCardReconnect(SCARD_UNPOWER_CARD)``): the card starts with empty RAM, as on TCP;
- power off: ``SCardDisconnect(SCARD_UNPOWER_CARD)``; reset: ``SCardReconnect(SCARD_RESET_CARD)``;
- get ATR: ``SCardStatus`` (or the reader state when disconnected).

PC/SC calls block in the client library (``SCardTransmit`` has no timeout of its own), so they
run on one worker thread and the caller waits at most ``timeout`` seconds: then
:class:`~safescan.carrier.errors.CarrierTimeout`, and the transport is unusable (reconnect).
Every PC/SC error becomes a typed carrier error (:func:`error_for`).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from safescan.carrier.errors import (
    CarrierDisconnected,
    CarrierError,
    CarrierTimeout,
    CarrierUnavailable,
    FramingError,
    TransportError,
)
from safescan.carrier.transport.base import Control, shown

#: PC/SC return codes (winscard.h); kept here so that mapping errors needs no pyscard.
SCARD_S_SUCCESS = 0
SCARD_E_CANCELLED = 0x80100002
SCARD_E_INVALID_HANDLE = 0x80100003
SCARD_E_INSUFFICIENT_BUFFER = 0x80100008
SCARD_E_UNKNOWN_READER = 0x80100009
SCARD_E_TIMEOUT = 0x8010000A
SCARD_E_SHARING_VIOLATION = 0x8010000B
SCARD_E_NO_SMARTCARD = 0x8010000C
SCARD_E_PROTO_MISMATCH = 0x8010000F
SCARD_F_COMM_ERROR = 0x80100013
SCARD_E_NOT_TRANSACTED = 0x80100016
SCARD_E_READER_UNAVAILABLE = 0x80100017
SCARD_E_NO_SERVICE = 0x8010001D
SCARD_E_SERVICE_STOPPED = 0x8010001E
SCARD_E_NO_READERS_AVAILABLE = 0x8010002E
SCARD_E_COMM_DATA_LOST = 0x8010002F
SCARD_W_UNSUPPORTED_CARD = 0x80100065
SCARD_W_UNRESPONSIVE_CARD = 0x80100066
SCARD_W_UNPOWERED_CARD = 0x80100067
SCARD_W_RESET_CARD = 0x80100068
SCARD_W_REMOVED_CARD = 0x80100069

_UNAVAILABLE = {
    SCARD_E_NO_SERVICE: "the PC/SC service (pcscd) is not running",
    SCARD_E_NO_READERS_AVAILABLE: "no smart-card reader is connected",
    SCARD_E_UNKNOWN_READER: "no such smart-card reader",
    SCARD_E_NO_SMARTCARD: "no card in the reader",
    SCARD_E_SHARING_VIOLATION: "the card is in use by another application",
    SCARD_W_UNSUPPORTED_CARD: "the card in the reader is not supported",
    SCARD_W_UNRESPONSIVE_CARD: "the card does not answer the reset",
    SCARD_E_PROTO_MISMATCH: "the card speaks neither T=1 nor T=0",
}
_DISCONNECTED = {
    SCARD_W_REMOVED_CARD: "the card was removed",
    SCARD_W_RESET_CARD: "the card was reset by someone else",
    SCARD_W_UNPOWERED_CARD: "the card lost power",
    SCARD_E_READER_UNAVAILABLE: "the reader went away",
    SCARD_E_SERVICE_STOPPED: "the PC/SC service (pcscd) stopped",
    SCARD_E_NOT_TRANSACTED: "the command did not reach the card (it may have gone away)",
    SCARD_F_COMM_ERROR: "communication with the reader failed",
    SCARD_E_COMM_DATA_LOST: "communication with the reader lost data",
    SCARD_E_INVALID_HANDLE: "the card connection is no longer valid",
    SCARD_E_CANCELLED: "the PC/SC call was cancelled",
}


def error_for(code: int, what: str, where: str) -> CarrierError:
    """The typed carrier error for a failed PC/SC call (``code`` from winscard)."""
    code &= 0xFFFFFFFF
    if code in _UNAVAILABLE:
        return CarrierUnavailable(f"{what} at {where}: {_UNAVAILABLE[code]}")
    if code in _DISCONNECTED:
        return CarrierDisconnected(f"{what} at {where}: {_DISCONNECTED[code]}")
    if code == SCARD_E_TIMEOUT:
        return CarrierTimeout(f"{what} at {where}: the reader did not answer in time")
    if code == SCARD_E_INSUFFICIENT_BUFFER:
        return FramingError(f"{what} at {where}: the answer does not fit a PC/SC buffer")
    return TransportError(f"{what} at {where}: PC/SC error 0x{code:08X}")


def parse_pcsc_url(url: str) -> str:
    """``pcsc://READER`` -> the reader selector (decoded name or index; "" for the first)."""
    if not url.startswith("pcsc://"):
        raise TransportError(f"not a pcsc://READER address: {shown(url)}")
    rest = url[len("pcsc://") :]
    if "?" in rest or "#" in rest:
        raise TransportError(f"a pcsc:// address takes no query or fragment: {shown(url)}")
    if "@" in rest:
        raise TransportError(
            "a pcsc://READER address holds user information (user:password@): leave it out"
        )
    return unquote(rest.rstrip("/"))


def pick_reader(readers: list[str], selector: str) -> str:
    """The reader named (exactly, or by a unique prefix) or numbered by ``selector``."""
    if not readers:
        raise CarrierUnavailable("no smart-card reader is connected")
    if selector == "":
        return readers[0]
    if selector in readers:
        return selector
    if selector.isdigit():
        index = int(selector)
        if index < len(readers):
            return readers[index]
        raise CarrierUnavailable(f"no reader number {index} (there are {len(readers)})")
    matches = [name for name in readers if name.startswith(selector)]
    if len(matches) == 1:
        return matches[0]
    shown = ", ".join(repr(r) for r in readers)
    if matches:
        raise CarrierUnavailable(f"reader {selector!r} is ambiguous; readers: {shown}")
    raise CarrierUnavailable(f"no reader {selector!r}; readers: {shown}")


class _Worker:
    """One daemon thread that makes the blocking PC/SC calls, so callers can time out."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], Any], queue.Queue[tuple[bool, Any]]] | None]
        self._jobs = queue.Queue()
        self.stuck = False
        self._thread = threading.Thread(target=self._run, name="pcsc-worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            call, reply = job
            try:
                reply.put((True, call()))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, re-raised there
                reply.put((False, exc))

    def call(self, fn: Callable[[], Any], timeout: float) -> Any:
        """Run ``fn()`` on the worker; ``TimeoutError`` if it takes longer than ``timeout``."""
        reply: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
        self._jobs.put((fn, reply))
        try:
            ok, value = reply.get(timeout=timeout)
        except queue.Empty:
            self.stuck = True
            raise TimeoutError from None
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        """Let the thread end once it is idle."""
        self._jobs.put(None)


class PcscTransport:
    """Host side: one card in one PC/SC reader, opened exclusively."""

    def __init__(self, selector: str, *, timeout: float = 5.0) -> None:
        try:
            from smartcard import scard
        except ImportError as exc:
            raise CarrierUnavailable(
                "PC/SC support needs the optional pcsc extra: pip install 'safescan[pcsc]' "
                f"(pyscard builds against libpcsclite-dev and swig; import failed: {exc})"
            ) from None
        self._scard: Any = scard
        self._timeout = timeout
        self._worker = _Worker()
        self._context: int | None = None
        self._card: int | None = None
        self._protocol = 0
        self._broken = False
        self.reader = selector or "(first reader)"
        self.url = "pcsc://" + selector
        try:
            self._context = self._call(
                lambda: scard.SCardEstablishContext(scard.SCARD_SCOPE_USER), "PC/SC context"
            )
            readers = self._call(
                lambda: scard.SCardListReaders(self._context, []),
                "listing readers",
                empty_ok=(SCARD_E_NO_READERS_AVAILABLE,),
            )
            self.reader = pick_reader(list(readers or []), selector)
            self._connect()
        except CarrierError:
            self.close()
            raise

    # --- plumbing ---------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any], what: str, *, empty_ok: tuple[int, ...] = ()) -> Any:
        """Run a pyscard call returning ``(hresult, *values)``; map failures to typed errors."""
        if self._broken or self._worker.stuck:
            raise CarrierDisconnected(f"the PC/SC link to {self.url} is broken; reconnect")
        try:
            result = self._worker.call(fn, self._timeout)
        except TimeoutError:
            self._broken = True
            raise CarrierTimeout(
                f"{what} at {self.url}: no answer within {self._timeout:g} s"
            ) from None
        except self._scard.error as exc:  # pyscard's own exception type (bad arguments)
            raise TransportError(f"{what} at {self.url}: {exc}") from None
        code, values = (result, ()) if isinstance(result, int) else (result[0], result[1:])
        code &= 0xFFFFFFFF
        if code != SCARD_S_SUCCESS:
            if code in empty_ok:
                return None
            raise error_for(code, what, self.url)
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def _connect(self) -> None:
        scard = self._scard
        reader = self.reader
        try:
            card, protocol = self._call(
                lambda: scard.SCardConnect(
                    self._context, reader, scard.SCARD_SHARE_EXCLUSIVE, scard.SCARD_PROTOCOL_T1
                ),
                f"connecting to {reader!r}",
            )
        except CarrierUnavailable as exc:
            if "neither" not in exc.message:
                raise
            card, protocol = self._call(  # no T=1: take what the card offers
                lambda: scard.SCardConnect(
                    self._context,
                    reader,
                    scard.SCARD_SHARE_EXCLUSIVE,
                    scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
                ),
                f"connecting to {reader!r}",
            )
        self._card, self._protocol = card, protocol

    def _reconnect(self, disposition: int) -> None:
        scard = self._scard
        card = self._card
        self._protocol = self._call(
            lambda: scard.SCardReconnect(
                card, scard.SCARD_SHARE_EXCLUSIVE, self._protocol_mask(), disposition
            ),
            "resetting the card",
        )

    def _protocol_mask(self) -> int:
        scard = self._scard
        if self._protocol == scard.SCARD_PROTOCOL_T1:
            return int(scard.SCARD_PROTOCOL_T1)
        return int(scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)

    # --- Transport --------------------------------------------------------------------------

    def transmit(self, apdu: bytes) -> bytes:
        """Send a command APDU through pcscd, return the response APDU."""
        scard = self._scard
        if self._card is None:
            self.control(Control.POWER_ON)  # an APDU to an unpowered card powers it first
        card = self._card
        pci = (
            scard.SCARD_PCI_T1 if self._protocol == scard.SCARD_PROTOCOL_T1 else scard.SCARD_PCI_T0
        )
        response = self._call(
            lambda: scard.SCardTransmit(card, pci, list(apdu)), "sending a command"
        )
        reply = bytes(response or [])
        if len(reply) < 2:
            raise FramingError("the card's response is shorter than a status word")
        return reply

    def control(self, message: Control) -> bytes:
        """Power off / on / reset the card or read its ATR through pcscd."""
        scard = self._scard
        if message is Control.POWER_OFF:
            card, self._card = self._card, None
            if card is not None:
                self._call(
                    lambda: scard.SCardDisconnect(card, scard.SCARD_UNPOWER_CARD), "power off"
                )
            return b""
        if message is Control.POWER_ON:
            if self._card is None:
                self._connect()
            else:
                self._reconnect(scard.SCARD_UNPOWER_CARD)  # cold reset: empty RAM
            return self._atr()
        if message is Control.RESET:
            if self._card is None:
                self._connect()
            else:
                self._reconnect(scard.SCARD_RESET_CARD)
            return self._atr()
        return self._atr()

    def _atr(self) -> bytes:
        scard = self._scard
        card = self._card
        if card is not None:
            status = self._call(lambda: scard.SCardStatus(card), "reading the ATR")
            return bytes(status[-1])
        states = self._call(
            lambda: scard.SCardGetStatusChange(
                self._context, 0, [(self.reader, scard.SCARD_STATE_UNAWARE)]
            ),
            "reading the reader state",
        )
        for _name, _state, atr in states or []:
            return bytes(atr)
        return b""

    def close(self) -> None:
        """Release the card (unpowered) and the PC/SC context; never raises."""
        scard = getattr(self, "_scard", None)
        if scard is not None and not self._worker.stuck:
            card, self._card = self._card, None
            context, self._context = self._context, None
            with contextlib.suppress(CarrierError):
                if card is not None:
                    self._call(
                        lambda: scard.SCardDisconnect(card, scard.SCARD_UNPOWER_CARD), "closing"
                    )
            with contextlib.suppress(CarrierError):
                if context is not None:
                    self._call(lambda: scard.SCardReleaseContext(context), "closing")
        self._broken = True
        self._worker.stop()
