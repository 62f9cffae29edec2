"""Bare-path yardstick for the payment institution (issue 20), and institution / yardstick runs.

    .venv/bin/python bench/bare_path.py [--db sqlite|postgresql] [--seconds 20] [--json]
    .venv/bin/python bench/bare_path.py --alternate 3 [--db sqlite|postgresql] [--seconds 20]
    (either with [--tls | --no-tls]: HTTPS with the pinned CA, the default, or plain HTTP)

The yardstick is a payment server that does the **same work per payment as the institution's
``POST /v1/payments``, nothing more and nothing less**, written as plainly as Python allows:
the same database (made by ``safescan institution init``, filled by bench/institution_load.py's
``prepare``: same merchants, customers, carriers, orders and authorizations), the same load
generator (bench/institution_load.py's ``load``), the same HTTP server (uvicorn, its defaults,
no access log), the same transport and one process. The transport is HTTPS by default, for the
yardstick as for the institution: the certificate ``institution init`` made, a TLS server
context with the same defaults (the institution's connection guard makes its own and shakes
hands under its connection bound; the yardstick leaves the handshake to uvicorn), the load
verifying with the pinned CA and keeping its connections alive; ``--no-tls`` serves both over
plain HTTP on loopback (the flag is bench/institution_load.py's), so a ratio always compares
like with like. Per payment it:

1. reads the JSON body, Base64-decodes the authorization, Base45-decodes the code (with the
   institution's own decoder, ``safescan.code.b45``: the same work at the same cost);
2. opens the code: HPKE (X25519, HKDF-SHA256, AES-128-GCM, ``info`` = context + header),
   the signed part read strictly (``envelope.split_signed``: the strict CBOR decoder, which
   refuses any encoding but the deterministic one), Ed25519 verification of the code signature
   with the institution key it names, the body read with every rule the institution applies
   (``DynamicCode.from_cbor``: names, look-alikes, ranges, items), SHA-256 of the binary (the
   digest);
3. reads the authorization strictly with its fields' rules
   (``Authorization.from_bytes_signed``, the institution's reader) and verifies its Ed25519
   signature with the carrier's key (looked up once per carrier and cached, as the
   institution does);
4. checks what ties them together: digest, merchant, order, amount (the items' total),
   currency, and that the code is valid now (not before its issue time less the clock skew,
   not after its expiry);
5. makes the records: HMAC-SHA256 payer pseudonym, the receipt (CBOR, Ed25519 signature), the
   outbox event and audit data (canonical JSON), both carrying a request id as the
   institution's do (a per-process prefix and a counter, no system call);
6. SQLite: in one group-committed SQLite transaction (one writer thread; each payment in its own
   SAVEPOINT inside one ``BEGIN IMMEDIATE`` per group, as the institution's GroupCommitter),
   runs the institution's own statements (``safescan.institution.sql``): 1 read (merchant
   status), 6 updates (order CREATED -> PAID, carrier counter, customer debit, merchant credit,
   audit head reserve and hash) and 4 inserts (transfer, payment, event, audit entry with its
   SHA-256 chain hash), through the raw ``sqlite3`` driver; answers 201 only after the commit,
   with the same JSON fields.
   PostgreSQL: one autocommitted call of the institution's own ``safescan_pay_order``
   (``sql.PAY_ORDER_CALL``: the same checks, updates and inserts, the audit hash computed in
   the database, the commit in the same round trip) on one of 4 raw psycopg ``AsyncConnection``s
   (the institution pays on 4 threads with 4 pooled connections), then answers 201.

Until the thirteenth sitting steps 2 and 3 read the code and the authorization with plain
``cbor2.loads`` and no rules: checks the institution must make (a malformed or non-canonical
authorization or code body is a typed refusal, not a crash or a second encoding of a signed
value), so the yardstick now makes them with the institution's own readers (~160,000
instructions per payment, docs/performance.md, thirteenth sitting). It does not do what the
institution does beyond that: idempotency (the load sends no key), rate limiting, request
models, the request log (access line, request metrics), middleware. A refusal (a malformed
code or authorization included) is a 422 with a reason; the load has none.
After each run the institution's own audit (``safescan institution audit``) checks the database,
so the yardstick's ledger and audit chain are verified, not assumed.

Both servers' clients open their connections (TCP and TLS) with one ``GET /health`` each
before the clock starts (``connect_phase_ms`` reports that phase apart); ``--cold-start``
opens them inside the first timed second instead, as every run before the ninth sitting did.

``--before TREE`` adds, in each round, the institution of another checkout (an earlier commit:
its ``src`` on ``PYTHONPATH``; its run's database is brought down to that tree's newest
migration, since a server refuses a newer schema than its own), so one alternating run gives
before, after and the yardstick under the same load.

``--alternate N`` runs the institution (bench/institution_load.py's server and settings) and
the yardstick N times each, alternating, the order rotated each round (round 1 institution,
yardstick; round 2 yardstick, institution; with ``--before``: before, institution, yardstick,
then institution, yardstick, before, ...; the JSON's ``orders`` lists each round's), each on a
fresh database (on PostgreSQL a fresh
database of one throwaway cluster), under the same load, and
prints each run's payments/s and the median of the N ratios institution / yardstick (issue 20's
target: >= 0.9). ``--json`` also gives each run's server and load-generator CPU per payment
(``generator_cpu_ms_per_payment``: the generator shares the machine's cores) and the p99 of
every whole second (``p99_per_second_ms``: which second is the worst). ``--serve`` is
internal (the yardstick server process).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import secrets
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for entry in (REPO, REPO / "src", HERE):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import httpx  # noqa: E402
from cryptography.hazmat.primitives import hpke  # noqa: E402
from tests.institution.harness import PASSPHRASE, ServerProcess, env, init_db  # noqa: E402
from tests.institution.pg import free_port, start_cluster  # noqa: E402

import institution_load  # noqa: E402
from safescan.code import cbor  # noqa: E402
from safescan.code.authorization import RECEIPT_CONTEXT, Authorization  # noqa: E402
from safescan.code.b45 import b45decode  # noqa: E402
from safescan.code.envelope import (  # noqa: E402
    DEFAULT_CLOCK_SKEW,
    HPKE_INFO,
    PREFIX,
    SIG_CONTEXT,
    split_signed,
)
from safescan.code.errors import SafescanError  # noqa: E402
from safescan.code.keys import VerifyKey  # noqa: E402
from safescan.code.payment import DynamicCode  # noqa: E402
from safescan.institution import audit, sql  # noqa: E402
from safescan.institution.epochs import derive_epoch_key  # noqa: E402
from safescan.institution.keystore import KeyStore  # noqa: E402
from safescan.web import pki  # noqa: E402
from safescan.web.pki import TlsDir  # noqa: E402
from safescan.web.tls import TlsFiles  # noqa: E402

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
ACTION = "payment.create"  # the institution's PAYMENT_ACTION
PAY_REFUSALS = frozenset(
    {
        sql.PAY_MERCHANT_INACTIVE,
        sql.PAY_ORDER_UNPAYABLE,
        sql.PAY_CARRIER_REFUSED,
        sql.PAY_INSUFFICIENT_FUNDS,
        sql.PAY_IDEMPOTENCY_TAKEN,
    }
)
_RID_PREFIX = "req_" + secrets.token_hex(6)  # request ids as the institution makes them
_rid_counter = itertools.count(1)


class Refused(Exception):
    """A payment the yardstick will not make (422)."""


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Writer:
    """One thread, one raw sqlite3 connection: group commit, a SAVEPOINT per payment."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.cond = threading.Condition()
        self.pending: list[tuple[dict[str, Any], Future[None]]] = []
        threading.Thread(target=self._run, daemon=True).start()

    def submit(self, p: dict[str, Any]) -> Future[None]:
        fut: Future[None] = Future()
        with self.cond:
            self.pending.append((p, fut))
            self.cond.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.pending:
                    self.cond.wait()
                batch, self.pending = self.pending[:128], self.pending[128:]
            c = self.conn
            done: list[tuple[Future[None], BaseException | None]] = []
            try:
                c.execute("BEGIN IMMEDIATE")
                for p, fut in batch:
                    c.execute("SAVEPOINT bare")
                    try:
                        self._pay(c, p)
                    except Refused as exc:
                        c.execute("ROLLBACK TO bare")
                        done.append((fut, exc))
                    else:
                        done.append((fut, None))
                    c.execute("RELEASE bare")
                c.execute("COMMIT")
            except Exception as exc:  # noqa: BLE001 - a broken yardstick must fail loudly, not hang
                if c.in_transaction:
                    c.execute("ROLLBACK")
                done = [(fut, exc) for _, fut in batch]
            for fut, error in done:
                fut.set_exception(error) if error else fut.set_result(None)

    @staticmethod
    def _pay(c: sqlite3.Connection, p: dict[str, Any]) -> None:
        status = c.execute(sql.MERCHANT_STATUS, p).fetchall()
        if not status or status[0][0] != "active":
            raise Refused("merchant not active")
        order = c.execute(sql.PAY_ORDER, p).fetchall()
        if not order:
            raise Refused("order not payable")
        if c.execute(sql.ADVANCE_COUNTER, p).rowcount != 1:
            raise Refused("carrier revoked or counter replayed")
        debited = c.execute(sql.DEBIT_CUSTOMER, p).fetchall()
        if not debited:
            raise Refused("insufficient funds")
        credited = c.execute(sql.CREDIT_MERCHANT, p).fetchall()
        if not credited:  # the merchant's first payment in this currency: open its account
            c.execute(
                "INSERT OR IGNORE INTO accounts (kind, owner_id, currency, balance,"
                " allow_negative, created_at) VALUES ('merchant', :mid, :currency, 0, 1, :now)",
                p,
            )
            credited = c.execute(sql.CREDIT_MERCHANT, p).fetchall()
        seq, prev_hash = c.execute(sql.AUDIT_RESERVE, p).fetchall()[0]
        p |= {"t_debit": debited[0][0], "t_credit": credited[0][0], "p_order_pk": order[0][0]}
        p |= {"a_seq": seq, "a_prev_hash": prev_hash}
        p["a_hash"] = audit.entry_hash(
            prev_hash, p["a_chain"], seq, p["now"], p["a_actor"], ACTION, p["a_entity"], p["a_data"]
        )
        for statement in sql.RECORD_PAYMENT:
            c.execute(statement, p)


