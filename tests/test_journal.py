"""The resolution report: its JSON, its journal entries read back from a real systemd-journald,
and the catalog text `journalctl -x` shows for them.

The entries are sent by child processes (journal.send_to_journal(), the CLI, the daemon) that
run in a mount namespace of their own where /run/systemd/journal is the test journald's
directory (tests/journald.py), or one without journald: systemd.journal always sends to
/run/systemd/journal/socket."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from weak_bpf.apply import journal
from weak_bpf.apply.resolution import Action, ProgramChange, Resolution, State
from weak_bpf.model import Reason, ReasonCode, Verdict

import journald as journald_helper
from conftest import REPO, require_root, require_tool
from journald import Journald, Run, run_with_journal_dir

CATALOG = REPO / "systemd" / "weak-bpf-progs.catalog"
MESSAGE_IDS = {
    journal.MESSAGE_ID_SUMMARY,
    journal.MESSAGE_ID_LINKED,
    journal.MESSAGE_ID_NOT_LINKABLE,
    journal.MESSAGE_ID_NOT_LINKED,
}

KFUNC = Reason(ReasonCode.KFUNC_MISSING, "bpf_xdp_ct_lookup", "no kfunc bpf_xdp_ct_lookup in K")
CORE = Reason(ReasonCode.CORE_RELO, None, "field sk_buff.tstamp gone\nsecond line of detail")

LINKED = ProgramChange(
    "usr/lib/bpf/lb/lb.bpf.o",
    "lb-1.0-1.el9",
    Verdict.COMPATIBLE,
    linked=True,
    link="lb/lb.bpf.o",
)
BROKEN = ProgramChange(
    "usr/lib/modules/6.1.0-18-amd64/bpf/extra/fw/fw.bpf.o",
    None,
    Verdict.INCOMPATIBLE,
    (KFUNC, CORE),
    linked=False,
    was_linked=True,
    previous_verdict=Verdict.COMPATIBLE,
    link="fw/fw.bpf.o",
)
NATIVE = ProgramChange("usr/lib/modules/K/bpf/extra/n/n.bpf.o", "n-2-1", Verdict.NATIVE)
SUPERSEDED = ProgramChange(  # unchanged and nothing wrong: no entry of its own
    "usr/lib/modules/6.0.0-1/bpf/extra/lb/lb.bpf.o",
    "lb-0.9-1",
    Verdict.COMPATIBLE,
    previous_verdict=Verdict.COMPATIBLE,
    superseded_by=LINKED.path,
)
GONE = ProgramChange(
    "usr/lib/bpf/old/old.bpf.o",
    "old-1-1",
    None,
    was_linked=True,
    previous_verdict=Verdict.COMPATIBLE,
)
UNKNOWN_UNCHANGED = ProgramChange(  # not linkable: reported although nothing changed
    "usr/lib/bpf/u/u.bpf.o",
    "u-1-1",
    Verdict.UNKNOWN,
    (Reason(ReasonCode.KERNEL_DATA_MISSING, None, "K has no BTF"),),
    previous_verdict=Verdict.UNKNOWN,
)
PROGRAMS = (LINKED, BROKEN, NATIVE, SUPERSEDED, GONE, UNKNOWN_UNCHANGED)


def resolution(kernel: str, *, dry_run: bool = False, errors: tuple[str, ...] = ()) -> Resolution:
    return Resolution(kernel, Action.ADD_KERNEL, dry_run, PROGRAMS, errors)


# --- the report value ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "state", "changed", "reported"),
    [
        (LINKED, State.LINKED, True, True),
        (BROKEN, State.NOT_LINKABLE, True, True),
        (NATIVE, State.NOT_LINKED, True, True),
        (SUPERSEDED, State.NOT_LINKED, False, False),
        (GONE, State.NOT_LINKED, True, True),
        (UNKNOWN_UNCHANGED, State.NOT_LINKABLE, False, True),
        (ProgramChange("p", None, Verdict.COMPATIBLE_UNSTABLE), State.NOT_LINKABLE, True, True),
        (
            ProgramChange(
                "p",
                None,
                Verdict.COMPATIBLE,
                linked=True,
                was_linked=True,
                previous_verdict=Verdict.COMPATIBLE,
            ),
            State.LINKED,
            False,
            False,
        ),
        (
            ProgramChange(
                "p",
                None,
                Verdict.COMPATIBLE_UNSTABLE,
                linked=True,
                was_linked=True,
                previous_verdict=Verdict.COMPATIBLE,
            ),
            State.LINKED,
            True,
            True,
        ),
    ],
)
def test_program_state(program: ProgramChange, state: State, changed: bool, reported: bool) -> None:
    assert (program.state, program.changed, program.reported) == (state, changed, reported)


def test_json_schema_and_round_trip() -> None:
    r = resolution("6.1.0-18-amd64", errors=("cannot write weak-updates: disk full",))
    doc = json.loads(json.dumps(r.to_json()))
    assert doc["version"] == 1
    assert set(doc) == {
        "version",
        "kernel",
        "action",
        "dry_run",
        "summary",
        "counts",
        "programs",
        "errors",
    }
    assert doc["action"] == "add-kernel" and doc["dry_run"] is False
    assert doc["counts"] == {
        "programs": 6,
        "linked": 1,
        "not_linkable": 2,
        "changed": 4,
        "errors": 1,
    }
    broken = doc["programs"][1]
    assert broken == {
        "path": BROKEN.path,
        "package": None,
        "verdict": "incompatible",
        "previous_verdict": "compatible",
        "state": "not-linkable",
        "linked": False,
        "was_linked": True,
        "changed": True,
        "blocked": False,
        "blocked_by": None,
        "link": "fw/fw.bpf.o",
        "superseded_by": None,
        "reasons": [
            {"code": "kfunc-missing", "symbol": "bpf_xdp_ct_lookup", "detail": KFUNC.detail},
            {"code": "core-relo", "symbol": None, "detail": CORE.detail},
        ],
    }
    assert doc["programs"][4]["verdict"] is None
    assert Resolution.from_json(doc) == r
    with pytest.raises(ValueError, match="version"):
        Resolution.from_json({**doc, "version": 2})


def test_a_blocked_link_is_one_error_told_by_its_program() -> None:
    blocked = dataclasses.replace(LINKED, linked=False, blocked=True)
    r = Resolution("K", Action.ADD_KERNEL, False, (blocked, NATIVE), ("disk full",))
    doc = json.loads(json.dumps(r.to_json()))
    assert doc["errors"] == ["disk full", r.blocked_error(blocked)]
    assert doc["counts"]["errors"] == 2 and doc["programs"][0]["state"] == "not-linkable"
    assert doc["programs"][0]["blocked"] is True
    assert Resolution.from_json(doc) == r
    text = journal.stderr_report(r)
    assert text.count("did not create") == 1
    assert f"weak-bpf-progs: warning: {r.blocked_error(blocked)}\n" in text
    assert f"      hint: {r.blocked_hint()}\n" in text
    assert text.splitlines()[-1] == "weak-bpf-progs: error: disk full"


def test_summary() -> None:
    assert resolution("K").summary == (
        "add-kernel K: 6 programs: 1 linked (1 new), 2 not linkable, 1 not linked (another "
        "build is used), 1 native (used from bpf/extra/), 1 gone; 2 links removed"
    )
    assert resolution("K", dry_run=True).summary == (
        "dry run: add-kernel K: 6 programs: 1 would be linked (1 new), 2 not linkable, 1 not "
        "linked (another build is used), 1 native (used from bpf/extra/), 1 gone; 2 links would "
        "be removed"
    )
    empty = Resolution("K", Action.REMOVE_KERNEL, False, (), ("lock timeout",))
    assert empty.summary == "remove-kernel K: 0 links removed; 1 error"


def test_priorities() -> None:
    assert journal.summary_priority(resolution("K")) == 4
    assert journal.summary_priority(resolution("K", errors=("x",))) == 3
    only_linked = Resolution("K", Action.ADD_PROGS, False, (LINKED, NATIVE))
    assert journal.summary_priority(only_linked) == 6
    entries = journal.entries(resolution("K"))
    assert [e["PRIORITY"] for e in entries] == ["4", "6", "4", "6", "6", "4"]


def test_fields_are_bytes_in_entry_order() -> None:
    """What sendv() gets: FIELD=value, newlines kept (sd_journal_sendv sends those binary-safe),
    a value that is not UTF-8 (a surrogate-escaped path) with a replacement character."""
    assert journal.fields({"A": "one", "MESSAGE": "x\ny", "B": "é", "P": "a\udcffb"}) == [
        b"A=one",
        b"MESSAGE=x\ny",
        b"B=\xc3\xa9",
        b"P=a?b",
    ]


def test_stderr_report() -> None:
    text = journal.stderr_report(resolution("K", errors=("disk full",)))
    lines = text.splitlines()
    assert (
        lines[0] == "weak-bpf-progs: add-kernel K: 6 programs: 1 linked (1 new), 2 not "
        "linkable, 1 not linked (another build is used), 1 native (used from bpf/extra/), 1 "
        "gone; 2 links removed; 1 error"
    )
    assert (
        f"weak-bpf-progs: warning: {BROKEN.path} is not linkable on kernel K: incompatible; "
        "its link was removed" in lines
    )
    assert "      kfunc-missing bpf_xdp_ct_lookup: no kfunc bpf_xdp_ct_lookup in K" in lines
    assert lines[-1] == "weak-bpf-progs: error: disk full"
    assert SUPERSEDED.path not in text


# --- a real journald, and processes that log to it ----------------------------------------------


@pytest.fixture(scope="session")
def journald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journald]:
    host_journal_dir = os.path.lexists("/run/systemd/journal")
    daemon = journald_helper.start(tmp_path_factory.mktemp("journald"), f"weakbpftest{os.getpid()}")
    yield daemon
    daemon.stop()
    # Isolated: the host's /run and /var/log never saw it, nor its clients' mounts.
    assert not Path(f"/run/systemd/journal.{daemon.namespace}").exists()
    assert not list(Path("/var/log/journal").glob(f"*.{daemon.namespace}"))
    assert os.path.lexists("/run/systemd/journal") == host_journal_dir


def run(journal_dir: Path, *argv: str, **env: str) -> Run:
    """The system interpreter, with this checkout, running ARGV with `journal_dir` as its
    /run/systemd/journal."""
    return run_with_journal_dir(
        journal_dir, [sys.executable, *argv], timeout=60, env={**os.environ, **env}
    )


@pytest.fixture
def no_journal(tmp_path: Path) -> Path:
    """A /run/systemd/journal without journald: empty."""
    require_root()
    require_tool("unshare")
    empty = tmp_path / "no-journal"
    empty.mkdir()
    return empty


# --- no journal ---------------------------------------------------------------------------------


def test_no_journal_returns_false(no_journal: Path, tmp_path: Path) -> None:
    r = resolution("K")
    assert journald_helper.send(no_journal, r) is False  # no socket: sd_journal_sendv is silent
    dead = tmp_path / "dead"  # the socket file of a journald that is gone: ECONNREFUSED
    dead.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(dead / "socket"))
    assert journald_helper.send(dead, r) is False
    odd = tmp_path / "odd"  # not a socket at all
    (odd / "socket").mkdir(parents=True)
    assert journald_helper.send(odd, r) is False


def test_without_python3_systemd_no_journal(journald: Journald, tmp_path: Path) -> None:
    """journald listens, but systemd.journal cannot be imported (an installer, a minimal
    system): False, nothing sent, nothing raised."""
    shadow = tmp_path / "shadow" / "systemd"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("no python3-systemd here")\n')
    kernel = "6.1.0-no-python3-systemd"
    prefix = ("env", f"PYTHONPATH={shadow.parent}:{REPO}")
    assert journald.send(resolution(kernel), prefix=prefix) is False
    barrier(journald)
    assert journald.read(f"WEAK_BPF_KERNEL={kernel}") == []


def test_cli_without_a_journal_writes_the_report_to_stderr(
    no_journal: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    proc = run(no_journal, "-m", "weak_bpf", "--root", str(root), "remove-kernel", "6.1.0-gone")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "weak-bpf-progs: remove-kernel 6.1.0-gone: 0 links removed\n"
    assert proc.stdout == "remove-kernel 6.1.0-gone: 0 links removed\n"
    assert (root / "var/lib/weak-bpf-progs/reports/6.1.0-gone.json").is_file()


def test_daemon_without_a_journal_logs_to_stderr(no_journal: Path, tmp_path: Path) -> None:
    """Even run by systemd (JOURNAL_STREAM), with no journal to send to: lines on stderr. A
    --root that is no directory is logged before D-Bus is touched."""
    missing = tmp_path / "no-such-root"
    proc = run(no_journal, "-m", "weak_bpf.daemon", "--root", str(missing), JOURNAL_STREAM="8:1")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        f"weak-bpf-progsd: ERROR: {missing}: no such directory\n"
        "weak-bpf-progsd: ERROR: hint: --root names an installed system\n"
    )


# --- to a real journald -------------------------------------------------------------------------


def by_id(entries: list[dict[str, Any]], message_id: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["MESSAGE_ID"] == message_id]


def sent(
    journald: Journald, r: Resolution, *, prefix: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The entries of `r`, sent by a child process, once journald has stored them all."""
    assert journald.send(r, prefix=prefix) is True
    expected = 1 + len(r.reported)
    got = journald.wait_for(expected, f"WEAK_BPF_KERNEL={r.kernel}")
    assert len(got) == expected
    return got


