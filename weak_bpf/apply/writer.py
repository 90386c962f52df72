"""The only module that writes to the filesystem.

Every write is atomic. A kernel's link set lives in a generation directory,
`usr/lib/modules/K/bpf/.weak-updates.N/`, and `bpf/weak-updates` is a symlink to the current one:
a new set is built aside and swapped in with one rename, so a crash at any point leaves the old
set or the new one. Entries weak-bpf-progs did not make (regular files, foreign links) are
carried into each new generation as they are, and never removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import posixpath
import re
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath

from weak_bpf.errors import ApplyError, LockTimeout

LOCK = "run/weak-bpf-progs.lock"
REPORTS = "var/lib/weak-bpf-progs/reports"
STAMP = "var/lib/weak-bpf-progs/stamp"  # rewritten by every run that changed something
WEAK_UPDATES = "weak-updates"
GENERATION = re.compile(r"\.weak-updates\.(?:legacy-)?(\d+)\Z")
MARK = ".weak-bpf-progs"  # written last into a generation: it is ours, and complete
# Objects live here: a link into them is one weak-bpf-progs manages.
_OWNED_TARGETS = re.compile(r"usr/lib/bpf/|usr/lib/modules/[^/]+/bpf/extra/")

# Test-only fault injection: with WEAK_BPF_FAULT_STEP=N, the process kills itself (SIGKILL) at
# its Nth filesystem step, so that tests can prove every crash leaves the old or the new state.
_FAULT_STEP = int(os.environ.get("WEAK_BPF_FAULT_STEP", "0") or 0)
_STEPS = itertools.count(1)


def _step() -> None:
    if next(_STEPS) == _FAULT_STEP:
        os.kill(os.getpid(), signal.SIGKILL)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` to `path`, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        _step()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def locked(root: Path, timeout: float) -> Iterator[None]:
    """Hold `run/weak-bpf-progs.lock` (flock), waiting at most `timeout` seconds for it."""
    path = root / LOCK
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise ApplyError(
            f"cannot open the lock {path}: {e.strerror}",
            hint="nothing was changed; commands that change links must run as root (with "
            "--dry-run, a command changes nothing and needs no lock)",
        ) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise ApplyError(
                        f"cannot lock {path}: {e.strerror}",
                        hint=f"nothing was changed; {path.parent} must be on a file system "
                        "that supports flock(2); run the same command again",
                    ) from None
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"another weak-bpf-progs run held {path} for {timeout:g} s",
                        hint="nothing was changed: when the other run (a kernel or package "
                        "transaction, or weak-bpf-progsd) is done, run the same command again; "
                        "or raise lock_timeout in /etc/weak-bpf-progs.conf",
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def bpf_dir(root: Path, kver: str) -> Path:
    return root / "usr/lib/modules" / kver / "bpf"


def is_owned_link(root: Path, link: Path) -> bool:
    """A symlink whose target is an object location (usr/lib/bpf, a kernel's bpf/extra)."""
    if not link.is_symlink():
        return False
    target = os.readlink(link)
    if target.startswith("/"):
        resolved = target.lstrip("/")
    else:
        resolved = posixpath.normpath(posixpath.join(str(link.parent.relative_to(root)), target))
    return bool(_OWNED_TARGETS.match(resolved))


def _current_set(root: Path, kver: str) -> Path | None:
    """The directory holding K's links now: the generation weak-updates points to, a plain
    weak-updates directory, or (after a crash mid-conversion) the newest generation."""
    bpf = bpf_dir(root, kver)
    wu = bpf / WEAK_UPDATES
    if wu.is_symlink():
        target = os.readlink(wu)
        generation = bpf / target
        if not GENERATION.match(target) or generation.is_symlink() or not generation.is_dir():
            raise ApplyError(
                f"{wu.relative_to(root)} is a link weak-bpf-progs did not make",
                hint=f"move it away (weak-bpf-progs keeps {kver}'s links at this path; this run "
                f"changed nothing for {kver}), then run the same command again",
            )
        return generation
    if wu.is_dir():
        return wu
    if os.path.lexists(wu):
        raise ApplyError(
            f"{wu.relative_to(root)} is not a directory",
            hint=f"move it away (weak-bpf-progs keeps {kver}'s links in a directory at this "
            f"path; this run changed nothing for {kver}), then run the same command again",
        )
    # after a crash: the newest complete generation, or a plain directory set aside
    usable = [g for _, g in _generations(bpf) if (g / MARK).exists() or ".legacy-" in g.name]
    return usable[-1] if usable else None


def in_place(root: Path, kver: str) -> bool:
    """Whether K's weak-updates is a current generation (or there is nothing to point to)."""
    bpf = bpf_dir(root, kver)
    wu = bpf / WEAK_UPDATES
    if wu.is_symlink() or wu.is_dir():
        return True
    return not _generations(bpf)


def _generations(bpf: Path) -> list[tuple[int, Path]]:
    if not bpf.is_dir():
        return []
    found = []
    for entry in bpf.iterdir():
        match = GENERATION.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def current_links(root: Path, kver: str) -> dict[str, str]:
    """K's links that weak-bpf-progs manages: link name -> target."""
    current = _current_set(root, kver)
    links: dict[str, str] = {}
    if current is None:
        return links
    for directory, subdirs, files in os.walk(current):
        subdirs.sort()
        for name in sorted(files + [d for d in subdirs if Path(directory, d).is_symlink()]):
            path = Path(directory, name)
            if is_owned_link(root, path):
                links[str(path.relative_to(current))] = os.readlink(path)
    return links


def blocked_names(root: Path, kver: str, names: Iterable[str]) -> dict[str, str]:
    """Which of `names` an entry weak-bpf-progs did not make holds in K's current set, and the
    entry (relative to weak-updates/): the links apply_links would leave out (what a dry run
    predicts). Reads only."""
    current = _current_set(root, kver)
    if current is None:
        return {}
    held = {name: _holder(root, current, name) for name in names}
    return {name: holder for name, holder in held.items() if holder is not None}


def _holder(root: Path, base: Path, name: str) -> str | None:
    """What, not made by weak-bpf-progs, holds link `name` under `base`: an entry of that name,
    or one on its path that is not a plain directory (a file, or a link, which would lead the new
    link elsewhere); None if nothing does."""
    path = base / name
    if os.path.lexists(path):
        return None if is_owned_link(root, path) else name
    for parent in reversed(list(PurePosixPath(name).parents)[:-1]):  # a, then a/b
        entry = base / parent
        if os.path.lexists(entry) and (entry.is_symlink() or not entry.is_dir()):
            return None if is_owned_link(root, entry) else str(parent)
    return None


def _carry_foreign(root: Path, old: Path, new: Path) -> None:
    """Bring what weak-bpf-progs did not make from the old set into the new one, unchanged."""
    for directory, subdirs, files in os.walk(old):
        for name in files + subdirs:
            src = Path(directory, name)
            rel = src.relative_to(old)
            dst = new / rel
            if name == MARK and directory == str(old):
                continue
            if src.is_symlink():
                if is_owned_link(root, src) or os.path.lexists(dst):
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(os.readlink(src), dst)
            elif src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
                continue
            elif not os.path.lexists(dst):
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, dst)  # the same file, under the new set too
            _step()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_generation(path: Path) -> None:
    """Remove an old generation: links and directories go; a regular file goes only if it has
    another name (it was carried into the current set), else it stays where it is. The mark goes
    first, so that a generation half dropped is never taken for a link set."""
    with contextlib.suppress(FileNotFoundError):
        (path / MARK).unlink()
        _step()
    for directory, subdirs, files in os.walk(path, topdown=False):
        for name in files + subdirs:
            entry = Path(directory, name)
            if (
                entry.is_symlink()
                or (entry.is_file() and entry.stat().st_nlink > 1)
                or (name == MARK and directory == str(path))
            ):
                entry.unlink()
            elif entry.is_dir():
                with contextlib.suppress(OSError):
                    entry.rmdir()  # not empty: something foreign stays
            _step()
    with contextlib.suppress(OSError):
        path.rmdir()


