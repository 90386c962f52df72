"""The use cases on an example root: the results cache is invisible except in speed."""

from __future__ import annotations

import functools
import importlib
import json
import multiprocessing
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from weak_bpf import ops, report
from weak_bpf.kernel.cache import CACHE_DIR
from weak_bpf.parsers import bpfobject
from weak_bpf.program.installed import InstalledProgram

import exampleroot


@pytest.fixture
def root(tmp_path: Path, debian_kernels: dict[str, Path]) -> Path:
    root = tmp_path / "root"
    exampleroot.build_example_root(root, debian_kernels)
    return root


def _doc(root: Path, *, cache: bool = True) -> dict[str, object]:
    return report.audit_json(ops.audit(root, cache=cache))


def _objects(root: Path) -> list[Path]:
    return sorted(root.glob("usr/lib/bpf/*/*.bpf.o")) + sorted(
        root.glob("usr/lib/modules/*/bpf/extra/*/*.bpf.o")
    )


def _vmlinuz(root: Path) -> list[Path]:
    """The kernels' images, the source of their BTF (hard links into the download cache)."""
    return sorted(root.glob("usr/lib/modules/*/vmlinuz"))


def _own_copy(path: Path) -> None:
    """Make `path` a file of its own, so that damaging it leaves the download cache alone."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)


def _garble_keeping_stat(path: Path) -> None:
    """Overwrite a file in place with garbage of the same size, its mtime put back: same inode,
    size and mtime, so every stat-based cache key stays, but reading it gives nonsense."""
    before = path.stat()
    assert before.st_nlink == 1, f"{path} is shared (a hard link): it must not be damaged"
    with open(path, "r+b") as f:
        f.write(b"\xa5" * before.st_size)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )


def _verdicts(doc: dict[str, Any]) -> dict[tuple[str, str], tuple[str, list[str]]]:
    """{(program, kernel): (verdict, reason codes)}"""
    return {
        (p["path"], kver): (r["verdict"], [reason["code"] for reason in r["reasons"]])
        for p in doc["programs"]
        for kver, r in p["results"].items()
    }


def _hit_proven(root: Path, cold: dict[str, object]) -> None:
    """A warm audit must answer from the cache: every object and every kernel image is garbage
    now, with the same inode, size and mtime, and the answer is still the cold one. An object
    read again, or a results entry missed (a key that hashed the kernel image's or an object's
    content), would give `malformed`, as the same root without its cache shows."""
    for path in _objects(root) + _vmlinuz(root):
        _garble_keeping_stat(path)
    assert _doc(root) == cold
    shutil.rmtree(root / CACHE_DIR)
    recomputed = _verdicts(_doc(root, cache=False))
    assert recomputed.keys() == _verdicts(cold).keys()
    assert all(got == ("incompatible", ["malformed"]) for got in recomputed.values()), recomputed


def test_warm_audit_equals_cold(root: Path) -> None:
    for image in _vmlinuz(root):
        _own_copy(image)
    assert len(_objects(root)) == 11 and len(_vmlinuz(root)) == 2
    cold = _doc(root)
    results = sorted((root / CACHE_DIR).glob("results-*.json"))
    assert len(results) == 2  # one per kernel
    for entry in results:
        table = json.loads(entry.read_bytes())
        assert len(table) == 11, entry  # one entry per program
    assert _doc(root) == cold
    _hit_proven(root, cold)


def test_a_replaced_object_is_checked_again(root: Path) -> None:
    before = _doc(root)
    # the proprietary agent's package is "fixed": its object is now the GPL exec_state one
    target = root / "usr/lib/bpf/acme-sec/task_guard.bpf.o"
    shutil.copyfile(root / "usr/lib/bpf/acme-trace/exec_state.bpf.o", target)
    after = _doc(root)
    verdicts = {
        doc_name: [
            r["verdict"]
            for p in doc["programs"]  # type: ignore[attr-defined]
            if p["path"].endswith("task_guard.bpf.o")
            for r in p["results"].values()
        ]
        for doc_name, doc in (("before", before), ("after", after))
    }
    assert verdicts == {"before": ["incompatible"] * 2, "after": ["compatible"] * 2}


def test_a_damaged_cache_is_ignored(root: Path) -> None:
    for image in _vmlinuz(root):
        _own_copy(image)
    cold = _doc(root)
    entries = {p.name: p.read_bytes() for p in (root / CACHE_DIR).iterdir()}
    assert sum(name.startswith("results-") for name in entries) == 2, sorted(entries)
    for name in entries:
        (root / CACHE_DIR / name).write_bytes(b"\x00garbage")
    assert _doc(root) == cold
    # every damaged entry was read, found bad and written again: the same names, valid again
    repaired = {p.name: p.read_bytes() for p in (root / CACHE_DIR).iterdir()}
    assert repaired == entries
    for name, data in repaired.items():
        if name.endswith(".json"):
            json.loads(data)
    # and the repaired entries are used: a warm run reads no object
    _hit_proven(root, cold)


def test_without_cache_nothing_is_written(root: Path) -> None:
    _doc(root, cache=False)
    assert not (root / CACHE_DIR).exists()


def _two_chunks(tasks: Any) -> list[list[int]]:
    """Two chunks that keep objects of one size together, in a row, as judging._chunks does."""
    sizes = sorted({t.size for t in tasks})
    first = set(sizes[: len(sizes) // 2])
    by_size = sorted(range(len(tasks)), key=lambda i: tasks[i].size)
    chunks = [[i for i in by_size if (tasks[i].size in first) == side] for side in (1, 0)]
    assert all(chunks), "the root has objects of too few sizes for two chunks"
    return chunks


@pytest.mark.parametrize("jobs", [1, 2])
def test_identical_objects_are_judged_once_per_kernel(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    """The same object in three places (another package, another name) is checked once per
    kernel; a copy with a greylist of its own is checked apart. With two jobs, the checks run
    in two worker processes, and the sharing holds across them."""
    judging = importlib.import_module("weak_bpf.ops.judging")

    source = root / "usr/lib/bpf/acme-trace/exec_state.bpf.o"
    copies = ["vendor-a/exec_state.bpf.o", "vendor-b/exec_state.bpf.o", "vendor-b/other.bpf.o"]
    for copy in copies:
        (root / "usr/lib/bpf" / copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / "usr/lib/bpf" / copy)
    greylisted = root / "usr/lib/bpf/vendor-c/exec_state.bpf.o"
    greylisted.parent.mkdir()
    shutil.copyfile(source, greylisted)
    (root / "usr/lib/bpf/vendor-c/exec_state.bpf.o.greylist").write_text("# no symbols\n")
    log = tmp_path / "judged"  # one line per check run, from whichever process ran it
    real = judging.evaluate

    def counting(loaded: Any, facts: Any, memo: Any = None) -> Any:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {loaded.program.path}\n")
        return real(loaded, facts, memo)

    reads = tmp_path / "read"  # one line per object read whole (past its section table)
    real_symbols = bpfobject._Reader._symbols

    def reading(reader: Any) -> Any:
        with open(reads, "a") as f:
            f.write(f"{reader.source}\n")
        return real_symbols(reader)

    monkeypatch.setattr(judging, "evaluate", counting)
    monkeypatch.setattr(bpfobject._Reader, "_symbols", reading)
    monkeypatch.setattr(judging, "PARALLEL_FROM", 1)
    monkeypatch.setattr(judging, "_chunks", lambda tasks, jobs: _two_chunks(tasks))
    report = ops.audit(root, cache=False, jobs=jobs)
    lines = [line.split(" ", 1) for line in log.read_text().splitlines()]
    judged = [path for _, path in lines]
    workers = {pid for pid, _ in lines}
    assert (os.getpid() in map(int, workers)) == (jobs == 1)
    assert len(workers) == jobs
    same = ["usr/lib/bpf/acme-trace/exec_state.bpf.o"] + [f"usr/lib/bpf/{c}" for c in copies]
    read = reads.read_text().splitlines()
    assert sum(p in read for p in [*same, "usr/lib/bpf/vendor-c/exec_state.bpf.o"]) == 1
    assert len(read) == len(set(read)) < len(report.programs)
    kernels = len(report.kernels)
    assert kernels == 2
    assert sum(judged.count(p) for p in same) == kernels  # one of the four, once per kernel
    assert judged.count("usr/lib/bpf/vendor-c/exec_state.bpf.o") == kernels
    results = {p.program.path: p.results for p in report.programs}
    for path in same:
        assert {k: r[0] for k, r in results[path].items()} == {
            k: r[0] for k, r in results[same[0]].items()
        }


def test_workers_give_the_verdicts_of_one_process(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An audit spread over worker processes reports what one process reports, to the byte."""
    judging = importlib.import_module("weak_bpf.ops.judging")
    monkeypatch.setattr(judging, "PARALLEL_FROM", 1)
    alone = report.audit_json(ops.audit(root, cache=False, jobs=1))
    spread = report.audit_json(ops.audit(root, cache=False, jobs=3))
    assert alone == spread
    assert len(spread["programs"]) >= 8  # type: ignore[arg-type]


