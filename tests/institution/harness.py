"""Run a real institution server process and talk to it like its clients do."""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import locale
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan import procs
from safescan.api.merchant_auth import sign_request
from safescan.api.wire import PaymentRequest
from safescan.carrier.factory import Factory
from safescan.carrier.testing import software_attestation
from safescan.client.admin import AdminClient
from safescan.client.wallet import CarrierKeys, Enrolled, WalletClient
from safescan.code import (
    Authorization,
    LineItem,
    ProvisioningBundle,
    SchemeKeyring,
    SigningKey,
    decode_text,
    open_bundle,
    open_code,
)
from safescan.code.attestation import enrollment_challenge
from safescan.code.keyupdate import EpochKey, open_key_update
from safescan.web import pki
from tests.institution import zygote
from tests.institution.pg import free_port
from tests.logread import written

if TYPE_CHECKING:
    from safescan.institution.service import Institution

PASSPHRASE = "test-passphrase-123"
#: the test servers' webhook allow-list: the loopback address the test receivers bind
LOOPBACK_RECEIVERS = ("127.0.0.1/32",)
#: The token factory the test institutions trust (registered by :func:`init_db`): the harness's
#: software carriers stand in for chips it attested.
FACTORY = Factory.generate(kid=77)


def env() -> dict[str, str]:
    """Environment for institution subprocesses."""
    e = dict(os.environ)
    e["SAFESCAN_INSTITUTION_PASSPHRASE"] = PASSPHRASE
    e.pop("SAFESCAN_INSTITUTION_KEYS", None)
    return e


#: subprocess.Popen as imported: a test that wraps it (to change what the new process gets,
#: as a preexec_fn) gets a subprocess, not a zygote's fork; a server's descriptor limit is
#: ``ServerProcess(nofile=...)``, which the fork sets too
_POPEN = subprocess.Popen

#: what one institution command may spend (safescan.procs.StartBound: seconds of CPU, or of no
#: progress at all), not of the wall clock, which a loaded machine stretches
CLI_BOUND = 120.0