class PgWriter:
    """PostgreSQL: one autocommitted ``safescan_pay_order`` call per payment, on a small pool of
    raw psycopg async connections (4, as the institution's pay threads and pooled connections)."""

    CALL = re.sub(r":(\w+)", r"%(\1)s", sql.PAY_ORDER_CALL)

    def __init__(self, url: str, size: int = 4) -> None:
        self.url, self.size = url.replace("postgresql+psycopg://", "postgresql://"), size
        self.free: asyncio.Queue[Any] | None = None

    async def pay(self, p: dict[str, Any]) -> None:
        if self.free is None:  # connected on first use, in the server's event loop
            import psycopg

            self.free = asyncio.Queue()
            for _ in range(self.size):
                self.free.put_nowait(
                    await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                )
        conn = await self.free.get()
        try:
            await conn.execute(self.CALL, p)
        except Exception as exc:
            if getattr(exc, "sqlstate", "") in PAY_REFUSALS:
                raise Refused(f"refused by safescan_pay_order ({exc.sqlstate})") from None  # type: ignore[attr-defined]
            raise
        finally:
            self.free.put_nowait(conn)


class BareApp:
    """The yardstick's ASGI application: ``GET /health`` and ``POST /v1/payments``."""

    def __init__(self, db_url: str, keys_dir: Path) -> None:
        keys = KeyStore(keys_dir).load(PASSPHRASE.encode())
        self.db_url = db_url
        self.pg = db_url.startswith("postgresql")
        self.scheme = {kid: k.private_key() for kid, k in keys.scheme.keys.items()}
        live = self._query(  # the live scheme-key epochs, read once (#14)
            "SELECT epoch, retire_at FROM scheme_epochs WHERE retire_at > ?", (int(time.time()),)
        )
        for epoch, retire_at in live:
            key = derive_epoch_key(keys.secret, epoch, retire_at)
            self.scheme[key.kid] = key.private_key()
        self.roots = keys.trust_store().institution_keys
        self.root, self.root_kid, self.secret = keys.root, keys.root_kid, keys.secret
        self.carriers: dict[int, tuple[VerifyKey, str]] = {}
        self.writer: Writer | None = None
        self.pg_writer: PgWriter | None = None
        if self.pg:
            self.pg_writer = PgWriter(db_url)
        else:
            self.writer = Writer(db_url.removeprefix("sqlite:///"))

    def _query(self, text: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One read outside the payment (set-up, a carrier's key on first use)."""
        if self.pg:
            import psycopg

            url = self.db_url.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(url) as c:
                return list(c.execute(text.replace("?", "%s"), params).fetchall())
        with sqlite3.connect(self.db_url.removeprefix("sqlite:///")) as c:
            return c.execute(text, params).fetchall()

    def carrier(self, serial: int) -> tuple[VerifyKey, str]:
        found = self.carriers.get(serial)
        if found is None:
            rows = self._query(
                "SELECT signing_public_key, customer_id, status FROM carriers WHERE serial = ?",
                (serial,),
            )
            if not rows or rows[0][2] != "active":
                raise Refused("unknown or revoked carrier")
            found = self.carriers[serial] = (VerifyKey(bytes(rows[0][0])), rows[0][1])
        return found

    def prepare(self, body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
        """Steps 1-5: the statement parameters and the answer."""
        doc = json.loads(body)
        code_text, auth_bytes = doc["code"], base64.b64decode(doc["authorization"])
        if not code_text.startswith(PREFIX):
            raise Refused("not a payment code")
        binary = b45decode(code_text[len(PREFIX) :])  # the institution's decoder (C speed)
        header = binary[:3]
        if header[0] != 2 or header[1] != 1:
            raise Refused("not a version-2 dynamic code")
        plain = SUITE.decrypt(binary[3:], self.scheme[header[2]], info=HPKE_INFO + header)
        signature, signed = plain[:64], plain[64:]
        kid, body = split_signed(signed, 2)  # strict CBOR: one encoding per value
        if type(kid) is not int or kid not in self.roots:
            raise Refused("unknown code signer")
        self.roots[kid].verify(signature, SIG_CONTEXT + header + signed)
        code = DynamicCode.from_cbor(body, 2)  # the body's rules (names, ranges, items)
        digest = hashlib.sha256(binary).digest()
        auth, tbs = Authorization.from_bytes_signed(auth_bytes)  # strict, its fields' rules
        serial, counter = auth.carrier_serial, auth.counter
        key, cid = self.carrier(serial)
        key.verify(auth.signature, tbs)
        mid, order_id, amount, cur = code.merchant.id, code.order_id, code.total, code.currency
        now = int(time.time())
        paid = (auth.code_digest, auth.merchant_id, auth.order_id, auth.amount, auth.currency)
        if paid != (digest, mid, order_id, amount, cur):
            raise Refused("the authorization is for another payment")
        if now + DEFAULT_CLOCK_SKEW < code.issued_at:
            raise Refused("code not valid yet")
        if now >= code.expires_at:
            raise Refused("code expired")
        mac = hmac.new(self.secret, b"pseudonym\0" + mid.encode() + b"\0", "sha256")
        mac.update(cid.encode())
        pseudonym = "p_" + mac.hexdigest()[:24]
        payment_id = "pay_" + secrets.token_hex(8)
        rid = f"{_RID_PREFIX}{next(_rid_counter):012x}"
        fields = [1, payment_id, order_id, mid, amount, cur, pseudonym, now, digest, self.root_kid]
        receipt = cbor.dumps([*fields, self.root.sign(RECEIPT_CONTEXT + cbor.dumps(fields))])
        data = {"payment_id": payment_id, "order_id": order_id, "amount": amount}
        data |= {"currency": cur, "payer_pseudonym": pseudonym, "paid_at": now}
        event_id = "evt_" + secrets.token_hex(10)
        entity = f"order:{mid}:{order_id}"
        answer = {"payment_id": payment_id, "status": "succeeded", "merchant_id": mid}
        answer |= {k: data[k] for k in ("order_id", "amount", "currency", "payer_pseudonym")}
        answer |= {"paid_at": now, "receipt": base64.b64encode(receipt).decode()}
        e_payload = _json({"id": event_id, "type": "payment.succeeded", "created": now,
                           "merchant_id": mid, "data": data})  # fmt: skip
        a_data = _json(data | {"customer_id": cid, "counter": counter, "request_id": rid})
        a_actor, chain = f"carrier:{serial}", audit.chain_for(entity)
        if self.pg:
            params = {
                "mid": mid, "order_id": order_id, "amount": amount, "currency": cur,
                "digest": digest, "now": now, "payment_id": payment_id, "serial": serial,
                "counter": counter, "cid": cid, "pseudonym": pseudonym, "receipt": receipt,
                "e_id": event_id, "e_type": "payment.succeeded", "e_payload": e_payload,
                "e_state": "none", "a_chain": chain, "a_actor": a_actor, "a_action": ACTION,
                "a_entity": entity, "a_data": a_data,
                "a_tail": audit.entry_tail(now, a_actor, ACTION, entity, a_data),
                "i_scope": "", "i_key": None, "i_hash": "", "i_status": 201,
                "i_response": None, "e_request_id": rid,
            }  # fmt: skip
            return params, answer
        params = {
            "mid": mid, "order_id": order_id, "now": now, "amount": amount, "currency": cur,
            "payment_id": payment_id, "digest": digest, "counter": counter, "serial": serial,
            "cid": cid, "t_ref": payment_id, "p_id": payment_id, "p_mid": mid, "p_cid": cid,
            "p_serial": serial, "p_counter": counter, "p_pseudonym": pseudonym,
            "p_receipt": receipt,
            "e_id": event_id, "e_mid": mid, "e_type": "payment.succeeded", "e_created": now,
            "e_payload": e_payload, "e_state": "none", "e_next_ms": now * 1000,
            "e_request_id": rid, "chain": chain, "a_chain": chain, "a_at": now,
            "a_actor": a_actor, "a_action": ACTION, "a_entity": entity, "a_data": a_data,
        }  # fmt: skip
        return params, answer

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, answer = 404, {"error": "not found"}
        if scope["path"] == "/health":
            status, answer = 200, {"ok": True}
        elif scope["path"] == "/v1/payments" and scope["method"] == "POST":
            try:
                params, answer = self.prepare(body)
                if self.pg_writer is not None:
                    await self.pg_writer.pay(params)
                else:
                    assert self.writer is not None
                    await asyncio.wrap_future(self.writer.submit(params))
                status = 201
            except (Refused, SafescanError) as exc:  # a malformed code or authorization
                status, answer = 422, {"error": str(exc)}
        out = json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(out))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})