_BARRIERS = itertools.count(1)


def barrier(journald: Journald) -> None:
    """Send a marker and wait for it: journald stores what reaches its socket in order, so all
    that was sent before the marker is stored once the marker is."""
    marker = f"barrier-{os.getpid()}-{next(_BARRIERS)}"
    assert journald.send(Resolution(marker, Action.ADD_KERNEL, False)) is True
    assert len(journald.wait_for(1, f"WEAK_BPF_KERNEL={marker}")) == 1


def user_fields(entry: dict[str, Any]) -> set[str]:
    """The fields the sender chose: the names of journald's own start with "_"."""
    return {k for k in entry if not k.startswith("_")}


def test_entries_read_back(journald: Journald) -> None:
    kernel = "6.1.0-18+wb.1_test"  # regex characters, as real kernel versions have
    r = resolution(kernel)
    got = sent(journald, r)
    # exactly the fields of journal.entries(): sendv(), so no CODE_FILE/CODE_LINE/CODE_FUNC
    assert sorted(sorted(user_fields(e)) for e in got) == sorted(
        sorted(e) for e in journal.entries(r)
    )
    assert len({e["_PID"] for e in got}) == 1
    for e in got:
        assert e["SYSLOG_IDENTIFIER"] == "weak-bpf-progs"
        assert e["WEAK_BPF_KERNEL"] == kernel
        assert e["WEAK_BPF_DRY_RUN"] == "0"
        assert e["WEAK_BPF_ACTION"] == "add-kernel"
        assert e["_TRANSPORT"] == "journal"
        assert e["MESSAGE_ID"] in MESSAGE_IDS

    (summary,) = by_id(got, journal.MESSAGE_ID_SUMMARY)
    assert summary["PRIORITY"] == "4"
    assert summary["MESSAGE"] == r.summary
    assert (summary["WEAK_BPF_PROGRAMS"], summary["WEAK_BPF_LINKED_COUNT"]) == ("6", "1")
    assert (summary["WEAK_BPF_NOT_LINKABLE_COUNT"], summary["WEAK_BPF_CHANGED_COUNT"]) == ("2", "4")
    assert "WEAK_BPF_PROGRAM" not in summary

    programs = {e["WEAK_BPF_PROGRAM"]: e for e in got if e is not summary}
    assert set(programs) == {p.path for p in r.reported}
    assert SUPERSEDED.path not in programs

    linked = programs[LINKED.path]
    assert linked["MESSAGE_ID"] == journal.MESSAGE_ID_LINKED
    assert linked["PRIORITY"] == "6"
    assert linked["WEAK_BPF_PACKAGE"] == "lb-1.0-1.el9"
    assert linked["WEAK_BPF_VERDICT"] == "compatible"
    assert linked["WEAK_BPF_REASONS"] == ""
    assert (linked["WEAK_BPF_LINKED"], linked["WEAK_BPF_WAS_LINKED"]) == ("1", "0")
    assert linked["MESSAGE"] == f"{LINKED.path} linked for kernel {kernel} (compatible)"

    broken = programs[BROKEN.path]
    assert broken["MESSAGE_ID"] == journal.MESSAGE_ID_NOT_LINKABLE
    assert broken["PRIORITY"] == "4"
    assert broken["WEAK_BPF_PACKAGE"] == ""
    assert broken["WEAK_BPF_VERDICT"] == "incompatible"
    assert broken["WEAK_BPF_REASONS"] == "kfunc-missing,core-relo"
    assert (broken["WEAK_BPF_LINKED"], broken["WEAK_BPF_WAS_LINKED"]) == ("0", "1")
    assert broken["MESSAGE"].splitlines() == [
        f"{BROKEN.path} is not linkable on kernel {kernel}: incompatible; its link was removed",
        f"  kfunc-missing bpf_xdp_ct_lookup: {KFUNC.detail}",
        "  core-relo: field sk_buff.tstamp gone",
        "second line of detail",
    ]

    unknown = programs[UNKNOWN_UNCHANGED.path]
    assert (unknown["MESSAGE_ID"], unknown["PRIORITY"]) == (journal.MESSAGE_ID_NOT_LINKABLE, "4")
    assert (unknown["WEAK_BPF_VERDICT"], unknown["WEAK_BPF_REASONS"]) == (
        "unknown",
        "kernel-data-missing",
    )

    for program in (NATIVE, GONE):
        e = programs[program.path]
        assert (e["MESSAGE_ID"], e["PRIORITY"], e["WEAK_BPF_LINKED"]) == (
            journal.MESSAGE_ID_NOT_LINKED,
            "6",
            "0",
        )
    assert programs[NATIVE.path]["WEAK_BPF_VERDICT"] == "native"
    assert programs[GONE.path]["WEAK_BPF_VERDICT"] == ""
    assert programs[GONE.path]["WEAK_BPF_WAS_LINKED"] == "1"


