"""The dispatcher survives everything and says when it cannot (in process, real receivers).

* the claim gives every endpoint its share (a backlog of one merchant never starves another);
* URLs that the API would refuse today but that sit in the database (older rules, a manual edit)
  fail their own events only;
* an exception in an attempt or in the loop is logged and counted, and delivery goes on;
* ``/health`` (a real uvicorn server on 127.0.0.1) answers 503 when the dispatcher is dead or
  its loop has stalled, and 200 again when it turns.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import update

from safescan.institution.http import create_app
from safescan.institution.models import Event
from safescan.institution.service import Institution
from safescan.institution.webhook_dispatcher import DeliveryLimits
from safescan.institution.webhook_targets import TargetPolicy
from tests.institution.dispatch import (
    Dispatch,
    Resolver,
    emit,
    events,
    make_institution,
    merchant,
    store_url,
)
from tests.institution.pg import free_port
from tests.institution.receivers import Listener, answer, wait_until

LOOPBACK = TargetPolicy(allow=["127.0.0.1/32"], allow_http=True, resolver=Resolver())


@pytest.fixture
def inst(tmp_path: Path) -> Institution:
    i = make_institution(tmp_path)
    i.webhook_targets = LOOPBACK
    return i


def test_the_claim_gives_every_endpoint_its_share(inst: Institution) -> None:
    backlog = merchant(inst, "Backlog", "http://127.0.0.1:9999/a")
    others = [merchant(inst, f"Other {i}", f"http://127.0.0.1:9999/{i}") for i in range(3)]
    emit(inst, backlog, 300)  # older than everyone else's events
    theirs = {m: emit(inst, m, 1)[0] for m in others}
    d = Dispatch(inst, LOOPBACK, limits=DeliveryLimits(per_endpoint=2, concurrency=10))
    now_ms = int(time.time() * 1000) + 1000
    got = d.dispatcher.claim_due(now_ms, 10, {})
    by = [g.merchant_id for g in got]
    assert by.count(backlog) == 2  # its per-endpoint limit, not the whole batch
    assert {g.id for g in got if g.merchant_id != backlog} == set(theirs.values())
    # an endpoint at its limit gets nothing more, the others still get theirs
    more = emit(inst, others[0], 1)[0]
    got = d.dispatcher.claim_due(now_ms, 10, {backlog: 2})
    assert backlog not in {g.merchant_id for g in got} and more in {g.id for g in got}
    # one slot of room: one more event of the backlog
    got = d.dispatcher.claim_due(now_ms, 10, {backlog: 1})
    assert [g.merchant_id for g in got].count(backlog) == 1


BAD_STORED_URLS = [
    "",
    "not a url",
    "ftp://127.0.0.1/x",
    "http://[::1",
    "http://exa mple.com/",
    "http://127.0.0.1:99999/",
    "http://127.0.0.1:0/",
    "http://\x00/",
    "http://user:pw@127.0.0.1:1234/",
    "javascript:alert(1)",
    "http://127.0.0.2:1234/",  # well formed, but not allow-listed: refused on connect
    "http://[::1]:1234/",
    "http://2130706433:1234/",
    "http://h\u00e9llo.example/",
    "http://" + "a" * 500 + ".example/",
]


def test_bad_urls_in_the_database_fail_only_their_own_events(inst: Institution) -> None:
    good = Listener(answer(204))
    try:
        bad_ids: list[str] = []
        for i, url in enumerate(BAD_STORED_URLS):
            mid = merchant(inst, f"Legacy {i}")
            store_url(inst, mid, url)
            bad_ids += emit(inst, mid, 2)
        ok_mid = merchant(inst, "Healthy", good.url)
        ok_ids = emit(inst, ok_mid, 5)
        d = Dispatch(inst, LOOPBACK)
        assert d.run_until(
            lambda: (
                all(any(a.ok for a in d.of(e)) for e in ok_ids)
                and all(len(d.of(e)) >= 2 for e in bad_ids)
            )
        ), d.dispatcher.health()
        health = d.dispatcher.health()
    finally:
        good.close()
    assert all(events(inst, ok_ids)[e].webhook_state == "delivered" for e in ok_ids)
    rows = events(inst, bad_ids)
    for e in bad_ids:
        assert rows[e].webhook_state == "pending" and rows[e].last_error, e
        assert all(a.error_kind in ("invalid_url", "refused") for a in d.of(e))
    assert health["internal_errors"] == 0 and health["loop_errors"] == 0
    assert d.dispatcher.state == "stopped"


BAD_STORED_EVENT_IDS = [
    "evt_abc\n",  # "$" of a plain re.match takes it
    "evt_a.b",  # a "." inside the signed content's "id.timestamp.body"
    "evt_",
    "SS1-CERT",  # another context's prefix
    "evt_" + "a" * 61,
    "evt_a\r\nX-Injected: 1",
    "\u00e9vt_a",
]


def test_malformed_stored_event_ids_fail_only_their_own_events_typed(inst: Institution) -> None:
    """Event ids no version of the institution writes (a restore's, a hand edit's): before, the
    signing raised a bare ValueError inside the attempt (logged as an unexpected error with its
    traceback, counted internal). Now each fails typed (``invalid_event``), nothing is sent for
    it, its row is left as it was (pending, same id and payload), the others are delivered."""
    bad_rx, good_rx = Listener(answer(204)), Listener(answer(204))
    try:
        bad_mid = merchant(inst, "Restored", bad_rx.url)
        ok_mid = merchant(inst, "Healthy", good_rx.url)
        renamed = emit(inst, bad_mid, len(BAD_STORED_EVENT_IDS))
        for old, new in zip(renamed, BAD_STORED_EVENT_IDS, strict=True):
            inst.db.write(
                lambda c, old=old, new=new: c.execute(
                    update(Event).where(Event.id == old).values(id=new)
                )
            )
        before = events(inst, BAD_STORED_EVENT_IDS)
        ok_ids = emit(inst, ok_mid, 3)
        d = Dispatch(inst, LOOPBACK)
        assert d.run_until(
            lambda: (
                all(any(a.ok for a in d.of(e)) for e in ok_ids)
                and all(len(d.of(e)) >= 2 for e in BAD_STORED_EVENT_IDS)
            )
        ), d.dispatcher.health()
        health = d.dispatcher.health()
    finally:
        bad_rx.close()
        good_rx.close()
    assert bad_rx.connections == 0  # nothing was signed or sent for a malformed id
    assert all(events(inst, ok_ids)[e].webhook_state == "delivered" for e in ok_ids)
    after = events(inst, BAD_STORED_EVENT_IDS)
    for e in BAD_STORED_EVENT_IDS:
        assert after[e].webhook_state == "pending" and after[e].payload == before[e].payload
        assert all(a.error_kind == "invalid_event" for a in d.of(e)), d.of(e)
        assert "not a webhook id" in (after[e].last_error or "")
    assert health["internal_errors"] == 0 and health["loop_errors"] == 0


def test_exceptions_are_counted_and_delivery_goes_on(
    inst: Institution, monkeypatch: pytest.MonkeyPatch
) -> None:
    rx = Listener(answer(204))
    try:
        cursed = merchant(inst, "Cursed", rx.url.replace("/hook", "/cursed"))
        fine = merchant(inst, "Fine", rx.url)
        d = Dispatch(inst, LOOPBACK)
        real_attempt, real_claim = d.dispatcher._attempt, d.dispatcher.claim_due
        claims = {"n": 0}

        async def attempt(pool: Any, due: Any) -> Any:
            if due.merchant_id == cursed:
                raise RuntimeError("a bug in one attempt")
            return await real_attempt(pool, due)

        def claim(*args: Any) -> Any:
            claims["n"] += 1
            if claims["n"] <= 3:
                raise ValueError("a bug in the loop")
            return real_claim(*args)

        monkeypatch.setattr(d.dispatcher, "_attempt", attempt)
        monkeypatch.setattr(d.dispatcher, "claim_due", claim)
        cursed_ids, fine_ids = emit(inst, cursed, 2), emit(inst, fine, 3)
        assert d.run_until(
            lambda: (
                all(any(a.ok for a in d.of(e)) for e in fine_ids)
                and all(len(d.of(e)) >= 2 for e in cursed_ids)
            )
        )
    finally:
        rx.close()
    stats = d.dispatcher.stats
    assert stats.loop_errors == 3
    assert stats.internal_errors >= 4
    assert all(events(inst, fine_ids)[e].webhook_state == "delivered" for e in fine_ids)
    rows = events(inst, cursed_ids)
    assert all(rows[e].webhook_state == "pending" and rows[e].attempts >= 2 for e in cursed_ids)
    assert {r.head.split(b" ")[1] for r in rx.requests} == {b"/hook"}


class Served:
    """``create_app`` with the given dispatcher, served by uvicorn on 127.0.0.1 in a thread."""

    def __init__(self, inst: Institution, d: Dispatch) -> None:
        self.port = free_port()
        app = create_app(inst, dispatcher=d.dispatcher, maintenance_interval=60)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, lifespan="on", log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        assert wait_until(lambda: self.server.started, 30)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        self.token = inst.test_admin_token  # type: ignore[attr-defined]

    def health(self) -> tuple[int, str]:
        r = self.http.get("/health")
        return r.status_code, r.json()["webhooks"]

    def stats(self) -> dict[str, Any]:
        h = {"Authorization": f"Bearer {self.token}"}
        return dict(self.http.get("/v1/admin/webhooks/dispatcher", headers=h).json())

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(30)


def test_health_reports_a_stalled_loop_then_its_recovery(
    inst: Institution, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = Dispatch(inst, LOOPBACK)
    d.dispatcher.stall_after = 1.0
    gate = threading.Event()
    real_claim = d.dispatcher.claim_due
    stuck = {"on": False}

    def claim(*args: Any) -> Any:
        if stuck["on"]:
            gate.wait(60)  # e.g. a database call that hangs
        return real_claim(*args)

    monkeypatch.setattr(d.dispatcher, "claim_due", claim)
    s = Served(inst, d)
    try:
        assert s.health() == (200, "running")
        stuck["on"] = True
        assert wait_until(lambda: s.health() == (503, "stalled"), 30)
        assert s.stats()["state"] == "stalled"
        stuck["on"] = False
        gate.set()
        assert wait_until(lambda: s.health() == (200, "running"), 30)
    finally:
        gate.set()
        s.close()


def test_health_reports_a_dead_dispatcher(
    inst: Institution, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = Dispatch(inst, LOOPBACK)
    kill = {"on": False}
    real_fill = d.dispatcher._fill

    async def fill(pool: Any) -> int:
        if kill["on"]:
            raise asyncio.CancelledError  # what no `except Exception` can catch
        return await real_fill(pool)

    monkeypatch.setattr(d.dispatcher, "_fill", fill)
    s = Served(inst, d)
    try:
        assert s.health() == (200, "running")
        kill["on"] = True
        assert wait_until(lambda: s.health() == (503, "dead"), 30)
        doc = s.http.get("/health").json()
        assert doc["status"] == "degraded"
        assert s.stats()["state"] == "dead" and s.stats()["ok"] is False
    finally:
        s.close()


STORED_REQUEST_IDS = [
    "req_0123456789\r\nX-Injected: 1",
    "req_0123456789\nX-Injected: 1",
    "req_0123456789\rX-Injected: 1",
    "req_0123456789\x00",
    "req_0123456789 \x7f",
    "req_\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9",
    "x" * 300,
]


def test_a_hostile_request_id_in_the_database_never_reaches_the_webhook_headers(
    inst: Institution,
) -> None:
    """Header injection into outgoing webhooks (redteam): the ``X-Request-Id`` a delivery
    carries comes from the database (the causing request's id, or a resend's). A value with
    CR/LF, NUL, DEL, non-ASCII or hundreds of characters stored there (by an older version, a
    restore, a hand edit) made every attempt of the event fail in the HTTP library, for ever;
    now the header is left out unless the id is sane, and the delivery arrives, with no header
    but the ones the dispatcher writes."""
    from sqlalchemy import update

    from safescan.institution.models import Event

    rx = Listener(answer(204))
    try:
        mid = merchant(inst, "Injected", rx.url)
        ids = emit(inst, mid, len(STORED_REQUEST_IDS) + 1)
        for eid, rid in zip(ids, [*STORED_REQUEST_IDS, None], strict=True):
            inst.db.write(
                lambda c, eid=eid, rid=rid: c.execute(
                    update(Event)
                    .where(Event.id == eid)
                    .values(request_id="req_0123456789ab", resend_request_id=rid)
                )
            )
        d = Dispatch(inst, LOOPBACK)
        assert d.run_until(lambda: all(any(a.ok for a in d.of(e)) for e in ids), timeout=15), [
            (a.error_kind, a.error) for e in ids for a in d.of(e)
        ]
    finally:
        rx.close()
    heads = [r.head for r in rx.requests]
    assert all(b"x-injected" not in h.lower() for h in heads)
    sent = sorted(r.header("X-Request-Id") or "" for r in rx.requests)
    # the sane ones (the causing request's id behind each hostile resend id) still go out
    assert sent == ["req_0123456789ab"] * len(ids)