def institution_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m safescan.institution ARGS`` with the test passphrase; output captured. A
    command that spends :data:`CLI_BOUND` is killed (``subprocess.TimeoutExpired``)."""
    return institution_run(list(args), env())


def institution_run(args: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m safescan.institution ARGS`` in environment ``environ``, output captured:
    forked from the zygote where it fits (tests/institution/zygote.py), else a subprocess;
    killed once it spends :data:`CLI_BOUND` (``subprocess.TimeoutExpired``). Also what the
    tests' :class:`safescan.demo.Stack` runs its institution commands with (``run_cli``)."""
    cmd = [sys.executable, "-m", "safescan.institution", *args]
    forked = _forked_cli(cmd, list(args), environ) if subprocess.Popen is _POPEN else None
    if forked is not None:
        return forked
    proc = subprocess.Popen(
        cmd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    bound = procs.StartBound(proc.pid, CLI_BOUND)
    while True:
        try:
            out, err = proc.communicate(timeout=0.2)
        except subprocess.TimeoutExpired:
            if bound.exceeded():
                proc.kill()
                out, err = proc.communicate()
                raise subprocess.TimeoutExpired(cmd, CLI_BOUND, out, err) from None
        else:
            return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _forked_cli(
    cmd: list[str], args: list[str], environ: dict[str, str]
) -> subprocess.CompletedProcess[str] | None:
    """:func:`institution_run` through the zygote (tests/institution/zygote.py: a process of
    its own, forked with the imports done), or None where it does not fit."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = zygote.start(args, environ, out, err)
        if proc is None:
            return None
        bound = procs.StartBound(proc.pid, CLI_BOUND)
        while True:
            try:
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if bound.exceeded():
                    proc.kill()
                    proc.wait()
                    raise subprocess.TimeoutExpired(
                        cmd, CLI_BOUND, _text(out), _text(err)
                    ) from None
            else:
                assert proc.returncode is not None
                return subprocess.CompletedProcess(cmd, proc.returncode, _text(out), _text(err))


def _text(file: IO[bytes]) -> str:
    """What a command wrote to ``file``, decoded as ``subprocess.run(text=True)`` does."""
    file.seek(0)
    data = file.read().decode(locale.getpreferredencoding(False))
    return data.replace("\r\n", "\n").replace("\r", "\n")


def init_db(db_url: str, keys: Path, *, fresh: bool = False) -> str:
    """An institution initialised at ``db_url`` with its keys in ``keys`` (its TLS files in
    ``keys.tls``, its checkpoint file ``keys.checkpoints``) that trusts :data:`FACTORY`; returns
    the admin token.

    Under pytest this is usually a copy of a template: ``institution init`` and ``manufacturer
    add`` (two CLI processes, ~2.5 s of CPU: imports, scrypt, the migrations, the TLS files)
    run once per worker process, environment and backend (and again after
    :data:`TEMPLATE_MAX_AGE` seconds), and each call copies the result (a file copy for SQLite,
    ``CREATE DATABASE ... TEMPLATE`` for PostgreSQL). The copies share the keys, the admin token
    and the database's identity, so two of them are never handed out where they could meet: a
    template is copied at most once per test, and once it has been copied in a fixture's setup
    (which may live as long as its module) not again in that test file. Otherwise, and with
    ``fresh=True`` (a test about ``init`` or the migrations), or when the target is not empty
    (a database or key files already there), or outside pytest, ``institution init`` runs as
    before."""
    if not fresh:
        token = _TEMPLATES.copy_to(db_url, keys)
        if token is not None:
            return token
    return _init_fresh(db_url, keys)


def _init_fresh(db_url: str, keys: Path) -> str:
    """``safescan institution init`` then ``manufacturer add`` :data:`FACTORY` at ``db_url``."""
    out = institution_cli("init", "--db", db_url, "--keys", str(keys))
    if out.returncode != 0:
        raise RuntimeError(f"init failed: {out.stderr}")
    token = out.stdout.strip().splitlines()[-1]
    trusted = institution_cli("manufacturer", "add", "--db", db_url, FACTORY.pin())
    if trusted.returncode != 0:
        raise RuntimeError(f"manufacturer add failed: {trusted.stderr}")
    return token


#: seconds after which :func:`init_db` makes its template again (its certificates, checkpoint
#: and epoch schedule then start from about the time the test starts, as with a fresh init)
TEMPLATE_MAX_AGE = 300.0


def _beside(keys: Path) -> list[Path]:
    """What ``institution init`` writes for the key directory ``keys``: the directory, its TLS
    directory and its checkpoint file (and the checkpoint file's lock)."""
    return [keys, *(keys.with_name(keys.name + s) for s in (".tls", ".checkpoints"))]


def _sqlite_path(db_url: str) -> Path | None:
    """The file of a plain ``sqlite:///ABSOLUTE-PATH`` URL (None for anything else)."""
    prefix = "sqlite:////"
    if not db_url.startswith(prefix) or "?" in db_url:
        return None
    return Path(db_url[len("sqlite:///") :])


def _pg_parts(db_url: str) -> tuple[str, str] | None:
    """(the server's ``postgres`` database URL, the database name) of a plain
    ``postgresql://.../NAME`` URL (as tests/institution/pg.py makes them), else None."""
    if not db_url.startswith("postgresql://") or "?" in db_url:
        return None
    head, _, name = db_url.rpartition("/")
    if not name or not all(c.isalnum() or c == "_" for c in name):
        return None
    return f"{head}/postgres", name


@dataclass
class _Template:
    """One ``institution init`` kept to be copied: its directory (keys, TLS files, checkpoint
    file, and the SQLite database) or PostgreSQL database, and its admin token."""

    dir: Path
    db_url: str
    token: str
    made: float


@dataclass
class _Templates:
    """:func:`init_db`'s templates in this process, and where they were handed out."""

    made: dict[tuple[Any, ...], _Template] = field(default_factory=dict)
    given: set[tuple[Any, ...]] = field(default_factory=set)  # (template, test id)
    pinned: set[tuple[Any, ...]] = field(default_factory=set)  # (template, test file)

    def copy_to(self, db_url: str, keys: Path) -> str | None:
        """Copy the template for this backend and environment to ``db_url`` and ``keys``; the
        admin token, or None when a copy is not to be made here (see :func:`init_db`)."""
        current = os.environ.get("PYTEST_CURRENT_TEST")
        if current is None or any(p.exists() for p in _beside(keys)):
            return None
        if not keys.parent.is_dir():
            return None
        test, _, phase = current.rpartition(" ")
        where = test.split("::", 1)[0]
        sqlite, pg = _sqlite_path(db_url), _pg_parts(db_url)
        if sqlite is not None:
            if sqlite.exists() or not sqlite.parent.is_dir():
                return None
            backend: tuple[str, ...] = ("sqlite",)
        elif pg is not None:
            if not _pg_empty(db_url):
                return None
            backend = ("postgresql", pg[0])
        else:
            return None
        environment = tuple(sorted((k, v) for k, v in env().items() if k != "PYTEST_CURRENT_TEST"))
        key = (backend, environment)
        if (key, test) in self.given or (key, where) in self.pinned:
            return None
        template = self.made.get(key)
        if template is not None and time.monotonic() - template.made > TEMPLATE_MAX_AGE:
            self._drop(self.made.pop(key))
            template = None
        if template is None:
            template = self.made[key] = self._make(db_url)
        if sqlite is not None:
            _copy_sqlite(_sqlite_path(template.db_url), sqlite)  # type: ignore[arg-type]
        elif not _pg_copy(template.db_url, db_url):
            return None
        src = template.dir / "keys"
        for source, target in zip(_beside(src), _beside(keys), strict=True):
            if source.is_dir():
                shutil.copytree(source, target, symlinks=True)
            elif source.exists():
                shutil.copy2(source, target)
        self.given.add((key, test))
        if phase == "(setup)":  # a fixture's: it may outlive this test (module scope)
            self.pinned.add((key, where))
        return template.token

    def _make(self, like: str) -> _Template:
        """A fresh ``institution init`` in a directory of its own (and for PostgreSQL, in a
        database of its own on the server of ``like``)."""
        d = Path(tempfile.mkdtemp(prefix="safescan-init-template-"))
        pg = _pg_parts(like)
        if pg is None:
            url = f"sqlite:///{d / 'institution.db'}"
        else:
            import psycopg

            name = "template_" + os.urandom(6).hex()
            with psycopg.connect(pg[0], autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            url = like.rpartition("/")[0] + "/" + name
        return _Template(d, url, _init_fresh(url, d / "keys"), time.monotonic())

    def _drop(self, template: _Template) -> None:
        shutil.rmtree(template.dir, ignore_errors=True)

    def clear(self) -> None:
        """Remove the templates' directories (at exit)."""
        for template in self.made.values():
            self._drop(template)
        self.made.clear()


def _copy_sqlite(source: Path, target: Path) -> None:
    """A copy of the closed SQLite database ``source`` (and its WAL, if one was left)."""
    for suffix in ("", "-wal"):
        src = source.with_name(source.name + suffix)
        if src.exists():
            shutil.copy2(src, target.with_name(target.name + suffix))


def _pg_empty(db_url: str) -> bool:
    """Whether the PostgreSQL database ``db_url`` exists and holds no table."""
    import psycopg

    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_tables"
                " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            ).fetchone()
    except psycopg.Error:
        return False
    return row is not None and row[0] == 0


def _pg_copy(template_url: str, db_url: str) -> bool:
    """Replace the empty database ``db_url`` by a copy of ``template_url`` (same server); False
    when PostgreSQL refused (then ``db_url`` is as it was)."""
    import psycopg

    maintenance, name = _pg_parts(db_url)  # type: ignore[misc]
    source = template_url.rpartition("/")[2]
    copy = f"{name}_copy"
    try:
        with psycopg.connect(maintenance, autocommit=True) as conn:
            _pg_retrying(conn, f'CREATE DATABASE "{copy}" TEMPLATE "{source}"')
            try:
                _pg_retrying(conn, f'DROP DATABASE "{name}"')
            except psycopg.Error:
                conn.execute(f'DROP DATABASE "{copy}"')
                raise
            conn.execute(f'ALTER DATABASE "{copy}" RENAME TO "{name}"')
    except psycopg.Error:
        return False
    return True


def _pg_retrying(conn: Any, sql: str) -> None:
    """``sql`` (a CREATE ... TEMPLATE or a DROP DATABASE), again while the sessions of the
    processes that used the database are still ending (for up to 30 s)."""
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            conn.execute(sql)
            return
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


_TEMPLATES = _Templates()
atexit.register(_TEMPLATES.clear)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by process ``pid`` and its live descendants (the
    workers of ``serve --workers N``); 0 once it is gone (:func:`safescan.procs.cpu_seconds`,
    which these tests' Linux always answers)."""
    used = procs.cpu_seconds(pid)
    assert used is not None, "no /proc: the tests bound server start-up by CPU time"
    return used


def _nofile_limit(limit: int) -> Callable[[], None]:
    """A ``preexec_fn`` setting RLIMIT_NOFILE (soft and hard) to ``limit``."""

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return lower


class ServerProcess:
    """``safescan institution serve`` as a subprocess on 127.0.0.1, over HTTPS with the CA
    `institution init` made, which this process's clients pin (:attr:`verify`).

    ``tls=False`` serves plain HTTP (``--plain-http``, loopback only): only for a test that
    needs it, and that test says why. ``port``: a port this process reserved (a restart on
    the port of a server it stopped); by default a fresh reservation (:func:`free_port`)."""

    def __init__(
        self,
        db_url: str,
        keys: Path,
        *,
        port: int | None = None,
        extra: list[str] | None = None,
        webhook_allow: tuple[str, ...] = LOOPBACK_RECEIVERS,
        tls: bool = True,
        module: str = "safescan.institution",
        nofile: int | None = None,
    ) -> None:
        self.db_url, self.keys = db_url, keys
        self.module = module  # what `python -m` runs (a test wrapper adding a fault point)
        # RLIMIT_NOFILE (soft and hard) the server runs under, set in the new process before
        # it runs the command (a subprocess's preexec_fn, or the zygote's fork); None: the
        # worker's limits
        self.nofile = nofile
        self.port = port or free_port()
        self.extra = list(extra or [])
        self.tls = tls
        if not tls:  # explicitly plain HTTP on loopback (the server refuses it anywhere else)
            self.extra.append("--plain-http")
        # test receivers listen on 127.0.0.1 over plain http: allow exactly that, explicitly
        for net in webhook_allow:
            self.extra += ["--webhook-allow", net]
        if webhook_allow:
            self.extra.append("--webhook-http")
        self.proc: subprocess.Popen[bytes] | zygote.ForkedProcess | None = None
        self._pinned: ssl.SSLContext | None = None  # the CA's context, made once
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept for the process lifetime
            prefix="safescan-inst-", suffix=".log", delete=False
        )

    @property
    def base_url(self) -> str:
        """https://127.0.0.1:port (http:// for a plain-HTTP server)"""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        """The CA `institution init` made (what clients pin)."""
        return self.keys.with_name(self.keys.name + ".tls") / "ca.pem"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx client passes as ``verify``: the pinned CA (never verification off);
        also pinned for this process's safescan clients of this server."""
        if not self.tls:
            return True  # plain http:// on loopback: there is no certificate to verify
        if self._pinned is None:
            self._pinned = pki.pin(self.base_url, self.ca)
        return self._pinned

    def client(self, **kw: Any) -> httpx.Client:
        """An httpx client for this server, verifying it with the pinned CA (keep it open:
        its connections are kept alive, one TLS handshake each)."""
        return httpx.Client(base_url=self.base_url, verify=self.verify, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        """One ``GET path`` on a fresh connection, verified with the pinned CA."""
        kw.setdefault("timeout", 10)
        return httpx.get(self.base_url + path, verify=self.verify, **kw)

    def start(
        self,
        timeout: float = 60,
        *,
        healthy: bool = True,
        verify: ssl.SSLContext | None = None,
        listening_only: bool = False,
    ) -> ServerProcess:
        """Start and wait until /health answers 200 (any answer, with ``healthy=False``: a
        server refusing a rolled-back database answers 503); ``verify``: the CA to check the
        server with, when it presents another certificate than the one `init` made.
        ``listening_only``: wait only until it accepts TCP connections (a server presenting a
        certificate no client should accept: expired, another CA's, another name's).

        ``timeout`` bounds the server's work, not the wall clock: it is given up once it has
        used ``timeout`` seconds of CPU (with its worker processes) without answering, or used
        none for ``timeout`` seconds (hung). A start costs ~3 s of CPU; at load 20-40 on two
        cores that took over 60 s of wall clock, and a wall-clock deadline gave up on servers
        that were still starting (and a test expecting "server exited" got "did not come up")."""
        cmd = [
            sys.executable,
            "-m",
            self.module,
            "serve",
            "--db",
            self.db_url,
            "--keys",
            str(self.keys),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.extra,
        ]
        if self.tls:  # this server's CA for its origin (another server may have had the port)
            self._pinned = pki.pin(self.base_url, self.ca)
        forked = None
        if (
            self.module == "safescan.institution"
            and "--workers" not in self.extra
            and subprocess.Popen is _POPEN  # not wrapped by a test (a preexec_fn of its own)
        ):
            forked = zygote.start(cmd[3:], env(), self.log, self.log, nofile=self.nofile)
        self.proc = forked or subprocess.Popen(
            cmd,
            env=env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=None if self.nofile is None else _nofile_limit(self.nofile),
        )
        used, idle_since = 0.0, time.monotonic()
        while True:
            if self.proc.poll() is not None:
                out = Path(self.log.name).read_text()[-2000:]
                self.stop()
                raise RuntimeError(f"server exited: {out}")
            if listening_only:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.port), timeout=2),
                ):
                    return self
            else:
                try:
                    status = httpx.get(  # a probe given up costs the starting server work
                        self.base_url + "/health", timeout=10, verify=verify or self.verify
                    ).status_code
                    if status == 200 or not healthy:
                        return self
                except httpx.HTTPError:
                    pass
            cpu = cpu_seconds(self.proc.pid)
            if cpu > used:
                used, idle_since = cpu, time.monotonic()
            if used > timeout or time.monotonic() - idle_since > timeout:
                self.stop()
                raise RuntimeError(f"server did not come up ({used:.1f} s of CPU used)")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL (crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Graceful stop (SIGTERM), then SIGKILL if needed; removes the log file."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def output(self) -> str:
        """What the server printed: its complete lines while it runs (a line it is writing is
        waited for a moment, else left for the next read: :func:`tests.logread.written`), all
        of it once it has exited."""
        finished = self.proc is None or self.proc.poll() is not None
        return written(self.log.name, finished=finished)


@dataclass
class MerchantClient:
    """A merchant terminal's API client (signs every request)."""

    http: httpx.Client
    merchant_id: str
    key: SigningKey

    def request(
        self, method: str, path: str, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """A signed request (an ``Idempotency-Key`` among ``headers`` is signed too)."""
        body = b"" if json_body is None else httpx.Request("POST", "/", json=json_body).content
        key = (headers or {}).get("Idempotency-Key")
        h = sign_request(self.key, self.merchant_id, method, path, body, idempotency_key=key)
        h["Content-Type"] = "application/json"
        h.update(headers or {})
        return self.http.request(method, path, content=body, headers=h)

    def order(
        self, items: list[tuple[str, int, int]], currency: str = "EUR", **extra: Any
    ) -> dict[str, Any]:
        """Precreate an order; returns the response JSON (asserts 201)."""
        r = self.request(
            "POST",
            "/v1/merchant/orders",
            {"items": [LineItem(*i).to_json() for i in items], "currency": currency, **extra},
        )
        assert r.status_code == 201, r.text
        return dict(r.json())


@dataclass
class Carrier:
    """A test key carrier: a signing key the institution certified at enrollment."""

    serial: int
    key: SigningKey
    counter: int = 0
    bundle: bytes = b""
    certificate: bytes = b""
    transport: X25519PrivateKey | None = None
    provisioned: ProvisioningBundle | None = None
    epoch_keys: tuple[EpochKey, ...] = ()  # from the enrollment's first key update
    epoch: int = 0
    enrolled: Enrolled | None = None  # the institution's enrollment answer

    def open(self, code: str) -> Any:
        """Open a code with the static keys from the provisioning bundle and the epoch keys
        from its key updates (as the carrier does)."""
        assert self.provisioned is not None
        ring = SchemeKeyring()
        for k in self.provisioned.scheme_keys:
            ring.add(k)
        for e in self.epoch_keys:
            ring.add(e.key)
        return open_code(code, ring, self.provisioned.trust_store(), now=int(time.time())).code

    def take_key_update(self, data: bytes) -> None:
        """Apply a KEY UPDATE (verified as the card does; no sequence check here)."""
        assert self.transport is not None and self.provisioned is not None
        update = open_key_update(
            data, self.transport, self.provisioned.trust_store(), carrier_serial=self.serial
        )
        self.epoch_keys = (*self.epoch_keys, *update.keys)
        self.epoch = update.to_epoch

    def authorize(
        self,
        code: str,
        *,
        amount: int | None = None,
        currency: int | None = None,
        merchant_id: str | None = None,
        order_id: str | None = None,
        counter: int | None = None,
    ) -> Authorization:
        """Open ``code`` and sign an authorization for it (fields overridable for tests)."""
        if counter is None:
            self.counter += 1
            counter = self.counter
        c = self.open(code)
        return Authorization(
            code_digest=hashlib.sha256(decode_text(code)).digest(),
            merchant_id=merchant_id if merchant_id is not None else c.merchant.id,
            order_id=order_id if order_id is not None else getattr(c, "order_id", ""),
            amount=amount if amount is not None else c.total,
            currency=currency if currency is not None else c.currency,
            counter=counter,
            carrier_serial=self.serial,
            created_at=int(time.time()),
        ).signed(self.key)


def b64(data: bytes) -> str:
    """Standard base64."""
    return base64.b64encode(data).decode()


@dataclass
class World:
    """A server plus admin access and helpers to make merchants, customers and carriers."""

    server: ServerProcess
    admin_token: str
    http: httpx.Client = field(init=False)  # raw requests, for the tests that attack
    factory: Factory = field(default_factory=lambda: FACTORY)  # whose attestation they present
    admin_api: AdminClient = field(init=False)  # the normal flows go through the client
    wallet_api: WalletClient = field(init=False)

    def __post_init__(self) -> None:
        self.http = self.server.client(timeout=30)
        # the typed clients verify the server with the CA pinned for its origin (start())
        self.admin_api = AdminClient(self.server.base_url, self.admin_token, timeout=30)
        self.wallet_api = WalletClient(self.server.base_url, timeout=30)

    def admin(self, method: str, path: str, json_body: Any = None) -> httpx.Response:
        """An administrator request."""
        return self.http.request(
            method, path, json=json_body, headers={"Authorization": f"Bearer {self.admin_token}"}
        )

    def merchant(
        self, name: str = "Corner Cafe", *, webhook_url: str | None = None, country: str = "DE"
    ) -> MerchantClient:
        """Onboard a merchant with its own API key."""
        key = SigningKey.generate()
        created = self.admin_api.merchants.create(
            name=name,
            city="Berlin",
            country=country,
            mcc=5814,
            settlement_account="DE89370400440532013000",
            api_public_key=key.public_key,
            webhook_url=webhook_url,
        )
        return MerchantClient(self.http, created.id, key)

    def customer(self, fund: dict[str, int] | None = None) -> str:
        """A customer, funded (currency alpha -> minor units)."""
        cid = self.admin_api.customers.create("Alice").id
        for cur, amount in (fund or {}).items():
            self.admin_api.customers.fund(cid, cur, amount)
        return cid

    def carrier(self, customer_id: str) -> Carrier:
        """Enroll a key carrier for the customer (as a wallet does)."""
        token = self.admin_api.enrollment_tokens.issue(customer_id).token
        key = SigningKey.generate()
        transport = X25519PrivateKey.generate()
        transport_public = transport.public_key().public_bytes_raw()
        attestation = software_attestation(
            self.factory, key.public_key.raw, transport_public, enrollment_challenge(token)
        )
        done = self.wallet_api.carriers.enroll(
            token, CarrierKeys(key.public_key.raw, transport_public, attestation)
        )
        assert done.customer_id == customer_id and done.key_update is not None
        prov = open_bundle(
            done.bundle, transport, carrier_signing_key=key.public_key, now=int(time.time())
        )
        carrier = Carrier(
            done.carrier_serial,
            key,
            0,
            done.bundle,
            done.certificate,
            transport,
            prov,
            enrolled=done,
        )
        carrier.take_key_update(done.key_update)
        return carrier

    def pay(self, code: str, auth: Authorization, idem: str | None = None) -> httpx.Response:
        """POST /v1/payments, raw (tests assert the refusals' status codes)."""
        headers = {"Idempotency-Key": idem} if idem else {}
        body = PaymentRequest(code, auth.to_bytes()).to_json()
        return self.http.post("/v1/payments", json=body, headers=headers)

    def close(self) -> None:
        """Close the HTTP clients."""
        self.http.close()
        self.admin_api.close()
        self.wallet_api.close()


@contextlib.contextmanager
def world_in(
    tmp: Path,
    db_url: str,
    *,
    extra: list[str],
    token: str | None = None,
    module: str = "safescan.institution",
) -> Iterator[World]:
    """An institution initialised at ``db_url`` (its keys in ``tmp/keys``) and served over HTTPS
    on 127.0.0.1 with the options ``extra``: its :class:`World`, with ``db_url`` and ``tmp`` set;
    the clients closed and the server stopped at the end. ``token``: the admin token of an
    institution already initialised there (a copy: tests/institution/conftest.py's
    ``initialised``); by default ``institution init`` runs. ``module``: what serves
    (:class:`ServerProcess`)."""
    if token is None:
        token = init_db(db_url, tmp / "keys")
    server = ServerProcess(db_url, tmp / "keys", extra=extra, module=module).start()
    w = World(server, token)
    w.db_url = db_url  # type: ignore[attr-defined]
    w.tmp = tmp  # type: ignore[attr-defined]
    try:
        yield w
    finally:
        w.close()
        server.stop()


@contextlib.contextmanager
def institution_in(db_url: str, keys: Path) -> Iterator[Institution]:
    """``institution init`` at ``db_url`` (its keys in ``keys``), then that institution in this
    process, without a server; its connections released at the end."""
    from safescan.institution.db import Database
    from safescan.institution.keystore import KeyStore
    from safescan.institution.service import Institution

    init_db(db_url, keys)
    institution = Institution(Database(db_url), KeyStore(keys).load(PASSPHRASE.encode()))
    try:
        yield institution
    finally:
        institution.db.dispose()


def attest(inst: Any, token: str, signing_public: bytes, transport_public: bytes) -> bytes:
    """For in-process institutions: trust :data:`FACTORY` (once) and return a software
    carrier's attestation of these keys for this enrollment token."""
    from safescan.api.errors import Conflict
    from safescan.institution.domain.enrollment import add_manufacturer

    with contextlib.suppress(Conflict):  # already trusted
        add_manufacturer(inst.db, FACTORY.kid, FACTORY.public_key.raw, "test factory", inst.now())
    return software_attestation(
        FACTORY, signing_public, transport_public, enrollment_challenge(token)
    )
