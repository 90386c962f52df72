"""weak_bpf.program.rpmdb on real rpm databases: packages built by rpmbuild, installed by rpm
--root."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from weak_bpf.program import rpmdb

from conftest import REPO, require, require_root, require_tool

LB = "usr/lib/bpf/acme/lb.bpf.o"
OTHER = "usr/lib/bpf/other/x.bpf.o"
UNOWNED = "usr/lib/bpf/acme/stray.bpf.o"

SPEC = """\
Name: {name}
{epoch}Version: {version}
Release: {release}
Summary: weak-bpf-progs test package
License: MIT
BuildArch: noarch
%description
test
%install
mkdir -p %{{buildroot}}/{dir}
printf 'not really BPF' > %{{buildroot}}/{path}
%files
/{path}
"""


def _build(
    topdir: Path, name: str, version: str, release: str, path: str, *, epoch: str = ""
) -> Path:
    spec = topdir / f"{name}.spec"
    spec.write_text(
        SPEC.format(
            name=name,
            epoch=f"Epoch: {epoch}\n" if epoch else "",
            version=version,
            release=release,
            dir=str(Path(path).parent),
            path=path,
        )
    )
    subprocess.run(
        ["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {topdir}", str(spec)],
        check=True,
        capture_output=True,
    )
    (rpm_file,) = (topdir / "RPMS" / "noarch").glob(f"{name}-{version}-*.rpm")
    return rpm_file


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    """acme-bpf-1.0-1 owns LB; other-bpf-2:3.1-4.el9 (an epoch) owns OTHER."""
    require_tool("rpmbuild")
    require_tool("rpm")
    require_root()
    require(rpmdb._import_rpm() is not None, "python3-rpm is not installed")
    topdir = tmp_path_factory.mktemp("rpmbuild")
    return (
        _build(topdir, "acme-bpf", "1.0", "1", LB),
        _build(topdir, "other-bpf", "3.1", "4.el9", OTHER, epoch="2"),
    )


def _make_root(root: Path, packages: tuple[Path, ...], dbpath: str) -> Path:
    """`root` with an rpm database at `dbpath` and the packages really installed."""
    root.mkdir(parents=True, exist_ok=True)
    rpm_args = ["rpm", "--root", str(root), "--dbpath", dbpath]
    subprocess.run([*rpm_args, "--initdb"], check=True, capture_output=True)
    packages_args = [str(p) for p in packages]
    subprocess.run([*rpm_args, "-i", "--nodeps", *packages_args], check=True, capture_output=True)
    # A program file that no package owns.
    (root / UNOWNED).write_bytes(b"stray")
    return root


@pytest.fixture(scope="session")
def rpm_root(tmp_path_factory: pytest.TempPathFactory, packages: tuple[Path, ...]) -> Path:
    """An el9-style root: the database in /var/lib/rpm. Copy it before changing it."""
    # Always name the dbpath: Debian's rpm puts the database in ~/.rpmdb, even under --root.
    return _make_root(tmp_path_factory.mktemp("el9") / "root", packages, "/var/lib/rpm")


@pytest.fixture
def root_copy(rpm_root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(rpm_root, copy, symlinks=True)
    return copy


def _tree_state(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry under root: its mode and its content (or link target)."""
    state = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            content = os.readlink(path)
        elif path.is_file():
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = ""
        state[str(path.relative_to(root))] = (st.st_mode, content)
    return state