def apply_links(root: Path, kver: str, links: Mapping[str, str]) -> dict[str, str]:
    """Make `links` (link name -> target) K's link set, atomically. Foreign entries are kept,
    and win over a link of the same name. Returns the link names that a foreign entry blocked,
    each with that entry (relative to weak-updates/). Raises ApplyError."""
    bpf = bpf_dir(root, kver)
    if not bpf.parent.is_dir():
        raise ApplyError(
            f"usr/lib/modules/{kver} does not exist under the root: there is nowhere to put "
            f"{kver}'s links",
            hint=f"is kernel {kver} fully installed? 'weak-bpf-progs kernels {kver}' shows what "
            "was found for it",
        )
    stage = "building"  # then "aside" (a plain weak-updates set aside), then "swapped"
    try:
        old = _current_set(root, kver)
        wu = bpf / WEAK_UPDATES
        bpf.mkdir(exist_ok=True)
        generations = _generations(bpf)
        number = generations[-1][0] + 1 if generations else 1
        new = bpf / f".weak-updates.{number}"
        new.mkdir()
        _step()
        if old is not None:
            _carry_foreign(root, old, new)
        blocked = {}
        for name, target in sorted(links.items()):
            link = new / name
            holder = _holder(root, new, name)
            if holder is not None:
                blocked[name] = holder
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, link)
            _step()
        (new / MARK).write_text("links made by weak-bpf-progs; do not edit\n")
        _fsync_dir(new)
        _step()
        swap = bpf / f".weak-updates.swap-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            swap.unlink()
        os.symlink(new.name, swap)
        _step()
        if wu.is_dir() and not wu.is_symlink():  # a plain directory: set it aside first
            os.rename(wu, bpf / f".weak-updates.legacy-{number}")
            stage = "aside"
            _step()
        os.replace(swap, wu)
        stage = "swapped"
        _fsync_dir(bpf)
        _step()
        for _, generation in _generations(bpf):
            if generation != new:
                _drop_generation(generation)
        return blocked
    except OSError as e:
        where = f"usr/lib/modules/{kver}/bpf/"
        if stage == "swapped":
            raise ApplyError(
                f"the new links of {kver} are in place, but tidying up {where} failed: {e}",
                hint=f"only the set {where}weak-updates points to is used, and the next change "
                f"removes what is left; check the permissions under {where}",
            ) from None
        before = {
            "building": "its links are as they were before this run",
            "aside": "its old links are set aside, where loaders do not see them",
        }[stage]
        raise ApplyError(
            f"cannot update the links of {kver}: {e}",
            hint=f"{before}; check free space and permissions under {where}, then run the "
            "same command again",
        ) from None


