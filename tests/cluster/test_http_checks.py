"""The cluster's own HTTP checks (Patroni's REST API, HAProxy's statistics page) never follow a
redirect nor go through a proxy from the environment (redteam's audit of outgoing requests).

Before: both went through ``urllib.request.urlopen``, which follows 301/302/303/307/308 to any
host and scheme, carrying the request's headers along (HAProxy's statistics credentials in
``Authorization``), and sends every request through ``http_proxy``/``https_proxy`` when set (the
supervisor's environment is the operator's shell). No cluster is started: two in-thread
servers on 127.0.0.1 stand for the checked service and the place it points to.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from safescan.cluster.procs import http_get, http_json
from tests.httpreply import send_answer
from tests.institution.pg import free_port


class _Recorder(ThreadingHTTPServer):
    """Answers every GET with ``answer`` (status, headers, body) and records the requests."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.answer: tuple[int, dict[str, str], bytes] = (200, {}, b'{"ok": true}')
        super().__init__(("127.0.0.1", free_port()), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Recorder

    def do_GET(self) -> None:
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        send_answer(self, *self.server.answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[tuple[_Recorder, _Recorder]]:
    made = [_Recorder(), _Recorder()]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in made]
    for t in threads:
        t.start()
    try:
        yield made[0], made[1]
    finally:
        for s in made:
            s.shutdown()
            s.server_close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_an_answer_never_followed_and_carries_no_credentials(
    servers: tuple[_Recorder, _Recorder], status: int
) -> None:
    checked, elsewhere = servers
    checked.answer = (status, {"Location": elsewhere.url + "/stolen"}, b"")
    got, _ = http_get(checked.url + "/;csv", headers={"Authorization": "Basic c3RhdHM6cHc="})
    assert got == status
    assert http_json(checked.url + "/health")[0] == status
    assert len(checked.seen) == 2
    assert elsewhere.seen == []  # before: followed, with Authorization


def test_proxy_variables_are_ignored(
    servers: tuple[_Recorder, _Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    checked, proxy = servers
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, proxy.url)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert http_json(checked.url + "/health") == (200, {"ok": True})
    assert http_get(checked.url + "/;csv", headers={"Authorization": "Basic eA=="})[0] == 200
    assert proxy.seen == [] and len(checked.seen) == 2


def test_nothing_listening_is_status_zero() -> None:
    with ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler) as s:
        url = f"http://127.0.0.1:{s.server_address[1]}"
    assert http_json(url + "/health", 1.0) == (0, None)
    assert http_get(url, timeout=1.0) == (0, b"")