def test_each_kernel_is_read_and_indexed_once_for_all_workers(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent reads each kernel's BTF and builds its CO-RE index once, before it forks; the
    workers judge with them and build neither again."""
    from weak_bpf.engine import corerelo
    from weak_bpf.kernel import facts

    judging = importlib.import_module("weak_bpf.ops.judging")
    monkeypatch.setattr(judging, "PARALLEL_FROM", 1)
    log = tmp_path / "log"

    def logged(what: str, function: Any) -> Any:
        @functools.wraps(function)  # the workers find it by this name
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with log.open("a") as f:
                f.write(f"{what} {os.getpid()}\n")
            return function(*args, **kwargs)

        return wrapper

    index = corerelo.TargetIndex
    monkeypatch.setattr(index, "__init__", logged("index", index.__init__))
    monkeypatch.setattr(facts, "load_vmlinux_btf", logged("btf", facts.load_vmlinux_btf))
    monkeypatch.setattr(judging, "_judge_in_worker", logged("judge", judging._judge_in_worker))
    audited = ops.audit(root, cache=False, jobs=2)  # (with the cache, a worker fills it first)
    lines = [line.split() for line in log.read_text().splitlines()]
    here = str(os.getpid())
    assert len({pid for what, pid in lines if what == "judge"} - {here}) == 2, "two workers judged"
    built = sorted(what for what, pid in lines if what != "judge")
    assert {pid for what, pid in lines if what != "judge"} == {here}, "built in a worker"
    assert built == ["btf"] * len(audited.kernels) + ["index"] * len(audited.kernels)
    assert len(audited.kernels) == 2
    assert multiprocessing.active_children() == []


def _die_in_worker(chunk: list[int]) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_leaves_its_objects_to_this_process(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A judging worker killed (the OOM killer) breaks the pool: the objects are judged here,
    where a multiprocessing.Pool waited for ever."""
    judging = importlib.import_module("weak_bpf.ops.judging")
    monkeypatch.setattr(judging, "PARALLEL_FROM", 1)
    alone = report.audit_json(ops.audit(root, cache=False, jobs=1))
    monkeypatch.setattr(judging, "_judge_in_worker", _die_in_worker)

    def waited_too_long(signum: int, frame: object) -> None:
        raise TimeoutError("the parent waits for ever for a dead worker")

    handler = signal.signal(signal.SIGALRM, waited_too_long)
    signal.alarm(120)  # a wait for ever fails the test instead of hanging the suite
    try:
        killed = report.audit_json(ops.audit(root, cache=False, jobs=3))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, handler)
    assert killed == alone
    assert multiprocessing.active_children() == []


