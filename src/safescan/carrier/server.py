"""The carrier process: one emulated card behind one transport.

    python -m safescan.carrier.server --state FILE --listen tcp://127.0.0.1:PORT
    python -m safescan.carrier.server --state FILE --serial pty        (makes a pseudo-terminal)
    python -m safescan.carrier.server --state FILE --serial /dev/ttyUSB0
    python -m safescan.carrier.server --state FILE --vpcd tcp://127.0.0.1:35963
    python -m safescan.carrier.server --state FILE --audio tcp://127.0.0.1:PORT[?snr=20]

When ready it prints one line ``READY <url>`` on stdout (the URL a host connects to; with
port 0 the real port). Starting the process is powering the card: RAM starts empty, and the
EEPROM image is checked (a corrupt image makes the card destroy itself). Imports are kept
small so the process starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Sequence

from safescan.carrier.apdu import StatusWord
from safescan.carrier.device import Card
from safescan.carrier.eeprom import FileStorage, Lifecycle
from safescan.carrier.errors import CarrierError, TransportError
from safescan.carrier.statelock import StateLock, check_state_path
from safescan.carrier.transport import Control, parse_tcp_url
from safescan.carrier.transport.tcp import listen, recv_exact, send_frame
from safescan.code.errors import KeyFileError
from safescan.code.keys import parse_pinned_keys
from safescan.code.output import say

log = logging.getLogger("safescan.carrier")


class CardLink:
    """Adapts a :class:`Card` to what transports deliver (APDUs and reader control bytes)
    and to its physical side (the control socket); one lock serialises them."""

    def __init__(self, card: Card) -> None:
        self.card = card
        self.lock = threading.Lock()

    def apdu(self, command: bytes) -> bytes:
        """Run one APDU. A firmware fault answers ``6F00`` instead of killing the card."""
        with self.lock:
            try:
                return self.card.transmit(command)
            except Exception:  # the card must answer whatever happens inside it
                log.exception("internal error while processing a command")
                return StatusWord.UNKNOWN.to_bytes(2, "big")

    def control(self, message: int) -> bytes:
        """Apply a reader control message; returns the ATR where one is due."""
        with self.lock:
            if message == Control.POWER_OFF:
                self.card.power_off()
                return b""
            if message == Control.POWER_ON:
                return self.card.power_on()
            if message == Control.RESET:
                return self.card.reset()
            if message == Control.GET_ATR:
                from safescan.carrier import rom

                return rom.ATR
            return b""

    def power_off(self) -> None:
        """The host hung up: the card loses power."""
        with self.lock:
            self.card.power_off()

    def physical(self, line: str) -> str:
        """One command of the control socket (:mod:`safescan.carrier.control`)."""
        with self.lock:
            if line == "TAMPER":
                if not self.card.tamper():
                    return (
                        "ERR the keys are destroyed in RAM, but the EEPROM refused the"
                        " destroyed image: it is written again at every power-on"
                    )
                log.warning("tamper sensor fired: the carrier destroyed its keys")
                return "OK destroyed"
            if line == "STATUS":
                return f"OK {self.card.lifecycle.name.lower()}"
            if line == "SCREEN":
                return "OK " + json.dumps(self.card.screen, ensure_ascii=False, sort_keys=True)
            if line in ("PRESS OK", "PRESS CANCEL"):
                return f"OK {self.card.press(line == 'PRESS OK')}"
            return "ERR unknown control command"


def _quick_ack(sock: socket.socket) -> None:
    """Acknowledge at once what arrives next (Linux ``TCP_QUICKACK``, re-armed per frame).

    vsmartcard's vpcd writes the 2-byte length and the payload with two ``send`` calls and
    without ``TCP_NODELAY``: Nagle holds the payload back until the length is acknowledged,
    and a delayed ACK would make every APDU through pcscd wait ~40 ms.
    """
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


#: once a frame has begun, seconds for the rest of it to arrive and for its answer to be taken;
#: a host may stay idle between frames as long as it likes (a wallet holds the link while its
#: customer types the PIN)
FRAME_TIMEOUT = 5.0


def _next_frame(sock: socket.socket) -> bytes | None:
    """The next vpcd frame's payload (None: the host hung up between frames).

    The card serves one host at a time: a peer that sent half a frame and went silent (or
    died without closing) held it for every other host for ever. The wait for a frame's first
    byte has no bound; everything after it (the rest of the frame, then sending the answer)
    has :data:`FRAME_TIMEOUT`, after which ``TimeoutError`` hangs up.
    """
    sock.settimeout(None)
    first = sock.recv(1)
    if not first:
        return None
    deadline = time.monotonic() + FRAME_TIMEOUT  # the whole rest, however slowly it drips
    second = recv_exact(sock, 1, deadline)
    size = int.from_bytes(first + (second or b""), "big")
    payload = recv_exact(sock, size, deadline) if second and size else b""
    sock.settimeout(FRAME_TIMEOUT)  # sending the answer: its own bound (sendall's total)
    if second is None or payload is None:
        raise ConnectionResetError("connection closed mid-frame")
    return payload


def serve_connection(sock: socket.socket, link: CardLink) -> None:
    """Serve one vpcd-framed connection until it closes, or a frame begun stalls for
    :data:`FRAME_TIMEOUT`; the card loses power then."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            _quick_ack(sock)
            payload = _next_frame(sock)
            if payload is None:
                return
            if len(payload) == 1:
                answer = link.control(payload[0])
                if payload[0] == Control.GET_ATR:
                    send_frame(sock, answer)
                continue
            send_frame(sock, link.apdu(payload))
    except (OSError, CarrierError) as exc:
        log.info("link closed: %s", exc)
    finally:
        link.power_off()
        sock.close()


