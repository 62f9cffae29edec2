"""One supervisor for the child processes safescan starts: the demo's institution, key carrier
and POS, the carrier's test process, the private ``pcscd``.

:class:`ManagedProcess` is one child. It runs in its own process group (session); its stderr,
and its stdout unless the parent reads it, go to a log file. Started from the main thread, it
is killed when this process ends, however it ends (PR_SET_PDEATHSIG). Readiness is waited for
in one of three ways: an announced stdout line (:meth:`~ManagedProcess.ready_line`), an HTTP
answer (:meth:`~ManagedProcess.wait_http`) or any condition (:meth:`~ManagedProcess.wait_until`).
A child that exits first raises :class:`ProcessExited`; one that never becomes ready is stopped
and raises :class:`ProcessNotReady`, both with the end of its log. How long a child may take
to become ready is bounded by its work, not the wall clock (:class:`StartBound`): on a loaded
machine a start that needs 1 s of CPU can take a minute, and a wall-clock deadline gave up on
children that were still starting. :meth:`~ManagedProcess.stop`
sends SIGTERM to the group, SIGKILL after a grace period, SIGKILL again to whatever the child
left in its group, and reaps it. :class:`Supervisor` holds several children, names the one
that died (:meth:`~Supervisor.died`) and stops them newest first.
:func:`terminating_on_signals` turns SIGINT/SIGTERM/SIGHUP into ``KeyboardInterrupt`` so the
``finally`` that stops everything runs.

This module imports nothing of safescan but the error base class: every layer may use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import random
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from safescan.code.errors import SafescanError

__all__ = [
    "ManagedProcess",
    "PortRangeError",
    "ProcessError",
    "ProcessExited",
    "ProcessNotReady",
    "StartBound",
    "Supervisor",
    "cpu_seconds",
    "ephemeral_range",
    "free_port",
    "pickable_ranges",
    "port_bindable",
    "port_candidate",
    "release_port",
    "reserve_port",
    "terminating_on_signals",
]


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, in seconds) used so far by process ``pid`` and its live
    descendants, from /proc (0 once it is gone); None where there is no /proc."""
    if not os.path.isdir("/proc/self/task"):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in os.listdir(f"/proc/{p}/task"):
                children = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo += [int(c) for c in children]
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return total


class StartBound:
    """How long a child may take to become ready, bounded by its progress rather than the
    wall clock: it is given up once it (with its descendants) has used ``limit`` seconds of
    CPU, or has used none for ``limit`` seconds (hung, blocked or stopped). Where there is no
    /proc, ``limit`` seconds of wall clock."""

    def __init__(self, pid: int, limit: float) -> None:
        self.pid, self.limit = pid, limit
        self.started = time.monotonic()
        self.used, self.progress_at = 0.0, self.started
        self.checked = self.started

    def exceeded(self) -> bool:
        """Whether the child has had its chance (/proc is read at most every 0.1 s)."""
        now = time.monotonic()
        if now - self.checked < 0.1:
            return False
        self.checked = now
        cpu = cpu_seconds(self.pid)
        if cpu is None:
            return now - self.started >= self.limit
        if cpu > self.used:
            self.used, self.progress_at = cpu, now
        return self.used >= self.limit or now - self.progress_at >= self.limit

    def describe(self) -> str:
        """What was spent, for the error message."""
        return f"{self.used:.1f} s of CPU in {time.monotonic() - self.started:.0f} s"


#: prctl(2) option: the signal a process gets when the thread that forked it exits
_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (None where there is none): looked up in the parent, before a fork."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
    fn.restype = ctypes.c_int
    return fn


def _dies_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when this process ends, however it
    ends (SIGKILL, a crash, ``os._exit``: a pytest worker killed by the CI, a demo killed with
    ``kill -9``), where no ``finally`` runs to stop it; None off Linux, or in a thread other
    than the main one: the kernel signals the child when the *thread* that forked it exits."""
    prctl = _prctl()
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent, kill = os.getpid(), int(signal.SIGKILL)

    def preexec() -> None:  # in the child, between fork and exec: no allocation to speak of
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the parent ended before the line above: nobody will
            os.kill(os.getpid(), kill)

    return preexec


class ProcessError(SafescanError):
    """A child process failed: it could not start, exited, or never became ready."""

    code = "process_error"

    def __init__(self, message: str, *, name: str = "", log_tail: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.log_tail = log_tail


class ProcessExited(ProcessError):
    """The child exited (or could not be started) while it was expected to run."""

    code = "process_exited"

    def __init__(
        self, message: str, *, name: str = "", log_tail: str = "", returncode: int | None = None
    ) -> None:
        super().__init__(message, name=name, log_tail=log_tail)
        self.returncode = returncode


class ProcessNotReady(ProcessError):
    """The child runs but did not become ready in time (it has been stopped)."""

    code = "process_not_ready"


class PortRangeError(ProcessError):
    """No port range is left to pick from outside the kernel's ephemeral range."""

    code = "port_range"


