"""Which rpm package owns a file, read from the rpm database under a root.

The only module that imports `rpm` (python3-rpm), and only inside functions: hosts without it,
and roots without a database (Debian), get None for every path. The database is opened read-only,
once per call, and is never created: nothing is opened unless a database is already there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("weak-bpf-progs")

# Where distributions keep the database, relative to the root. Fedora >= 36 and openSUSE use
# /usr/lib/sysimage/rpm (/var/lib/rpm then links to it); RHEL 9 and older use /var/lib/rpm. The
# host's own %_dbpath is tried first, as `rpm --root` on this host would use it.
_STANDARD_DBPATHS = ("/usr/lib/sysimage/rpm", "/var/lib/rpm")

# How long to wait for a writer that holds the sqlite database locked. rpm itself would wait
# forever, holding the GIL, so the database is probed first.
LOCK_TIMEOUT = 5.0

# One file that each backend keeps: sqlite (rpm >= 4.16 default), bdb (el8 and older), ndb (SUSE).
_DB_FILES = ("rpmdb.sqlite", "Packages", "Packages.db")


def _import_rpm() -> Any | None:
    try:
        import rpm
    except ImportError:
        log.debug("python3-rpm is not installed: owning packages are unknown")
        return None
    return rpm


def _inside(root: Path, path: Path) -> bool:
    """True when `path`, with its symlinks followed, stays under `root` (an absolute link would
    otherwise send us to the host's database)."""
    real_root = root.resolve()
    real = path.resolve()
    return real == real_root or real_root in real.parents


def _find_dbpath(rpm: Any, root: Path) -> str | None:
    """The dbpath (absolute, as seen inside `root`) of an existing database, or None."""
    host = rpm.expandMacro("%{_dbpath}")
    candidates = [host] if host.startswith("/") else []
    candidates += [p for p in _STANDARD_DBPATHS if p != host]
    for dbpath in candidates:
        directory = root / dbpath.lstrip("/")
        for name in _DB_FILES:
            db_file = directory / name
            if db_file.is_file() and _inside(root, db_file):
                return dbpath
    return None


def _sqlite_locked(db_file: Path, timeout: float) -> bool:
    """True when a writer keeps the sqlite database `db_file` locked for longer than `timeout`.

    Opened read-only (like rpm, sqlite may add the -wal and -shm files of a WAL database). Other
    sqlite errors are left for rpm to report.
    """
    try:
        connection = sqlite3.connect(
            f"{db_file.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout
        )
    except sqlite3.Error:
        return False
    try:
        connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError as e:
        return "locked" in str(e)
    except sqlite3.Error:
        return False
    finally:
        connection.close()
    return False


def has_rpmdb(root: Path) -> bool:
    """True when python3-rpm is there and `root` holds an rpm database it could read."""
    rpm = _import_rpm()
    return rpm is not None and _find_dbpath(rpm, root) is not None


@contextlib.contextmanager
def _captured_messages(rpm: Any) -> Iterator[list[str]]:
    """Collect what rpm logs (its "error: ..." lines) into the yielded list, instead of stderr.

    rpm.setLogFile() fcloses the stream it replaces, so it only ever gets duplicated descriptors:
    a copy of a temporary file, then a copy of stderr to put things back.
    """
    lines: list[str] = []
    with tempfile.TemporaryFile() as buffer:
        rpm.setLogFile(os.dup(buffer.fileno()))
        try:
            yield lines
        finally:
            rpm.setLogFile(os.dup(2))  # flushes and closes rpm's copy of the buffer
            buffer.seek(0)
            text = buffer.read().decode(errors="replace")
            lines += [line.strip() for line in text.splitlines() if line.strip()]


def _nvr(header: Any) -> str:
    return str(header["nvr"])  # a str since rpm 4.15; RHEL 9 has 4.16, Debian 12 4.18


def _lookup(rpm: Any, root: Path, dbpath: str, paths: list[str]) -> dict[str, str | None]:
    ts = rpm.TransactionSet(str(root))
    # Headers in the database were checked at install time; the keyring may not even be there.
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES)
    # rpm reads %_dbpath when it opens the database: define it for the open only.
    rpm.addMacro("_dbpath", dbpath)
    try:
        if ts.openDB() != 0:
            raise rpm.error(f"cannot open the rpm database {dbpath}")
    finally:
        rpm.delMacro("_dbpath")
    try:
        owners: dict[str, str | None] = {}
        for path in paths:
            found = sorted({_nvr(h) for h in ts.dbMatch("basenames", "/" + path.lstrip("/"))})
            if len(found) > 1:
                log.debug("%s is owned by several packages: %s", path, ", ".join(found))
            owners[path] = found[0] if found else None
        return owners
    finally:
        ts.closeDB()


def owners(root: Path, paths: Iterable[str]) -> dict[str, str | None]:
    """Map each root-relative path to its owning package's "name-version-release", or None.

    None for every path when python3-rpm is missing, when `root` has no rpm database, or when
    the database cannot be read (a warning is logged). Never raises for rpm's errors.
    """
    root = Path(os.path.abspath(root))  # rpm takes a relative root as no root at all
    wanted = list(dict.fromkeys(paths))
    unknown: dict[str, str | None] = {path: None for path in wanted}
    if not wanted:
        return unknown
    rpm = _import_rpm()
    if rpm is None:
        return unknown
    dbpath = _find_dbpath(rpm, root)
    if dbpath is None:
        log.debug("no rpm database under %s: owning packages are unknown", root)
        return unknown
    sqlite_file = root / dbpath.lstrip("/") / "rpmdb.sqlite"
    if sqlite_file.is_file() and _sqlite_locked(sqlite_file, LOCK_TIMEOUT):
        log.warning(
            "the rpm database %s under %s is locked by a writer: package names are left out of "
            "this run's reports (the links are not affected)",
            dbpath,
            root,
        )
        return unknown
    found: dict[str, str | None] | None = None
    with _captured_messages(rpm) as messages:
        try:
            found = _lookup(rpm, root, dbpath, wanted)
        except Exception as e:  # rpm.error, OSError, and whatever a damaged database brings
            failure = str(e)
    if found is not None:
        for message in messages:
            log.debug("rpm: %s", message)
        return found
    detail = "; ".join(messages) or failure
    log.warning(
        "cannot read the rpm database %s under %s: %s; package names are left out of this "
        "run's reports (the links are not affected)",
        dbpath,
        root,
        detail,
    )
    return unknown
