"""Judging many installed objects on several kernels: in this process, or spread over worker
processes that fork from it, so that each inherits the kernels' facts instead of reading them
again. The results come back as the cache's table entries, in the order of the work."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weak_bpf.model import KernelFacts, Result
from weak_bpf.parsers.greylist import Greylist
from weak_bpf.program.installed import InstalledProgram, LoadedProgram, load_program
from weak_bpf.workerpool import pooled

if TYPE_CHECKING:
    from weak_bpf.parsers.objvalues import BpfObject

Entry = dict[str, Any]  # a cache table entry: {"build_kernel": ..., "result": Result JSON}

# Fewer objects to judge than this are judged here: forking costs more than it saves.
PARALLEL_FROM = 64


@dataclasses.dataclass(frozen=True)
class Task:
    program: InstalledProgram
    kvers: tuple[str, ...]  # the kernels it has no cached result for
    size: int  # of its object; identical objects have the same size


@dataclasses.dataclass(frozen=True)
class Judged:
    build_kernel: str | None
    greylist: Greylist | None
    entries: dict[str, Entry]  # kver -> table entry


def evaluate(loaded: LoadedProgram, facts: KernelFacts, memo: Any = None) -> Result:
    """One object's result on one kernel (`memo`: an engine ObjectMemo for this object)."""
    from weak_bpf.engine.checks import check_object, malformed  # not needed by a warm run

    if loaded.obj is None or loaded.error is not None:
        return malformed(loaded.error or "unreadable")
    native = loaded.program.native_kernel == facts.kver
    return check_object(loaded.obj, loaded.greylist, facts, native=native, memo=memo)


def judge(
    root: Path,
    tasks: Sequence[Task],
    facts: Sequence[KernelFacts],
    *,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
    cached_kernels: bool = False,
) -> list[Judged]:
    """Each task's object judged on its kernels. Identical objects (the same bytes, greylist
    and build kernel) are judged once per kernel: tasks of one size go to the same worker, and
    a worker shares results by content. `progress` hears how many tasks are done.
    `cached_kernels`: what the facts read goes to the cache, so that workers may read kernels
    side by side before the judging starts."""
    by_kver = {f.kver: f for f in facts}
    chunks = _chunks(tasks, jobs)
    results: list[Judged | None] = [None] * len(tasks)
    done = 0
    if jobs > 1 and len(tasks) >= PARALLEL_FROM and len(chunks) >= 2:
        try:
            done = _judge_in_workers(
                root,
                tasks,
                facts,
                chunks,
                jobs=jobs,
                into=results,
                progress=progress,
                cached_kernels=cached_kernels,
            )
        except BrokenProcessPool:  # a worker was killed (the OOM killer): the rest is judged here
            done = sum(r is not None for r in results)
    judging = _Judging()
    for index in (i for chunk in chunks for i in chunk if results[i] is None):
        answer = _judge_chunk(root, tasks, [index], by_kver, judging)  # one at a time: progress
        done = _collect(answer, results, done, progress)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def _judge_in_workers(
    root: Path,
    tasks: Sequence[Task],
    facts: Sequence[KernelFacts],
    chunks: list[list[int]],
    *,
    jobs: int,
    into: list[Judged | None],
    progress: Callable[[int], None] | None,
    cached_kernels: bool,
) -> int:
    """The chunks judged by `jobs` forked workers, into `into`; how many tasks are done."""
    import multiprocessing

    from weak_bpf.engine import checks  # noqa: F401  (imported once, before the fork)
    from weak_bpf.engine.corerelo import target_index

    global _WORK  # noqa: PLW0603  (what the forked workers inherit)
    _WORK = (root, tasks, {f.kver: f for f in facts})
    context = multiprocessing.get_context("fork")
    done = 0
    try:
        if cached_kernels and len(facts) > 1:
            # the kernels read in a worker, one at a time, into the cache, from which this
            # process reads them: unpacking an image takes 140 MB for a moment, which the
            # worker gives back when it ends (two side by side went over 300 MB)
            with pooled(context, 1) as pool:
                list(pool.map(_read_kernel_in_worker, list(_WORK[2])))
        for f in facts:  # read once, here, and shared with the workers
            f.read_all()
            if f.vmlinux is not None:
                target_index(f.vmlinux)
        with pooled(context, min(jobs, len(chunks))) as pool:
            for judged in as_completed([pool.submit(_judge_in_worker, c) for c in chunks]):
                done = _collect(judged.result(), into, done, progress)
    finally:
        _WORK = None
    return done


def _collect(
    answer: list[tuple[int, Judged]],
    results: list[Judged | None],
    done: int,
    progress: Callable[[int], None] | None,
) -> int:
    for index, judged in answer:
        results[index] = judged
    done += len(answer)
    if progress is not None:
        progress(done)
    return done


def _chunks(tasks: Sequence[Task], jobs: int) -> list[list[int]]:
    """Task indexes in chunks of about equal work that never split a size: a few chunks per
    worker, so that a slow one does not hold the others up."""
    by_size: dict[int, list[int]] = {}
    for index, task in enumerate(tasks):
        by_size.setdefault(task.size, []).append(index)
    target = max(8, min(64, len(tasks) // (4 * max(jobs, 1)) + 1))
    chunks: list[list[int]] = []
    current: list[int] = []
    for group in by_size.values():
        current.extend(group)
        if len(current) >= target:
            chunks.append(current)
            current = []
    if current:
        chunks.append(current)
    return chunks


# What the workers judge, set by the parent just before it forks them.
_WORK: tuple[Path, Sequence[Task], dict[str, KernelFacts]] | None = None


def _read_kernel_in_worker(kver: str) -> None:
    assert _WORK is not None
    _WORK[2][kver].read_all()


def _judge_in_worker(chunk: list[int]) -> list[tuple[int, Judged]]:
    assert _WORK is not None
    root, tasks, by_kver = _WORK
    return _judge_chunk(root, tasks, chunk, by_kver)


def _judge_chunk(
    root: Path,
    tasks: Sequence[Task],
    chunk: list[int],
    by_kver: dict[str, KernelFacts],
    judging: _Judging | None = None,
) -> list[tuple[int, Judged]]:
    """Judge the chunk's tasks; `judging`: what the tasks judged so far in this process share."""
    from weak_bpf.engine.checks import ObjectMemo

    judging = _Judging() if judging is None else judging
    answer = []
    for index in chunk:
        task = tasks[index]
        loaded = judging.load(root, task)
        memo = ObjectMemo(loaded.obj) if loaded.obj is not None else None
        entries = {}
        for kver in task.kvers:
            same = (loaded.digest, kver) if loaded.digest else None
            entry = judging.entries.get(same) if same is not None else None
            if entry is None:
                result = evaluate(loaded, by_kver[kver], memo)
                entry = {"build_kernel": loaded.build_kernel, "result": result.to_json()}
                if same is not None:
                    judging.entries[same] = entry
            entries[kver] = entry
        answer.append((index, Judged(loaded.build_kernel, loaded.greylist, entries)))
    return answer


class _Judging:
    """What the tasks judged in one process share: the entries of (object digest, kver), and
    the objects of the size last read, by digest (identical objects are read once; tasks come
    grouped by size, so that a few objects are kept at a time)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Entry] = {}
        self._objects: dict[str, BpfObject] = {}
        self._size: int | None = None

    def load(self, root: Path, task: Task) -> LoadedProgram:
        if task.size != self._size:
            self._objects, self._size = {}, task.size
        loaded = load_program(root, task.program, seen=self._objects)
        if loaded.obj is not None:
            self._objects[loaded.obj.digest] = loaded.obj
        return loaded