def test_chunks_keep_objects_of_one_size_together() -> None:
    """Identical objects have one size: a chunk holds all objects of a size, so the worker
    that judges one judges the others, and shares its results with them."""
    judging = importlib.import_module("weak_bpf.ops.judging")
    program = InstalledProgram("usr/lib/bpf/p/x.bpf.o", "p/x.bpf.o", None)
    tasks = [judging.Task(program, ("k",), size) for size in [5, 7, 5, 9, 7, 5] * 40]
    chunks = judging._chunks(tasks, 2)
    assert len(chunks) > 1
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(tasks)))
    for chunk in chunks:
        sizes = {tasks[i].size for i in chunk}
        for size in sizes:
            assert sum(t.size == size for t in tasks) == sum(tasks[i].size == size for i in chunk)


def _pool_rounds(rounds: int) -> None:
    """In a child that ignores SIGTERM, as a daemon's change does: pools opened and ended."""
    import multiprocessing
    import signal

    from weak_bpf.workerpool import pooled

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    context = multiprocessing.get_context("fork")
    for _ in range(rounds):
        with pooled(context, 2) as pool:
            assert list(pool.map(str, [1, 2])) == ["1", "2"]


def test_pools_end_in_a_process_that_ignores_sigterm() -> None:
    """`with Pool()` ends by SIGTERM, which a daemon's change and its workers ignore: an idle
    worker then never died and AddKernel hung (one round in a few dozen)."""
    import multiprocessing

    child = multiprocessing.get_context("fork").Process(target=_pool_rounds, args=(200,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("a pool did not end within 60 s")
    assert child.exitcode == 0


def _locked_run_killed_amid_workers(lock: str, started: Any) -> None:
    """As a run does: the run lock held, a pool and a background worker busy; then SIGKILL."""
    import fcntl
    import time

    from weak_bpf.workerpool import in_background, pooled

    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    context = multiprocessing.get_context("fork")
    in_background(context, time.sleep, 600)
    with pooled(context, 2) as pool:
        busy = [pool.submit(time.sleep, 600) for _ in range(2)]
        time.sleep(0.5)  # the workers are running
        started.set()
        os.kill(os.getpid(), signal.SIGKILL)
        del busy


def test_workers_of_a_killed_run_end_with_it_and_free_the_lock(tmp_path: Path) -> None:
    """A run killed mid-pass (kill -9, the OOM killer) must not leave workers behind: they share
    its flock, so the next run waited for the lock until its timeout."""
    import fcntl
    import time

    lock = str(tmp_path / "weak-bpf-progs.lock")
    context = multiprocessing.get_context("fork")
    started = context.Event()
    run = context.Process(target=_locked_run_killed_amid_workers, args=(lock, started))
    run.start()
    assert started.wait(60)
    run.join(60)
    assert run.exitcode == -signal.SIGKILL
    fd = os.open(lock, os.O_RDWR)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "a worker of the killed run holds the lock"
                time.sleep(0.05)
    finally:
        os.close(fd)
