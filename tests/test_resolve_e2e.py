"""End to end: `python3 -m weak_bpf add-kernel` on an example root with the two real Debian
kernels, its report read back from a real systemd-journald (journalctl -o json) and from
reports/K.json, and the owning package from a real rpm database built with rpmbuild. The CLI runs
in a mount namespace of its own where /run/systemd/journal is the test journald's directory, or
an empty one: no journald (tests/journald.py)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from weak_bpf.apply import journal
from weak_bpf.apply.resolution import Action, Resolution
from weak_bpf.program import rpmdb

import journald as journald_helper
from conftest import require, require_root, require_tool
from journald import Journald, Run, run_with_journal_dir

OLD, NEW = "6.1.0-47-cloud-amd64", "6.1.0-56-cloud-amd64"
REPORT = f"var/lib/weak-bpf-progs/reports/{NEW}.json"
TASK_GUARD = "usr/lib/bpf/acme-sec/task_guard.bpf.o"
EXEC_STATE = "usr/lib/bpf/acme-trace/exec_state.bpf.o"
PACKAGE = "acme-trace-bpf-2.0-3"
CT_KEEPALIVE = "usr/lib/bpf/globex-net/ct_keepalive.bpf.o"  # ships a greylist
# The example programs that load on the old kernel and not on the new one, and why.
BROKEN_ON_NEW = {
    "usr/lib/bpf/acme-fs/buddy_load.bpf.o": "core-relo",  # a renamed field, read unguarded
    "usr/lib/bpf/acme-power/padata_offline.bpf.o": "core-relo",  # a removed enumerator
    "usr/lib/bpf/globex-obs/epoll_leak.bpf.o": "attach-target",  # its fentry target is gone
}
# What holds NEW's links: the native build of xdp_ct for the old kernel, not its CO-RE build.
LINKED_ON_NEW = {
    f"usr/lib/modules/{OLD}/bpf/extra/acme-net/xdp_ct.bpf.o",
    "usr/lib/bpf/acme-net/tcp_retrans.bpf.o",
    EXEC_STATE,
    "usr/lib/bpf/acme-trace/open_count.bpf.o",
    CT_KEEPALIVE,
    "usr/lib/bpf/globex-storage/bitmap_release.bpf.o",
}
# Every program of the example root: the CO-RE builds, and xdp_ct built native for the old kernel.
PROGRAMS = {
    *LINKED_ON_NEW,
    *BROKEN_ON_NEW,
    TASK_GUARD,
    "usr/lib/bpf/acme-net/xdp_ct.bpf.o",
}


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def journald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journald]:
    daemon = journald_helper.start(tmp_path_factory.mktemp("journald"), f"weakbpfe2e{os.getpid()}")
    yield daemon
    daemon.stop()


def no_journal(root: Path) -> Path:
    """An empty directory, for a /run/systemd/journal without journald."""
    require_root()
    require_tool("unshare")
    empty = root.parent / "no-journal"
    empty.mkdir(exist_ok=True)
    return empty


# --- helpers ------------------------------------------------------------------------------------


def add_kernel(root: Path, journal_dir: Path, *options: str) -> Run:
    """`python3 -m weak_bpf add-kernel NEW` in a child process whose /run/systemd/journal is
    `journal_dir`."""
    argv = [sys.executable, "-m", "weak_bpf", "--root", str(root), *options, "add-kernel", NEW]
    return run_with_journal_dir(journal_dir, argv)


def entries_of(journald: Journald, run: Run) -> list[dict[str, Any]]:
    """All journal entries `run` sent, once journald has stored them."""
    barrier(journald)
    return journald.read(f"_PID={run.pid}")


def barrier(journald: Journald) -> None:
    """Send a marker of our own and wait for it: journald stores a socket's datagrams in order,
    so whatever was sent before the marker is stored once the marker is."""
    marker = f"barrier-{os.getpid()}-{next(_BARRIERS)}"
    assert journald.send(Resolution(marker, Action.ADD_KERNEL, False))
    assert len(journald.wait_for(1, f"WEAK_BPF_KERNEL={marker}")) == 1


_BARRIERS = itertools.count(1)


def report(root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / REPORT).read_text())
    return doc


def by_program(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["path"]: p for p in doc["programs"]}


def split(entries: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the one summary entry, the program entries by program path)."""
    summaries = [e for e in entries if e["MESSAGE_ID"] == journal.MESSAGE_ID_SUMMARY]
    assert len(summaries) == 1, entries
    programs = [e for e in entries if e["MESSAGE_ID"] != journal.MESSAGE_ID_SUMMARY]
    found = {e["WEAK_BPF_PROGRAM"]: e for e in programs}
    assert len(found) == len(programs), "a program was logged twice"
    return summaries[0], found


