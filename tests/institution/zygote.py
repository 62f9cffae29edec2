"""Institution processes forked from a pre-imported parent (a "zygote"), for the tests.

Every ``python -m safescan.institution ...`` the tests start (``serve``, ``init``, ``audit``,
``backup``, ``restore``...) spends ~1.5 s of CPU importing FastAPI, SQLAlchemy, uvicorn and
the institution's modules before it does anything; the suite starts hundreds of them. Here
one process per pytest worker imports those modules once, then forks a child for each
command: the child is still a process of its own (own memory, own pid, signals, exit status,
SIGKILL kills it and nothing else), running ``safescan.institution.__main__`` as ``python -m``
does (:func:`runpy.run_module`) with the test's arguments, environment, working directory
and its stdin/stdout/stderr; only the imports are already done. Killing a command by pid,
reading its CPU from /proc, its exit status and output: all as with a subprocess.

A command is forked only from a zygote whose environment is exactly the command's
(:data:`VOLATILE` aside: ``PYTEST_CURRENT_TEST`` and variables read only when a command runs)
and whose resource limits are the worker's: a variable a module
reads at import has the value the command was given. A worker
keeps at most :data:`KEEP` zygotes, least recently used first out: one for the first
environment it runs a command in, one more for an environment that missed twice; any other
command gets a plain subprocess, as before. Never a zygote under ``LD_*``/``FAKETIME*``
variables (faketime acts when a process starts), nor where a test wraps ``subprocess.Popen``
(tests/institution/harness.py checks that). ``SAFESCAN_TEST_NO_ZYGOTE=1`` turns it off.

Protocol (one Unix-socket connection per command): the test sends one JSON line (argv, env,
cwd) with its three descriptors (SCM_RIGHTS); the zygote forks a runner for the connection,
which forks the command and answers ``{"pid"}``, then, when the command has exited (seen
with ``WNOWAIT``: the command stays a zombie, so its pid cannot be reused while the test may
still signal it) ``{"status"}``; after the test's ``ack`` the runner reaps it and answers its
``{"cpu"}`` (user + system seconds, from ``wait4``), which the CPU report
(tests/conftest.py) adds to the test's own, since the command is not the worker's child.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

#: what the zygote imports before it forks (what ``serve`` and the other commands import)
PRELOAD = (
    "safescan.code.output",
    "safescan.institution.cli",
    "safescan.institution.server",
    "safescan.institution.service",
    "safescan.institution.db",
    "safescan.institution.backup",
    "safescan.institution.audit",
    "safescan.institution.keystore",
    "safescan.institution.rollback",
    "safescan.institution.proxies",
    "safescan.web.netguard",
    "uvicorn",
)
#: the variable pytest changes for every test phase, and the ones a command reads only when it
#: runs, never at import (the institution's and the POS's passphrases, the pinned CA file:
#: ``grep -rn 'environ' src`` finds no module-level read of them; the module-level reads are
#: institution/db.py's SAFESCAN_DB_FAILOVER_WAIT and SAFESCAN_PAY_THREADS, which stay in the key):
#: a zygote's key leaves them out, and the command gets the test's values (each
#: :class:`safescan.demo.Stack` has its own passphrase and CA)
VOLATILE = (
    "PYTEST_CURRENT_TEST",
    "SAFESCAN_INSTITUTION_PASSPHRASE",
    "SAFESCAN_POS_PASSPHRASE",
    "SAFESCAN_TLS_CA",
    # the PKCS#11 token's selection (tests/institution/softhsm.py, a token directory per test):
    # read by safescan.institution.hsm when a command opens its key store, never at import
    # (`grep -n environ src/safescan/institution/hsm.py`: inside functions only); SoftHSM2
    # reads SOFTHSM2_CONF when the library is initialised, which only the command does (the
    # zygote loads no PKCS#11 module: the command's own dlopen, after the fork)
    "SOFTHSM2_CONF",
    "SAFESCAN_KEY_BACKEND",
    "SAFESCAN_HSM_MODULE",
    "SAFESCAN_HSM_TOKEN",
    "SAFESCAN_HSM_PIN_FILE",
    "SAFESCAN_HSM_PIN",
)
ROOT = Path(__file__).resolve().parents[2]

#: CPU seconds (user + system) of the zygote's commands that have been reaped so far in this
#: process: tests/conftest.py's CPU report adds what a test's commands spent
reaped_cpu = 0.0


def _comparable(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in VOLATILE}


# ----------------------------------------------------------------------------- the zygote


def _run_command(request: dict[str, Any], fds: list[int]) -> int:
    """In the forked command process: become ``python -m safescan.institution ARGV``."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    if request.get("nofile") is not None:  # what a subprocess's preexec_fn would set
        limit = int(request["nofile"])
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    import runpy

    sys.argv = [sys.argv[0], *request["argv"]]
    code, interrupted = 0, False
    try:  # what `python -m safescan.institution` runs (argv[0] and __main__ set by runpy)
        runpy.run_module("safescan.institution", run_name="__main__", alter_sys=True)
    except KeyboardInterrupt:  # the interpreter prints it, then dies of SIGINT
        import traceback

        traceback.print_exc()
        interrupted = True
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - as the interpreter does: traceback, status 1
        import traceback

        traceback.print_exc()
        code = 1
    # what the interpreter does at exit: wait for non-daemon threads, atexit, flush
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


