"""Hostile webhook receivers against a real institution process: nobody else is delayed, memory
stays bounded, the dispatcher stays alive.

Ten merchants point their webhooks at receivers that misbehave in different ways (silence, a
slow drip of headers or of a body, an endless body, endless or huge headers, a reset, bytes
that are not HTTP, a redirect to an internal service, a certificate nobody trusts), each with
several events queued. While they hold their connections, a well-behaved merchant's events are
delivered: the silent receiver is still holding its connections when the last of them arrives.
Then the server's counters show the bound on bytes read per attempt, its memory did not grow,
and ``/health`` still says the dispatcher is running.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from safescan.api.events import verify_webhook
from tests.institution.harness import MerchantClient, World, world_in
from tests.institution.receivers import (
    SEND_CAP,
    Listener,
    answer,
    drip_body,
    drip_headers,
    endless_body,
    endless_headers,
    garbage,
    huge_header,
    redirect,
    reset,
    server_tls,
    silent,
    wait_until,
)
from tests.institution.test_webhooks_sse import trust_of

DEADLINE = 20  # seconds per attempt: the silent receiver holds that long
PER_ENDPOINT = 2
MAX_BYTES = 64 * 1024  # the dispatcher's default byte budget per attempt
EVENTS_EACH = 4


@pytest.fixture
def world() -> Iterator[World]:
    with tempfile.TemporaryDirectory(prefix="safescan-hostile-") as d:
        db = f"sqlite:///{Path(d) / 'institution.db'}"
        extra = [
            *("--webhook-base-delay", "0.2", "--maintenance-interval", "60"),
            *("--webhook-deadline", str(DEADLINE)),
            *("--webhook-endpoint-concurrency", str(PER_ENDPOINT)),
        ]
        with world_in(Path(d), db, extra=extra) as w:
            w.db_path = Path(d) / "institution.db"  # type: ignore[attr-defined]
            yield w


def closed_orders(m: MerchantClient, n: int) -> list[str]:
    """``n`` orders made and closed: ``n`` ``order.closed`` events for ``m``."""
    ids = []
    for i in range(n):
        o = m.order([("Item", 1, 100 + i)])
        r = m.request("POST", f"/v1/merchant/orders/{o['order_id']}/close")
        assert r.status_code == 200, r.text
        ids.append(o["order_id"])
    return ids


def rss_kib(pid: int) -> int:
    """Resident memory of a process (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def outbox(db_path: Path, merchant_id: str) -> list[tuple[str, int, str | None]]:
    """(state, attempts, last_error) of a merchant's events, read from the database file."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as conn:
        return list(
            conn.execute(
                "SELECT webhook_state, attempts, last_error FROM events WHERE merchant_id = ?",
                (merchant_id,),
            )
        )


@pytest.mark.slow
def test_hostile_receivers_delay_nobody_and_cost_bounded_memory(world: World) -> None:
    tmp: Path = world.tmp  # type: ignore[attr-defined]
    db_path: Path = world.db_path  # type: ignore[attr-defined]
    trust = trust_of(world)
    pid = world.server.proc.pid  # type: ignore[union-attr]
    inside = Listener(answer(204))  # an internal service a redirect points at
    healthy = Listener(answer(204))
    hostile = {
        "silent": Listener(silent),
        "drip_headers": Listener(drip_headers),
        "drip_body": Listener(drip_body),
        "endless_body": Listener(endless_body),
        "endless_headers": Listener(endless_headers),
        "huge_header": Listener(huge_header),
        "reset": Listener(reset),
        "garbage": Listener(garbage),
        "redirect": Listener(redirect(f"http://127.0.0.1:{inside.port}/admin/delete")),
        "untrusted_tls": Listener(answer(204), tls=server_tls(tmp, None, ["127.0.0.1"])),
    }
    everyone = [inside, healthy, *hostile.values()]
    try:
        merchants = {
            name: world.merchant(f"Hostile {name}", webhook_url=lst.url)
            for name, lst in hostile.items()
        }
        good = world.merchant("Well Behaved", webhook_url=healthy.url)
        rss_before = rss_kib(pid)

        # 1. the hostile receivers get their events and start holding connections
        for m in merchants.values():
            closed_orders(m, EVENTS_EACH)
        assert wait_until(
            lambda: hostile["silent"].open >= PER_ENDPOINT and hostile["drip_headers"].open >= 1
        )

        # 2. meanwhile, the well-behaved merchant's events all arrive, verified
        want = set(closed_orders(good, 5))
        assert wait_until(
            lambda: (
                {
                    verify_webhook(r.body, r.header("Safescan-Signature") or "", trust)["data"][
                        "order_id"
                    ]
                    for r in list(healthy.requests)
                }
                >= want
            )
        )
        still_held = hostile["silent"].open
        assert still_held >= 1, "the silent receiver's attempts ended before the others' arrived"
        # no attempt to a holding receiver has ended yet: exactly the per-endpoint limit of
        # connections was opened to each, though each has more events waiting
        opened = {n: hostile[n].connections for n in ("silent", "drip_headers")}
        assert world.http.get("/health").json()["webhooks"] == "running"

        # 3. every hostile event is tried at least once (the silent ones at the deadline)
        assert wait_until(
            lambda: all(
                len(rows) == EVENTS_EACH and all(n >= 1 for _, n, _ in rows)
                for rows in (outbox(db_path, m.merchant_id) for m in merchants.values())
            ),
            timeout=4 * DEADLINE,
        )
        # 4. and the dispatcher still delivers afterwards
        more = set(closed_orders(good, 2))
        assert wait_until(
            lambda: (
                sum(1 for s, _, _ in outbox(db_path, good.merchant_id) if s == "delivered")
                == len(want) + len(more)
            )
        )
        health = world.http.get("/health")
        stats = world.admin("GET", "/v1/admin/webhooks/dispatcher").json()
        rss_after = rss_kib(pid)
        errors = {name: outbox(db_path, m.merchant_id) for name, m in merchants.items()}
    finally:
        for lst in everyone:
            lst.close()

    assert health.status_code == 200 and health.json()["webhooks"] == "running"
    assert stats["state"] == "running"
    assert stats["internal_errors"] == 0 and stats["loop_errors"] == 0, stats
    # bytes: no attempt read more than its budget, whatever the receiver sent
    assert 0 < stats["max_attempt_bytes"] <= MAX_BYTES, stats
    assert stats["bytes_received"] <= stats["attempts"] * MAX_BYTES
    assert hostile["endless_body"].bytes_sent < SEND_CAP  # it was hung up on, not drained
    assert hostile["endless_headers"].bytes_sent < SEND_CAP
    assert rss_after - rss_before < 100 * 1024, (rss_before, rss_after)
    # isolation: never more than the per-endpoint limit of attempts to one receiver
    assert opened == {"silent": PER_ENDPOINT, "drip_headers": PER_ENDPOINT}
    assert stats["max_endpoint_in_flight"] == PER_ENDPOINT, stats
    assert inside.connections == 0  # the redirect was not followed

    # what each failure looked like
    def last(name: str) -> set[str]:
        return {str(e) for s, _, e in errors[name] if s == "pending"}

    assert last("silent") == last("drip_headers") == {f"no answer within {DEADLINE} s"}
    assert last("drip_body") == {"HTTP 500"}
    assert all(s == "delivered" for s, _, _ in errors["endless_body"])  # 200: acknowledged
    assert all("larger than" in e for e in last("endless_headers") | last("huge_header"))
    assert last("redirect") == {"HTTP 307"}
    assert all(e.startswith("TLS") for e in last("untrusted_tls"))
    assert all(e.startswith(("protocol", "network", "connect")) for e in last("reset"))
    assert all(e.startswith("protocol") for e in last("garbage"))
