"""(harden, thirteenth sitting) The guard's limits from the environment and the cluster's answers
from Patroni, read strictly.

``netguard.Limits.from_env`` fell back to the defaults on anything malformed (an operator's
bound dropped without a word) and read ``" 5"``, ``"1_0"``, ``"５"``, ``nan``, ``inf`` and a
negative timeout; ``server_context`` unpacked lenient JSON (a ``ValueError``/``TypeError``
traceback). ``cluster.procs.http_json`` read a service's answer whole and by Python's ``json``
(Patroni's ``{"role": "replica", "role": "primary"}`` read as the last). Now: a typed
``GuardSettingsError`` naming the variable; an answer over 1 MiB is no answer, one naming a
key twice is unreadable (None). In-thread HTTP server on 127.0.0.1, no process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from safescan.web import netguard
from safescan.web.netguard import ENV_LIMITS, ENV_TLS, GuardSettingsError, Limits


@pytest.mark.parametrize(
    "text",
    ["1_000,10.0,0", " 1000,10.0", "1000,10.0,", "１０００,10.0", "1000,nan", "1000,inf",
     "1000,-1", "1000,0", "1000,10.0,5,5", "1000", "+1000,10.0", "01000,10.0", "0,10.0",
     "1000, 10.0", "1000,1_0.0", "1000,10.0,-1"],
)  # fmt: skip
def test_malformed_limits_are_a_typed_error_not_the_defaults(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv(ENV_LIMITS, text)
    with pytest.raises(GuardSettingsError, match=ENV_LIMITS):  # before: Limits() quietly
        Limits.from_env()


def test_limits_the_server_writes_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    for limits in (Limits(), Limits(256, 10.0, 32), Limits(8, 0.25, 0), Limits(5, 2.5, 1)):
        monkeypatch.setenv(ENV_LIMITS, limits.encode())
        assert Limits.from_env() == limits
    monkeypatch.delenv(ENV_LIMITS)
    assert Limits.from_env() == Limits()


@pytest.mark.parametrize(
    "text", ['["a"]', '{"cert": "a"}', '["a", 1]', '["a", "b", "c"]', "[", '["a","b"]x', '""']
)
def test_a_malformed_tls_variable_is_a_typed_error(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv(ENV_TLS, text)
    with pytest.raises(GuardSettingsError, match=ENV_TLS):  # before: ValueError, TypeError
        netguard.server_context()


class _Answer(ThreadingHTTPServer):
    body = b"{}"


class _Handler(BaseHTTPRequestHandler):
    server: _Answer

    def do_GET(self) -> None:
        body = self.server.body
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def patroni() -> Iterator[_Answer]:
    from tests.institution.pg import free_port  # not port 0: see tests/test_ports.py

    server = _Answer(("127.0.0.1", free_port()), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


def test_patroni_answers_are_read_strictly_and_bounded(patroni: _Answer) -> None:
    from safescan.cluster import procs

    url = f"http://127.0.0.1:{patroni.server_address[1]}/cluster"
    patroni.body = b'{"role": "primary", "state": "running"}'
    assert procs.http_json(url) == (200, {"role": "primary", "state": "running"})
    for body in (
        b'{"role": "replica", "role": "primary"}',  # before: the last "role"
        b'{"role": "primary", "lag": NaN}',
        b'{"members": [{"name": "a", "name": "b"}]}',
    ):
        patroni.body = body
        assert procs.http_json(url) == (200, None), body
    patroni.body = b'{"pad": "' + b"x" * (procs.MAX_ANSWER + 16) + b'"}'
    assert procs.http_get(url) == (0, b"")  # before: read whole
    assert procs.http_json(url) == (0, None)
