"""``safescan demo``: the whole product, end to end, on embedded defaults, in a few seconds.

A temporary directory; the payment institution on SQLite as a real subprocess on a free
loopback port; a key carrier as a real subprocess over TCP; a merchant onboarded; a customer
funded and enrolled (carrier GENERATE KEYS -> institution -> PERSONALIZE). Then an order with
three items -> QR PNG -> the wallet scans the PNG -> the carrier opens and verifies it -> PIN ->
the carrier signs -> the institution pays -> both receipts verified, the POS notified on its
live stream, balances and a ledger audit. Then attacks, each refused with its reason.

Everything started is stopped at the end, also on Ctrl-C or SIGTERM (each child runs in its
own process group, stopped with SIGTERM then SIGKILL). :class:`Stack` is reused by the
end-to-end tests.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from safescan.carrier.client import CarrierClient
from safescan.carrier.eeprom import Lifecycle
from safescan.carrier.errors import CarrierBlocked, CarrierError, RestartRequired, WrongPin
from safescan.carrier.factory import Factory
from safescan.code import (
    DynamicCode,
    Issuer,
    LineItem,
    Merchant,
    SafescanError,
    SchemePublicKey,
    SigningKey,
    TrustStore,
    decode_text,
    encode_text,
    qr,
    seal,
)
from safescan.code.display import term
from safescan.code.keys import parse_pinned_keys
from safescan.merchant.client import MerchantApi, Order, wait_for_payment
from safescan.merchant.config import ENV_PASSPHRASE as ENV_POS_PASSPHRASE
from safescan.merchant.config import PosConfig
from safescan.merchant.onboard import AdminApi, onboard_merchant
from safescan.merchant.staff import StaffStore
from safescan.remote import InstitutionHttp
from safescan.wallet.errors import CodeRefusedByWallet
from safescan.wallet.flow import Payment, Wallet, enroll

DEMO_PIN = "482916"
PASSPHRASE_ENV = "SAFESCAN_INSTITUTION_PASSPHRASE"  # noqa: S105 - a variable name
POS_PASSPHRASE_ENV = ENV_POS_PASSPHRASE


class DemoError(SafescanError):
    """The demo could not set something up (a process did not start, a step failed)."""

    code = "demo_error"


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ManagedProcess:
    """A child process in its own process group; :meth:`stop` always ends the whole group."""

    def __init__(
        self, name: str, argv: list[str], *, env: dict[str, str], log: Path, capture: bool = False
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.capture = capture
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        """Start the process (stdout piped when ``capture``; stderr to the log)."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.capture else log,
                stderr=log,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        """The process id (= its process group id)."""
        if self.proc is None:
            raise DemoError(f"{self.name} is not running")
        return self.proc.pid

    def alive(self) -> bool:
        """Whether it still runs."""
        return self.proc is not None and self.proc.poll() is None

    def ready_line(self, prefix: str, timeout: float = 30.0) -> str:
        """Wait for a stdout line starting with ``prefix``; returns the rest of the line."""
        if self.proc is None or self.proc.stdout is None:
            raise DemoError(f"{self.name}: no output to wait on")
        out: IO[bytes] = self.proc.stdout
        box: list[bytes] = []

        def reader() -> None:
            box.append(out.readline())

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(timeout)
        line = box[0].decode(errors="replace").strip() if box else ""
        if not line.startswith(prefix):
            self.stop()
            raise DemoError(f"{self.name} did not start: {self.tail() or line or 'no output'}")
        return line[len(prefix) :].strip()

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        """Wait until ``GET url`` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise DemoError(f"{self.name} exited: {self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise DemoError(f"{self.name} did not answer at {url}")

    def tail(self, chars: int = 600) -> str:
        """The end of its log."""
        try:
            return self.log.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the group (a crash, a pulled plug)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM the group, SIGKILL after ``grace`` seconds, reap."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything the child left behind
        if proc.stdout is not None:
            proc.stdout.close()
        proc.wait()


@dataclass
class Stack:
    """A temporary deployment: institution, carriers, POS processes, and the admin's client."""

    workdir: Path
    passphrase: str = field(default_factory=lambda: "demo-" + secrets.token_urlsafe(12))
    processes: list[ManagedProcess] = field(default_factory=list)
    base_url: str = ""
    admin_token: str = ""
    admin: AdminApi | None = None
    _init: ManagedProcess | None = None
    staff_name: str = "cashier"
    staff_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    _root_keys: list[str] | None = None
    # the token factory: certifies each carrier chip's attestation key (the institution
    # trusts its key and enrolls only attested carriers)
    factory: Factory = field(default_factory=Factory.generate)

    @property
    def db_url(self) -> str:
        """The institution's SQLite database."""
        return f"sqlite:///{self.workdir / 'institution.db'}"

    @property
    def keys_dir(self) -> Path:
        """The institution's key directory."""
        return self.workdir / "institution-keys"

    def env(self) -> dict[str, str]:
        """Environment for children (the institution's passphrase, never on a command line)."""
        env = dict(os.environ)
        env[PASSPHRASE_ENV] = self.passphrase
        env[POS_PASSPHRASE_ENV] = self.passphrase  # the POS's encrypted API key (demo only)
        env.pop("SAFESCAN_INSTITUTION_KEYS", None)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, argv: list[str], *, capture: bool = False) -> ManagedProcess:
        proc = ManagedProcess(
            name, argv, env=self.env(), log=self.workdir / f"{name}.log", capture=capture
        )
        self.processes.append(proc)
        return proc.start()

    # --- institution ---

    def begin_institution_init(self) -> None:
        """``safescan institution init`` in the background (it takes a moment)."""
        self._init = self._spawn(
            "institution-init",
            [
                sys.executable,
                "-m",
                "safescan.institution",
                "init",
                "--db",
                self.db_url,
                "--keys",
                str(self.keys_dir),
            ],
            capture=True,
        )

    def start_institution(self, port: int | None = None, extra: Sequence[str] = ()) -> str:
        """Finish init and start ``safescan institution serve`` on 127.0.0.1 (``extra``: more
        ``serve`` options)."""
        if self._init is None:
            self.begin_institution_init()
        assert self._init is not None and self._init.proc is not None
        try:
            out, _ = self._init.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self._init.stop()
            raise DemoError("institution init did not finish") from None
        if self._init.proc.returncode != 0:
            raise DemoError(f"institution init failed: {self._init.tail()}")
        lines = out.decode().strip().splitlines()
        self.admin_token = lines[-1].strip() if lines else ""
        port = port or free_port()
        proc = self._spawn(
            "institution",
            [
                sys.executable,
                "-m",
                "safescan.institution",
                "serve",
                "--db",
                self.db_url,
                "--keys",
                str(self.keys_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--maintenance-interval",
                "1",
                "--webhook-base-delay",
                "1",
                *extra,
            ],
        )
        self.base_url = f"http://127.0.0.1:{port}"
        self.trust_factory()
        proc.wait_http(self.base_url + "/health", timeout=60)
        self.admin = AdminApi(self.base_url, self.admin_token)
        return self.base_url

    def audit(self) -> dict[str, Any]:
        """``safescan institution audit --json``: ledger invariants, audit chain, receipts."""
        out = subprocess.run(
            [sys.executable, "-m", "safescan.institution", "audit", "--db", self.db_url, "--json"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        try:
            doc = json.loads(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"ok": False, "problems": [out.stderr.strip()[-300:] or "no audit output"]}
        return dict(doc)

    # --- carriers ---

    def root_keys(self) -> list[str]:
        """The institution's root keys as ``KID:HEX``, read out of band with ``safescan
        institution root-keys`` (as an institution hands them to the token factory and prints
        them on the customer's enrollment letter): carriers are anchored to them and wallets
        pin them, so nothing is trusted on first use over the network."""
        if self._root_keys is None:
            out = subprocess.run(
                [sys.executable, "-m", "safescan.institution", "root-keys", "--db", self.db_url],
                capture_output=True,
                text=True,
                timeout=60,
                env=self.env(),
            )
            if out.returncode != 0 or not out.stdout.split():
                raise DemoError(f"cannot read the institution's root keys: {out.stderr.strip()}")
            self._root_keys = out.stdout.split()
        return self._root_keys

    def trust_factory(self) -> None:
        """``safescan institution manufacturer add``: the institution trusts the demo's token
        factory (the key its carriers' attestation certificates are issued under)."""
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "safescan.institution",
                "manufacturer",
                "add",
                "--db",
                self.db_url,
                self.factory.pin(),
                "--name",
                "demo token factory",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env(),
            check=False,
        )
        if out.returncode != 0:
            raise DemoError(f"cannot register the token factory: {out.stderr.strip()}")

    def start_carrier(
        self, name: str = "carrier", *, model: str = "plain"
    ) -> tuple[ManagedProcess, str]:
        """A blank key carrier process on a free port; returns it and its URL.

        Once the institution runs, the carrier is "manufactured" with its root key(s) as trust
        anchor, so it will only accept a personalisation bundle signed by that institution.
        """
        anchor: list[str] = []
        if self.base_url:
            for pin in self.root_keys():
                anchor += ["--institution-key", pin]
        proc = self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "safescan.carrier.server",
                "--state",
                str(self.workdir / f"{name}.eeprom"),
                "--listen",
                "tcp://127.0.0.1:0",
                "--model",
                model,
                *anchor,
            ],
            capture=True,
        )
        url = proc.ready_line("READY")
        try:  # the factory step: a blank chip gets its attestation certificate once
            with CarrierClient.connect(url) as chip:
                info = chip.get_info()
                if info.lifecycle is Lifecycle.BLANK and info.attestation_certificate is None:
                    self.factory.attest(chip)
        except CarrierBlocked:
            pass  # a destroyed chip (a test restarting it) stays what it is
        except CarrierError as exc:
            raise DemoError(f"cannot attest the key carrier {name}: {exc.message}") from None
        return proc, url

    # --- parties ---

    def need_admin(self) -> AdminApi:
        """The administrator client (after :meth:`start_institution`)."""
        if self.admin is None:
            raise DemoError("the institution is not running")
        return self.admin

    def onboard_merchant(
        self, name: str = "Café Lumière", city: str = "Paris", config_name: str = "pos.json"
    ) -> PosConfig:
        """A merchant with a local API key; the POS config is written in the work dir."""
        cfg = onboard_merchant(
            self.need_admin(),
            name=name,
            city=city,
            country="FR",
            mcc=5814,
            settlement_account="FR7630006000011234567890189",
        )
        cfg.save(self.workdir / config_name, passphrase=self.passphrase.encode())
        return cfg

    def customer(self, name: str = "Alice Martin", fund: int = 10_000) -> str:
        """A customer funded with ``fund`` EUR cents."""
        admin = self.need_admin()
        cid = admin.create_customer(name)
        if fund:
            admin.fund(cid, "EUR", fund)
        return cid

    def enroll_wallet(
        self, customer_id: str, carrier_url: str, *, pin: str = DEMO_PIN, name: str = "wallet"
    ) -> Path:
        """Enroll a carrier for the customer; returns the wallet directory."""
        token = self.need_admin().enrollment_token(customer_id)
        directory = self.workdir / name
        enroll(
            directory=directory,
            institution_url=self.base_url,
            carrier_url=carrier_url,
            token=token,
            pin=pin,
            customer_id=customer_id,
            trust=TrustStore(parse_pinned_keys(self.root_keys())),
        )
        return directory

    def start_pos_server(self, config: Path, name: str = "pos") -> tuple[ManagedProcess, str]:
        """``safescan pos serve`` on a free port; returns it and its base URL. A staff account
        (:attr:`staff_name` / :attr:`staff_password`) is made first: the POS needs one."""
        StaffStore.for_config(config).add(self.staff_name, self.staff_password)
        proc = self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "safescan.merchant",
                "serve",
                "--config",
                str(config),
                "--port",
                "0",
            ],
            capture=True,
        )
        url = proc.ready_line("READY")
        proc.wait_http(url + "/health")
        return proc, url

    def stop(self) -> None:
        """Stop everything, newest first."""
        if self.admin is not None:
            self.admin.close()
            self.admin = None
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()


