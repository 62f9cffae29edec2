"""The process supervisor (safescan.procs): readiness, typed failures, logs, and a stop that
leaves nothing behind, attacked with children that misbehave in several ways."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from safescan.code import SafescanError
from safescan.procs import (
    ManagedProcess,
    ProcessError,
    ProcessExited,
    ProcessNotReady,
    Supervisor,
    free_port,
)


def child(
    tmp_path: Path, code: str, *, name: str = "child", capture: bool = True
) -> ManagedProcess:
    return ManagedProcess(
        name, [sys.executable, "-c", code], log=tmp_path / f"{name}.log", capture=capture
    )


def gone(pid: int) -> bool:
    """No such process (or only a zombie nobody reaps: it no longer runs)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.02)
    return False


def test_ready_lines_in_order_and_stdout_not_logged(tmp_path: Path) -> None:
    proc = child(
        tmp_path,
        "import sys,time\nprint('READY tcp://x', flush=True)\nprint('PAIR s3cret', flush=True)\n"
        "sys.stderr.write('to the log\\n'); sys.stderr.flush()\ntime.sleep(60)",
    ).start()
    try:
        assert proc.ready_line("READY") == "tcp://x"
        assert proc.ready_line("PAIR") == "s3cret"
        proc.wait_until(lambda: "to the log" in proc.tail(), 10, what="write its log")
        assert proc.alive()
    finally:
        proc.stop()
    assert not proc.alive()
    assert "s3cret" not in proc.log.read_text()  # what it announces on stdout is not logged


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import sys; sys.stderr.write('boom: no config\\n'); sys.exit(3)", ProcessExited),
        ("import os; os._exit(0)", ProcessExited),  # closes stdout without a word
        ("import time; time.sleep(60)", ProcessNotReady),  # silent forever
        ("import time; print('HELLO', flush=True); time.sleep(60)", ProcessNotReady),  # wrong line
        ("import time; print('READ', end='', flush=True); time.sleep(60)", ProcessNotReady),
    ],
)
def test_a_child_that_never_gets_ready_is_a_typed_error_and_is_stopped(
    tmp_path: Path, code: str, expected: type[ProcessError]
) -> None:
    proc = child(tmp_path, code).start()
    pid = proc.pid
    with pytest.raises(expected) as info:
        proc.ready_line("READY", timeout=2)
    assert isinstance(info.value, SafescanError)
    assert info.value.name == "child" and "child" in info.value.message
    assert wait_gone(pid), "the child was left running"
    if "boom" in code:
        assert "boom: no config" in info.value.log_tail
        assert isinstance(info.value, ProcessExited) and info.value.returncode == 3


def test_wait_until_reports_an_exit_before_readiness(tmp_path: Path) -> None:
    proc = child(tmp_path, "import sys; sys.stderr.write('no socket\\n'); sys.exit(1)").start()
    with pytest.raises(ProcessExited, match="no socket"):
        proc.wait_until(lambda: False, 10, what="create its socket")


def test_wait_until_times_out_and_stops_the_child(tmp_path: Path) -> None:
    proc = child(tmp_path, "import time; time.sleep(60)").start()
    pid = proc.pid
    with pytest.raises(ProcessNotReady, match="create its socket"):
        proc.wait_until(lambda: False, 0.5, what="create its socket")
    assert wait_gone(pid)


def test_wait_http_on_a_real_server(tmp_path: Path) -> None:
    port = free_port()
    proc = child(
        tmp_path,
        f"import http.server as h; h.test(h.SimpleHTTPRequestHandler, port={port}, "
        "bind='127.0.0.1')",
        capture=False,
    )
    proc.cwd = tmp_path
    with proc:
        proc.wait_http(f"http://127.0.0.1:{port}/", timeout=30)
        assert proc.alive()
    assert not proc.alive()


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    proc = child(
        tmp_path,
        "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('READY', flush=True)\ntime.sleep(60)",
    ).start()
    proc.ready_line("READY")
    proc.stop(grace=0.5)
    assert proc.returncode == -signal.SIGKILL


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    """A grandchild (a shell's child, a server's worker) does not outlive the stop, even one
    that ignores SIGTERM."""
    code = (
        "import subprocess,sys,time\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import signal,time;"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN);time.sleep(60)'])\n"
        "print('READY', g.pid, flush=True)\ntime.sleep(60)"
    )
    proc = child(tmp_path, code).start()
    grandchild = int(proc.ready_line("READY"))
    assert os.getpgid(grandchild) == proc.pid  # in the child's own group, not ours
    assert os.getpgid(proc.pid) != os.getpgid(0)
    proc.stop(grace=0.5)
    assert wait_gone(grandchild), "the grandchild outlived the stop"


