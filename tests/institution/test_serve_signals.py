"""`safescan institution serve` stopped by SIGTERM or SIGINT (a service manager, Ctrl-C) shuts
down gracefully and exits 0, its last request's access line written and its database sound
(`institution audit`); it used to die of its own SIGTERM raised again by uvicorn after the
shutdown (exit status -15, nothing after the server's run written: safescan.web.graceful)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.institution.conftest import Initialise
from tests.institution.harness import ServerProcess, World, institution_cli

#: how long the stopped server may take to exit (a bound, not a measurement: it normally
#: exits within a second; uvicorn's graceful shutdown is bounded by 5 s)
EXIT_BOUND = 120


def _access_routes(output: str) -> list[str]:
    routes = []
    for line in output.splitlines():
        if line.startswith("{") and '"request"' in line:
            doc = json.loads(line)
            if doc.get("event") == "request":
                routes.append(str(doc.get("route")))
    return routes


@pytest.mark.parametrize(
    ("sig", "workers"),
    [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2)],
    ids=["SIGTERM", "SIGINT", "SIGTERM-2-workers"],
)
def test_a_stopped_server_exits_0_with_its_log_written_and_its_data_sound(
    request: pytest.FixtureRequest,
    initialised: Initialise,
    tmp_path: Path,
    sig: signal.Signals,
    workers: int,
) -> None:
    db, token = initialised("sqlite", request, tmp_path)
    server = ServerProcess(db, tmp_path / "keys", extra=["--workers", str(workers)]).start()
    w = World(server, token)
    try:
        merchant = w.merchant("Signal Cafe")
        customer = w.customer({"EUR": 5_000})
        merchant.order([("Flat white", 1, 350)])
        assert w.admin("GET", f"/v1/admin/customers/{customer}").status_code == 200
        assert server.proc is not None
        server.proc.send_signal(sig)
        status = server.proc.wait(EXIT_BOUND)
        output = server.output()
    finally:
        w.close()
        server.stop()
    assert status == 0, output[-2000:]
    assert "Traceback" not in output
    assert "/v1/admin/customers/{customer_id}" in _access_routes(output), output[-2000:]
    # the database was closed: the last connection checkpointed its write-ahead log away
    base = Path(db.removeprefix("sqlite:///"))
    assert not base.with_name(base.name + "-wal").exists()
    assert not base.with_name(base.name + "-shm").exists()
    audit = institution_cli("audit", "--db", db, "--keys", str(tmp_path / "keys"))
    assert audit.returncode == 0, audit.stdout + audit.stderr