@contextlib.contextmanager
def terminating_on_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into KeyboardInterrupt so ``finally`` blocks clean up.

    SIGINT is installed explicitly too: a parent that started us in the background leaves it
    ignored, and Python then installs no Ctrl-C handler of its own; ``kill -INT`` must still
    stop everything the demo started.
    """

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig_, old in previous.items():
            signal.signal(sig_, old)


# --- the attacks ------------------------------------------------------------------------------


@dataclass
class Attack:
    """One attack and how it ended."""

    name: str
    title: str
    refused: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "name": self.name,
            "title": self.title,
            "refused": self.refused,
            "reason": self.reason,
        }


def scheme_public_key(base_url: str) -> SchemePublicKey:
    """The institution's current scheme key (public: anyone can seal a code to it)."""
    with InstitutionHttp(base_url) as remote:
        doc = remote.call("GET", "/v1/keys")
    for k in doc["scheme_keys"]:
        if k.get("current"):
            return SchemePublicKey(int(k["kid"]), base64.b64decode(k["public_key"]))
    raise DemoError("the institution publishes no current scheme key")


def forged_code(base_url: str, like: Order, merchant: Merchant, kid: int) -> str:
    """A well-formed code for the same merchant and goods, signed by a fraudster's key."""
    now = int(time.time())
    code = DynamicCode(
        merchant=merchant,
        order_id="o-" + secrets.token_hex(5),
        items=like.items,
        total=like.total,
        currency=like.currency,
        issued_at=now,
        expires_at=now + 300,
        nonce=secrets.token_bytes(8),
    )
    fraud = Issuer.institution(SigningKey.generate(), kid)
    return encode_text(seal(code, fraud, scheme_public_key(base_url)))


