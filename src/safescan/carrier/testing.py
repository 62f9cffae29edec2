"""Helpers for tests, benchmarks and demos: a local institution and a carrier process.

:class:`LocalInstitution` plays the payment institution offline (institution key, scheme key,
carrier certificates, sealed provisioning bundles, sealed payment codes).
:class:`CarrierProcess` runs ``python -m safescan.carrier.server`` on 127.0.0.1 under the
process supervisor (:mod:`safescan.procs`) and always stops it. Not used by production code.
"""

from __future__ import annotations

import itertools
import os
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from safescan.carrier.client import CarrierClient, GeneratedKeys
from safescan.carrier.errors import CarrierUnavailable
from safescan.carrier.factory import Factory
from safescan.code import (
    DynamicCode,
    Issuer,
    LineItem,
    Merchant,
    ProvisioningBundle,
    RevocationList,
    Role,
    SchemeKey,
    SchemeKeyring,
    SchemePublicKey,
    SigningKey,
    StaticCode,
    TrustStore,
    VerifyKey,
    carrier_subject,
    encode_text,
    issue_certificate,
    seal,
    seal_bundle,
)
from safescan.code.attestation import AttestationStatement, CarrierModel, statement_message
from safescan.code.keyupdate import (
    MAX_LIVE_EPOCHS,
    EpochKey,
    KeyUpdate,
    epoch_kid,
    seal_key_update,
)
from safescan.procs import ManagedProcess, ProcessError

if TYPE_CHECKING:
    import socket

    from safescan.carrier.device import Card

EUR = 978


def secrets_of(card: Card) -> list[bytes]:
    """Every secret an in-process card (on :class:`MemoryStorage`) holds: what no response may
    ever contain."""
    from safescan.carrier.eeprom import MemoryStorage

    image = card.image
    assert image is not None
    found = [card.eeprom.pin_key]
    for value in (image.attestation_seed, image.signing_seed, image.transport_seed):
        if value is not None:
            found.append(bytes(value))
    found += [bytes(raw) for _, raw, _ in image.scheme_keys]
    found += [bytes(raw) for _, raw, _ in image.epoch_keys]
    if image.pin_verifier is not None:
        found.append(bytes(image.pin_verifier))
    storage = card.eeprom.storage
    assert isinstance(storage, MemoryStorage) and storage.device_key is not None
    found.append(storage.device_key)
    return found


def leaks(data: bytes, secret_list: list[bytes]) -> bool:
    """Whether ``data`` contains any secret, or either half of one."""
    return any(s in data or s[:16] in data or s[16:] in data for s in secret_list)


def software_attestation(
    factory: Factory,
    signing_public: bytes,
    transport_public: bytes,
    challenge: bytes,
    *,
    model: CarrierModel = CarrierModel.PLAIN,
) -> bytes:
    """An attestation statement for keys made in software, by a fresh attestation key that
    ``factory`` certifies: a stand-in for a genuine chip in institution tests, benchmarks and
    fuzzers whose factory the institution trusts. (Made by anyone else, it is exactly what
    enrollment refuses.)"""
    attestation_key = SigningKey.generate()
    device_id = secrets.token_bytes(8)
    cert = factory.certify(device_id, model, attestation_key.public_key)
    message = statement_message(device_id, model, challenge, signing_public, transport_public)
    return AttestationStatement(
        device_id=device_id,
        model=model,
        challenge=challenge,
        signing_public=VerifyKey(signing_public),
        transport_public=transport_public,
        signature=attestation_key.sign(message),
        certificate=cert,
    ).to_bytes()


DEFAULT_MERCHANT = Merchant("m-1001", "Corner Bakery", "Lyon", "FR", 5462)


