"""Unit tests without a server: retries, URLs, keys, rate limiter, request signing, CLI tools."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError, OperationalError

from safescan.api.errors import ConfigError, RateLimited, ReplayedRequest, Unauthenticated
from safescan.api.merchant_auth import sign_request, verify_request
from safescan.code import SigningKey
from safescan.code.errors import KeyFileError
from safescan.institution import audit
from safescan.institution.db import Database, is_retryable, migrate, normalize_url
from safescan.institution.keystore import KeyStore
from safescan.institution.models import Counter
from safescan.institution.ratelimit import RateLimiter
from safescan.institution.server import open_institution
from safescan.institution.settlement import SettlementRow, to_csv
from tests.institution.harness import PASSPHRASE, env, init_db, institution_run


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_serialization_failures_are_retried(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.dialect = "postgresql"  # exercise the per-transaction retry path (not the SQLite writer)
    calls = []

    def tx(conn: object) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE ...", {}, _PgError("40001"))
        return "done"

    try:
        assert db.write(tx) == "done"  # type: ignore[arg-type]
        assert len(calls) == 3
    finally:
        db.dispose()
    assert is_retryable(OperationalError("x", {}, _PgError("40P01")))
    assert not is_retryable(OperationalError("x", {}, _PgError("23505")))


def test_database_urls() -> None:
    assert normalize_url("postgresql://u@h/db").startswith("postgresql+psycopg://")
    assert normalize_url("sqlite:////tmp/x.db").startswith("sqlite+pysqlite:")
    for bad in ("", "mysql://x/y", "sqlite://", "sqlite:///:memory:", "not a url"):
        with pytest.raises(ConfigError):
            normalize_url(bad)


def test_keystore_refuses_wrong_passphrase_and_overwrite(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    keys = store.create(b"correct horse")
    assert (tmp_path / "keys" / "keys.json").stat().st_mode & 0o077 == 0
    assert b"PRIVATE" not in (tmp_path / "keys" / "secret.json").read_bytes()
    with pytest.raises(ConfigError):
        store.create(b"correct horse")
    with pytest.raises(KeyFileError):
        store.load(b"wrong passphrase")
    again = store.load(b"correct horse")
    assert again.root.public_key == keys.root.public_key and again.secret == keys.secret
    assert again.pseudonym("M1", "C1") == keys.pseudonym("M1", "C1") != keys.pseudonym("M2", "C1")


def test_rate_limiter_token_bucket() -> None:
    now = [0.0]
    rl = RateLimiter(2, 2, clock=lambda: now[0])
    rl.check("m")
    rl.check("m")
    with pytest.raises(RateLimited):
        rl.check("m")
    rl.check("other")
    now[0] = 0.5
    rl.check("m")


def test_request_signature_helpers() -> None:
    key = SigningKey.generate()
    keys = {"M1": key.public_key}
    h = sign_request(key, "M1", "POST", "/v1/x?a=1", b"{}", timestamp=1000, nonce="n" * 16)
    signed = verify_request("POST", "/v1/x?a=1", h, b"{}", keys.get, now=1100)
    assert (signed.merchant_id, signed.created, signed.nonce) == ("M1", 1000, "n" * 16)
    with pytest.raises(Unauthenticated):
        verify_request("POST", "/v1/x?a=2", h, b"{}", keys.get, now=1100)
    with pytest.raises(ReplayedRequest):
        verify_request("POST", "/v1/x?a=1", h, b"{}", keys.get, now=1000 + 301)
    short = sign_request(key, "M1", "POST", "/v1/x", b"{}", timestamp=1000, nonce="short")
    with pytest.raises(Unauthenticated):
        verify_request("POST", "/v1/x", short, b"{}", keys.get, now=1000)


def test_csv_cells_cannot_carry_formulas() -> None:
    row = SettlementRow(
        date="d",
        merchant_id="M",
        merchant_name="=HYPERLINK(1)",
        settlement_account="x",
        currency="EUR",
        payments=1,
        gross=1,
        refunds=0,
        refunded=0,
        net=1,
    )
    assert ",'=HYPERLINK(1)," in to_csv([row])


def test_init_twice_and_scheme_key_rotation() -> None:
    with tempfile.TemporaryDirectory() as d:
        db = f"sqlite:///{d}/i.db"
        keys = Path(d) / "keys"
        init_db(db, keys, fresh=True)  # about init
        again = institution_run(["init", "--db", db, "--keys", str(keys)], env())
        # refused before anything is written: the TLS directory `init` made is checked first
        assert again.returncode == 2 and "already holds a CA" in again.stderr, again.stderr
        rot = institution_run(
            ["rotate-scheme-key", "--db", db, "--keys", str(keys), "--retire-old-in", "3600"], env()
        )
        assert rot.returncode == 0, rot.stderr
        os.environ["SAFESCAN_INSTITUTION_PASSPHRASE"] = PASSPHRASE
        try:
            inst = open_institution(db, keys, None)
        finally:
            del os.environ["SAFESCAN_INSTITUTION_PASSPHRASE"]
        try:
            now = int(time.time())
            assert inst.keys.scheme.current(now).kid == 2
            assert inst.keys.scheme.keys[1].retire_at is not None
            published = inst.setup.public_keys().scheme_keys
            assert [k.kid for k in published if k.use == "static"] == [1, 2]
            assert [k.kid for k in published if k.current_static] == [2]
            (current,) = [k for k in published if k.current]  # dynamic codes: the epoch's
            assert current.use == "dynamic" and current.kid >= 0x80
        finally:
            inst.db.dispose()


def test_serve_refuses_missing_passphrase(tmp_path: Path) -> None:
    e = env()
    e.pop("SAFESCAN_INSTITUTION_PASSPHRASE")
    out = institution_run(["init", "--db", f"sqlite:///{tmp_path}/x.db"], e)
    assert out.returncode == 2 and "passphrase" in out.stderr


@settings(max_examples=300, deadline=None)
@given(
    prev=st.text(max_size=70),
    chain=st.integers(0, 2**31),
    seq=st.integers(0, 2**62),
    at=st.integers(-(2**62), 2**62),
    words=st.lists(st.text(max_size=40), min_size=4, max_size=4),
)
def test_audit_hash_is_the_canonical_json_hash(
    prev: str, chain: int, seq: int, at: int, words: list[str]
) -> None:
    """``entry_hash`` (built from ``entry_tail``, the part PostgreSQL's safescan_pay_order
    completes and hashes in SQL) equals SHA-256 of the canonical JSON list, for any text; and
    the tail is ASCII, so the database's UTF-8 conversion cannot change it."""
    actor, action, entity, data = words
    doc = json.dumps([prev, chain, seq, at, actor, action, entity, data], separators=(",", ":"))
    want = hashlib.sha256(doc.encode()).hexdigest()
    assert audit.entry_hash(prev, chain, seq, at, actor, action, entity, data) == want
    tail = audit.entry_tail(at, actor, action, entity, data)
    assert tail.isascii() and doc.endswith(tail)