def test_dry_run_and_errors_read_back(journald: Journald) -> None:
    r = resolution("6.1.0-dry", dry_run=True, errors=("lock timeout after 30 s",))
    got = sent(journald, r)
    assert {e["WEAK_BPF_DRY_RUN"] for e in got} == {"1"}
    (summary,) = by_id(got, journal.MESSAGE_ID_SUMMARY)
    assert summary["PRIORITY"] == "3"
    assert summary["MESSAGE"].startswith("dry run: add-kernel 6.1.0-dry")
    assert summary["MESSAGE"].endswith("\n  error: lock timeout after 30 s")
    (linked,) = by_id(got, journal.MESSAGE_ID_LINKED)
    assert "would be linked" in linked["MESSAGE"]


def test_a_value_that_is_not_utf8_arrives_replaced(journald: Journald) -> None:
    path = "usr/lib/bpf/odd/bad\udcff.bpf.o"  # a file name that is not UTF-8, as os gives it
    gone = ProgramChange(path, None, None, was_linked=True)
    got = sent(journald, Resolution("6.1.0-odd", Action.REMOVE_PROGS, False, (gone,)))
    (e,) = by_id(got, journal.MESSAGE_ID_NOT_LINKED)
    assert e["WEAK_BPF_PROGRAM"] == "usr/lib/bpf/odd/bad?.bpf.o"


