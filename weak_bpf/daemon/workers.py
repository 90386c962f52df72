"""weak-bpf-progsd's workers and their scheduler.

Every call that computes something runs in a forked child: what it reads (BTF above all) is freed
with it, and the main loop, which only starts children and reads their pipes, answers everything
else meanwhile. A child writes JSON lines to its pipe: any number of {"event": ...} (progress,
handed to the job's `on_event` as they come), then its outcome, {"answer": str} or
{"error": kind, "message": str}.

The scheduler runs changes (`submit`: AddKernel, RemoveKernel, any job that must not overlap
another) one at a time, in the order they came, and reads (`read`: Audit, Explain) side by side,
at most `max_reads` children at a time; a read whose key equals a running one's waits for the
same child. A change's child ignores SIGTERM and SIGINT: a kernel's links are never left half
resolved because the daemon is stopped. No GLib here: service.py's `Loop` watches each child.

A long job that reports progress (Verify) is a change whose work calls `emit` and whose
`on_event` emits a signal. It is submitted with `finish=False`: it changes no link, so stopping the
daemon stops it (SIGTERM: its VM is killed with it) instead of waiting for its end.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import json
import logging
import os
import signal
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Optional, Protocol

from weak_bpf.daemon.answers import ERRORS, STOPPING, Busy, Failed, ServiceError

log = logging.getLogger("weak-bpf-progsd")

Emit = Callable[[Any], None]  # in the child: send an event to the main loop
Work = Callable[[Emit], str]  # in the child: the answer, or a ServiceError
Reply = Callable[[Optional[str], Optional[ServiceError]], None]  # (answer, None) or (None, error)

MAX_QUEUED = 32  # changes waiting behind the running one; more are refused with Busy
_READ_SIZE = 1 << 16
_READS_PER_WAKEUP = 16  # at most 1 MB read from one pipe before the loop serves others


# --- one child -----------------------------------------------------------------------------------


def _describe(status: int | None) -> str:
    if status is None:
        return "not reaped"
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class Child:
    """A forked worker: its pid, the read end of its pipe (non-blocking), what it sent."""

    def __init__(self, pid: int, fd: int, on_event: Callable[[Any], None] | None) -> None:
        self.pid = pid
        self.fd = fd
        self.on_event = on_event
        self.status: int | None = None  # its wait status, once reaped (service.py's Loop sets it)
        self.closed = False  # its pipe is at its end and closed
        self.outcome: Any = None
        self._buffer = bytearray()

    @property
    def done(self) -> bool:
        return self.closed and self.status is not None

    def feed(self) -> bool:
        """Read what the child wrote so far; False once the pipe is at its end (then closed)."""
        for _ in range(_READS_PER_WAKEUP):
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return True
            except OSError as e:
                log.warning("reading worker %d: %s", self.pid, e)
                data = b""
            if not data:
                os.close(self.fd)
                self.closed = True
                return False
            start = len(self._buffer)
            self._buffer += data
            end = self._buffer.find(b"\n", start)
            while end >= 0:
                self._line(bytes(self._buffer[:end]))
                del self._buffer[: end + 1]
                end = self._buffer.find(b"\n")
        return True

    def _line(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.warning("worker %d sent a line that is not JSON", self.pid)
            return
        if isinstance(message, dict) and "event" in message:
            if self.on_event is not None:
                try:
                    self.on_event(message["event"])
                except Exception:  # a bug in a listener must not lose the answer
                    log.exception("an event of worker %d", self.pid)
        else:
            self.outcome = message

    def result(self) -> str:
        """The answer it sent; raises the ServiceError it sent, or Failed if it sent neither."""
        outcome = self.outcome
        if isinstance(outcome, dict) and isinstance(outcome.get("answer"), str):
            return str(outcome["answer"])
        if isinstance(outcome, dict) and "error" in outcome:
            raise ERRORS.get(str(outcome["error"]), Failed)(str(outcome.get("message")))
        raise Failed(f"the worker stopped before it answered ({_describe(self.status)})")


def _stop_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds: files being written are removed (writer.py)


def _run_child(work: Work, out_fd: int, finish: bool) -> None:
    """In the child: run `work`, send its outcome, leave by os._exit (never back to GLib)."""
    status = 1
    try:
        gc.freeze()  # the parent's objects (GLib's among them) are never finalized here
        for signum in (signal.SIGTERM, signal.SIGINT):  # the parent's handlers are GLib's
            signal.signal(signum, signal.SIG_IGN if finish else _stop_on_signal)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        with os.fdopen(out_fd, "w", encoding="utf-8") as out:

            def emit(event: Any) -> None:
                out.write(json.dumps({"event": event}) + "\n")
                out.flush()

            try:
                outcome: dict[str, Any] = {"answer": work(emit)}
            except ServiceError as e:
                outcome = {"error": e.kind, "message": str(e)}
            out.write(json.dumps(outcome) + "\n")
        status = 0
    except SystemExit as e:  # SIGTERM or SIGINT in a read
        status = e.code if isinstance(e.code, int) else 1
    except BaseException:  # a broken pipe, a bug: the parent says the worker died
        log.debug("worker %d", os.getpid(), exc_info=True)
    finally:
        os._exit(status)


def fork_worker(
    work: Work, *, finish: bool, close: Sequence[int] = (), on_event: Emit | None = None
) -> Child:
    """Start `work` in a child. `finish`: it ignores SIGTERM and SIGINT (a change runs to its
    end). `close`: the parent's descriptors the child must not keep open (the bus connection,
    other workers' pipes). Raises OSError (no process or pipe left)."""
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:
        os.close(read_end)
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        _run_child(work, write_end, finish)
    os.close(write_end)
    os.set_blocking(read_end, False)
    return Child(pid, read_end, on_event)


