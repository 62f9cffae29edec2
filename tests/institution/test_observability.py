"""Logs, request ids, metrics and health of a real `safescan institution serve` on 127.0.0.1.

* every line the server writes on stderr is a JSON object; each request has one access line
  with its route template, status and request id; a sane ``X-Request-Id`` is taken and echoed,
  anything else is replaced by a generated one (and never written);
* the request id reaches the audit entry and the webhook delivery the request caused;
* ``/metrics`` parsed with prometheus_client's text parser: payments and refusals move, random
  paths add no series, access is refused through a proxy, without or with a wrong token;
* ``/healthz`` and ``/readyz`` (readiness fails while the schema is behind).

(The log-secrecy attacks are in test_log_secrecy.py; the database-down readiness in
tests/faults/test_readiness_db_down.py.)
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.institution.harness import ServerProcess, World, init_db
from tests.institution.receivers import Listener, answer, wait_until


def log_lines(server: ServerProcess) -> list[dict[str, Any]]:
    """Every JSON line the server wrote (asserting that every line but the plain listening
    line on stdout is JSON)."""
    out = []
    for line in server.output().splitlines():
        if not line.strip() or line.startswith("safescan institution listening on "):
            continue
        doc = json.loads(line)  # raises on any line that is not JSON
        assert isinstance(doc, dict), line
        out.append(doc)
    return out


def access_lines(server: ServerProcess, request_id: str) -> list[dict[str, Any]]:
    return [
        d
        for d in log_lines(server)
        if d.get("event") == "request" and d.get("request_id") == request_id
    ]


def samples(
    http: httpx.Client, **headers: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as {(sample name, sorted labels): value}, parsed by prometheus_client."""
    r = http.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict[Any, float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def shop(world: World) -> Any:
    m = world.merchant("Metrics Cafe")
    cid = world.customer({"EUR": 100_000})
    return m, cid, world.carrier(cid)


# --- logs and request ids -----------------------------------------------------------------------


def test_a_sane_request_id_is_echoed_and_logged_with_the_route_template(world: World) -> None:
    rid = "client-" + secrets.token_hex(8)
    r = world.admin("GET", "/v1/admin/customers/cus_doesnotexist")
    generated = r.headers["x-request-id"]
    assert generated.startswith("req_") and len(generated) == 28
    r = world.http.get(
        "/v1/admin/customers/cus_doesnotexist",
        headers={"X-Request-Id": rid, "Authorization": f"Bearer {world.admin_token}"},
    )
    assert r.status_code == 404 and r.headers["x-request-id"] == rid
    assert wait_until(lambda: len(access_lines(world.server, rid)) == 1, 10)
    (line,) = access_lines(world.server, rid)
    assert line["route"] == "/v1/admin/customers/{customer_id}"  # the template, not the path
    assert line["method"] == "GET" and line["status"] == 404 and line["caller"] == "admin"
    assert line["error"] == "not_found" and line["level"] == "info"
    assert isinstance(line["duration_ms"], float) and line["logger"].endswith(".access")
    assert "cus_doesnotexist" not in json.dumps(line)


@pytest.mark.parametrize(
    "bad",
    [
        "short",  # < 8 characters
        "x" * 65,  # > 64
        "has space inside",
        'quote"injection-0001',
        "newline\\nforged-0001",
        "tab\there-000000001",
        "ünïcode-00000000001",
        "{json:injection}0001",
    ],
)
def test_an_insane_request_id_is_replaced_never_logged(world: World, bad: str) -> None:
    r = world.http.get("/healthz", headers={"X-Request-Id": bad.encode("utf-8")})
    assert r.status_code == 200
    got = r.headers["x-request-id"]
    assert got != bad and got.startswith("req_")
    assert wait_until(lambda: len(access_lines(world.server, got)) == 1, 10)
    assert bad not in world.server.output()


def test_every_log_line_is_json_and_the_server_announced_where_it_listens(world: World) -> None:
    out = world.server.output()
    assert f"safescan institution listening on {world.server.base_url}" in out
    docs = log_lines(world.server)
    listening = [d for d in docs if d.get("event") == "listening"]
    assert listening and listening[0]["url"] == world.server.base_url
    for d in docs:
        assert {"event", "level", "ts"} <= set(d), d


def test_the_request_id_reaches_the_audit_entry_and_the_webhook(world: World) -> None:
    receiver = Listener(answer(204))
    try:
        m = world.merchant("Hooked Cafe", webhook_url=receiver.url)
        cid = world.customer({"EUR": 10_000})
        carrier = world.carrier(cid)
        order = m.order([("Tea", 1, 250)])
        rid = "pay-" + secrets.token_hex(10)
        r = world.http.post(
            "/v1/payments",
            json={"code": order["code"], "authorization": _b64(carrier, order["code"])},
            headers={"X-Request-Id": rid},
        )
        assert r.status_code == 201, r.text
        assert r.headers["x-request-id"] == rid
        assert wait_until(lambda: bool(receiver.requests), 30), "no webhook delivered"
        hook = receiver.requests[0]
        assert hook.header("X-Request-Id") == rid
        assert json.loads(hook.body)["type"] == "payment.succeeded"
        (line,) = access_lines(world.server, rid)
        assert line["route"] == "/v1/payments" and line["caller"] == "wallet"
        assert line["status"] == 201
        entries = _audit_data(world, "payment")
        assert any(e.get("request_id") == rid for e in entries), entries[-3:]
    finally:
        receiver.close()


def _b64(carrier: Any, code: str) -> str:
    from tests.institution.harness import b64

    return b64(carrier.authorize(code).to_bytes())


def _audit_data(world: World, action_prefix: str) -> list[dict[str, Any]]:
    url: str = world.db_url  # type: ignore[attr-defined]
    query = "SELECT data FROM audit_log WHERE action LIKE '" + action_prefix + "%' ORDER BY id"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute(query).fetchall()
    else:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            rows = conn.execute(query).fetchall()
    return [json.loads(r[0]) for r in rows]


# --- metrics ------------------------------------------------------------------------------------


def test_metrics_move_after_a_payment_and_a_refusal(world: World, shop: Any) -> None:
    m, _cid, carrier = shop
    before = samples(world.http)
    order = m.order([("Coffee", 1, 300)])
    auth = _b64(carrier, order["code"])
    assert (
        world.http.post(
            "/v1/payments", json={"code": order["code"], "authorization": auth}
        ).status_code
        == 201
    )
    again = world.http.post(
        "/v1/payments", json={"code": order["code"], "authorization": _b64(carrier, order["code"])}
    )
    assert again.status_code >= 400
    reason = again.json()["error"]["code"]
    bad = world.http.post("/v1/payments", json={"code": "SS1:nope", "authorization": "AAAA"})
    assert bad.status_code >= 400
    bad_reason = bad.json()["error"]["code"]
    after = samples(world.http)
    assert value(after, "safescan_payments_total") == value(before, "safescan_payments_total") + 1
    refused = "safescan_payment_refusals_total"
    if reason == bad_reason:
        assert value(after, refused, reason=reason) == value(before, refused, reason=reason) + 2
    else:
        assert value(after, refused, reason=reason) == value(before, refused, reason=reason) + 1
        assert (
            value(after, refused, reason=bad_reason)
            == value(before, refused, reason=bad_reason) + 1
        )
    count = "safescan_http_request_duration_seconds_count"
    moved = value(after, count, method="POST", route="/v1/payments") - value(
        before, count, method="POST", route="/v1/payments"
    )
    assert moved == 3
    created = value(
        after, "safescan_http_requests_total", method="POST", route="/v1/payments", status="201"
    )
    assert created >= 1
    # gauges read at scrape time
    assert value(after, "safescan_db_pool_size") >= 1
    assert ("safescan_db_pool_connections", (("state", "in_use"),)) in after
    assert ("safescan_webhook_queue_depth", ()) in after


def test_random_paths_add_no_series(world: World) -> None:
    world.http.get("/no/such/path/warmup")  # the one <unmatched> series exists
    world.admin("GET", "/v1/admin/customers/cus_warmup")
    before = samples(world.http)
    for _ in range(40):
        junk = secrets.token_hex(6)
        world.http.get(f"/{junk}/{junk}")
        world.http.get(f"/v1/{junk}?q={junk}")
        world.admin("GET", f"/v1/admin/customers/cus_{junk}")
        world.http.request(junk.upper()[:6], f"/{junk}")  # an odd method too
    after = samples(world.http)
    new = {k for k in after if k not in before and k[0].startswith("safescan_http")}
    labels = {dict(k[1]).get("route") for k in new} | {dict(k[1]).get("method") for k in new}
    for junk_label in labels:  # at most the OTHER method or a new status: never a raw path
        assert junk_label in (None, "OTHER", "<unmatched>", "/v1/admin/customers/{customer_id}")
    assert len(new) <= 2 * 16, sorted(new)  # an OTHER method series (+ its buckets), no more
    routes = {dict(k[1]).get("route") for k in after if k[0] == "safescan_http_requests_total"}
    assert not any(r and "cus_" in r for r in routes)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "203.0.113.9"},
        {"Forwarded": "for=203.0.113.9"},
        {"X-Forwarded-For": "127.0.0.1"},  # a proxy saying loopback is still a proxy
    ],
)
def test_metrics_through_a_proxy_are_refused(world: World, headers: dict[str, str]) -> None:
    r = world.http.get("/metrics", headers=headers)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert "safescan_" not in r.text


