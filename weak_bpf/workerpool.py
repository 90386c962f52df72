"""Worker processes: how many, and a pool of them that ends safely."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


def default_jobs() -> int:
    """The processors this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@contextlib.contextmanager
def pooled(context: Any, processes: int) -> Iterator[Any]:
    """A pool of `processes` workers, ended by letting each finish, not by SIGTERM: a daemon's
    change ignores SIGTERM, and so do the workers it forks (`with Pool()` would wait for ever
    for an idle one to die). On an error, the workers are killed."""
    pool = context.Pool(processes)
    try:
        yield pool
    except BaseException:
        for child in context.active_children():  # the pool's: callers start no others meanwhile
            child.kill()
        pool.terminate()
        raise
    pool.close()
    pool.join()