def altered_code(text: str, offset: int = 70) -> str:
    """The same code with one byte of the sealed part changed (e.g. where the amount sits)."""
    raw = bytearray(decode_text(text))
    raw[min(offset, len(raw) - 20)] ^= 0x01
    return encode_text(bytes(raw))


def refused_by_wallet(wallet: Wallet, text: str) -> tuple[bool, str]:
    """Does the wallet refuse this code before asking anything?"""
    try:
        offer = wallet.open(text)
    except CodeRefusedByWallet as exc:
        return True, f"{exc.reason}: {exc.message}"
    except SafescanError as exc:
        return True, f"{exc.code}: {exc.message}"
    offer.close()
    return False, "the wallet offered to pay it"


def institution_refuses_resubmission(wallet: Wallet, text: str, pin: str) -> tuple[bool, str]:
    """Bypass the wallet's checks: have the carrier sign the paid code again and submit it."""
    trust, _ = wallet.trust()
    carrier = wallet.connect_carrier(trust)
    try:
        contents = carrier.open_code(text)
        carrier.verify_pin(pin)
        assert contents.total is not None and contents.currency is not None
        auth = carrier.authorize(
            merchant_id=contents.merchant.id, amount=contents.total, currency=contents.currency
        )
    finally:
        carrier.close()
    try:
        with InstitutionHttp(wallet.config.institution_url) as remote:
            remote.call(
                "POST",
                "/v1/payments",
                {"code": text, "authorization": base64.b64encode(auth.to_bytes()).decode()},
            )
    except SafescanError as exc:
        return True, f"{exc.code}: {exc.message}"
    return False, "the institution accepted a second payment"