def serve_tcp(link: CardLink, host: str, port: int, ready: Callable[[str], None]) -> None:
    """Listen on ``host:port`` (port 0: any free port); one host at a time, like a reader."""
    server, url = listen(host, port, "tcp")
    with server:
        ready(url)
        while True:
            conn, _ = server.accept()
            serve_connection(conn, link)


def serve_vpcd(link: CardLink, host: str, port: int, ready: Callable[[str], None]) -> None:
    """Connect out to a vsmartcard ``vpcd`` reader (pcscd) and serve it; reconnect on loss."""
    announced = False
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=5)
        except OSError:
            time.sleep(1.0)
            continue
        conn.settimeout(None)
        if not announced:
            ready(f"vpcd tcp://{host}:{port}")
            announced = True
        serve_connection(conn, link)
        time.sleep(0.5)


def serve_serial(link: CardLink, device: str, ready: Callable[[str], None]) -> None:
    """Serve a serial line: ``pty`` makes a pseudo-terminal; otherwise open ``device``."""
    from safescan.carrier.transport.serial import serve_fd

    if device == "pty":
        fd, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing, before any host opens it
        path = os.ttyname(slave)
    else:
        fd = _open_serial_line(device)
        path = device
    ready(f"serial://{path}")
    serve_fd(fd, link.apdu, link.control)


def _open_serial_line(device: str) -> int:
    """Open ``device`` as a serial line in raw mode; :class:`TransportError` if it is not a
    terminal device (before: ``--serial /dev/null`` or a regular file was a ``termios.error``
    traceback; a FIFO with no writer blocked the open for ever)."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TransportError(f"cannot open the serial line {device}: {exc.strerror}") from None
    try:
        if not os.isatty(fd):
            raise TransportError(f"{device} is not a serial line (a terminal device)")
        tty.setraw(fd)
        os.set_blocking(fd, True)
    except (OSError, termios.error) as exc:
        os.close(fd)
        raise TransportError(f"cannot use the serial line {device}: {exc}") from None
    except TransportError:
        os.close(fd)
        raise
    return fd


def serve_audio_port(link: CardLink, url: str, ready: Callable[[str], None]) -> None:
    """Serve the audio port: FSK tones as PCM over TCP (see :mod:`.transport.audio`)."""
    from safescan.carrier.transport.audio import parse_audio_url, serve_audio

    host, port, channel = parse_audio_url(url, scheme="tcp")
    serve_audio(link.apdu, link.control, host, port, channel, ready, link.power_off)


def _render(screen: dict[str, object]) -> None:
    """The display model's terminal view: the screen, on the carrier process's stderr."""
    lines = [f"[carrier display] {screen.get('state', '')}"]
    if screen.get("merchant"):
        lines.append(
            f"  {screen['merchant']} ({screen.get('city', '')}, {screen.get('country', '')})"
        )
    items = screen.get("items")
    for entry in items if isinstance(items, list) else []:
        lines.append(f"  {entry['quantity']} x {entry['name']}  {entry['display']}")
    if screen.get("total"):
        lines.append(f"  total {screen['total']}")
    if screen.get("prompt"):
        lines.append(f"  >>> {screen['prompt']}  [y = OK, n = Cancel]")
    say("\n".join(lines), err=True)


def _buttons_on_terminal(link: CardLink) -> None:
    """Run interactively, the carrier's own terminal is its buttons: ``y`` OK, ``n`` Cancel."""

    def read() -> None:
        for raw in sys.stdin:
            key = raw.strip().lower()
            if key in ("y", "n"):
                link.physical("PRESS OK" if key == "y" else "PRESS CANCEL")

    threading.Thread(target=read, name="carrier-buttons", daemon=True).start()