@dataclass
class LocalInstitution:
    """An offline institution: signs bundles, certificates and codes for tests and demos."""

    key: SigningKey
    kid: int
    scheme: SchemeKey
    now: int
    _serials: Iterator[int] = field(default_factory=lambda: itertools.count(1000))
    factory: Factory = field(default_factory=Factory.generate)
    epochs: list[EpochKey] = field(default_factory=list)  # scheme-key epochs, oldest first
    carriers: dict[int, bytes] = field(default_factory=dict)  # serial -> transport public key

    @classmethod
    def create(
        cls, *, kid: int = 1, scheme_kid: int = 7, now: int | None = None
    ) -> LocalInstitution:
        """A fresh institution with one institution key and one scheme key."""
        return cls(
            SigningKey.generate(), kid, SchemeKey.generate(scheme_kid), now or int(time.time())
        )

    @property
    def trust(self) -> TrustStore:
        """What hosts (wallets) trust: the institution key."""
        return TrustStore({self.kid: self.key.public_key})

    @property
    def keyring(self) -> SchemeKeyring:
        """The scheme keys (the institution's own copy)."""
        return SchemeKeyring({self.scheme.kid: self.scheme})

    @property
    def manufacturers(self) -> TrustStore:
        """The manufacturer keys this institution trusts (its factory's)."""
        return TrustStore({self.factory.kid: self.factory.public_key})

    def manufacture(self, client: CarrierClient) -> None:
        """The factory step on a blank chip: certify its attestation key (see
        :class:`safescan.carrier.factory.Factory`)."""
        self.factory.attest(client, now=self.now)

    def make_bundle(self, keys: GeneratedKeys, *, serial: int | None = None) -> bytes:
        """Check the carrier's attestation (as the real institution does), certify its
        signing key and seal a bundle to its transport key."""
        statement = keys.statement
        statement.verify(self.manufacturers, challenge=statement.challenge, now=self.now)
        serial = next(self._serials) if serial is None else serial
        self.carriers[serial] = keys.transport_public
        cert = issue_certificate(
            self.key,
            self.kid,
            serial=serial,
            role=Role.CARRIER,
            subject=carrier_subject(serial),
            public_key=keys.signing_public,
            not_before=self.now - 3600,
            not_after=self.now + 5 * 365 * 86400,
        )
        bundle = ProvisioningBundle(
            carrier_serial=serial,
            certificate=cert,
            institution_keys={self.kid: self.key.public_key},
            scheme_keys=(self.scheme,),
            issued_at=self.now,
            transport_public=keys.transport_public,
        )
        return seal_bundle(bundle, self.key, self.kid)

    def rotate(self, *, retire_in: int = 8 * 86400) -> EpochKey:
        """Start the next scheme-key epoch (codes are sealed to it from now on)."""
        epoch = self.epochs[-1].epoch + 1 if self.epochs else 1
        key = EpochKey(epoch, SchemeKey.generate(epoch_kid(epoch), self.now + retire_in))
        self.epochs.append(key)
        return key

    def key_update(
        self,
        serial: int,
        from_epoch: int,
        *,
        to_epoch: int | None = None,
        transport_public: bytes | None = None,
    ) -> bytes:
        """A KEY UPDATE for carrier ``serial``: the epochs after ``from_epoch`` (up to
        ``to_epoch``, default the newest), sealed to its transport key."""
        to = self.epochs[-1].epoch if to_epoch is None else to_epoch
        live = [k for k in self.epochs if from_epoch < k.epoch <= to and k.retire_at > self.now]
        update = KeyUpdate(
            carrier_serial=serial,
            from_epoch=from_epoch,
            to_epoch=to,
            issued_at=self.now,
            keys=tuple(live[-MAX_LIVE_EPOCHS:]),  # what a carrier keeps, newest first
        )
        target = self.carriers[serial] if transport_public is None else transport_public
        return seal_key_update(update, self.key, self.kid, target)

    def revocation_list(
        self, serials: set[int], *, sequence: int, subjects: set[str] | None = None
    ) -> bytes:
        """A signed revocation list (CBOR bytes); ``subjects`` revoke whole merchants."""
        return RevocationList.issue(
            self.key,
            self.kid,
            sequence=sequence,
            issued_at=self.now,
            serials=serials,
            subjects=frozenset(subjects or ()),
        ).to_bytes()

    def merchant_issuer(self, merchant: Merchant = DEFAULT_MERCHANT) -> Issuer:
        """A certified merchant key (for merchant-signed codes)."""
        key = SigningKey.generate()
        cert = issue_certificate(
            self.key,
            self.kid,
            serial=next(self._serials),
            role=Role.MERCHANT,
            subject=merchant.id,
            public_key=key.public_key,
            not_before=self.now - 3600,
            not_after=self.now + 365 * 86400,
            merchant=merchant,
        )
        return Issuer.merchant(key, cert)

    def dynamic_code(
        self,
        *,
        merchant: Merchant = DEFAULT_MERCHANT,
        order_id: str = "order-1",
        items: Sequence[LineItem] = (LineItem("Croissant", 2, 120), LineItem("Baguette", 1, 95)),
        currency: int = EUR,
        issued_at: int | None = None,
        lifetime: int = 600,
        issuer: Issuer | None = None,
        text: bool = True,
        scheme: SchemePublicKey | None = None,
    ) -> str | bytes:
        """A sealed dynamic code (QR text by default, else binary), sealed to ``scheme``
        (default: the static scheme key this institution put in its bundles)."""
        issued = self.now if issued_at is None else issued_at
        code = DynamicCode(
            merchant=merchant,
            order_id=order_id,
            items=tuple(items),
            total=sum(i.quantity * i.unit_price for i in items),
            currency=currency,
            issued_at=issued,
            expires_at=issued + lifetime,
            nonce=secrets.token_bytes(8),
        )
        to = scheme if scheme is not None else self.scheme.public
        binary = seal(code, issuer or Issuer.institution(self.key, self.kid), to)
        return encode_text(binary) if text else binary

    def static_code(
        self,
        *,
        merchant: Merchant = DEFAULT_MERCHANT,
        currency: int | None = EUR,
        lifetime: int = 365 * 86400,
        text: bool = True,
    ) -> str | bytes:
        """A sealed static (printed) merchant code."""
        code = StaticCode(merchant, currency, self.now, self.now + lifetime)
        binary = seal(code, Issuer.institution(self.key, self.kid), self.scheme.public)
        return encode_text(binary) if text else binary