# the signal this child gets when the thread that started it exits (prctl PR_GET_PDEATHSIG)
PDEATHSIG = (
    "import ctypes,time\nv = ctypes.c_int()\n"
    "ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0)\n"
    "print('READY', v.value, flush=True)\ntime.sleep(60)"
)


def test_a_child_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A parent killed outright (SIGKILL: no finally, no atexit runs; a pytest worker the CI
    killed, a demo killed with kill -9) takes its children along: they do not run on in their
    own sessions, holding ports and CPU."""
    code = (
        "import sys,time\nfrom pathlib import Path\nfrom safescan.procs import ManagedProcess\n"
        "c = ManagedProcess('orphan', [sys.executable, '-c', sys.argv[1]],"
        " log=Path(sys.argv[2]), capture=True).start()\n"
        "c.ready_line('READY')\nprint('CHILD', c.pid, flush=True)\ntime.sleep(60)"
    )
    argv = [sys.executable, "-c", code, PDEATHSIG, str(tmp_path / "orphan.log")]
    parent = ManagedProcess("parent", argv, log=tmp_path / "parent.log", capture=True).start()
    orphan = 0
    try:
        orphan = int(parent.ready_line("CHILD", timeout=60))
        assert os.getpgid(orphan) != os.getpgid(parent.pid)  # its own group: killpg misses it
        parent.kill()
        assert wait_gone(orphan), "the child outlived the process that started it"
    finally:
        parent.stop()
        if orphan and not gone(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_only_a_child_of_the_main_thread_is_tied_to_it(tmp_path: Path) -> None:
    """The kernel signals the child when the *thread* that forked it exits: a child started
    from a passing thread would be killed with that thread, so it is not tied at all."""
    main = child(tmp_path, PDEATHSIG, name="main").start()
    started: list[ManagedProcess] = []
    helper = threading.Thread(
        target=lambda: started.append(child(tmp_path, PDEATHSIG, name="helper").start())
    )
    helper.start()
    helper.join()
    try:
        assert int(main.ready_line("READY")) == signal.SIGKILL
        assert int(started[0].ready_line("READY")) == 0
        assert started[0].alive()
    finally:
        main.stop()
        for proc in started:
            proc.stop()


def test_kill_pulls_the_plug(tmp_path: Path) -> None:
    proc = child(tmp_path, "import time; print('READY', flush=True); time.sleep(60)").start()
    proc.ready_line("READY")
    proc.kill()
    assert proc.returncode == -signal.SIGKILL
    proc.stop()  # and stopping it again is harmless
    proc.kill()


def test_output_of_a_finished_child(tmp_path: Path) -> None:
    ok = child(tmp_path, "print('token-123')", name="init").start()
    assert ok.output(timeout=30).strip() == "token-123"
    assert "token-123" not in ok.tail()  # stdout may hold a secret: never logged
    bad = child(tmp_path, "import sys; sys.stderr.write('bad db\\n'); sys.exit(2)").start()
    with pytest.raises(ProcessExited, match="bad db"):
        bad.output(timeout=30)
    slow = child(tmp_path, "import time; time.sleep(60)", name="slow").start()
    pid = slow.pid
    with pytest.raises(ProcessNotReady):
        slow.output(timeout=0.5)
    assert wait_gone(pid)


def test_a_missing_program_is_a_typed_error(tmp_path: Path) -> None:
    proc = ManagedProcess("ghost", [str(tmp_path / "no-such-program")], log=tmp_path / "g.log")
    with pytest.raises(ProcessExited, match="cannot start ghost"):
        proc.start()
    assert not proc.alive()
    with pytest.raises(ProcessError):
        _ = proc.pid


def test_a_running_child_is_not_started_twice(tmp_path: Path) -> None:
    with child(tmp_path, "import time; time.sleep(60)") as proc, pytest.raises(ProcessError):
        proc.start()


def test_restart_after_stop(tmp_path: Path) -> None:
    proc = child(tmp_path, "import time; print('READY', flush=True); time.sleep(60)")
    for _ in range(2):
        proc.start()
        assert proc.ready_line("READY") == ""
        proc.stop()
        assert not proc.alive()


def test_supervisor_stops_everything_newest_first(tmp_path: Path) -> None:
    order = tmp_path / "order"
    code = (
        "import signal,sys,time\n"
        "def bye(*_):\n"
        "    open(sys.argv[1], 'a').write(sys.argv[2] + '\\n'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('READY', flush=True)\ntime.sleep(60)"
    )
    sup = Supervisor(tmp_path)
    with sup:
        for name in ("first", "second", "third"):
            sup.spawn(name, [sys.executable, "-c", code, str(order), name], capture=True)
            sup.children[-1].ready_line("READY")
        pids = [c.pid for c in sup.children]
        assert [c.log.name for c in sup.children] == ["first.log", "second.log", "third.log"]
    assert sup.children == []
    assert all(wait_gone(pid) for pid in pids)
    assert order.read_text().split() == ["third", "second", "first"]


def test_a_reaped_child_is_never_signalled_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once reaped, the child's pid (its group id) may belong to another process: stopping,
    killing or signalling it again must not send anything (a stale killpg could end an
    unrelated process group, e.g. the test runner's)."""
    proc = child(tmp_path, "import time; print('READY', flush=True); time.sleep(60)").start()
    proc.ready_line("READY")
    proc.stop()
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: sent.append((pgid, sig)))
    proc.stop()
    proc.kill()
    proc.signal(signal.SIGTERM)
    assert sent == []
    exited = child(tmp_path, "pass", name="quick").start()
    while exited.alive():
        time.sleep(0.02)
    assert exited.returncode is None  # exited, not reaped yet: its pid still names its group
    exited.stop()  # reaps it; the one group kill goes to a pid nobody else can hold yet
    assert exited.returncode == 0
    assert sent == [(exited.pid, signal.SIGKILL)]
    exited.stop()
    assert len(sent) == 1