def replay_authorization(base_url: str, text: str, authorization: bytes) -> tuple[bool, str]:
    """Send a captured authorization again (new request, no idempotency key)."""
    try:
        with InstitutionHttp(base_url) as remote:
            remote.call(
                "POST",
                "/v1/payments",
                {"code": text, "authorization": base64.b64encode(authorization).decode()},
            )
    except SafescanError as exc:
        return True, f"{exc.code}: {exc.message}"
    return False, "the institution accepted the replayed authorization"


def brute_force_pin(
    carrier_url: str, trust: Any, *, real_pin: str, say: Callable[[str], None]
) -> tuple[bool, str]:
    """Guess PINs until the carrier destroys itself (power-cycling when it asks to)."""
    guesses = [f"{n:04d}" for n in range(100) if f"{n:04d}" != real_pin]
    tries = 0
    with CarrierClient.connect(carrier_url) as carrier:
        carrier.open_session(trust)
        while guesses:
            guess = guesses[0]
            try:
                carrier.verify_pin(guess)
            except WrongPin as exc:
                tries += 1
                guesses.pop(0)
                left = exc.retries_left
                say(f"guess {guess}: wrong PIN, {left} {'try' if left == 1 else 'tries'} left")
                continue
            except RestartRequired:
                say("the carrier wants to be unplugged first: power cycle, go on guessing")
                carrier.power_cycle()
                carrier.open_session(trust)
                continue
            except CarrierBlocked as exc:
                tries += 1
                say(f"guess {guess}: {exc.message}")
                break
            return False, f"the PIN {guess} was accepted"
    try:
        with CarrierClient.connect(carrier_url) as carrier:
            carrier.open_session(trust)
    except CarrierBlocked as exc:
        return True, f"carrier destroyed after {tries} wrong PINs: {exc.message}"
    except CarrierError as exc:
        return True, f"carrier destroyed after {tries} wrong PINs: {exc.message}"
    return False, "the carrier still works after the brute force"