def _send(conn: socket.socket, doc: dict[str, Any]) -> None:
    conn.sendall((json.dumps(doc) + "\n").encode())


def _kill_if_the_test_goes(conn: socket.socket, pid: int) -> None:
    """Return when command ``pid`` exits; SIGKILL it first if the test's end of ``conn`` closes
    before (its pytest worker was killed: no teardown stops the server it started, which ran
    on holding its port). The test sends nothing before it has read the exit status."""
    try:
        exited = os.pidfd_open(pid)
    except OSError:  # no pidfd (Linux < 5.3): the command is only waited for
        return
    try:
        ready, _, _ = select.select([conn, exited], [], [])
        # end of file on conn (not data: the test sends none before the status): it has gone
        if exited not in ready and not conn.recv(16, socket.MSG_PEEK):
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(exited)


def _runner(conn: socket.socket) -> None:
    """In the forked runner: start one command, report its pid, status and CPU."""
    msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    buf = msg
    while not buf.endswith(b"\n"):
        more = conn.recv(1 << 20)
        if not more:
            return
        buf += more
    request = json.loads(buf)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            conn.close()
            code = _run_command(request, fds)
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    _send(conn, {"pid": pid})
    _kill_if_the_test_goes(conn, pid)
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    assert info is not None
    # killed or dumped: -signal, as subprocess reports it
    status = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
    _send(conn, {"status": status})
    conn.recv(16)  # the test's ack (or its end): now the pid may be reused
    _pid, _st, usage = os.wait4(pid, 0)
    _send(conn, {"cpu": usage.ru_utime + usage.ru_stime})


def serve_zygote(path: str) -> None:
    """The zygote's main loop: import, then fork a runner per connection until stdin closes
    (the pytest worker that started it has gone)."""
    import importlib

    # numpy (safescan.code.qr: imported only where a QR image is drawn, not by these modules)
    # loads OpenBLAS, which starts a thread per core at load: should a preloaded module import
    # it again, one thread only, so that there is no thread to fork across (the commands do no
    # linear algebra; their own environment is set in the child)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    for name in PRELOAD:
        importlib.import_module(name)
    tasks = len(os.listdir("/proc/self/task"))
    if threading.active_count() != 1 or tasks != 1:
        sys.exit(f"zygote: {tasks} threads after the imports; forking is not safe")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # runners are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        ready, _, _ = select.select([listener, sys.stdin], [], [])
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 1):
            listener.close()
            os.unlink(path)
            os.rmdir(os.path.dirname(path))
            return
        if listener in ready:
            conn, _ = listener.accept()
            if os.fork() == 0:
                code = 0
                try:
                    listener.close()
                    _runner(conn)
                except BaseException:  # noqa: BLE001 - the runner reports nothing more
                    code = 1
                finally:
                    os._exit(code)
            conn.close()


# ----------------------------------------------------------------------------- the tests' side


def _limits() -> list[tuple[int, int]]:
    """This process's resource limits (what a subprocess would inherit)."""
    names = sorted(n for n in dir(resource) if n.startswith("RLIMIT_"))
    return [resource.getrlimit(getattr(resource, n)) for n in names]


