"""Worker processes: how many, and a pool of them that ends safely."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from weak_bpf.errors import WeakBpfError

T = TypeVar("T")


def default_jobs() -> int:
    """The processors this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def usable_jobs(jobs: int | None = None) -> int:
    """`jobs` processes (None: one per processor), or 1 where no worker can start: pools need
    POSIX semaphores (/dev/shm), which the chroot of an installer or an rpm scriptlet may lack."""
    wanted = default_jobs() if jobs is None else jobs
    return wanted if wanted <= 1 or _workers_start() else 1


@functools.cache
def _workers_start() -> bool:
    try:
        multiprocessing.get_context("fork").Lock()
    except (OSError, ImportError):
        return False
    return True


@contextlib.contextmanager
def pooled(context: Any, processes: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of `processes` workers, ended by letting each finish, not by SIGTERM: a daemon's
    change ignores SIGTERM, and so do the workers it forks. A worker that dies (the OOM killer)
    makes the pool's results raise BrokenProcessPool, where multiprocessing.Pool would wait for
    ever. On an error, the workers are killed; they also end when this process is killed."""
    pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_worker_starts)
    try:
        yield pool
    except BaseException:
        for child in context.active_children():  # the pool's: callers start no others meanwhile
            child.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def in_background(context: Any, function: Callable[..., T], *args: Any) -> Callable[[], T]:
    """`function(*args)` started now in a worker process; the function returned waits for its
    result (or its error) and ends the worker. Call it once. A worker that dies (killed by the
    OOM killer, say) raises WorkerDied there, where a pool would wait for ever."""
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_run_and_send, args=(writer, function, args), daemon=True)
    process.start()
    writer.close()

    def result() -> T:
        try:
            try:
                ok, value = reader.recv()  # EOF when the worker ends without sending
            except EOFError:
                raise WorkerDied(
                    f"a worker process ended without a result: {_how(process)}"
                ) from None
        except BaseException:
            process.kill()
            raise
        finally:
            process.join()
            reader.close()
        if not ok:
            raise value
        return value

    return result


class WorkerDied(WeakBpfError):
    """A worker process ended without handing back its result."""


def in_worker() -> bool:
    """Whether this process is a worker started here; it starts no workers of its own (a kernel
    read, a module pass in a worker stay in it: two side by side went over 300 MB)."""
    return _IN_WORKER


_IN_WORKER = False


def _worker_starts() -> None:
    """Mark this forked process as a worker, and have it killed when its parent dies. A worker
    left behind would hold the run lock the parent inherited to it (flock belongs to the open
    file, which a fork shares), and wait for work for ever; with the parent killed mid-run, the
    next run would then wait for that lock until its timeout."""
    global _IN_WORKER  # noqa: PLW0603  (this process's, set once as it starts)
    _IN_WORKER = True
    known = multiprocessing.parent_process()  # its pid was taken before the fork
    parent = known.pid if known is not None else os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the worker may outlive a killed parent
        return
    if os.getppid() != parent:  # the parent died before prctl() took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _run_and_send(writer: Any, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    _worker_starts()
    try:
        answer = (True, function(*args))
    except BaseException as e:  # handed back, raised in the parent
        answer = (False, e)
    writer.send(answer)
    writer.close()


def _how(process: Any) -> str:
    process.join()
    code = process.exitcode
    return f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