def tls_files(keys: Path) -> TlsFiles:
    """The server certificate ``institution init`` made beside ``keys`` (what the institution
    presents)."""
    made = TlsDir(keys.with_name(keys.name + ".tls"))
    return TlsFiles(made.server_cert, made.server_key)


class BareServer:
    """The yardstick as its own process on 127.0.0.1 (``--serve``), like ServerProcess: with
    ``tls`` over HTTPS with the institution's certificate (the same handshake and record
    layer as the institution's), verified by its clients with the CA ``init`` made."""

    def __init__(self, db_url: str, keys: Path, tls: bool = True) -> None:
        self.port = free_port()
        self.tls = tls
        self.base_url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.verify: ssl.SSLContext | None = None
        if tls:
            self.verify = pki.client_context(keys.with_name(keys.name + ".tls") / "ca.pem")
        cmd = [sys.executable, __file__, "--serve", db_url, str(keys), str(self.port)]
        cmd.append("--tls" if tls else "--no-tls")
        self.proc = subprocess.Popen(cmd, env=env())
        for _ in range(600):
            try:
                r = httpx.get(self.base_url + "/health", timeout=2, verify=self.verify or True)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the yardstick server did not come up")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)


def schema_of(tree: Path, db_url: str) -> None:
    """Bring a database this checkout made down to TREE's newest migration: an earlier tree's
    server refuses a schema newer than its own (``require_current_schema``). This checkout's
    migrations know how to go down; the load's orders and the audit do not depend on the later
    revisions (indexes, tables an older tree does not use)."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from safescan.institution.db import Database, _alembic_config, schema_revisions

    cfg = Config()
    cfg.set_main_option("script_location", str(tree / "src/safescan/institution/migrations"))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    db = Database(db_url)
    try:
        if head is not None and schema_revisions(db.engine)[0] != head:
            with db.engine.connect() as conn:
                command.downgrade(_alembic_config(conn), head)
                conn.commit()
    finally:
        db.dispose()


def _audit_summary(output: str) -> str:
    """The failing checks of ``safescan institution audit --json`` and its first findings."""
    try:
        doc = json.loads(output.strip().splitlines()[-1])
        failing = {k: v for k, v in doc["checks"].items() if v}
        findings = next((v for k, v in doc.items() if isinstance(v, list) and v), [])
    except (ValueError, KeyError, IndexError, AttributeError):
        return output[-1000:].strip()
    return f"failing checks {failing}; first findings {findings[:2]}"


def one_run(kind: str, args: argparse.Namespace, cluster: Any = None) -> dict[str, Any]:
    """One load run against a fresh database: ``institution`` or ``bare``."""
    with tempfile.TemporaryDirectory(prefix=f"safescan-{kind}-") as d:
        keys = Path(d) / "keys"
        if cluster is not None:
            db_url = cluster.create_database()
        else:
            db_url = f"sqlite:///{Path(d) / 'bench.db'}"
        init_db(db_url, keys)
        if kind == "before":  # that tree's schema (it may be older than this checkout's)
            schema_of(Path(args.before).resolve(), db_url)
        per_client = int(args.max_rate * args.seconds / args.concurrency) + 1
        work, bound = institution_load.prepare(
            db_url, keys, args.concurrency, per_client, args.merchants
        )
        if kind in ("institution", "before"):
            extra = ["--workers", "1", "--no-webhooks", "--merchant-rate", "0"]
            saved = os.environ.get("PYTHONPATH")
            if kind == "before":  # the institution of another tree (same schema), this load
                os.environ["PYTHONPATH"] = f"{Path(args.before).resolve() / 'src'}"
            try:
                server: Any = ServerProcess(db_url, keys, extra=extra, tls=args.tls).start()
            finally:
                if saved is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = saved
        else:
            server = BareServer(db_url, keys, tls=args.tls)
        load0 = os.getloadavg()[0]
        cpu0 = institution_load.cpu_seconds(server.proc.pid)
        own0 = time.process_time()
        try:
            pinned = institution_load.pinned(server)  # the same transport for both kinds
            result = asyncio.run(
                institution_load.load(
                    server.base_url, work, args.seconds, pinned, connect_first=not args.cold_start
                )
            )
            cpu1 = institution_load.cpu_seconds(server.proc.pid)
            own1 = time.process_time()
        finally:
            server.stop()
        n = max(result["payments"], 1)
        result["server_cpu_ms_per_payment"] = round((cpu1 - cpu0) * 1000 / n, 3)
        # the load generator shares the machine's cores (HTTPS client, JSON): what a payment
        # costs on this machine in all is both (see docs/performance.md, seventh sitting)
        result["generator_cpu_ms_per_payment"] = round((own1 - own0) * 1000 / n, 3)
        audit_env = env()
        if kind == "before":  # that tree audits its own schema (it may be older than ours)
            audit_env["PYTHONPATH"] = f"{Path(args.before).resolve() / 'src'}"
        checked = subprocess.run(
            [sys.executable, "-m", "safescan.institution", "audit", "--db", db_url, "--json"],
            env=audit_env,
            capture_output=True,
            text=True,
        )
        result |= {"server": kind, "audit_ok": checked.returncode == 0, "tls": args.tls}
        if checked.returncode != 0:
            result["audit_output"] = _audit_summary(checked.stdout + checked.stderr)
        result["loadavg"] = (load0, os.getloadavg()[0])
        result["crypto_bound_per_s"] = round(bound, 1)
        result["ratio_to_crypto_bound"] = round(result["payments_per_s"] / bound, 3)
        return result


def rotated(kinds: tuple[str, ...], round_: int) -> tuple[str, ...]:
    """The servers' order in round ``round_`` (0-based): ``kinds`` rotated left by the round,
    so each server runs first, second and third equally often over len(kinds) rounds (the
    twelfth sitting's "before" ran first in every round and won 4 of 6)."""
    k = round_ % len(kinds)
    return kinds[k:] + kinds[:k]


def main() -> None:
    """Run the yardstick, or alternate it with the institution; print the figures."""
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--alternate", type=int, default=0, help="institution/yardstick pairs")
    ap.add_argument("--concurrency", type=int, default=16, help="closed-loop clients")
    ap.add_argument("--merchants", type=int, default=8)
    ap.add_argument("--max-rate", type=float, default=2500, help="orders per second of run")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument(
        "--before",
        metavar="TREE",
        help="with --alternate: also run the institution of TREE (a checkout of an earlier"
        " commit; its database brought down to TREE's newest migration) in each round:"
        " before / after / yardstick",
    )
    ap.add_argument("--serve", nargs=3, metavar=("DB", "KEYS", "PORT"), help=argparse.SUPPRESS)
    institution_load.add_tls_option(ap)
    institution_load.add_start_option(ap)
    args = ap.parse_args()
    if args.serve:
        import uvicorn

        db, keys, port = args.serve
        app = BareApp(db, Path(keys))
        options = tls_files(Path(keys)).uvicorn_options() if args.tls else {}
        uvicorn.run(
            app,
            host="127.0.0.1",
            port=int(port),
            log_level="warning",
            access_log=False,
            **options,
        )
        return
    keep = ("payments_per_s", "p50_ms", "p99_ms", "p99_worst_second_ms", "errors")
    runs: list[dict[str, Any]] = []
    orders: list[list[str]] = []  # each round's order of the servers (rotated per round)
    cluster = start_cluster(fsync=True) if args.db == "postgresql" else None
    try:
        if args.alternate:
            kinds = ("before", "institution", "bare") if args.before else ("institution", "bare")
            for i in range(args.alternate):
                order = rotated(kinds, i)
                orders.append(list(order))
                for kind in order:
                    runs.append(one_run(kind, args, cluster))
        else:
            runs.append(one_run("bare", args, cluster))
    finally:
        if cluster is not None:
            cluster.stop()
    out: dict[str, Any] = {"db": args.db, "seconds": args.seconds, "concurrency": args.concurrency}
    out["tls"] = args.tls  # both the institution and the yardstick: like is compared with like
    shown = ("server", *keep, "server_cpu_ms_per_payment", "generator_cpu_ms_per_payment")
    shown += ("crypto_bound_per_s", "p99_per_second_ms")
    shown += ("ratio_to_crypto_bound", "audit_ok")
    shown += ("audit_output", "loadavg")
    shown += ("connect_first", "connect_phase_ms", "connect_phase_worst_ms")
    out["runs"] = [{k: r[k] for k in shown if k in r} for r in runs]
    if args.alternate:
        out["orders"] = orders
        inst = [r["payments_per_s"] for r in runs if r["server"] == "institution"]
        bare = [r["payments_per_s"] for r in runs if r["server"] == "bare"]
        out["ratios"] = [round(i / b, 3) for i, b in zip(inst, bare, strict=True)]
        out["median_ratio"] = round(statistics.median(out["ratios"]), 3)
        if args.before:
            old = [r["payments_per_s"] for r in runs if r["server"] == "before"]
            out["before_ratios"] = [round(o / b, 3) for o, b in zip(old, bare, strict=True)]
            out["before_median_ratio"] = round(statistics.median(out["before_ratios"]), 3)
            out["after_over_before"] = [round(i / o, 3) for i, o in zip(inst, old, strict=True)]
    if args.json:
        print(json.dumps(out))
        return
    for r in out["runs"]:
        print(
            f"{r['server']:>11}: {r['payments_per_s']:8.1f} payments/s, p99 {r['p99_ms']} ms"
            f" (worst second {r['p99_worst_second_ms']} ms), errors {r['errors']},"
            f" CPU {r['server_cpu_ms_per_payment']} ms/payment,"
            f" crypto bound {r['crypto_bound_per_s']}/s (ratio {r['ratio_to_crypto_bound']}),"
            f" audit {'passed' if r['audit_ok'] else 'FAILED'},"
            f" load {r['loadavg'][0]:.1f} -> {r['loadavg'][1]:.1f}"
        )
        if "connect_phase_ms" in r:
            print(
                f"{'':>11}  connections opened before the clock: {r['connect_phase_ms']} ms"
                f" (worst {r['connect_phase_worst_ms']} ms), not counted above"
            )
        if "audit_output" in r:
            print(r["audit_output"])
    print(f"transport: {'HTTPS (pinned CA) for every server' if args.tls else 'plain HTTP'}")
    if args.alternate:
        print(f"order of the servers in each round: {out['orders']}")
        print(f"institution / yardstick: {out['ratios']}, median {out['median_ratio']}")
        if args.before:
            print(
                f"before / yardstick: {out['before_ratios']}, median {out['before_median_ratio']};"
                f" after / before: {out['after_over_before']}"
            )


if __name__ == "__main__":
    main()