def tree_hash(root: Path) -> str:
    """Everything under the root: names, types, link targets, contents, modes."""
    h = hashlib.sha256()
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(files + subdirs):
            path = Path(directory, name)
            st = path.lstat()
            h.update(str(path.relative_to(root)).encode() + b"\0" + oct(st.st_mode).encode())
            if path.is_symlink():
                h.update(b"L" + os.readlink(path).encode())
            elif path.is_file():
                h.update(b"F" + path.read_bytes())
    return h.hexdigest()


def check_entries_match_report(
    entries: list[dict[str, Any]], doc: dict[str, Any], pid: int
) -> dict[str, dict[str, Any]]:
    """Journal and report file say the same, program by program; the program entries."""
    summary, logged = split(entries)
    for e in entries:
        assert e["SYSLOG_IDENTIFIER"] == "weak-bpf-progs"
        assert e["WEAK_BPF_KERNEL"] == NEW
        assert e["WEAK_BPF_DRY_RUN"] == "0"
        assert e["WEAK_BPF_ACTION"] == "add-kernel"
        assert e["_TRANSPORT"] == "journal"
        assert e["_PID"] == str(pid)
    assert doc["kernel"] == NEW and doc["action"] == "add-kernel" and doc["dry_run"] is False
    assert summary["MESSAGE"] == doc["summary"]
    counts = doc["counts"]
    assert summary["WEAK_BPF_PROGRAMS"] == str(counts["programs"]) == str(len(doc["programs"]))
    assert summary["WEAK_BPF_LINKED_COUNT"] == str(counts["linked"])
    assert summary["WEAK_BPF_NOT_LINKABLE_COUNT"] == str(counts["not_linkable"])
    assert summary["WEAK_BPF_CHANGED_COUNT"] == str(counts["changed"])
    assert summary["WEAK_BPF_ERROR_COUNT"] == "0" and doc["errors"] == []
    assert summary["PRIORITY"] == ("4" if counts["not_linkable"] else "6")

    programs = by_program(doc)
    assert set(programs) == PROGRAMS
    # one entry per program that changed or is not linkable, and none for the others
    expected = {p for p, d in programs.items() if d["changed"] or d["state"] == "not-linkable"}
    assert set(logged) == expected
    for path, e in logged.items():
        d = programs[path]
        assert e["WEAK_BPF_PACKAGE"] == (d["package"] or "")
        assert e["WEAK_BPF_VERDICT"] == (d["verdict"] or "")
        codes = list(dict.fromkeys(r["code"] for r in d["reasons"]))
        assert e["WEAK_BPF_REASONS"] == ",".join(codes)
        assert e["WEAK_BPF_LINKED"] == ("1" if d["linked"] else "0")
        assert e["WEAK_BPF_WAS_LINKED"] == ("1" if d["was_linked"] else "0")
        if d["state"] == "linked":
            assert (e["MESSAGE_ID"], e["PRIORITY"]) == (journal.MESSAGE_ID_LINKED, "6")
        elif d["state"] == "not-linkable":
            assert (e["MESSAGE_ID"], e["PRIORITY"]) == (journal.MESSAGE_ID_NOT_LINKABLE, "4")
        else:
            assert (e["MESSAGE_ID"], e["PRIORITY"]) == (journal.MESSAGE_ID_NOT_LINKED, "6")
        for r in d["reasons"]:
            assert r["detail"].splitlines()[0] in e["MESSAGE"]
    return logged


# --- the journal --------------------------------------------------------------------------------