# --- the demo ---------------------------------------------------------------------------------

ITEMS = (
    LineItem("Flat white", 2, 350),
    LineItem("Croissant", 1, 180),
    LineItem("Orange juice", 1, 420),
)


class DemoRun:
    """One run of the demo; ``result`` is the JSON document."""

    def __init__(self, workdir: Path, console: Console) -> None:
        self.stack = Stack(workdir)
        self.console = console
        self.result: dict[str, Any] = {
            "paid": False,
            "receipt_verified": False,
            "merchant_notified": False,
            "ledger_balanced": False,
            "attacks": [],
        }
        self.started = time.monotonic()

    def hold(self) -> None:
        """Keep everything running (with a web POS) until Ctrl-C or SIGTERM."""
        stack = self.stack
        _pos, pos_url = stack.start_pos_server(stack.workdir / "pos.json", name="pos-web")
        self.result["running"] = {"institution": stack.base_url, "pos": pos_url}
        self.console.print(
            "[bold]still running[/] (`--keep-running`):\n"
            f"  payment institution  {term(stack.base_url)}"
            f"  (OpenAPI: {term(stack.base_url)}/docs)\n"
            f"  web POS              {term(pos_url)}  (staff sign-in: {term(stack.staff_name)}"
            f" / {term(stack.staff_password)}; customers: {term(pos_url)}/shop)\n"
            f"  work directory       {term(stack.workdir)}\n"
            "press Ctrl-C to stop everything"
        )
        while True:
            time.sleep(3600)

    def step(self, text: str) -> None:
        """Print a step with the elapsed time."""
        elapsed = time.monotonic() - self.started
        # callers escape every value they put into ``text`` (the markup guard checks step())
        self.console.print(f"[dim]{elapsed:5.1f}s[/] " + text)  # markup-safe: see above

    def run(self) -> dict[str, Any]:
        """Set up, pay, attack; returns the result document."""
        stack, c = self.stack, self.console
        c.rule("[bold]safescan[/]: safe code-scanning payment, end to end")
        stack.begin_institution_init()
        _carrier_proc, carrier_url = stack.start_carrier("carrier")
        self.step(f"key carrier process up (blank), at [cyan]{term(carrier_url)}[/]")
        base = stack.start_institution()
        self.step(f"payment institution up (SQLite) at [cyan]{term(base)}[/]")
        pos_cfg = stack.onboard_merchant()
        self.step(f"merchant [bold]Café Lumière[/] onboarded as {term(pos_cfg.merchant_id)}")
        customer = stack.customer()
        wallet_dir = stack.enroll_wallet(customer, carrier_url)
        admin = stack.need_admin()
        before = admin.balance(customer, "EUR")
        self.step(
            f"customer {term(customer)} funded with 100.00 EUR; key carrier enrolled and"
            " personalised with a PIN"
        )

        with MerchantApi(pos_cfg) as api, Wallet.load(wallet_dir) as wallet:
            order = api.create_order(list(ITEMS), currency="EUR", reference="demo")
            png = stack.workdir / f"order-{order.order_id}.png"
            qr.save_png(order.code, png)
            version = qr.qr_version(order.code)
            self.result.update(
                order_id=order.order_id,
                amount=order.total,
                currency="EUR",
                qr_version=version,
                code_bytes=order.code_bytes,
            )
            self.step(
                f"POS created order {term(order.order_id)}: {term(order.total_display())},"
                f" sealed code {term(order.code_bytes)} bytes -> QR version {term(version)}"
                f" -> {term(png.name)}"
            )

            pos_seen: dict[str, Any] = {}
            stop = threading.Event()

            def pos_listener() -> None:
                try:
                    event, receipt = wait_for_payment(api, order, stop=stop)
                    pos_seen.update(event=event, receipt=receipt)
                except SafescanError as exc:
                    pos_seen["error"] = exc.message

            listener = threading.Thread(target=pos_listener, name="pos", daemon=True)
            listener.start()

            scan = wallet.scan(png)
            self.step(
                f"wallet scanned the PNG: a [bold]{term(scan.kind)}[/] code"
                f" ({len(scan.text)} characters)"
            )
            with wallet.open(scan.text) as offer:
                doc = offer.describe()
                self._show_offer(doc)
                paid = offer.pay(DEMO_PIN)
            self.result["paid"] = True
            self.result["receipt_verified"] = True
            self.result["payment_id"] = paid.receipt.payment_id
            self.step(
                f"[green]paid[/] {term(paid.amount_display)}: the carrier signed (counter bound),"
                " the institution settled and signed the receipt; the wallet verified it"
            )

            listener.join(10)
            stop.set()
            if "receipt" in pos_seen:
                self.result["merchant_notified"] = True
                ev = pos_seen["event"]
                self.step(
                    f"POS received [bold]{term(ev.type)}[/] on its live stream"
                    f"{'' if ev.seq else ' (order query)'}; event signature and receipt"
                    " verified"
                )
            else:
                self.step(f"[red]POS was not notified[/]: {term(pos_seen.get('error', 'timeout'))}")
            self._receipts(paid, pos_seen.get("receipt"))
            after = admin.balance(customer, "EUR")
            merchant_net = self._merchant_net(admin, pos_cfg.merchant_id)
            self.result["balances"] = {
                "customer_before": before,
                "customer_after": after,
                "merchant_net": merchant_net,
            }
            c.print(
                f"  balances: customer {before / 100:.2f} -> [bold]{after / 100:.2f}[/] EUR;"
                f" merchant settlement today [bold]{merchant_net / 100:.2f}[/] EUR"
            )
            audit = stack.audit()
            self.result["ledger_balanced"] = bool(audit.get("ok"))
            self.result["audit_problems"] = audit.get("problems", [])
            self.step(
                "ledger audit (double entry, hash-chained log, receipts): "
                + ("[green]passed[/]" if audit.get("ok") else f"[red]FAILED[/] {term(audit)}")
            )

            c.rule("[bold]attacks[/]")
            self._attacks(wallet, order, paid, carrier_url, base)
            final = admin.balance(customer, "EUR")
            self.result["balances"]["customer_after_attacks"] = final
            self.step(
                f"customer balance after the attacks: {final / 100:.2f} EUR"
                f" ({'unchanged' if final == after else '[red]CHANGED[/]'})"
            )
        return self.result

    def _show_offer(self, doc: dict[str, Any]) -> None:
        m = doc["merchant"]
        table = Table.grid(padding=(0, 2))
        who = f"signed by the institution (key {doc['issuer_kid']})"
        table.add_row(
            "merchant",
            f"[bold]{term(m['name'])}[/], {term(m['city'])} {term(m['country'])}"
            f" ([green]verified[/], {term(who)})",
        )
        for i in doc["items"]:
            table.add_row(
                "", f"{term(i['quantity'])} x {term(i['name']):<14} {term(i['display']):>10}"
            )
        table.add_row(
            "total",
            f"[bold]{term(doc['total_display'])}[/]   expires in {doc['expires_in'] // 60} min",
        )
        self.console.print(
            Panel(
                table,
                title="what the carrier showed the customer",
                border_style="green",
                expand=False,
            )
        )

    def _receipts(self, paid: Payment, pos_receipt: Any) -> None:
        r = paid.receipt
        t = Table(show_edge=False, title="receipts (both verified: institution signature)")
        t.add_column("")
        t.add_column("customer's wallet")
        t.add_column("merchant's POS")
        pr = pos_receipt
        t.add_row("payment", term(r.payment_id), term(pr.payment_id if pr else "-"))
        t.add_row(
            "amount", term(paid.amount_display), term(f"{pr.amount / 100:.2f} EUR" if pr else "-")
        )
        t.add_row(
            "merchant",
            f"{term(paid.merchant_name)} ({term(r.merchant_id)})",
            term(pr.merchant_id if pr else "-"),
        )
        t.add_row("payer", term(r.payer_pseudonym), term(pr.payer_pseudonym if pr else "-"))
        t.add_row("order", term(r.order_id), term(pr.order_id if pr else "-"))
        self.console.print(t)

    @staticmethod
    def _merchant_net(admin: AdminApi, merchant_id: str) -> int:
        today = dt.datetime.now(dt.UTC).date().isoformat()
        for row in admin.settlement(today):
            if row.get("merchant_id") == merchant_id:
                return int(row.get("net", 0))
        return 0

    def _attack(self, name: str, title: str, outcome: tuple[bool, str]) -> None:
        refused, reason = outcome
        self.result["attacks"].append(Attack(name, title, refused, reason).to_json())
        mark = "[bold green]REFUSED[/]" if refused else "[bold red]NOT REFUSED[/]"
        self.console.print(f"  {term(mark)} {term(title)}\n      [dim]{term(reason)}[/]")

    def _attacks(
        self, wallet: Wallet, order: Order, paid: Payment, carrier_url: str, base: str
    ) -> None:
        merchant = Merchant(order.merchant_id, "Café Lumière", "Paris", "FR", 5814)
        kid = next(iter(wallet.config.trust.institution_keys))
        self._attack(
            "swapped_sticker",
            "a sticker over the merchant's code: same merchant and goods, another issuer key",
            refused_by_wallet(wallet, forged_code(base, order, merchant, kid)),
        )
        with MerchantApi(
            PosConfig.load(
                self.stack.workdir / "pos.json", passphrase=self.stack.passphrase.encode()
            )
        ) as api:
            fresh = api.create_order(list(ITEMS), currency="EUR", reference="demo-2")
        self._attack(
            "altered_amount",
            "a genuine code with its sealed amount bytes edited",
            refused_by_wallet(wallet, altered_code(fresh.code)),
        )
        wallet_says = refused_by_wallet(wallet, order.code)
        inst_says = institution_refuses_resubmission(wallet, order.code, DEMO_PIN)
        self._attack(
            "paid_code_replay",
            "the paid code scanned again (and, bypassing the wallet, signed and sent again)",
            (
                wallet_says[0] and inst_says[0],
                f"wallet: {wallet_says[1]}; institution: {inst_says[1]}",
            ),
        )
        self._attack(
            "authorization_replay",
            "the captured authorization sent to the institution again",
            replay_authorization(base, order.code, paid.authorization),
        )
        trust, _ = wallet.trust()
        self._attack(
            "pin_brute_force",
            "guessing the PIN on the customer's key carrier",
            brute_force_pin(
                carrier_url,
                trust,
                real_pin=DEMO_PIN,
                say=lambda s: self.console.print(f"      [dim]{term(s)}[/]"),
            ),
        )