def test_group_commit_undoes_only_the_failing_writes(tmp_path: Path) -> None:
    """SQLite's writer runs a queued group in one transaction, each write in its own
    savepoint: a write that raises (its own error, or the database's) is undone alone and gets
    its exception; the others commit together."""
    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    migrate(db.engine)
    gate = threading.Event()

    def blocker(conn: Any) -> None:  # holds the writer so that the rest queue as one group
        gate.wait(30)

    def put(name: str, fail: bool = False) -> Any:
        def fn(conn: Any) -> str:
            conn.execute(insert(Counter).values(name=name, value=1))
            if fail:
                raise ValueError(f"{name} refused")
            return name

        return fn

    try:
        first = db.submit(blocker)
        futures = [db.submit(put(f"n{i}", fail=i % 5 == 2)) for i in range(12)]
        futures.append(db.submit(put("n0")))  # duplicate key: the database refuses it
        gate.set()
        first.result(30)
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result(30))
            except ValueError as exc:
                outcomes.append(str(exc))
            except DBAPIError:
                outcomes.append("duplicate")
        assert outcomes == [f"n{i} refused" if i % 5 == 2 else f"n{i}" for i in range(12)] + [
            "duplicate"
        ]
        names = db.read(
            lambda c: sorted(
                c.execute(select(Counter.name).where(Counter.name.like("n%"))).scalars()
            )
        )
        assert names == sorted(f"n{i}" for i in range(12) if i % 5 != 2)
    finally:
        db.dispose()
