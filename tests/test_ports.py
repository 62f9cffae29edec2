"""Port reservations (safescan.procs.free_port / reserve_port): test workers (pytest-xdist runs
4 processes) and demos pick ports at the same time and start their servers a moment later; no
two processes may ever be handed the same port in between, and no outgoing connection of any
process may take one (picks lie outside the kernel's ephemeral range). Attacked with processes
that pick many ports at once, a draw of a port another process holds, restarts, a thousand
outgoing connections made between the pick and the bind, and a grabber that holds the ports
the picker would draw next."""

from __future__ import annotations

import re
import resource
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from safescan import procs
from safescan.procs import free_port, release_port, reserve_port

# a process that picks N ports, prints them, and holds them until its stdin closes
PICKER = textwrap.dedent(
    """
    import sys
    from safescan.procs import free_port
    ports = [free_port() for _ in range(int(sys.argv[1]))]
    print(" ".join(map(str, ports)), flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lock directory of this test's own (child processes inherit it)."""
    d = tmp_path / "ports"
    monkeypatch.setenv(procs.PORT_LOCKS_ENV, str(d))
    return d


@pytest.fixture
def pickers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.stdin is not None:
            p.stdin.close()
        p.wait(30)


def pick(pickers: list[subprocess.Popen[str]], n: int) -> list[int]:
    """Start a process that reserves ``n`` ports and keeps them; the ports."""
    p = subprocess.Popen(
        [sys.executable, "-c", PICKER, str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    pickers.append(p)
    assert p.stdout is not None
    return [int(x) for x in p.stdout.readline().split()]


def test_processes_picking_at_once_never_share_a_port(
    locks: Path, pickers: list[subprocess.Popen[str]]
) -> None:
    # 4 processes x 150 ports, none bound: the kernel alone hands out some port twice almost
    # surely (600 draws from ~28,000); the reservations must not
    procs_ = [
        subprocess.Popen(
            [sys.executable, "-c", PICKER, "150"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    pickers.extend(procs_)
    seen: list[int] = []
    for p in procs_:
        assert p.stdout is not None
        seen += [int(x) for x in p.stdout.readline().split()]
    assert len(seen) == 600
    assert len(set(seen)) == 600
    mine = [free_port() for _ in range(50)]  # and this process's own picks too
    assert not set(mine) & set(seen) and len(set(mine)) == 50


def test_a_port_another_process_holds_is_never_handed_out(
    locks: Path, pickers: list[subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    held = pick(pickers, 3)
    for port in held:
        assert not reserve_port(port)
    # the held ports are drawn first (they are unbound): each is skipped
    offers = [*held, *held]
    real = procs.port_candidate
    monkeypatch.setattr(procs, "port_candidate", lambda: offers.pop(0) if offers else real())
    got = free_port()
    assert got not in held and not offers
    # once the holder exits, its ports can be reserved again
    holder = pickers.pop()
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(30)
    assert all(reserve_port(p) for p in held)
    for p in [*held, got]:
        release_port(p)


def test_this_process_never_gets_its_own_port_twice(
    locks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = free_port()
    assert not reserve_port(first)  # held (by us: a second lock of ours fails too)
    offers = [first, first]
    real = procs.port_candidate
    monkeypatch.setattr(procs, "port_candidate", lambda: offers.pop(0) if offers else real())
    second = free_port()
    assert second != first and not offers
    # a server stopped and restarted on `first` keeps it: the reservation outlives the server
    assert not reserve_port(first)
    release_port(first)
    assert reserve_port(first)
    release_port(first)
    release_port(second)
    release_port(second)  # releasing twice is harmless


def test_no_port_left_is_a_typed_error(locks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = free_port()
    monkeypatch.setattr(procs, "port_candidate", lambda: taken)
    with pytest.raises(procs.ProcessError, match="no free port"):
        free_port()
    release_port(taken)


def test_reservations_under_another_lock_directory_do_not_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that holds a port under one lock directory (a test worker's servers, under
    the machine's) may reserve it under another (a test's own): the reservations of one
    directory never make another's fail (this once failed the holder test in CI at random)."""
    monkeypatch.setenv(procs.PORT_LOCKS_ENV, str(tmp_path / "machine"))
    port = free_port()
    monkeypatch.setenv(procs.PORT_LOCKS_ENV, str(tmp_path / "own"))
    assert reserve_port(port)
    assert not reserve_port(port)  # but twice in one directory: never
    release_port(port)
    monkeypatch.setenv(procs.PORT_LOCKS_ENV, str(tmp_path / "machine"))
    assert not reserve_port(port)  # still held there
    release_port(port)
    assert reserve_port(port)
    release_port(port)


#: what lets the kernel choose a port in a test's server. It once could choose one that
#: another process reserved with free_port() and had not bound yet, whose server then failed
#: to start (the POS and wallet-app servers were started with ``--port 0``); since picks lie
#: outside the kernel's ephemeral range it no longer can, and the rule stays so that every
#: test server's port is reserved, known before it starts, and kept across a restart
KERNEL_CHOSEN = (
    re.compile(r"""["']--port["'],\s*["']0["']"""),  # a server's command line
    re.compile(r"""--port[ =]0\b"""),
    re.compile(r"""^\s*port\s*=\s*0\s*$|\\nport = 0\\n""", re.MULTILINE),  # a settings file
    re.compile(r"""\(\s*["'](?:127\.0\.0\.1|localhost|)["'],\s*0\s*\)"""),  # bind((host, 0))
)
#: the one place that may ask the kernel (and then reserves what it was given)
KERNEL_ALLOWED = {Path("src/safescan/procs.py")}


def test_no_test_server_lets_the_kernel_choose_its_port() -> None:
    """Every server a test starts listens on a port from :func:`free_port` (reserved for the
    test's process), never on port 0: the tests, and the test helpers in ``src``."""
    root = Path(__file__).resolve().parent.parent
    files = [*sorted((root / "tests").rglob("*.py")), root / "src/safescan/carrier/testing.py"]
    found = []
    for path in files:
        rel = path.relative_to(root)
        if rel in KERNEL_ALLOWED or path == Path(__file__).resolve():
            continue
        text = path.read_text()
        for pattern in KERNEL_CHOSEN:
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{rel}:{line}: {m.group(0).strip()}")
    assert found == [], "use tests.institution.pg.free_port(), not port 0:\n" + "\n".join(found)


def test_picked_ports_lie_outside_the_kernels_ephemeral_range() -> None:
    """The kernel takes the local port of every outgoing connection (and of every bind to
    port 0) from net.ipv4.ip_local_port_range; a picked port never lies in it, nor does any
    port of a cluster's block."""
    from safescan.cluster.spec import BLOCK_SPAN, free_base_port

    lo, hi = procs.ephemeral_range()
    picks = [free_port() for _ in range(200)]
    assert all(procs.PICK_LOW <= p <= procs.PICK_HIGH and not lo <= p <= hi for p in picks)
    base = free_base_port()
    assert base + BLOCK_SPAN - 1 < lo or base > hi
    for p in picks:
        release_port(p)


def test_outgoing_connections_cannot_take_a_picked_port(locks: Path) -> None:
    """The race that failed test_failover.py's cluster (API process 0 found 44350 taken):
    ports are picked (200 single ones, 5 clusters' blocks) and left unbound; before their
    servers bind them, 3,000 outgoing connections to 40 listeners are made (as the cluster's
    probes, Patroni and the other test workers make them) and held. None has a picked port
    as its local port, and every picked port then binds. With the picks as they were (the
    kernel's bind to port 0, cluster blocks anywhere in 20000-60000), this failed 10 runs out
    of 10: connect() takes even ports, and half a cluster's block is even."""
    from safescan.cluster.spec import Ports, free_base_port

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4000  # 3,000 connections, their servers' ends in the accept queues are not ours
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    picks = [free_port() for _ in range(200)]
    for _ in range(5):
        picks += Ports(free_base_port()).all(3, 2)
    # 40 listeners x 75 connections: within any accept queue (net.core.somaxconn >= 128), and
    # 40 destinations spread the local ports over the range (each has its own offset)
    listeners = [socket.create_server(("127.0.0.1", free_port()), backlog=100) for _ in range(40)]
    clients: list[socket.socket] = []
    servers: list[socket.socket] = []
    try:
        for listener in listeners:
            for _ in range(75):
                clients.append(socket.create_connection(listener.getsockname(), timeout=10))
        local = {c.getsockname()[1] for c in clients}
        lo, hi = procs.ephemeral_range()
        assert all(lo <= p <= hi for p in local)  # the kernel's half of the bargain
        assert sorted(local & set(picks)) == []
        for p in picks:  # every server binds its picked port while the connections are open
            servers.append(socket.create_server(("127.0.0.1", p)))
    finally:
        for s in [*clients, *servers, *listeners]:
            s.close()
        if soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for p in picks:
        release_port(p)


def test_a_grabber_holding_the_next_draws_is_skipped(
    locks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unrelated process binds the very ports the picker draws next (listening on one,
    an outgoing connection from another, one merely bound): each is skipped, none is
    handed out, and the pick is a port that binds."""
    target = socket.create_server(("127.0.0.1", free_port()))
    # four draws no other process (another test worker) has reserved and nothing is bound to
    # now: the test is about the grabber below, not about the suite's other servers
    draws: list[int] = []
    while len(draws) < 4:
        p = procs.port_candidate()
        if p in draws or not reserve_port(p):
            continue
        bindable = procs.port_bindable(p)
        release_port(p)
        if bindable:
            draws.append(p)
    grabbed = draws[:3]
    held: list[socket.socket] = []
    try:
        held.append(socket.create_server(("127.0.0.1", grabbed[0])))
        out = socket.socket()
        out.bind(("127.0.0.1", grabbed[1]))
        out.connect(target.getsockname())
        held.append(out)
        bound = socket.socket()
        bound.bind(("127.0.0.1", grabbed[2]))
        held.append(bound)
        offers = list(draws)
        monkeypatch.setattr(procs, "port_candidate", lambda: offers.pop(0))
        got = free_port()
        assert got == draws[3] and not offers
        assert all(reserve_port(p) for p in grabbed)  # skipped, and not left reserved
        socket.create_server(("127.0.0.1", got)).close()
    finally:
        for s in [*held, target]:
            s.close()
    for p in [*grabbed, got]:
        release_port(p)


@pytest.mark.parametrize(
    ("kernel_range", "picks_from"),
    [
        ("32768\t60999\n", [(10000, 32767), (61000, 65535)]),  # Linux's default
        ("49152 65535", [(10000, 49151)]),  # the IANA dynamic range
        ("1024 40000", [(40001, 65535)]),
        (None, [(10000, 32767)]),  # unreadable: the fallback 32768-65535 is assumed
    ],
)
def test_the_pick_range_is_the_complement_of_the_kernels(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kernel_range: str | None,
    picks_from: list[tuple[int, int]],
) -> None:
    f = tmp_path / "ip_local_port_range"
    if kernel_range is not None:
        f.write_text(kernel_range)
    monkeypatch.setattr(procs, "EPHEMERAL_RANGE_FILE", f)
    assert procs.pickable_ranges() == picks_from
    draws = [procs.port_candidate() for _ in range(300)]
    assert all(any(a <= p <= b for a, b in picks_from) for p in draws)
    blocks = [procs.port_candidate(span=60, align=10) for _ in range(300)]
    assert all(b % 10 == 0 and any(a <= b and b + 59 <= z for a, z in picks_from) for b in blocks)


@pytest.mark.parametrize("kernel_range", ["1024 65535", "9000 65000", "10500 65535"])
def test_no_range_outside_the_kernels_is_a_typed_error_not_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, locks: Path, kernel_range: str
) -> None:
    """A machine whose ephemeral range leaves (almost) nothing outside it: free_port refuses
    with a typed error naming the setting, rather than picking ports a connection can take."""
    f = tmp_path / "ip_local_port_range"
    f.write_text(kernel_range)
    monkeypatch.setattr(procs, "EPHEMERAL_RANGE_FILE", f)
    with pytest.raises(procs.PortRangeError, match="ip_local_port_range"):
        free_port()
    assert issubclass(procs.PortRangeError, procs.ProcessError)