def test_add_kernel_reports_to_the_journal_and_the_file(root: Path, journald: Journald) -> None:
    # First run: every program is new to NEW, so every program is logged.
    first = add_kernel(root, journald.runtime_directory)
    assert first.returncode == 0, first.stderr
    doc = report(root)
    logged = check_entries_match_report(entries_of(journald, first), doc, first.pid)
    assert set(logged) == PROGRAMS

    guard = logged[TASK_GUARD]
    assert guard["MESSAGE_ID"] == journal.MESSAGE_ID_NOT_LINKABLE
    assert guard["PRIORITY"] == "4"
    assert guard["WEAK_BPF_LINKED"] == "0"
    assert guard["WEAK_BPF_VERDICT"] == "incompatible"
    assert "license" in guard["WEAK_BPF_REASONS"].split(",")
    assert guard["MESSAGE"].startswith(f"{TASK_GUARD} is not linkable on kernel {NEW}")

    for path, code in BROKEN_ON_NEW.items():
        e = logged[path]
        assert (e["MESSAGE_ID"], e["PRIORITY"]) == (journal.MESSAGE_ID_NOT_LINKABLE, "4")
        assert (e["WEAK_BPF_LINKED"], e["WEAK_BPF_VERDICT"]) == ("0", "incompatible")
        assert e["WEAK_BPF_REASONS"] == code

    linked = {p for p, e in logged.items() if e["WEAK_BPF_LINKED"] == "1"}
    assert linked == LINKED_ON_NEW
    assert logged[CT_KEEPALIVE]["WEAK_BPF_VERDICT"] == "compatible-unstable"
    for path in linked:
        e = logged[path]
        assert (e["MESSAGE_ID"], e["PRIORITY"]) == (journal.MESSAGE_ID_LINKED, "6")
        assert e["WEAK_BPF_VERDICT"] in ("compatible", "compatible-unstable")
        assert e["MESSAGE"].startswith(f"{path} linked for kernel {NEW}")
        # the link is really there, and leads to this object
        link = root / "usr/lib/modules" / NEW / "bpf/weak-updates" / by_program(doc)[path]["link"]
        assert link.is_symlink() and link.resolve() == (root / path).resolve()
    superseded = logged["usr/lib/bpf/acme-net/xdp_ct.bpf.o"]
    assert (superseded["MESSAGE_ID"], superseded["PRIORITY"]) == (
        journal.MESSAGE_ID_NOT_LINKED,
        "6",
    )
    assert superseded["WEAK_BPF_LINKED"] == "0"
    (summary, _) = split(entries_of(journald, first))
    assert summary["PRIORITY"] == "4"  # a program is not linkable
    assert summary["WEAK_BPF_LINKED_COUNT"] == str(len(LINKED_ON_NEW)) == "6"
    assert summary["WEAK_BPF_NOT_LINKABLE_COUNT"] == str(1 + len(BROKEN_ON_NEW)) == "4"
    assert summary["WEAK_BPF_CHANGED_COUNT"] == str(len(PROGRAMS)) == "11"

    # Second run: nothing changed; only the programs that are not linkable are logged again.
    second = add_kernel(root, journald.runtime_directory)
    assert second.returncode == 0, second.stderr
    doc2 = report(root)
    logged2 = check_entries_match_report(entries_of(journald, second), doc2, second.pid)
    assert set(logged2) == {TASK_GUARD, *BROKEN_ON_NEW}
    assert doc2["counts"]["changed"] == 0
    assert {p["path"]: p["state"] for p in doc2["programs"]} == {
        p["path"]: p["state"] for p in doc["programs"]
    }
    for p in doc2["programs"]:  # what the first run found is now the previous state
        assert p["previous_verdict"] == p["verdict"]
        assert p["was_linked"] == p["linked"]
    # the first run's entries are still there, unchanged in number
    assert len(entries_of(journald, first)) == 1 + len(PROGRAMS)