def _own_cpu(pid: int) -> float:
    """User + system seconds process ``pid`` has used (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Zygote:
    def __init__(self, env: dict[str, str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="safescan-zygote-")
        self.path = os.path.join(self.dir, "sock")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.institution.zygote", self.path],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        self.ok = self.proc.stdout.readline() == b"ready\n"
        global reaped_cpu
        reaped_cpu += _own_cpu(self.proc.pid)  # its imports, charged to the test that started it

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the zygote returns at end of input
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)  # the zygote removes it; if it was killed


#: the zygotes of this process by environment and limits, least recently used first: at most
#: :data:`KEEP`; a new one is made for the first environment, or for one missed twice
_zygotes: dict[tuple[Any, ...], _Zygote] = {}
_misses: dict[tuple[Any, ...], int] = {}
_lock = threading.Lock()
KEEP = 2
#: variables that act when a process starts (the dynamic loader's, faketime's): a fork of a
#: zygote started under them would share what they did at its start, so never a zygote for them
UNFIT_PREFIXES = ("LD_", "FAKETIME", "DYLD_")


def _close_all() -> None:
    for z in list(_zygotes.values()):
        z.close()


def _get(env: dict[str, str]) -> _Zygote | None:
    if os.environ.get("SAFESCAN_TEST_NO_ZYGOTE") == "1" or not os.path.isdir("/proc/self/task"):
        return None
    if any(k.startswith(UNFIT_PREFIXES) for k in env):
        return None
    key = (tuple(sorted(_comparable(env).items())), tuple(_limits()))
    with _lock:
        z = _zygotes.pop(key, None)
        if z is not None:
            _zygotes[key] = z  # now the most recently used
            # one that did not start or has died: subprocesses for this environment
            return z if z.ok and z.proc.poll() is None else None
        _misses[key] = _misses.get(key, 0) + 1
        if _zygotes and _misses[key] < 2:
            return None  # one command in another environment: a subprocess
        if not _misses.get((), 0):
            import atexit

            atexit.register(_close_all)
            _misses[()] = 1
        while len(_zygotes) >= KEEP:
            _zygotes.pop(next(iter(_zygotes))).close()
        z = _Zygote(env)
        _zygotes[key] = z
        return z if z.ok else None


def _umask() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return 0o022


class ForkedProcess:
    """The part of :class:`subprocess.Popen` the tests use, for a command the zygote forked."""

    def __init__(self, conn: socket.socket, pid: int, args: list[str]) -> None:
        self.conn, self.pid, self.args = conn, pid, args
        self.returncode: int | None = None
        self._buf = b""

    def _line(self, timeout: float | None) -> dict[str, Any] | None:
        while b"\n" not in self._buf:
            ready, _, _ = select.select([self.conn], [], [], timeout)
            if not ready:
                return None
            more = self.conn.recv(4096)
            if not more:
                raise RuntimeError(f"the zygote's runner of {self.args} went away")
            self._buf += more
        line, _, self._buf = self._buf.partition(b"\n")
        return dict(json.loads(line))

    def _collect(self, timeout: float | None) -> int | None:
        global reaped_cpu
        if self.returncode is not None:
            return self.returncode
        doc = self._line(timeout)
        if doc is None:
            return None
        status = int(doc["status"])
        self.conn.sendall(b"ack")
        cpu = self._line(None)
        self.conn.close()
        reaped_cpu += float(cpu["cpu"]) if cpu else 0.0
        self.returncode = status
        return status

    def poll(self) -> int | None:
        return self._collect(0)

    def wait(self, timeout: float | None = None) -> int:
        status = self._collect(timeout)
        if status is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return status

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # alive or a zombie not yet reaped: the pid is still its own
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start(
    argv: list[str],
    env: dict[str, str],
    stdout: IO[Any] | int,
    stderr: IO[Any] | int,
    *,
    nofile: int | None = None,
) -> ForkedProcess | None:
    """``python -m safescan.institution ARGV`` forked from the zygote, or None where the zygote
    does not fit (the caller then starts a subprocess). ``stdout``/``stderr``: open files.
    ``nofile``: the command's RLIMIT_NOFILE (soft and hard), set in the forked process before
    it runs the command, as a subprocess's ``preexec_fn`` sets it before ``exec``."""
    z = _get(env)
    if z is None:
        return None
    out = stdout if isinstance(stdout, int) else stdout.fileno()
    err = stderr if isinstance(stderr, int) else stderr.fileno()
    request = {"argv": argv, "env": env, "cwd": os.getcwd(), "umask": _umask(), "nofile": nofile}
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:  # a zygote that cannot be reached: a subprocess instead (nothing was started)
        conn.connect(z.path)
    except OSError:
        conn.close()
        return None
    with open(os.devnull, "rb") as null:
        data = (json.dumps(request) + "\n").encode()
        socket.send_fds(conn, [data], [null.fileno(), out, err])
    proc = ForkedProcess(conn, 0, argv)
    first = proc._line(None)
    assert first is not None, "the zygote's runner answered nothing"
    proc.pid = int(first["pid"])
    return proc


if __name__ == "__main__":
    serve_zygote(sys.argv[1])