def _rpm_qf(root: Path, dbpath: str, path: str) -> str:
    proc = subprocess.run(
        ["rpm", "--root", str(root), "--dbpath", dbpath, "-qf", "--qf", "%{NVR}", "/" + path],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def _db_dir(root: Path) -> Path:
    return root / "var/lib/rpm"


def test_owners_from_a_real_database(rpm_root: Path) -> None:
    found = rpmdb.owners(rpm_root, [LB, OTHER, UNOWNED, "usr/lib/bpf/none/gone.bpf.o"])
    assert found == {
        LB: "acme-bpf-1.0-1",
        OTHER: "other-bpf-3.1-4.el9",  # name-version-release: the epoch is not part of it
        UNOWNED: None,
        "usr/lib/bpf/none/gone.bpf.o": None,
    }
    # rpm itself agrees.
    assert _rpm_qf(rpm_root, "/var/lib/rpm", LB) == found[LB]
    assert _rpm_qf(rpm_root, "/var/lib/rpm", OTHER) == found[OTHER]
    assert rpmdb.has_rpmdb(rpm_root)


def test_paths_with_a_leading_slash_and_duplicates(rpm_root: Path) -> None:
    found = rpmdb.owners(rpm_root, ["/" + LB, LB, LB])
    assert found == {"/" + LB: "acme-bpf-1.0-1", LB: "acme-bpf-1.0-1"}
    assert rpmdb.owners(rpm_root, []) == {}


def test_a_relative_root(rpm_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # rpm would take a relative root for no root at all, and answer from the host's database.
    monkeypatch.chdir(rpm_root.parent)
    assert rpmdb.owners(Path(rpm_root.name), [LB]) == {LB: "acme-bpf-1.0-1"}


def test_the_hosts_dbpath_macro_is_left_as_it_was(rpm_root: Path) -> None:
    import rpm

    before = rpm.expandMacro("%{_dbpath}")
    rpmdb.owners(rpm_root, [LB])
    assert rpm.expandMacro("%{_dbpath}") == before


def test_fedora_layout(tmp_path: Path, packages: tuple[Path, ...]) -> None:
    """Fedora >= 36: the database in /usr/lib/sysimage/rpm; /var/lib/rpm a relative link to it."""
    root = _make_root(tmp_path / "fedora", packages, "/usr/lib/sysimage/rpm")
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lib/rpm").symlink_to("../../usr/lib/sysimage/rpm")
    assert rpmdb.owners(root, [LB, UNOWNED]) == {LB: "acme-bpf-1.0-1", UNOWNED: None}
    assert _rpm_qf(root, "/usr/lib/sysimage/rpm", LB) == "acme-bpf-1.0-1"


def test_a_link_out_of_the_root_is_not_followed(rpm_root: Path, tmp_path: Path) -> None:
    """An absolute /var/lib/rpm link must not send the lookup to a database outside the root."""
    root = tmp_path / "root"
    (root / "usr/lib/bpf/acme").mkdir(parents=True)
    (root / LB).write_bytes(b"x")
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lib/rpm").symlink_to(_db_dir(rpm_root))
    assert not rpmdb.has_rpmdb(root)
    assert rpmdb.owners(root, [LB]) == {LB: None}


def test_debian_root_without_a_database_is_left_untouched(tmp_path: Path) -> None:
    require(rpmdb._import_rpm() is not None, "python3-rpm is not installed")
    root = tmp_path / "debian"
    (root / "usr/lib/bpf/acme").mkdir(parents=True)
    (root / LB).write_bytes(b"x")
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("Package: acme-bpf\n")
    before = _tree_state(root)
    start = time.monotonic()
    assert rpmdb.owners(root, [LB, UNOWNED]) == {LB: None, UNOWNED: None}
    assert not rpmdb.has_rpmdb(root)
    assert time.monotonic() - start < 0.5
    assert _tree_state(root) == before


def test_without_python_rpm(rpm_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    modules: dict[str, object] = sys.modules  # type: ignore[assignment]
    monkeypatch.setitem(modules, "rpm", None)  # makes `import rpm` raise ImportError
    assert rpmdb.owners(rpm_root, [LB]) == {LB: None}
    assert not rpmdb.has_rpmdb(rpm_root)


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated"])
def test_a_damaged_database_gives_none(
    root_copy: Path,
    damage: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    db_dir = _db_dir(root_copy)
    for side_file in db_dir.glob("rpmdb.sqlite-*"):
        side_file.unlink()
    db = db_dir / "rpmdb.sqlite"
    if damage == "garbage":
        db.write_bytes(os.urandom(4096))
    elif damage == "empty":
        db.write_bytes(b"")
    else:
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    size = db.stat().st_size
    with caplog.at_level(logging.WARNING, logger="weak-bpf-progs"):
        assert rpmdb.owners(root_copy, [LB, UNOWNED]) == {LB: None, UNOWNED: None}
    assert "cannot read the rpm database" in caplog.text
    # rpm's own complaint goes into the warning, not onto stdout or stderr.
    assert "error:" in caplog.text
    assert capfd.readouterr() == ("", "")
    # Opened read-only: rpm did not turn the damaged file into a fresh empty database.
    assert db.stat().st_size == size


def test_rpm_still_works_after_a_failure(root_copy: Path, rpm_root: Path) -> None:
    (_db_dir(root_copy) / "rpmdb.sqlite").write_bytes(b"junk")
    assert rpmdb.owners(root_copy, [LB]) == {LB: None}
    assert rpmdb.owners(rpm_root, [LB]) == {LB: "acme-bpf-1.0-1"}


@pytest.fixture
def holder() -> Iterator[list[subprocess.Popen[str]]]:
    """Lock-holding child processes, killed at the end of the test."""
    children: list[subprocess.Popen[str]] = []
    yield children
    for child in children:
        child.kill()
        child.wait()


def _hold(children: list[subprocess.Popen[str]], code: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    children.append(child)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "locked"


def _hold_sqlite_writer(children: list[subprocess.Popen[str]], db: Path) -> None:
    _hold(
        children,
        "import sqlite3, time\n"
        f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "c.execute('DELETE FROM Packages')\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n",
    )


def test_a_writer_in_wal_mode_does_not_block(
    root_copy: Path, holder: list[subprocess.Popen[str]]
) -> None:
    """rpm >= 4.16 writes in WAL mode: readers see the last committed state while a transaction
    (a scriptlet calling us, for one) holds the write lock."""
    _hold_sqlite_writer(holder, _db_dir(root_copy) / "rpmdb.sqlite")
    start = time.monotonic()
    assert rpmdb.owners(root_copy, [LB]) == {LB: "acme-bpf-1.0-1"}
    assert time.monotonic() - start < 2


def test_a_locked_database_gives_none_in_bounded_time(
    root_copy: Path, holder: list[subprocess.Popen[str]]
) -> None:
    """In rollback-journal mode a writer locks readers out, and rpm would wait forever."""
    import sqlite3

    db = _db_dir(root_copy) / "rpmdb.sqlite"
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
    connection.close()
    _hold_sqlite_writer(holder, db)
    # In a child, so that a lookup that hangs fails the test instead of hanging it.
    child = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from weak_bpf.program import rpmdb\n"
        "logging.basicConfig(stream=sys.stdout, format='%(message)s')\n"
        "rpmdb.LOCK_TIMEOUT = 0.3\n"
        f"print(rpmdb.owners(Path({str(root_copy)!r}), [{LB!r}]))\n"
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", child],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert time.monotonic() - start < 5
    assert "is locked by a writer" in proc.stdout
    assert proc.stdout.splitlines()[-1] == str({LB: None})
    # Once the writer is gone (its transaction rolled back), the answer comes back.
    holder.pop().kill()
    assert rpmdb.owners(root_copy, [LB]) == {LB: "acme-bpf-1.0-1"}


def test_rpms_transaction_lock_does_not_block_reading(
    root_copy: Path, holder: list[subprocess.Popen[str]]
) -> None:
    lock = _db_dir(root_copy) / ".rpm.lock"
    _hold(
        holder,
        "import fcntl, time\n"
        f"f = open({str(lock)!r}, 'r+')\n"
        "fcntl.lockf(f, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n",
    )
    assert rpmdb.owners(root_copy, [LB]) == {LB: "acme-bpf-1.0-1"}


def test_many_paths_in_one_open(rpm_root: Path) -> None:
    paths = [f"usr/lib/bpf/p{i}/x.bpf.o" for i in range(500)] + [LB]
    start = time.monotonic()
    found = rpmdb.owners(rpm_root, paths)
    assert time.monotonic() - start < 1
    assert found[LB] == "acme-bpf-1.0-1"
    assert sum(v is not None for v in found.values()) == 1
