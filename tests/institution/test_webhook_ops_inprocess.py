"""Webhook operations in process (SQLite, real receivers on 127.0.0.1): the test delivery goes
through the same address checks as the dispatcher (SSRF), sealed endpoint secrets bound to
their merchant, a secret that does not open sends nothing, the delivery log's retention."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from safescan.api import standard_webhooks as sw
from safescan.api.errors import ConfigError, RateLimited
from safescan.institution import webhook_log
from safescan.institution.config import Tuning
from safescan.institution.models import WebhookDelivery, WebhookEndpoint
from safescan.institution.service import Institution
from safescan.institution.settings import load_settings
from safescan.institution.webhook_dispatcher import DeliveryLimits
from safescan.institution.webhook_ops import WebhookOps
from safescan.institution.webhook_secrets import EndpointSecrets
from safescan.institution.webhook_targets import TargetPolicy
from safescan.institution.webhook_transport import Attempt
from tests.institution.dispatch import (
    Dispatch,
    Resolver,
    emit,
    events,
    make_institution,
    merchant,
    store_url,
    trust,
)
from tests.institution.receivers import Listener, answer, silent


def ops_for(inst: Institution, policy: TargetPolicy) -> WebhookOps:
    return WebhookOps(
        inst.db,
        inst.keys.root,
        inst.keys.root_kid,
        EndpointSecrets(inst.keys.secret),
        lambda: policy,
    )


def test_the_test_delivery_refuses_what_the_dispatcher_refuses(tmp_path: Path) -> None:
    inst = make_institution(tmp_path)
    lst = Listener(answer(204))
    try:
        mid = merchant(inst, "Probe")
        port = lst.port
        refusing = [
            (lst.url, TargetPolicy()),  # http and loopback refused
            (lst.url, TargetPolicy(allow_http=True)),  # loopback refused
            (f"https://127.0.0.1:{port}/hook", TargetPolicy()),
            (
                f"http://[::ffff:127.0.0.1]:{port}/",
                TargetPolicy(allow=["127.0.0.1"], allow_http=True),
            ),
            (  # a name that answers loopback when the test is sent (rebinding)
                f"http://rebind.example.com:{port}/hook",
                TargetPolicy(
                    allow_http=True, resolver=Resolver({"rebind.example.com": ["127.0.0.1"]})
                ),
            ),
            (f"http://169.254.169.254:{port}/latest/meta-data", TargetPolicy(allow_http=True)),
        ]
        for url, policy in refusing:
            store_url(inst, mid, url)  # as if registered under older rules
            result = asyncio.run(ops_for(inst, policy).test(mid))
            assert result["state"] == "failed", (url, result)
            assert result["error_kind"] in ("invalid_url", "refused"), (url, result)
        assert lst.requests == [] and lst.connections == 0
        logged = inst.db.read(
            lambda c: c.execute(
                select(WebhookDelivery.kind, WebhookDelivery.state).where(
                    WebhookDelivery.merchant_id == mid
                )
            ).all()
        )
        assert [tuple(r) for r in logged] == [("test", "failed")] * len(refusing)
        # the operator allow-lists loopback over http: now it is delivered, signed
        store_url(inst, mid, lst.url)
        allowed = TargetPolicy(allow=["127.0.0.1"], allow_http=True)
        result = asyncio.run(ops_for(inst, allowed).test(mid))
        assert result["state"] == "delivered" and len(lst.requests) == 1
        req = lst.requests[0]
        headers = {
            k.decode().strip(): v.decode().strip()
            for k, _, v in (line.partition(b":") for line in req.head.split(b"\r\n")[1:])
        }
        assert sw.verify(req.body, headers, trust=trust(inst))["type"] == "webhook.test"
    finally:
        lst.close()
        inst.db.dispose()


def test_a_sealed_secret_is_bound_to_its_merchant_and_a_broken_one_sends_nothing(
    tmp_path: Path,
) -> None:
    inst = make_institution(tmp_path)
    lst = Listener(answer(204))
    try:
        policy = TargetPolicy(allow=["127.0.0.1"], allow_http=True)
        inst.webhook_targets = policy
        a, b = merchant(inst, "A", lst.url), merchant(inst, "B", lst.url)
        ops = ops_for(inst, policy)
        secret_a = ops.rotate(a, 0)["secret"]
        ops.rotate(b, 0)
        box_a = inst.db.read(
            lambda c: c.execute(
                select(WebhookEndpoint.secret_box).where(WebhookEndpoint.merchant_id == a)
            ).scalar()
        )
        assert secret_a.encode() not in box_a and sw.secret_bytes(secret_a) not in box_a
        # A's sealed secret copied onto B's row: it does not open for B
        inst.db.write(
            lambda c: c.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.merchant_id == b)
                .values(secret_box=box_a)
            )
        )
        # ... nor does a box with one flipped byte for A
        flipped = bytes([box_a[0] ^ 1]) + box_a[1:]
        inst.db.write(
            lambda c: c.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.merchant_id == a)
                .values(secret_box=flipped)
            )
        )
        ids = emit(inst, a) + emit(inst, b)
        d = Dispatch(inst, policy)
        d.dispatcher.secrets = EndpointSecrets(inst.keys.secret)
        assert d.run_until(lambda: all(len(d.of(i)) >= 1 for i in ids), 20)
        assert lst.requests == []  # no delivery without the v1 signature the merchant expects
        for i in ids:
            att = d.of(i)[0]
            assert att.error_kind == "internal" and "secret" in (att.error or "")
            assert events(inst, [i])[i].webhook_state == "pending"  # retried later
    finally:
        lst.close()
        inst.db.dispose()


def test_the_delivery_log_is_bounded_per_merchant_and_by_age(tmp_path: Path) -> None:
    inst = make_institution(tmp_path)
    try:
        a, b = merchant(inst, "A"), merchant(inst, "B")
        retention = webhook_log.Retention(per_endpoint=5, max_age=3600)
        now = 1_800_000_000

        def add(mid: str, at: int, n: int) -> None:
            for i in range(n):
                att = Attempt("https://x.example/", at, 0.01, 500, "http_status", "HTTP 500")
                inst.db.write(
                    lambda c, i=i, att=att: webhook_log.record_attempt(
                        c,
                        merchant_id=mid,
                        event_id=f"evt_{i}",
                        kind="event",
                        attempt=i + 1,
                        att=att,
                        state="retrying",
                        next_retry_ms=None,
                        retention=retention,
                    )
                )

        add(a, now - 7200, 3)  # old
        add(b, now, 4)
        add(a, now, 4)  # 7 rows for A: the 2 oldest go
        log_a = inst.db.read(lambda c: webhook_log.list_deliveries(c, a, limit=100))
        assert [d["attempt"] for d in log_a["deliveries"]] == [4, 3, 2, 1, 3]
        removed = inst.db.write(lambda c: webhook_log.prune(c, now=now, retention=retention))
        assert removed == 1  # A's last old row; B's rows untouched
        log_a = inst.db.read(lambda c: webhook_log.list_deliveries(c, a, limit=100))
        assert [d["attempt"] for d in log_a["deliveries"]] == [4, 3, 2, 1]
        log_b = inst.db.read(lambda c: webhook_log.list_deliveries(c, b, limit=100))
        assert len(log_b["deliveries"]) == 4
        assert json.dumps(log_a)  # plain JSON
    finally:
        inst.db.dispose()


def test_retention_is_a_setting_and_the_dispatcher_applies_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "inst.toml"
    cfg.write_text("[webhooks]\nlog_per_endpoint = 20\nlog_max_days = 2\n")
    tuning = load_settings(cfg).tuning()
    assert (tuning.webhook_log_per_endpoint, tuning.webhook_log_max_days) == (20, 2)
    assert Tuning.decode(tuning.encode()) == tuning  # what worker processes receive
    monkeypatch.setenv("SAFESCAN_INSTITUTION_WEBHOOKS__LOG_MAX_DAYS", "7")
    assert load_settings(cfg).tuning().webhook_log_max_days == 7  # env over file
    monkeypatch.delenv("SAFESCAN_INSTITUTION_WEBHOOKS__LOG_MAX_DAYS")
    for bad in ("log_per_endpoint = 0", "log_per_endpoint = 1000000", "log_max_days = 0"):
        cfg.write_text(f"[webhooks]\n{bad}\n")
        with pytest.raises(ConfigError):
            load_settings(cfg)
    # the dispatcher's sweep: rows past max_age go, the rest stay; ended overlaps are cleared
    inst = make_institution(tmp_path)
    try:
        mid = merchant(inst, "A")
        ops_for(inst, TargetPolicy()).rotate(mid, 0)
        ops_for(inst, TargetPolicy()).rotate(mid, 1)
        now = int(time.time())
        for at in (now - 3 * 86400, now - 86400, now):
            att = Attempt("https://x.example/", at, 0.01, 500, "http_status", "HTTP 500")
            inst.db.write(
                lambda c, att=att: webhook_log.record_attempt(
                    c,
                    merchant_id=mid,
                    event_id="evt_x",
                    kind="event",
                    attempt=1,
                    att=att,
                    state="retrying",
                    next_retry_ms=None,
                )
            )
        d = Dispatch(inst, TargetPolicy())
        d.dispatcher.retention = webhook_log.Retention(per_endpoint=20, max_age=2 * 86400)
        time.sleep(1.1)  # the 1 s overlap ends
        assert d.dispatcher.prune_log() == 1
        left = inst.db.read(lambda c: webhook_log.list_deliveries(c, mid, limit=10))
        assert len(left["deliveries"]) == 2
        row = inst.db.read(
            lambda c: c.execute(
                select(WebhookEndpoint.previous_box, WebhookEndpoint.previous_until)
            ).one()
        )
        assert tuple(row) == (None, None)
    finally:
        inst.db.dispose()


def test_test_deliveries_are_limited_per_merchant(tmp_path: Path) -> None:
    """A merchant cannot turn ``webhook test`` into a request cannon: one at a time, a burst of
    5 then one per 10 s; another merchant is not held back by it."""
    inst = make_institution(tmp_path)
    slow, fast = Listener(silent), Listener(answer(204))
    try:
        policy = TargetPolicy(allow=["127.0.0.1"], allow_http=True)
        inst.webhook_targets = policy
        ops = WebhookOps(
            inst.db,
            inst.keys.root,
            inst.keys.root_kid,
            EndpointSecrets(inst.keys.secret),
            lambda: policy,
            limits=DeliveryLimits(deadline=1.0),
        )
        mid, other = merchant(inst, "Cannon", slow.url), merchant(inst, "Other", fast.url)

        async def two() -> list[object]:
            return list(await asyncio.gather(ops.test(mid), ops.test(mid), return_exceptions=True))

        res = asyncio.run(two())
        assert sum(isinstance(r, RateLimited) for r in res) == 1, res
        assert [r["error_kind"] for r in res if isinstance(r, dict)] == ["deadline"]
        store_url(inst, mid, fast.url)
        for _ in range(3):  # 2 of the burst of 5 are spent
            assert asyncio.run(ops.test(mid))["state"] == "delivered"
        with pytest.raises(RateLimited):
            asyncio.run(ops.test(mid))
        assert len(fast.requests) == 3
        assert asyncio.run(ops.test(other))["state"] == "delivered"
    finally:
        slow.close()
        fast.close()
        inst.db.dispose()