def test_metrics_only_get(world: World) -> None:
    for method in ("POST", "PUT", "DELETE"):
        r = world.http.request(method, "/metrics")
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


# --- health ---------------------------------------------------------------------------------------


def test_healthz_and_readyz(world: World) -> None:
    r = world.http.get("/healthz")
    assert r.status_code == 200 and r.json()["alive"] is True
    ready = world.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    for name in ("database", "schema", "keys", "writer", "webhooks"):
        assert checks[name]["ok"] is True, (name, checks[name])
    assert world.http.get("/ready").json()["checks"].keys() == checks.keys()  # the same


# --- servers of their own -------------------------------------------------------------------------


@pytest.fixture
def own_sqlite() -> Iterator[tuple[str, Path, str]]:
    with tempfile.TemporaryDirectory(prefix="safescan-obs-") as d:
        db = f"sqlite:///{Path(d) / 'i.db'}"
        token = init_db(db, Path(d) / "keys")
        yield db, Path(d), token


def test_readyz_fails_while_the_schema_is_behind_and_healthz_stays_alive(
    own_sqlite: tuple[str, Path, str],
) -> None:
    db, tmp, _token = own_sqlite
    server = ServerProcess(db, tmp / "keys").start()
    try:
        http = server.client(timeout=10)
        assert http.get("/readyz").status_code == 200
        path = db.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            (head,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            conn.execute("UPDATE alembic_version SET version_num = 'nonce_elapsed_clock'")
        r = http.get("/readyz")
        assert r.status_code == 503, r.text
        schema = r.json()["checks"]["schema"]
        assert schema["ok"] is False and schema["revision"] == "nonce_elapsed_clock"
        assert schema["expected"] == head
        assert r.json()["checks"]["database"]["ok"] is True  # only the schema is wrong
        assert http.get("/healthz").status_code == 200  # alive all the same
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE alembic_version SET version_num = ?", (head,))
        assert http.get("/readyz").status_code == 200
        http.close()
    finally:
        server.stop()


def test_metrics_token_mode(own_sqlite: tuple[str, Path, str]) -> None:
    db, tmp, token = own_sqlite
    metrics_token = secrets.token_urlsafe(24)
    (tmp / "metrics-token").write_text(metrics_token + "\n")
    server = ServerProcess(
        db,
        tmp / "keys",
        extra=["--metrics", "token", "--metrics-token-file", str(tmp / "metrics-token")],
    ).start()
    try:
        http = server.client(timeout=10)
        for headers in (
            {},
            {"Authorization": "Bearer " + metrics_token[:-1]},
            {"Authorization": "Bearer " + metrics_token + "x"},
            {"Authorization": "Basic " + metrics_token},
            {"Authorization": f"Bearer {token}"},  # the admin token is not the metrics token
            {"Authorization": "Bearer"},
        ):
            r = http.get("/metrics", headers=headers)
            assert r.status_code == 403, headers
            assert "safescan_" not in r.text
        m = samples(http, Authorization=f"Bearer {metrics_token}")
        assert ("safescan_payments_total", ()) in m
        http.close()
        out = server.output()
        assert metrics_token not in out and token not in out
    finally:
        server.stop()


def test_metrics_off(own_sqlite: tuple[str, Path, str]) -> None:
    db, tmp, _token = own_sqlite
    server = ServerProcess(db, tmp / "keys", extra=["--metrics", "off"]).start()
    try:
        assert server.get("/metrics").status_code == 404
    finally:
        server.stop()


def test_bad_metrics_settings_are_refused_at_start(own_sqlite: tuple[str, Path, str]) -> None:
    db, tmp, _token = own_sqlite
    (tmp / "short").write_text("tooshort")
    for extra, says in (
        (["--metrics", "everyone"], "metrics.access"),
        (["--metrics", "token"], "needs a metrics token file"),
        (["--metrics", "token", "--metrics-token-file", str(tmp / "short")], "at least 16"),
        (["--metrics", "token", "--metrics-token-file", str(tmp / "missing")], "cannot read"),
        (["--log-level", "chatty"], "server.log_level"),
        (["--log-format", "xml"], "server.log_format"),
    ):
        server = ServerProcess(db, tmp / "keys", extra=extra)
        with pytest.raises(RuntimeError, match="server exited") as exc:
            server.start(timeout=30)
        assert says in str(exc.value), (extra, str(exc.value)[-400:])


def test_several_workers_sum_their_counters(own_sqlite: tuple[str, Path, str]) -> None:
    db, tmp, _token = own_sqlite
    server = ServerProcess(db, tmp / "keys", extra=["--workers", "2"]).start()
    try:
        n = 60
        for _ in range(n):  # new connections: the kernel spreads them over both workers
            server.get("/healthz")
        deadline = time.monotonic() + 20
        while True:
            with server.client(timeout=10) as http:
                m = samples(http)
            got = value(
                m, "safescan_http_requests_total", method="GET", route="/healthz", status="200"
            )
            if got >= n or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got == n  # every worker's requests, whichever worker answered the scrape
    finally:
        server.stop()


def test_two_workers_count_payments_across_both_and_publish_gauges_per_worker(
    own_sqlite: tuple[str, Path, str],
) -> None:
    """``serve --workers 2`` (prometheus-client's multiprocess mode): payments answered by
    either worker are all in ``safescan_payments_total``, whichever worker answers the scrape,
    and each worker publishes its own pool gauges (one ``pid`` per worker)."""
    db, tmp, token = own_sqlite
    server = ServerProcess(db, tmp / "keys", extra=["--workers", "2"]).start()
    world = World(server, token)
    try:
        m = world.merchant("Two Workers Cafe")
        cid = world.customer({"EUR": 100_000})
        carrier = world.carrier(cid)
        n = 12
        for _ in range(n):
            order = m.order([("Tea", 1, 100)])
            body = {"code": order["code"], "authorization": _b64(carrier, order["code"])}
            # a new connection each: the kernel spreads them over both workers
            r = httpx.post(server.base_url + "/v1/payments", json=body, verify=server.verify)
            assert r.status_code == 201, r.text
        for _ in range(40):  # more connections, so that both workers have served something
            server.get("/healthz")

        def scrape() -> dict[Any, float]:
            with server.client(timeout=10) as h:
                return samples(h)

        pids: set[str] = set()

        def settled() -> bool:
            got = scrape()
            pids.clear()
            pids.update(
                dict(labels)["pid"]
                for (name, labels) in got
                if name == "safescan_worker_db_pool_connections"
            )
            return value(got, "safescan_payments_total") == n and len(pids) == 2

        assert wait_until(settled, 30), (value(scrape(), "safescan_payments_total"), pids)
        for _ in range(6):  # every scrape (answered by either worker) counts all of them
            assert value(scrape(), "safescan_payments_total") == n
    finally:
        world.close()
        server.stop()


def test_every_access_line_is_written_in_order_when_the_server_stops_at_once(
    own_sqlite: tuple[str, Path, str],
) -> None:
    """Access lines are written once per turn of the event loop: 60 requests, 12 at a time,
    then the server is stopped (SIGTERM) right after the last answer: each has exactly one
    access line, and the lines of one connection's requests are in the order they were sent."""
    import concurrent.futures

    db, tmp, _token = own_sqlite
    server = ServerProcess(db, tmp / "keys").start()
    try:
        rids = [[f"burst-{c:02d}-{i:03d}" for i in range(5)] for c in range(12)]

        def one_connection(ids: list[str]) -> None:
            with server.client(timeout=10) as http:
                for rid in ids:
                    r = http.get("/healthz", headers={"X-Request-Id": rid})
                    assert r.status_code == 200 and r.headers["x-request-id"] == rid

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            list(pool.map(one_connection, rids))
        assert server.proc is not None
        server.proc.terminate()
        assert server.proc.wait(15) == 0  # a graceful stop exits 0 (safescan.web.graceful)
        logged = [
            d["request_id"]
            for d in log_lines(server)
            if d.get("event") == "request" and str(d.get("request_id")).startswith("burst-")
        ]
        assert sorted(logged) == sorted(r for ids in rids for r in ids)  # each once
        for ids in rids:
            assert [r for r in logged if r in ids] == ids
    finally:
        server.stop()