def test_dry_run_sends_nothing_and_changes_nothing(root: Path, journald: Journald) -> None:
    assert add_kernel(root, journald.runtime_directory).returncode == 0
    # make the dry run have something to do: a link removed by hand comes back
    (root / "usr/lib/modules" / NEW / "bpf/weak-updates/acme-trace/exec_state.bpf.o").unlink()
    barrier(journald)
    before_entries = len(journald.read(f"WEAK_BPF_KERNEL={NEW}"))
    before = tree_hash(root)
    dry = add_kernel(root, journald.runtime_directory, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "acme-trace/exec_state.bpf.o" in dry.stdout  # the plan is printed
    assert entries_of(journald, dry) == []
    assert len(journald.read(f"WEAK_BPF_KERNEL={NEW}")) == before_entries
    assert tree_hash(root) == before


# The report of the first add-kernel NEW on the example root, as stderr has it without a journal:
# the summary, then one headline per program (all of them: every program is new to NEW), in path
# order, each followed by its reasons, as (code and symbol, a phrase of the detail).
STDERR_SUMMARY = (
    f"weak-bpf-progs: add-kernel {NEW}: 11 programs: 6 linked (6 new), 4 not linkable, 1 not "
    "linked (another build is used)"
)
STDERR_HEADLINES: list[tuple[str, list[tuple[str, str]]]] = [
    (
        f"warning: usr/lib/bpf/acme-fs/buddy_load.bpf.o is not linkable on kernel {NEW}: "
        "incompatible",
        [
            (
                "core-relo ext4_buddy.bd_bitmap_page (0:2)",
                f"{NEW} has no field ext4_buddy.bd_bitmap_page",
            )
        ],
    ),
    (f"info: usr/lib/bpf/acme-net/tcp_retrans.bpf.o linked for kernel {NEW} (compatible)", []),
    (
        f"info: usr/lib/bpf/acme-net/xdp_ct.bpf.o: usr/lib/modules/{OLD}/bpf/extra/acme-net/"
        f"xdp_ct.bpf.o holds the link for kernel {NEW}",
        [],
    ),
    (
        f"warning: usr/lib/bpf/acme-power/padata_offline.bpf.o is not linkable on kernel {NEW}: "
        "incompatible",
        [
            (  # the enumerator is used by both of its programs
                "core-relo enum cpuhp_state::CPUHP_PADATA_DEAD = 39",
                f"{NEW} has no value CPUHP_PADATA_DEAD of enum cpuhp_state",
            ),
            (
                "core-relo enum cpuhp_state::CPUHP_PADATA_DEAD = 39",
                f"{NEW} has no value CPUHP_PADATA_DEAD of enum cpuhp_state",
            ),
        ],
    ),
    (
        f"warning: {TASK_GUARD} is not linkable on kernel {NEW}: incompatible",
        [
            ("license", '"Proprietary" is not GPL-compatible'),
            ("kfunc-missing bpf_task_acquire", f"{NEW} provides no such function"),
            ("kfunc-missing bpf_task_release", f"{NEW} provides no such function"),
        ],
    ),
    (f"info: {EXEC_STATE} linked for kernel {NEW} (compatible)", []),
    (f"info: usr/lib/bpf/acme-trace/open_count.bpf.o linked for kernel {NEW} (compatible)", []),
    (f"info: {CT_KEEPALIVE} linked for kernel {NEW} (compatible-unstable)", []),
    (
        f"warning: usr/lib/bpf/globex-obs/epoll_leak.bpf.o is not linkable on kernel {NEW}: "
        "incompatible",
        [("attach-target ep_free", f"ep_free is absent from {NEW}")],
    ),
    (
        f"info: usr/lib/bpf/globex-storage/bitmap_release.bpf.o linked for kernel {NEW} "
        "(compatible)",
        [],
    ),
    (
        f"info: usr/lib/modules/{OLD}/bpf/extra/acme-net/xdp_ct.bpf.o linked for kernel {NEW} "
        "(compatible)",
        [],
    ),
]


def test_without_a_journal_the_report_goes_to_the_file_and_stderr(root: Path) -> None:
    proc = add_kernel(root, no_journal(root))
    assert proc.returncode == 0, proc.stderr
    assert set(by_program(report(root))) == PROGRAMS  # the file is written all the same
    # stdout has only the summary; stderr the whole report
    assert proc.stdout == STDERR_SUMMARY.removeprefix("weak-bpf-progs: ") + "\n"
    lines = proc.stderr.splitlines()
    assert lines[0] == STDERR_SUMMARY, proc.stderr
    got: list[tuple[str, list[tuple[str, str]]]] = []
    for line in lines[1:]:
        if line.startswith("weak-bpf-progs: "):
            got.append((line.removeprefix("weak-bpf-progs: "), []))
        else:
            assert line.startswith("      ") and got, line  # a reason, indented under its program
            subject, _, detail = line.strip().partition(": ")
            got[-1][1].append((subject, detail))
    assert [headline for headline, _ in got] == [headline for headline, _ in STDERR_HEADLINES]
    for (headline, reasons), (_, expected) in zip(got, STDERR_HEADLINES):
        assert [subject for subject, _ in reasons] == [s for s, _ in expected], headline
        for (_, detail), (_, phrase) in zip(reasons, expected):
            assert phrase in detail, (headline, detail)


# --- the owning rpm package --------------------------------------------------------------------

SPEC = """\
Name: acme-trace-bpf
Version: 2.0
Release: 3
Summary: weak-bpf-progs end-to-end test package
License: GPL-2.0-only
BuildArch: noarch
%description
exec_state, the real BPF object
%install
install -D -m 0644 {source} %{{buildroot}}/{path}
%files
/{path}
"""


@pytest.fixture(scope="module")
def trace_rpm(tmp_path_factory: pytest.TempPathFactory, pristine: Path) -> Path:
    require_root()
    require_tool("rpmbuild")
    require_tool("rpm")
    require(rpmdb._import_rpm() is not None, "python3-rpm is not installed")
    topdir = tmp_path_factory.mktemp("rpmbuild")
    source = topdir / "exec_state.bpf.o"
    shutil.copyfile(pristine / EXEC_STATE, source)
    spec = topdir / "acme-trace-bpf.spec"
    spec.write_text(SPEC.format(source=source, path=EXEC_STATE))
    subprocess.run(
        [
            "rpmbuild",
            "-bb",
            "--quiet",
            "--define",
            f"_topdir {topdir}",
            "--define",
            "__os_install_post %{nil}",  # no stripping: the packaged object is the real one
            str(spec),
        ],
        check=True,
        capture_output=True,
    )
    (rpm_file,) = (topdir / "RPMS" / "noarch").glob("acme-trace-bpf-2.0-3.*.rpm")
    return rpm_file


def test_the_owning_package_comes_from_the_rpm_database(
    root: Path, trace_rpm: Path, journald: Journald
) -> None:
    original = (root / EXEC_STATE).read_bytes()
    rpm_args = ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm"]
    subprocess.run([*rpm_args, "--initdb"], check=True, capture_output=True)
    subprocess.run(
        [*rpm_args, "-i", "--nodeps", "--noscripts", "--replacefiles", str(trace_rpm)],
        check=True,
        capture_output=True,
    )
    # rpm agrees on the owner, and the installed file is the real object
    owner = subprocess.run(
        [*rpm_args, "-qf", "--qf", "%{NVR}", "/" + EXEC_STATE],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert owner == PACKAGE
    assert (root / EXEC_STATE).read_bytes() == original

    proc = add_kernel(root, journald.runtime_directory)
    assert proc.returncode == 0, proc.stderr
    doc = report(root)
    assert {p: d["package"] for p, d in by_program(doc).items()} == {
        p: (PACKAGE if p == EXEC_STATE else None) for p in PROGRAMS
    }
    assert by_program(doc)[EXEC_STATE]["state"] == "linked"
    logged = check_entries_match_report(entries_of(journald, proc), doc, proc.pid)
    assert logged[EXEC_STATE]["WEAK_BPF_PACKAGE"] == PACKAGE
    assert logged[EXEC_STATE]["WEAK_BPF_LINKED"] == "1"
    assert {e["WEAK_BPF_PACKAGE"] for p, e in logged.items() if p != EXEC_STATE} == {""}


# --- the links the report speaks of are there --------------------------------------------------


def test_a_weak_updates_link_removed_by_hand_is_restored(root: Path) -> None:
    """`rm -rf bpf/weak-updates` takes only the link to the current generation away: the kernel
    then sees no links, so the next add-kernel must put them back, not report them as linked."""
    missing = no_journal(root)
    assert add_kernel(root, missing).returncode == 0
    weak_updates = root / "usr/lib/modules" / NEW / "bpf/weak-updates"
    assert weak_updates.is_symlink()
    weak_updates.unlink()
    proc = add_kernel(root, missing)
    assert proc.returncode == 0, proc.stderr
    linked = [p for p in report(root)["programs"] if p["linked"]]
    assert {p["path"] for p in linked} == LINKED_ON_NEW
    for p in linked:
        link = weak_updates / p["link"]
        assert link.is_symlink() and link.resolve() == (root / p["path"]).resolve(), p