def remove_links(root: Path, kver: str) -> None:
    """Take away K's link set (the kernel is going); foreign files stay."""
    bpf = bpf_dir(root, kver)
    wu = bpf / WEAK_UPDATES
    try:
        if wu.is_symlink():
            _current_set(root, kver)  # refuses a link we did not make
            wu.unlink()
            _step()
        elif wu.is_dir():
            for link in list(wu.rglob("*")):
                if is_owned_link(root, link):
                    link.unlink()
                    _step()
        for _, generation in _generations(bpf):
            _drop_generation(generation)
    except OSError as e:
        raise ApplyError(
            f"cannot remove the links of {kver}: {e}",
            hint=f"some may be left; check permissions under usr/lib/modules/{kver}/bpf/, then "
            f"run 'weak-bpf-progs remove-kernel {kver}' again",
        ) from None


def write_report(root: Path, kver: str, data: bytes) -> None:
    try:
        write_atomic(root / REPORTS / f"{kver}.json", data)
    except OSError as e:
        raise ApplyError(
            f"cannot write the report of {kver}: {e.strerror}",
            hint=f"the links are up to date; only {REPORTS}/{kver}.json, which the next run "
            "compares with, is not: check free space and permissions under "
            f"{posixpath.dirname(REPORTS)}/, then run the same command again",
        ) from None


def bump_stamp(root: Path) -> None:
    """Tell watchers (the daemon) that links or reports changed."""
    with contextlib.suppress(OSError):
        write_atomic(root / STAMP, f"{time.time_ns()} {os.getpid()}\n".encode())