def test_large_entry_arrives_intact(journald: Journald) -> None:
    """An entry bigger than any datagram its sender may send goes as a sealed memfd
    (sd_journal_sendv, on EMSGSIZE). A datagram is bounded by the socket's send buffer:
    libsystemd asks for 8 MiB, which without CAP_NET_ADMIN (SO_SNDBUFFORCE) the kernel caps at
    net.core.wmem_max, then doubles. So the sender runs without CAP_NET_ADMIN, and the MESSAGE
    is over 200 KB and over twice wmem_max."""
    setpriv = require_tool("setpriv")
    wmem_max = int(Path("/proc/sys/net/core/wmem_max").read_text())
    size = max(200_000, 2 * wmem_max) + 100_000
    reasons = tuple(
        Reason(ReasonCode.CORE_RELO, f"struct_{i}", f"{i:08}" * 125) for i in range(size // 1000)
    )
    big = ProgramChange("usr/lib/bpf/big/big.bpf.o", None, Verdict.INCOMPATIBLE, reasons)
    r = Resolution("6.1.0-big", Action.ADD_PROGS, False, (big,))
    message = journal.program_message(r, big)
    assert len(message) > size
    drop = (setpriv, "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--")
    got = sent(journald, r, prefix=drop)
    (e,) = by_id(got, journal.MESSAGE_ID_NOT_LINKABLE)
    assert e["MESSAGE"] == message  # intact, to the last byte
    assert len(e["MESSAGE"].splitlines()) == len(reasons) + 1
    assert e["WEAK_BPF_REASONS"] == "core-relo"  # each code once
    assert e["WEAK_BPF_PROGRAM"] == big.path
    (summary,) = by_id(got, journal.MESSAGE_ID_SUMMARY)
    assert summary["_PID"] == e["_PID"]


# --- the CLI and the daemon, to the journal -----------------------------------------------------


def test_cli_reports_to_the_journal(journald: Journald, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    kernel = "6.1.0-cli-journal"
    args = ("-m", "weak_bpf", "--root", str(root), "remove-kernel", kernel)
    proc = run(journald.runtime_directory, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # the report went to the journal, not to stderr
    assert proc.stdout == f"remove-kernel {kernel}: 0 links removed\n"
    barrier(journald)
    (e,) = journald.read(f"WEAK_BPF_KERNEL={kernel}")
    assert e["_PID"] == str(proc.pid)
    assert (e["MESSAGE_ID"], e["PRIORITY"]) == (journal.MESSAGE_ID_SUMMARY, "6")
    assert e["MESSAGE"] == f"remove-kernel {kernel}: 0 links removed"
    assert (e["WEAK_BPF_ACTION"], e["WEAK_BPF_PROGRAMS"]) == ("remove-kernel", "0")
    assert e["SYSLOG_IDENTIFIER"] == "weak-bpf-progs"


def test_daemon_under_systemd_logs_to_the_journal(journald: Journald, tmp_path: Path) -> None:
    """weak-bpf-progsd run by systemd (JOURNAL_STREAM set) logs through JournalHandler."""
    missing = tmp_path / "no-such-root"
    args = ("-m", "weak_bpf.daemon", "--root", str(missing))
    proc = run(journald.runtime_directory, *args, JOURNAL_STREAM="8:1")
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", "")
    barrier(journald)
    got = journald.read(f"_PID={proc.pid}")
    assert [(e["SYSLOG_IDENTIFIER"], e["PRIORITY"], e["MESSAGE"]) for e in got] == [
        ("weak-bpf-progsd", "3", f"{missing}: no such directory"),
        ("weak-bpf-progsd", "3", "hint: --root names an installed system"),
    ]


def test_catalog_lists_every_message_id(tmp_path: Path) -> None:
    require_tool("journalctl")
    source = tmp_path / "usr/lib/systemd/catalog"
    source.mkdir(parents=True)
    (source / CATALOG.name).write_bytes(CATALOG.read_bytes())
    subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], check=True)
    listed = subprocess.run(
        ["journalctl", f"--root={tmp_path}", "--list-catalog"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ids = {line.split()[0] for line in listed.splitlines()}
    assert ids == MESSAGE_IDS
    # the same ids, and no others, in the source
    assert set(re.findall(r"^-- ([0-9a-f]{32})$", CATALOG.read_text(), re.M)) == MESSAGE_IDS


def test_journalctl_x_shows_catalog(journald: Journald) -> None:
    kernel = "6.1.0-catalog"
    sent(journald, resolution(kernel))
    text = journald.catalog_text([CATALOG], f"WEAK_BPF_KERNEL={kernel}")
    assert f"Subject: BPF programs resolved for kernel {kernel}" in text
    assert f"Subject: BPF program {LINKED.path} linked for kernel {kernel}" in text
    assert f"Subject: BPF program {BROKEN.path} is not linkable on kernel {kernel}" in text
    assert f"Subject: BPF program {NATIVE.path} has no link for kernel {kernel}" in text
    assert "Reasons: kfunc-missing,core-relo." in text
    assert "Defined-By: weak-bpf-progs" in text
    assert "@WEAK_BPF_" not in text  # every substitution found its field