def build_parser() -> argparse.ArgumentParser:
    """The command line of the carrier process."""
    parser = argparse.ArgumentParser(
        prog="python -m safescan.carrier.server", description="Run an emulated key carrier."
    )
    parser.add_argument("--state", required=True, help="EEPROM image file (created if absent)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", metavar="URL", help="tcp://HOST:PORT to listen on")
    where.add_argument("--serial", metavar="DEVICE", help="serial device, or 'pty'")
    where.add_argument("--vpcd", metavar="URL", help="tcp://HOST:PORT of a vpcd reader")
    where.add_argument(
        "--audio", metavar="URL", help="tcp://HOST:PORT[?snr=..] to serve the audio port on"
    )
    parser.add_argument(
        "--model",
        choices=("plain", "display"),
        help="hardware of a virgin chip (default plain); an existing chip must match",
    )
    parser.add_argument(
        "--control",
        metavar="PATH",
        help="the owner-only control socket (tamper sensor, buttons); default STATE.ctl",
    )
    parser.add_argument(
        "--institution-key",
        action="append",
        default=[],
        metavar="KID:HEX",
        help="factory step: the institution root key a blank carrier will trust (repeatable)",
    )
    return parser


def parse_anchor(values: Sequence[str]) -> dict[int, bytes]:
    """``KID:HEX`` strings -> {kid: 32-byte key}; raises KeyFileError on a malformed one."""
    return {kid: key.raw for kid, key in parse_pinned_keys(values).items()}


def run(
    state: str,
    *,
    listen: str | None = None,
    serial: str | None = None,
    vpcd: str | None = None,
    audio: str | None = None,
    ready: Callable[[str], None] | None = None,
    institution_keys: dict[int, bytes] | None = None,
    control: str | None = None,
    model: str | None = None,
) -> None:
    """Power the card and serve it forever on one transport (and its control socket).

    The state file is locked first (:class:`StateLock`): a second process on the same file
    is refused with :class:`StateInUse` before it reads the image; a state path that is a
    symbolic link is refused (:class:`StateFileRefused`) before the card is powered.
    """
    lock = StateLock(state).acquire()  # held for the life of the process
    try:
        check_state_path(state)
        _power_and_serve(
            state, listen, serial, vpcd, audio, ready, institution_keys, control, model
        )
    finally:
        lock.release()


def _power_and_serve(
    state: str,
    listen: str | None,
    serial: str | None,
    vpcd: str | None,
    audio: str | None,
    ready: Callable[[str], None] | None,
    institution_keys: dict[int, bytes] | None,
    control: str | None,
    model: str | None,
) -> None:
    from safescan.carrier.control import ControlServer, default_control_path

    wanted = {"plain": 1, "display": 2}.get(model or "plain", 1)
    card = Card(FileStorage(state), model=wanted)
    card.power_on()
    if model is not None and card.lifecycle is not Lifecycle.DESTROYED and card.model != wanted:
        other = "display" if card.model == 2 else "plain"
        raise TransportError(f"this chip is a {other} carrier (fixed at manufacture)")
    if institution_keys and card.install_trust_anchor(institution_keys):
        log.info("trust anchor installed: institution key ids %s", sorted(institution_keys))
    log.info("carrier on %s: %s", state, card.lifecycle.name)
    link = CardLink(card)
    if card.model == 2:
        card.on_screen = _render
        if sys.stdin is not None and sys.stdin.isatty():
            _buttons_on_terminal(link)
    physical = ControlServer(control or default_control_path(state), link.physical)
    physical.start()
    try:
        _serve(link, listen=listen, serial=serial, vpcd=vpcd, audio=audio, ready=ready)
    finally:
        physical.close()


def _serve(
    link: CardLink,
    *,
    listen: str | None,
    serial: str | None,
    vpcd: str | None,
    audio: str | None,
    ready: Callable[[str], None] | None,
) -> None:

    def announce(url: str) -> None:
        print(f"READY {url}", flush=True)  # term-safe: the address we bound

    say = ready or announce
    if listen is not None:
        host, port = parse_tcp_url(listen)
        serve_tcp(link, host, port, say)
    elif vpcd is not None:
        host, port = parse_tcp_url(vpcd)
        serve_vpcd(link, host, port, say)
    elif serial is not None:
        serve_serial(link, serial, say)
    elif audio is not None:
        serve_audio_port(link, audio, say)
    else:
        raise TransportError("give --listen, --serial, --vpcd or --audio")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Process entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the control socket file is removed on the way out
    signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(level=logging.WARNING, format="carrier: %(message)s", stream=sys.stderr)
    try:
        anchor = parse_anchor(args.institution_key)
    except KeyFileError as exc:
        say(f"carrier: {exc.message}", err=True)
        return 2
    try:
        run(
            args.state,
            listen=args.listen,
            serial=args.serial,
            vpcd=args.vpcd,
            audio=args.audio,
            institution_keys=anchor,
            control=args.control,
            model=args.model,
        )
    except KeyboardInterrupt:
        return 0
    except CarrierError as exc:
        say(f"carrier: {exc.message}", err=True)
        return 2
    except OSError as exc:
        say(f"carrier: {exc.strerror or exc}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