class CarrierProcess:
    """``python -m safescan.carrier.server`` bound to 127.0.0.1 (or a pty), supervised by
    :class:`safescan.procs.ManagedProcess`: ready when it prints ``READY URL``, stderr in
    ``STATE.log``, always stoppable (its whole process group)."""

    def __init__(
        self,
        state: str | os.PathLike[str],
        *,
        serial: bool = False,
        where: Sequence[str] | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        """``where`` overrides the transport options (e.g. ``["--audio", "tcp://..."]``);
        ``prefix`` is put before the command (e.g. ``nsenter --net=...``)."""
        self.state = Path(state)
        self.serial = serial
        self.where = list(where) if where is not None else None
        self.prefix = list(prefix)
        self.proc: ManagedProcess | None = None
        self.url = ""

    def start(self, timeout: float = 20.0) -> str:
        """Start the process; returns the URL it announced. :class:`CarrierUnavailable` when
        it exits or does not announce itself in time."""
        if self.where is not None:
            where = self.where
        else:
            where = ["--serial", "pty"] if self.serial else ["--listen", "tcp://127.0.0.1:0"]
        self.proc = ManagedProcess(
            "carrier",
            [
                *self.prefix,
                sys.executable,
                "-m",
                "safescan.carrier.server",
                "--state",
                str(self.state),
                *where,
            ],
            log=self.state.with_name(self.state.name + ".log"),
            capture=True,
        )
        try:
            self.url = self.proc.start().ready_line("READY", timeout)
        except ProcessError as exc:
            self.proc = None
            raise CarrierUnavailable(f"the carrier process did not start: {exc.message}") from None
        return self.url

    @property
    def pid(self) -> int:
        """The process id."""
        if self.proc is None:
            raise CarrierUnavailable("the carrier process is not running")
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL (pull the plug) and reap."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.stop(grace=5.0)

    def __enter__(self) -> CarrierProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


ATTACKS = (
    "flip_command",  # flip a bit of secure command k on its way to the card
    "flip_response",  # flip a bit of the card's answer to k on its way to the host
    "replay_command",  # after k, send k to the card again
    "replay_response",  # answer k with the card's answer to k-1
    "reorder_commands",  # deliver command k-1 again before k
    "drop_command",  # never deliver k
    "drop_response",  # deliver k, never deliver its answer
)


class FrameRelay:
    """A relay on the TCP (vpcd) link, listening on 127.0.0.1: for each host connection it
    connects to ``target`` and hands both sockets to :meth:`_relay`, which subclasses write.
    ``target`` may be changed between connections (e.g. after the card restarts)."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket
        import threading

        self.target = target
        from safescan.procs import free_port

        self._server = socket.create_server(("127.0.0.1", free_port()))
        self.url = f"tcp://127.0.0.1:{self._server.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening and end the relay thread."""
        self._stop.set()
        self._server.close()
        self._thread.join(5)

    def _serve(self) -> None:
        import socket

        self._server.settimeout(0.05)
        while not self._stop.is_set():
            try:
                host, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            host.settimeout(None)
            try:
                card = socket.create_connection(self.target, timeout=5)
            except OSError:
                host.close()
                continue
            try:
                self._relay(host, card)
            except OSError:
                pass  # either side went away
            finally:
                host.close()
                card.close()

    def _relay(self, host: socket.socket, card: socket.socket) -> None:
        raise NotImplementedError


class AttackerProxy(FrameRelay):
    """An active man in the middle on the TCP (vpcd) link: records every frame both ways and
    applies one attack to the ``k``-th secure-channel command (CLA 0x84) of a connection."""

    def __init__(self, target_url: str) -> None:
        from safescan.carrier.transport import parse_tcp_url

        self.capture: list[tuple[str, bytes]] = []
        self.attack: tuple[str, int] | None = None
        self.fired = False
        super().__init__(parse_tcp_url(target_url))

    def captured(self) -> bytes:
        """Everything that crossed the wire, concatenated."""
        return b"".join(payload for _, payload in self.capture)

    def _relay(self, host: socket.socket, card: socket.socket) -> None:
        from safescan.carrier.transport.tcp import recv_frame, send_frame

        secure: list[tuple[bytes, bytes]] = []  # (command, response) of secure frames
        while True:
            frame = recv_frame(host)
            if frame is None:
                return
            self.capture.append(("h2c", frame))
            if len(frame) == 1:
                send_frame(card, frame)
                if frame[0] == 0x04:
                    atr = recv_frame(card) or b""
                    self.capture.append(("c2h", atr))
                    send_frame(host, atr)
                continue
            attack = self.attack if frame[0] == 0x84 else None
            k = len(secure)
            name = attack[0] if attack is not None and attack[1] == k else None
            if name is not None:
                self.fired = True
            if name == "drop_command":
                secure.append((frame, b""))
                continue  # the host waits in vain
            if name == "reorder_commands" and secure:
                send_frame(card, secure[-1][0])
                self.capture.append(("c2h", recv_frame(card) or b""))
            out = frame
            if name == "flip_command":
                # frames end with tag(16) || Le(2): flip the tag's last bit
                out = frame[:-3] + bytes([frame[-3] ^ 0x01]) + frame[-2:]
            send_frame(card, out)
            reply = recv_frame(card)
            if reply is None:
                return
            self.capture.append(("c2h", reply))
            secure_reply = reply
            if name == "drop_response":
                secure.append((frame, reply))
                continue
            if name == "flip_response" and len(reply) > 2:
                reply = reply[:-3] + bytes([reply[-3] ^ 0x01]) + reply[-2:]
            if name == "replay_response" and secure:
                reply = secure[-1][1]
            if name == "replay_command":
                send_frame(card, frame)
                self.capture.append(("c2h", recv_frame(card) or b""))
            if frame[0] == 0x84:
                secure.append((frame, secure_reply))
            send_frame(host, reply)
