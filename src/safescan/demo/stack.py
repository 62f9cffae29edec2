"""The demo's temporary deployment: the payment institution, key carriers and POS processes
(each a :class:`safescan.procs.ManagedProcess` under one :class:`safescan.procs.Supervisor`),
and the administrator's client. Reused by the end-to-end tests and benchmarks.

The institution is reached only over HTTP and through its command line (``python -m
safescan.institution ...`` in a child process): nothing here imports it
(tests/test_layers.py).
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safescan.carrier.client import CarrierClient
from safescan.carrier.eeprom import Lifecycle
from safescan.carrier.errors import CarrierBlocked, CarrierError
from safescan.carrier.factory import Factory
from safescan.client.admin import AdminClient
from safescan.code import SafescanError, TrustStore
from safescan.code.keys import parse_pinned_keys
from safescan.merchant.config import ENV_PASSPHRASE as ENV_POS_PASSPHRASE
from safescan.merchant.config import PosConfig
from safescan.merchant.onboard import onboard_merchant
from safescan.merchant.staff import StaffStore
from safescan.procs import ManagedProcess, Supervisor, free_port
from safescan.wallet.flow import enroll
from safescan.web import pki

DEMO_PIN = "482916"
PASSPHRASE_ENV = "SAFESCAN_INSTITUTION_PASSPHRASE"  # noqa: S105 - a variable name
POS_PASSPHRASE_ENV = ENV_POS_PASSPHRASE


class DemoError(SafescanError):
    """The demo could not set something up (a step failed)."""

    code = "demo_error"


#: runs ``python -m safescan.institution ARGS`` in an environment to its end: (args, env) ->
#: the finished process, output captured as text (:func:`run_institution`)
InstitutionRunner = Callable[[list[str], dict[str, str]], "subprocess.CompletedProcess[str]"]


def run_institution(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m safescan.institution ARGS`` in a new interpreter (60 s at most)."""
    return subprocess.run(
        [sys.executable, "-m", "safescan.institution", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class Stack:
    """A temporary deployment: institution, carriers, POS processes, and the admin's client."""

    workdir: Path
    passphrase: str = field(default_factory=lambda: "demo-" + secrets.token_urlsafe(12))
    base_url: str = ""
    admin_token: str = ""
    admin: AdminClient | None = None
    # True (the default: the demo, the end-to-end and fault suites, the benchmarks): the
    # institution serves HTTPS and every client pins the CA `init` made; False: plain HTTP on
    # 127.0.0.1 (--plain-http), for a test about plain HTTP itself
    tls: bool = True
    # the web POS over HTTPS too (None: as ``tls``); False for pages driven by Chromium, which
    # does not know the private CA (tests/e2e/conftest.py)
    pos_tls: bool | None = None
    tls_ca: Path | None = None
    _init: ManagedProcess | None = None
    staff_name: str = "cashier"
    staff_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    _root_keys: list[str] | None = None
    # the token factory: certifies each carrier chip's attestation key (the institution
    # trusts its key and enrolls only attested carriers)
    factory: Factory = field(default_factory=Factory.generate)
    # how the institution's commands (init, root-keys, manufacturer add, audit) are run to
    # their end: a new interpreter each; the tests pass one that forks each command, still a
    # process of its own, from a parent that has imported the institution once
    # (tests/institution/harness.py's institution_run); with one, init runs at once instead
    # of in the background
    run_cli: InstitutionRunner = run_institution
    _init_output: str | None = None
    supervisor: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.workdir)

    @property
    def processes(self) -> list[ManagedProcess]:
        """Every process started (and not yet stopped), oldest first."""
        return self.supervisor.children

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
        if self.tls_ca is not None:  # children verify the institution with the pinned CA
            env[pki.ENV_CA] = str(self.tls_ca)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, argv: list[str], *, capture: bool = False) -> ManagedProcess:
        return self.supervisor.spawn(name, argv, capture=capture, env=self.env())

    # --- institution ---

    def begin_institution_init(self) -> None:
        """``safescan institution init`` in the background (it takes a moment); with a
        :attr:`run_cli` of the caller's, at once."""
        init = ["init", "--db", self.db_url, "--keys", str(self.keys_dir)]
        if self.run_cli is not run_institution:
            done = self.run_cli(init, self.env())
            if done.returncode != 0:
                raise DemoError(f"institution init failed: {done.stderr.strip()[-600:]}")
            self._init_output = done.stdout
            return
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
        if self._init is None and self._init_output is None:
            self.begin_institution_init()
        if self._init_output is not None:
            out, self._init_output = self._init_output, None
        else:
            assert self._init is not None
            out = self._init.output(timeout=60)  # the first admin token: never logged
        lines = out.strip().splitlines()
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
                *([] if self.tls else ["--plain-http"]),
                *extra,
            ],
        )
        verify: ssl.SSLContext | bool = True
        if self.tls:  # HTTPS with the certificate `init` made; we and our children pin its CA
            self.base_url = f"https://127.0.0.1:{port}"
            self.tls_ca = self.tls_dir.ca_cert
            verify = pki.pin(self.base_url, self.tls_ca)
        else:  # explicitly plain HTTP on loopback
            self.base_url = f"http://127.0.0.1:{port}"
        self.trust_factory()
        proc.wait_http(self.base_url + "/health", timeout=60, verify=verify)
        pki.record_hop(self.base_url)  # that check was itself a hop
        self.admin = AdminClient(self.base_url, self.admin_token)
        return self.base_url

    def audit(self) -> dict[str, Any]:
        """``safescan institution audit --json``: ledger invariants, audit chain, receipts."""
        out = self.run_cli(["audit", "--db", self.db_url, "--json"], self.env())
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
            out = self.run_cli(["root-keys", "--db", self.db_url], self.env())
            if out.returncode != 0 or not out.stdout.split():
                raise DemoError(f"cannot read the institution's root keys: {out.stderr.strip()}")
            self._root_keys = out.stdout.split()
        return self._root_keys

    def trust_factory(self) -> None:
        """``safescan institution manufacturer add``: the institution trusts the demo's token
        factory (the key its carriers' attestation certificates are issued under)."""
        out = self.run_cli(
            [
                "manufacturer",
                "add",
                "--db",
                self.db_url,
                self.factory.pin(),
                "--name",
                "demo token factory",
            ],
            self.env(),
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

    def need_admin(self) -> AdminClient:
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
        cfg.tls_ca = self.tls_ca.read_text() if self.tls_ca is not None else None
        cfg.save(self.workdir / config_name, passphrase=self.passphrase.encode())
        return cfg

    def customer(self, name: str = "Alice Martin", fund: int = 10_000) -> str:
        """A customer funded with ``fund`` EUR cents."""
        admin = self.need_admin()
        cid = admin.customers.create(name).id
        if fund:
            admin.customers.fund(cid, "EUR", fund)
        return cid

    def enroll_wallet(
        self, customer_id: str, carrier_url: str, *, pin: str = DEMO_PIN, name: str = "wallet"
    ) -> Path:
        """Enroll a carrier for the customer; returns the wallet directory."""
        token = self.need_admin().enrollment_tokens.issue(customer_id).token
        directory = self.workdir / name
        enroll(
            directory=directory,
            institution_url=self.base_url,
            carrier_url=carrier_url,
            token=token,
            pin=pin,
            customer_id=customer_id,
            trust=TrustStore(parse_pinned_keys(self.root_keys())),
            tls_ca=self.tls_ca.read_text() if self.tls_ca is not None else None,
        )
        return directory

    @property
    def pos_path(self) -> Path:
        """The POS configuration :meth:`onboard_merchant` writes by default."""
        return self.workdir / "pos.json"

    @property
    def tls_dir(self) -> pki.TlsDir:
        """The private CA and server certificate ``institution init`` made."""
        return pki.TlsDir(self.keys_dir.with_name(self.keys_dir.name + ".tls"))

    def start_pos_server(self, config: Path, name: str = "pos") -> tuple[ManagedProcess, str]:
        """``safescan pos serve`` on a free port; returns it and its base URL. A staff account
        (:attr:`staff_name` / :attr:`staff_password`) is made first: the POS needs one.

        With :attr:`tls` it serves HTTPS with a certificate of the deployment's private CA
        (the one clients already pin), and this process pins that CA for its origin."""
        StaffStore.for_config(config).add(self.staff_name, self.staff_password)
        tls: list[str] = []
        pos_tls = self.tls if self.pos_tls is None else self.pos_tls
        if pos_tls:
            where = self.workdir / f"{name}.tls"
            cert, key = where / "cert.pem", where / "key.pem"
            pki.issue_server_files(
                self.tls_dir,
                cert,
                key,
                list(pki.DEFAULT_NAMES),
                passphrase=self.passphrase.encode(),
            )
            tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
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
                *tls,
            ],
            capture=True,
        )
        url = proc.ready_line("READY")
        verify: ssl.SSLContext | bool = True
        if pos_tls:
            if not url.startswith("https://"):
                raise DemoError(f"the web POS did not start over HTTPS ({url})")
            verify = pki.pin(url, self.tls_dir.ca_cert)
        proc.wait_http(url + "/health", verify=verify)
        pki.record_hop(url)  # that check was a hop to the web POS
        return proc, url

    def stop(self) -> None:
        """Stop everything, newest first."""
        if self.admin is not None:
            self.admin.close()
            self.admin = None
        self.supervisor.stop()