#: where port reservations live (one lock file per port, shared by every process of the machine)
PORT_LOCKS_ENV = "SAFESCAN_PORT_LOCKS"
#: lock file -> its locked descriptor, held for life (keyed by the file, not the port: a process
#: that reserved a port under one lock directory may reserve it under another)
_RESERVED: dict[Path, int] = {}
_RESERVING = threading.Lock()

#: the kernel's range for the ports it chooses itself (net.ipv4.ip_local_port_range)
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: assumed where that file cannot be read: Linux's default start to the top (covers the IANA
#: dynamic range 49152-65535 other systems use)
EPHEMERAL_FALLBACK = (32768, 65535)
#: the ports :func:`free_port` picks from lie in [PICK_LOW, PICK_HIGH] outside the ephemeral
#: range; below PICK_LOW are the ports services usually listen on (5432, 6379, 8080, 9000 ...)
PICK_LOW = 10000
PICK_HIGH = 65535
#: fewer pickable ports than this is refused (:class:`PortRangeError`), not silently used
MIN_PICKABLE = 1000
_RNG = random.SystemRandom()


def _port_lock_dir() -> Path:
    configured = os.environ.get(PORT_LOCKS_ENV)
    d = Path(configured) if configured else Path(tempfile.gettempdir()) / "safescan-ports"
    if not d.is_dir():
        d.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # shared by every user's processes (sticky)
            d.chmod(0o1777)
    return d


