"""weak-bpf-progsd's workers and scheduler (weak_bpf/daemon/workers.py) without a bus: real
forked children, watched by a small poll loop that does what service.py's GLib loop does."""

from __future__ import annotations

import json
import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from weak_bpf.daemon.answers import Busy, Failed, InvalidArgument, ServiceError
from weak_bpf.daemon.workers import Child, Job, Scheduler, fork_worker


class PollLoop:
    """workers.Loop: read each child's pipe as it writes, reap it, then call `done`."""

    def __init__(self) -> None:
        self.watched: list[tuple[Child, Callable[[], None]]] = []

    def watch(self, child: Child, done: Callable[[], None]) -> None:
        self.watched.append((child, done))

    def run(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.watched:
            assert time.monotonic() < deadline, "the workers did not finish"
            for child, done in list(self.watched):
                if not child.closed and select.select([child.fd], [], [], 0.005)[0]:
                    child.feed()
                if child.closed and child.status is None:
                    pid, status = os.waitpid(child.pid, os.WNOHANG)
                    if pid:
                        child.status = status
                if child.done:
                    self.watched.remove((child, done))
                    done()


class Replies:
    def __init__(self) -> None:
        self.got: list[tuple[str, str | None, ServiceError | None]] = []

    def __call__(self, tag: str) -> Callable[[str | None, ServiceError | None], None]:
        return lambda answer, error: self.got.append((tag, answer, error))


def _log_run(log: Path, tag: str, seconds: float) -> Callable[[Any], str]:
    """Work that writes when it starts and ends (O_APPEND: whole lines), taking `seconds`."""

    def work(_emit: Any) -> str:
        with open(log, "a") as out:
            out.write(f"start {tag} {time.monotonic()}\n")
            out.flush()
            time.sleep(seconds)  # a stand-in for a resolution, in the test only
            out.write(f"end {tag} {time.monotonic()}\n")
        return tag

    return work


def _append(to: list[str], tag: str) -> Callable[[], None]:
    return lambda: to.append(tag)


def test_changes_run_one_at_a_time_in_order(tmp_path: Path) -> None:
    loop, replies = PollLoop(), Replies()
    scheduler = Scheduler(loop, max_reads=4)
    log = tmp_path / "log"
    started: list[str] = []
    for i, tag in enumerate(("first", "second", "third")):
        job = Job("Change", _log_run(log, tag, 0.2), [replies(tag)], on_start=_append(started, tag))
        assert scheduler.submit(job) == i  # how many run or wait before it
    assert started == ["first"] and len(scheduler.queue) == 2
    loop.run()
    assert [g[0] for g in replies.got] == ["first", "second", "third"]
    assert [g[1] for g in replies.got] == ["first", "second", "third"]
    assert started == ["first", "second", "third"]
    events = [line.split() for line in log.read_text().splitlines()]
    assert [e[:2] for e in events] == [
        ["start", "first"], ["end", "first"],
        ["start", "second"], ["end", "second"],
        ["start", "third"], ["end", "third"],
    ]  # fmt: skip
    assert scheduler.idle


def test_changes_waiting_are_bounded(tmp_path: Path) -> None:
    loop, replies = PollLoop(), Replies()
    scheduler = Scheduler(loop, max_reads=1, max_queued=2)
    log = tmp_path / "log"
    for tag in ("running", "waits-1", "waits-2"):
        scheduler.submit(Job("Change", _log_run(log, tag, 0.2), [replies(tag)]))
    with pytest.raises(Busy) as busy:
        scheduler.submit(Job("Change", _log_run(log, "refused", 0), [replies("refused")]))
    assert str(busy.value) == "2 changes are waiting: call again when one is done"
    assert busy.value.dbus_name == "org.weakbpf.Manager1.Error.Busy"
    loop.run()
    assert [g[:2] for g in replies.got] == [(t, t) for t in ("running", "waits-1", "waits-2")]
    assert "refused" not in log.read_text()
    assert scheduler.submit(Job("Change", _log_run(log, "later", 0), [replies("later")])) == 0
    loop.run()
    assert replies.got[-1][:2] == ("later", "later")


def test_reads_run_side_by_side_up_to_the_bound(tmp_path: Path) -> None:
    loop, replies = PollLoop(), Replies()
    scheduler = Scheduler(loop, max_reads=2)
    log = tmp_path / "log"
    scheduler.read(Job("Read", _log_run(log, "a", 0.5), [replies("a")], key="a"))
    scheduler.read(Job("Read", _log_run(log, "b", 0.5), [replies("b")], key="b"))
    scheduler.read(Job("Read", _log_run(log, "a-again", 0), [replies("a2")], key="a"))  # joins
    with pytest.raises(Busy) as busy:
        scheduler.read(Job("Read", _log_run(log, "c", 0), [replies("c")], key="c"))
    assert "2 Audit and Explain calls are being answered (daemon_max_reads" in str(busy.value)
    assert busy.value.dbus_name == "org.weakbpf.Manager1.Error.Busy"
    # a change does not count against the reads
    scheduler.submit(Job("Change", _log_run(log, "change", 0), [replies("change")]))
    loop.run()
    assert sorted((tag, answer) for tag, answer, _ in replies.got) == [
        ("a", "a"), ("a2", "a"), ("b", "b"), ("change", "change")
    ]  # fmt: skip
    starts = {line.split()[1]: float(line.split()[2]) for line in log.read_text().splitlines()
              if line.startswith("start")}  # fmt: skip
    ends = {line.split()[1]: float(line.split()[2]) for line in log.read_text().splitlines()
            if line.startswith("end")}  # fmt: skip
    assert "a-again" not in starts and "c" not in starts
    assert starts["b"] < ends["a"] and starts["a"] < ends["b"], "a and b overlapped"
    scheduler.read(Job("Read", _log_run(log, "c", 0), [replies("c")], key="c"))  # room again
    loop.run()
    assert replies.got[-1][:2] == ("c", "c")


def test_events_then_the_answer() -> None:
    loop, replies = PollLoop(), Replies()
    events: list[Any] = []

    def work(emit: Any) -> str:
        for i in range(3):
            emit({"done": i, "of": 3})
        return "x" * (3 << 20)  # far more than a pipe holds: the loop reads as it comes

    scheduler = Scheduler(loop, max_reads=1)
    scheduler.submit(Job("Verify", work, [replies("v")], on_event=events.append))
    loop.run()
    assert events == [{"done": 0, "of": 3}, {"done": 1, "of": 3}, {"done": 2, "of": 3}]
    ((_tag, answer, error),) = replies.got
    assert error is None and answer == "x" * (3 << 20)


def test_errors_and_deaths_are_answers() -> None:
    loop, replies = PollLoop(), Replies()
    scheduler = Scheduler(loop, max_reads=4)

    def refuse(_emit: Any) -> str:
        raise InvalidArgument("9.9.9: not an installed kernel")

    def die(_emit: Any) -> str:
        os.kill(os.getpid(), signal.SIGKILL)
        return "never"

    scheduler.read(Job("Refuse", refuse, [replies("refuse")]))
    scheduler.read(Job("Die", die, [replies("die")]))
    scheduler.submit(Job("Exit", lambda _emit: os._exit(3), [replies("exit")]))
    scheduler.submit(Job("After", lambda _emit: "still serving", [replies("after")]))
    loop.run()
    got = {tag: (answer, error) for tag, answer, error in replies.got}
    assert isinstance(got["refuse"][1], InvalidArgument)
    assert str(got["refuse"][1]) == "9.9.9: not an installed kernel"
    assert isinstance(got["die"][1], Failed)
    assert str(got["die"][1]) == "the worker stopped before it answered (signal 9)"
    assert str(got["exit"][1]) == "the worker stopped before it answered (exit status 3)"
    assert got["after"] == ("still serving", None)


def test_stop_keeps_the_running_change_and_refuses_the_rest(tmp_path: Path) -> None:
    """On SIGTERM (systemd signals every process of the unit) a change's worker goes on to its
    end; a read's worker stops; the queued changes are refused without being run."""
    loop, replies = PollLoop(), Replies()
    scheduler = Scheduler(loop, max_reads=4)
    log = tmp_path / "log"
    scheduler.submit(Job("Change", _log_run(log, "change", 1.0), [replies("change")]))
    scheduler.submit(Job("Queued", _log_run(log, "queued", 0), [replies("queued")]))
    scheduler.read(Job("Read", _log_run(log, "read", 5.0), [replies("read")]))
    deadline = time.monotonic() + 10
    while log.read_text().count("start") < 2 if log.exists() else True:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert scheduler.change is not None and scheduler.change.child is not None
    os.kill(scheduler.change.child.pid, signal.SIGTERM)  # as systemd does
    scheduler.stop()
    start = time.monotonic()
    loop.run()
    assert time.monotonic() - start < 4, "the read's worker was stopped"
    got = {tag: (answer, error) for tag, answer, error in replies.got}
    assert got["change"] == ("change", None)
    assert str(got["queued"][1]) == "weak-bpf-progsd is stopping: nothing was done; call again"
    assert str(got["read"][1]) == "the worker stopped before it answered (exit status 143)"
    assert "queued" not in log.read_text() and "end read" not in log.read_text()


def test_stop_stops_a_change_that_need_not_finish(tmp_path: Path) -> None:
    """A change submitted with finish=False (Verify: it changes no link) is stopped with the
    reads, and the daemon does not wait for its end."""
    loop, replies = PollLoop(), Replies()
    scheduler = Scheduler(loop, max_reads=4)
    log = tmp_path / "log"
    long = Job("Verify", _log_run(log, "verify", 20.0), [replies("verify")], finish=False)
    scheduler.submit(long)
    deadline = time.monotonic() + 10
    while not (log.exists() and "start verify" in log.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    scheduler.stop()
    start = time.monotonic()
    loop.run()
    assert time.monotonic() - start < 4, "the change was waited for"
    ((tag, answer, error),) = replies.got
    assert tag == "verify" and answer is None
    assert str(error) == "the worker stopped before it answered (exit status 143)"
    assert "end verify" not in log.read_text()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_child_closes_what_it_is_told() -> None:
    """The bus connection's socket is closed in a worker (the bus then sees the daemon leave
    when it does, whatever its workers do)."""
    keep_r, keep_w = os.pipe()
    child = fork_worker(
        lambda _emit: json.dumps([_is_open(keep_r), _is_open(keep_w)]), finish=False, close=[keep_w]
    )
    loop = PollLoop()
    done: list[bool] = []
    loop.watch(child, lambda: done.append(True))
    loop.run()
    assert json.loads(child.result()) == [True, False]
    assert _is_open(keep_w), "closed in the child only"
    os.close(keep_r)
    os.close(keep_w)
    assert done == [True]