def demo_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object at the end")
    ] = False,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Afterwards keep the institution, key carrier and a web POS running to look"
            " around in; Ctrl-C stops everything",
        ),
    ] = False,
) -> None:
    """Run the end-to-end demo: institution, key carrier, POS, wallet, payment, attacks."""
    console = Console(stderr=as_json, quiet=as_json, highlight=False)
    started = time.monotonic()
    result: dict[str, Any] = {}
    status = 0
    with terminating_on_signals(), tempfile.TemporaryDirectory(prefix="safescan-demo-") as tmp:
        run = DemoRun(Path(tmp), console)
        finished = False
        try:
            result = run.run()
            finished = True
            if keep_running:
                run.hold()
        except KeyboardInterrupt:
            if finished:  # the way out of --keep-running
                console.print("stopping everything")
            else:
                console.print("[yellow]interrupted: stopping everything[/]")
                status = 130
            result = run.result
        except SafescanError as exc:
            console.print(f"[bold red]demo failed:[/] {term(exc.message)}")
            result = {**run.result, "error": exc.to_dict()}
            status = 1
        finally:
            run.stack.stop()
    result["duration_s"] = round(time.monotonic() - started, 2)
    attacks = result.get("attacks", [])
    ok = (
        status == 0
        and result.get("paid")
        and result.get("receipt_verified")
        and result.get("merchant_notified")
        and result.get("ledger_balanced")
        and len(attacks) == 5
        and all(a["refused"] for a in attacks)
    )
    result["ok"] = bool(ok)
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        console.rule(
            f"[bold {'green' if ok else 'red'}]{'all good' if ok else 'problems'}[/] in"
            f" {result['duration_s']:.1f} s; everything started was stopped"
        )
    if status or not ok:
        raise typer.Exit(status or 1)