def test_the_supervisor_names_the_child_that_died(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    with sup:
        init = sup.spawn("init", [sys.executable, "-c", "print('token')"], capture=True)
        assert init.output(timeout=30).strip() == "token"  # a one-shot command, done: not "died"
        sup.spawn("server", [sys.executable, "-c", "import time; time.sleep(60)"])
        crash = "import sys,time; time.sleep(0.2); sys.stderr.write('disk full\\n'); sys.exit(4)"
        victim = sup.spawn("worker", [sys.executable, "-c", crash])
        while victim.alive():
            time.sleep(0.02)
        died = sup.died()
        assert isinstance(died, ProcessExited)
        assert died.name == "worker" and "disk full" in died.message
        victim.stop()  # reaped: it is no longer "died", it was dealt with
        sup.children[1].stop()  # a child stopped on purpose has not died either
        assert sup.died() is None


#: a child that starts slowly but steadily, as on a loaded machine: 20 bursts of 0.05 s of CPU,
#: 0.2 s apart (at least 4 s of wall clock, about 1 s of CPU), then READY
SLOW_BUT_WORKING = """
import time
for _ in range(20):
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    time.sleep(0.2)
open(FLAG, "w").close()
print("READY slow", flush=True)
time.sleep(60)
"""


def test_a_child_still_working_is_waited_for_past_the_wall_clock(tmp_path: Path) -> None:
    """The start-up bound is the child's CPU (or its lack of progress), not the wall clock:
    a wall-clock bound of 3 s gave up on this child, which needs at least 4 s."""
    flag = tmp_path / "flag"
    code = f"FLAG = {str(flag)!r}\n" + SLOW_BUT_WORKING
    with child(tmp_path, code).start() as proc:
        assert proc.ready_line("READY", timeout=3) == "slow"
    flag.unlink()
    with child(tmp_path, code, name="polled").start() as proc:
        proc.wait_until(flag.exists, 3, what="make its flag file")


def test_a_child_spinning_or_stopped_is_given_up(tmp_path: Path) -> None:
    """Bounded all the same: 1 s of CPU spent without announcing itself, or no progress
    at all for 1 s (stopped: what a hung child looks like)."""
    spinning = child(tmp_path, "while True: pass", name="spin").start()
    with pytest.raises(ProcessNotReady, match="CPU"):
        spinning.ready_line("READY", timeout=1)
    stopped = child(tmp_path, "import time; time.sleep(60)", name="stopped").start()
    os.kill(stopped.pid, signal.SIGSTOP)
    with pytest.raises(ProcessNotReady, match="in time"):
        stopped.ready_line("READY", timeout=1)
    assert wait_gone(spinning.pid) and wait_gone(stopped.pid)