# --- the scheduler -------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class Job:
    """Work for one child, and whom to tell: every reply gets (answer, None) or (None, error).
    `key`: reads with equal keys share a child. `on_start`: a change leaves the queue.
    `finish`: a change runs to its end even when the daemon stops."""

    method: str
    work: Work
    replies: list[Reply]
    key: Hashable = None
    on_event: Emit | None = None
    on_start: Callable[[], None] | None = None
    finish: bool = True
    child: Child | None = None


class Loop(Protocol):
    def watch(self, child: Child, done: Callable[[], None]) -> None:
        """Feed `child` whatever it writes; set its status when it exits; call `done` once
        both happened."""


class Scheduler:
    def __init__(
        self,
        loop: Loop,
        *,
        max_reads: int,
        max_queued: int = MAX_QUEUED,
        inherited: Callable[[], Sequence[int]] = tuple,
    ) -> None:
        self.loop = loop
        self.max_reads = max_reads
        self.max_queued = max_queued
        self.inherited = inherited  # descriptors of the parent a child closes
        self.reads: dict[Hashable, Job] = {}
        self.queue: collections.deque[Job] = collections.deque()
        self.change: Job | None = None
        self.when_idle: Callable[[], None] | None = None  # called each time the last job ends

    @property
    def idle(self) -> bool:
        return not self.reads and self.change is None and not self.queue

    def read(self, job: Job) -> None:
        """Run a read now, or join the running one with the same key. Raises Busy."""
        key = job.key if job.key is not None else job
        running = self.reads.get(key)
        if running is not None:
            running.replies.extend(job.replies)
            return
        if len(self.reads) >= self.max_reads:
            raise Busy(
                f"{self.max_reads} Audit and Explain calls are being answered (daemon_max_reads "
                "in weak-bpf-progs.conf): call again when one is done"
            )
        self.reads[key] = job
        self._start(job, finish=False)

    def submit(self, job: Job) -> int:
        """Queue a change; returns how many run or wait before it. Raises Busy."""
        if len(self.queue) >= self.max_queued:
            raise Busy(f"{len(self.queue)} changes are waiting: call again when one is done")
        ahead = len(self.queue) + (self.change is not None)
        self.queue.append(job)
        self._next_change()
        return ahead

    def stop(self) -> None:
        """Refuse the queued changes, stop the reads; a running change goes on to its end
        unless it was submitted with `finish=False`."""
        while self.queue:
            job = self.queue.popleft()
            self._reply(job, None, Failed(STOPPING))
        stoppable = [] if self.change is None or self.change.finish else [self.change]
        for job in [*self.reads.values(), *stoppable]:
            if job.child is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(job.child.pid, signal.SIGTERM)

    def _next_change(self) -> None:
        while self.change is None and self.queue:
            job = self.queue.popleft()
            self.change = job
            if job.on_start is not None:
                job.on_start()
            self._start(job, finish=job.finish)

    def _fds(self) -> list[int]:
        jobs = [*self.reads.values(), *([self.change] if self.change else [])]
        pipes = [j.child.fd for j in jobs if j.child is not None and not j.child.closed]
        return [*self.inherited(), *pipes]

    def _start(self, job: Job, *, finish: bool) -> None:
        try:
            close = self._fds()
            job.child = fork_worker(job.work, finish=finish, close=close, on_event=job.on_event)
        except OSError as e:
            log.error("%s: cannot start a worker: %s", job.method, e)
            self._forget(job)
            self._reply(job, None, Failed(f"cannot start a worker: {e.strerror}"))
            self._next_change()
            return
        log.debug("%s: worker %d", job.method, job.child.pid)
        self.loop.watch(job.child, lambda: self._finished(job))

    def _forget(self, job: Job) -> None:
        if job is self.change:
            self.change = None
        key = job.key if job.key is not None else job
        if self.reads.get(key) is job:
            del self.reads[key]

    def _finished(self, job: Job) -> None:
        assert job.child is not None
        self._forget(job)
        try:
            answer, error = job.child.result(), None
        except ServiceError as e:
            answer, error = None, e
        self._reply(job, answer, error)
        self._next_change()
        if self.idle and self.when_idle is not None:
            self.when_idle()

    @staticmethod
    def _reply(job: Job, answer: str | None, error: ServiceError | None) -> None:
        for reply in job.replies:
            try:
                reply(answer, error)
            except Exception:  # a bug in one reply must not keep the others waiting
                log.exception("%s: replying", job.method)