def ephemeral_range() -> tuple[int, int]:
    """(first, last) port of the kernel's ephemeral range: the local port of every outgoing
    TCP connection and every bind to port 0 is taken from it, by any process of the machine,
    at any moment. :data:`EPHEMERAL_FALLBACK` where /proc does not say."""
    try:
        lo, hi = (int(x) for x in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return EPHEMERAL_FALLBACK
    return lo, hi


def pickable_ranges(span: int = 1) -> list[tuple[int, int]]:
    """(first, last) start ports ``p`` such that ``p .. p+span-1`` all lie in
    [:data:`PICK_LOW`, :data:`PICK_HIGH`] and outside the kernel's ephemeral range."""
    lo, hi = ephemeral_range()
    windows = [(PICK_LOW, min(lo - 1, PICK_HIGH)), (max(hi + 1, PICK_LOW), PICK_HIGH)]
    return [(a, b - span + 1) for a, b in windows if b - a + 1 >= span]


def port_candidate(span: int = 1, align: int = 1) -> int:
    """A random start port from :func:`pickable_ranges` (a multiple of ``align``): a port
    (block) the kernel never hands out by itself, so no connection of any process takes it.
    Raises :class:`PortRangeError` when the ephemeral range leaves fewer than
    :data:`MIN_PICKABLE` ports to pick from (widen the gap in net.ipv4.ip_local_port_range)."""
    starts = [
        (first, last)
        for a, last in pickable_ranges(span)
        if (first := -(-a // align) * align) <= last
    ]
    total = sum((last - first) // align + 1 for first, last in starts)
    if total * align < MIN_PICKABLE:
        lo, hi = ephemeral_range()
        raise PortRangeError(
            f"the kernel's ephemeral port range {lo}-{hi} (net.ipv4.ip_local_port_range) "
            f"leaves fewer than {MIN_PICKABLE} ports in {PICK_LOW}-{PICK_HIGH} to pick from: "
            "a picked port could be taken by any outgoing connection; narrow that range"
        )
    n = _RNG.randrange(total)
    for first, last in starts:
        count = (last - first) // align + 1
        if n < count:
            return first + n * align
        n -= count
    raise AssertionError("unreachable")  # pragma: no cover


def port_bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` can be bound now, strictly: without SO_REUSEADDR, so a port with
    a connection in TIME_WAIT counts as taken too (a child that binds without it would fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def reserve_port(port: int) -> bool:
    """Reserve ``port`` for this process (until :func:`release_port` or its exit): an
    exclusive lock on ``<lock dir>/<port>.lock``. False when another process (or this one)
    holds it. Every :func:`free_port` of every process honours the reservations."""
    path = _port_lock_dir() / f"{port}.lock"
    with _RESERVING:
        if path in _RESERVED:
            return False
        try:  # read-only is enough for flock, and works on another user's lock file
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by another process
            os.close(fd)
            return False
        _RESERVED[path] = fd
        return True


def release_port(port: int) -> None:
    """Give up this process's reservation of ``port`` (nothing if it holds none)."""
    path = _port_lock_dir() / f"{port}.lock"
    with _RESERVING:
        fd = _RESERVED.pop(path, None)
    if fd is not None:
        os.close(fd)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to, reserved for this process
    (:func:`reserve_port`) until it exits, and outside the kernel's ephemeral range
    (:func:`port_candidate`). Between the pick and the bind of the server it is for, the port
    stays unbound; in that gap no other safescan process is handed it (the reservation), and
    no outgoing connection or bind to port 0 of any process can take it (the kernel takes
    those from the ephemeral range only). Raises :class:`ProcessError` after 200 taken
    candidates, :class:`PortRangeError` when there is no range to pick from."""
    for _ in range(200):
        port = port_candidate()
        if not reserve_port(port):
            continue
        if port_bindable(port):  # checked once reserved: no safescan process binds it now
            return port
        release_port(port)
    raise ProcessError("no free port on 127.0.0.1 that no other process has reserved")


class ManagedProcess:
    """A child process in its own process group; :meth:`stop` always ends the whole group.

    ``capture``: stdout is a pipe the parent reads (a ready line, or :meth:`output`); otherwise
    it goes to the log with stderr. ``env`` None inherits the parent's environment.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log: Path,
        capture: bool = False,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.log = Path(log)
        self.capture = capture
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._stdout = b""  # read ahead of the next ready line

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped"
        return f"<ManagedProcess {self.name} {state}>"

    # --- start and readiness ---

    def start(self) -> ManagedProcess:
        """Start the process (stdout piped when ``capture``, else to the log; stderr to the
        log). Starting a stopped process again starts a fresh one."""
        if self.alive():
            raise ProcessError(f"{self.name} is already running", name=self.name)
        self._reap()  # the previous run, if it exited on its own
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    env=self.env,
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE if self.capture else log,
                    stderr=log,
                    start_new_session=True,
                    # killed with this process, however it ends (a prctl between fork and exec)
                    preexec_fn=_dies_with_parent(),
                )
                self._stdout = b""
            except OSError as exc:
                self.proc = None
                raise ProcessExited(
                    f"cannot start {self.name} ({self.argv[0]}): {exc.strerror or exc}",
                    name=self.name,
                ) from None
        return self

    @property
    def pid(self) -> int:
        """The process id (= its process group id)."""
        if self.proc is None:
            raise ProcessError(f"{self.name} is not running", name=self.name)
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """Its exit status once it was stopped and reaped (negative: killed by that signal),
        else None."""
        return None if self.proc is None else self.proc.returncode

    def alive(self) -> bool:
        """Whether it still runs. An exited child is not reaped here: until :meth:`stop`
        reaps it, its pid (= its process group id) cannot name another process, so signalling
        the group stays safe."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return False
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped behind our back (cannot signal it any more)
            return False
        return info is None

    def _wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the child to exit (not reaping it)."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def ready_line(self, prefix: str, timeout: float = 30.0) -> str:
        """Wait for the next stdout line, which must start with ``prefix``; returns the rest
        of the line; ``timeout``: the child's :class:`StartBound`. Call again for a second
        announced line. What a child prints on stdout is not logged (it may hold a secret, e.g.
        a pairing link)."""
        proc = self.proc
        if proc is None or proc.stdout is None:
            raise ProcessError(f"{self.name}: no output to wait on", name=self.name)
        fd = proc.stdout.fileno()
        bound = StartBound(proc.pid, timeout)
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._stdout:
                if not sel.select(0.1):
                    if bound.exceeded():
                        self.stop()
                        raise self._not_ready(
                            f"did not announce itself ({prefix}) in time ({bound.describe()})"
                        )
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:  # stdout closed: it exited (or is about to)
                    self._wait_exit(2.0)
                    self.stop()
                    raise self._exited("exited at start-up")
                self._stdout += chunk
        line, self._stdout = self._stdout.split(b"\n", 1)
        text = line.decode(errors="replace").strip()
        if not text.startswith(prefix):
            self.stop()
            raise self._not_ready(f"unexpected start-up line {text!r}")
        return text[len(prefix) :].strip()

    def wait_http(
        self, url: str, timeout: float = 30.0, *, verify: ssl.SSLContext | bool = True
    ) -> None:
        """Wait until ``GET url`` answers 200 (loopback URLs; ``verify``: the pinned CA of an
        ``https://`` one)."""
        import httpx  # only the callers that wait on HTTP pay for the import

        def answers() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url, timeout=1.0, verify=verify).status_code == 200
            return False

        self.wait_until(answers, timeout, what=f"answer at {url}")

    def wait_until(
        self, check: Callable[[], object], timeout: float, *, what: str, interval: float = 0.02
    ) -> None:
        """Poll ``check`` until it is true; :class:`ProcessExited` if the child exits first,
        :class:`ProcessNotReady` (child stopped) once ``timeout`` is spent (:class:`StartBound`:
        seconds of the child's CPU, or of no progress)."""
        bound = StartBound(self.proc.pid if self.proc is not None else 0, timeout)
        while True:
            if not self.alive():
                self.stop()  # reap it (and anything it left in its group)
                raise self._exited(f"exited before it would {what}")
            if check():
                return
            if bound.exceeded():
                self.stop()
                raise self._not_ready(f"did not {what} in time ({bound.describe()})")
            time.sleep(interval)

    def output(self, timeout: float = 60.0) -> str:
        """Wait for a ``capture`` child to finish; its stdout. :class:`ProcessExited` when it
        fails (exit status not 0), :class:`ProcessNotReady` (stopped) after ``timeout``.
        The output is not logged (it may hold a secret, e.g. a first admin token)."""
        proc = self.proc
        if proc is None:
            raise ProcessError(f"{self.name} is not running", name=self.name)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise self._not_ready("did not finish in time") from None
        if proc.returncode != 0:
            raise self._exited("failed")
        return (out or b"").decode(errors="replace")

    # --- logs ---

    def tail(self, chars: int = 600) -> str:
        """The end of its log."""
        try:
            return self.log.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def _exited(self, what: str) -> ProcessExited:
        tail = self.tail()
        return ProcessExited(
            f"{self.name} {what}: {tail or 'no output'}",
            name=self.name,
            log_tail=tail,
            returncode=self.returncode,
        )

    def _not_ready(self, what: str) -> ProcessNotReady:
        tail = self.tail()
        message = f"{self.name} {what}" + (f": {tail}" if tail else "")
        return ProcessNotReady(message, name=self.name, log_tail=tail)

    # --- stop ---

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the whole group (if the child runs)."""
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the group (a crash, a pulled plug) and reap."""
        self.signal(signal.SIGKILL)
        self._reap()

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM the group, SIGKILL after ``grace`` seconds, SIGKILL whatever the child left
        in its group, reap. Safe to call twice or on a child that never started."""
        if self.alive():
            self.signal(signal.SIGTERM)
            if not self._wait_exit(grace):
                self.signal(signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return  # never started, or reaped: its pid may be another process's by now
        self._wait_exit(5.0)  # a SIGKILL just sent takes a moment
        # the leader has exited but is not reaped yet: its pid still names our group only
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything the child left behind
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> ManagedProcess:
        return self if self.alive() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Supervisor:
    """Children started together, stopped together (newest first); logs in ``log_dir``."""

    def __init__(self, log_dir: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.env = dict(env) if env is not None else None
        self.children: list[ManagedProcess] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        capture: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> ManagedProcess:
        """Start ``argv`` as ``name`` (log ``log_dir/NAME.log``); it is stopped with the rest."""
        child = ManagedProcess(
            name,
            argv,
            env=env if env is not None else self.env,
            log=self.log_dir / f"{name}.log",
            capture=capture,
        )
        self.children.append(child)
        return child.start()

    def died(self) -> ProcessExited | None:
        """The first child that exited on its own (not stopped, not a one-shot command whose
        output was read), as the error to report; None if every child still runs. A failure
        further along (a refused connection) is best explained by this."""
        for child in self.children:
            if child.proc is not None and child.proc.returncode is None and not child.alive():
                return child._exited("exited")
        return None

    def stop(self) -> None:
        """Stop every child, newest first (each one even if another one's stop fails)."""
        children, self.children = self.children, []
        errors: list[OSError] = []
        for child in reversed(children):
            try:
                child.stop()
            except OSError as exc:  # stop the others, re-raise below
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def terminating_on_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into KeyboardInterrupt so ``finally`` blocks clean up.

    SIGINT is installed explicitly too: a parent that started us in the background leaves it
    ignored, and Python then installs no Ctrl-C handler of its own; ``kill -INT`` must still
    stop everything that was started.
    """

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig_, old in previous.items():
            signal.signal(sig_, old)
