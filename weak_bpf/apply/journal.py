"""The journal reporter: a Resolution as structured journal entries (SPEC §6), and as text for
stderr when there is no journal.

Entries: one summary entry, then one for each program whose state changed or that is not
linkable. Every entry has SYSLOG_IDENTIFIER=weak-bpf-progs, a fixed MESSAGE_ID (explained by
systemd/weak-bpf-progs.catalog, shown by `journalctl -x`), PRIORITY, WEAK_BPF_KERNEL,
WEAK_BPF_ACTION and WEAK_BPF_DRY_RUN (1/0). Program entries add WEAK_BPF_PROGRAM (the path
relative to the root), WEAK_BPF_PACKAGE (empty when unknown), WEAK_BPF_VERDICT (empty when the
object or kernel is gone), WEAK_BPF_REASONS (the distinct reason codes, comma-separated; the details
are in MESSAGE), WEAK_BPF_LINKED and WEAK_BPF_WAS_LINKED (1/0). The summary adds WEAK_BPF_PROGRAMS,
WEAK_BPF_LINKED_COUNT, WEAK_BPF_NOT_LINKABLE_COUNT, WEAK_BPF_CHANGED_COUNT, WEAK_BPF_ERROR_COUNT.

PRIORITY: a linked program 6 (info), a program that is not linkable 4 (warning), a program left
unlinked for no fault of its own (native, superseded by a newer build, removed) 6. The summary is
6, 4 if any program is not linkable, 3 (err) if the plan could not be applied.

Transport: systemd.journal (python3-systemd), whose sendv() is sd_journal_sendv: journald's native
protocol on /run/systemd/journal/socket, an entry too big for a datagram passed as a sealed memfd.
sendv(), not send(): send() would add CODE_FILE, CODE_LINE and CODE_FUNC to every entry. The
module is imported on first use, and only if that socket exists (sd_journal_sendv says nothing
when it is missing). With no journal to talk to (no python3-systemd, as in an installer or a
minimal system; no socket, as in a chroot; a socket nobody listens on; journald refusing an
entry), send_to_journal() returns False and never raises; the caller then prints stderr_report().
Like every client of journald, sendv() waits while journald's queue is full: a hung journald is
restarted by its watchdog (WatchdogSec=3min), whose socket keeps the queue. (python3-systemd
holds the GIL while it waits, so no thread could time it out.)

Dry runs: the entries say "would be linked" and carry WEAK_BPF_DRY_RUN=1. Whether a dry run
sends them at all is the caller's choice (SPEC §5: a dry run logs nothing that says it did
something).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from weak_bpf.apply.resolution import ProgramChange, Resolution, State
from weak_bpf.model import Verdict

IDENTIFIER = "weak-bpf-progs"
# Where sd_journal_sendv sends, fixed in libsystemd: only checked here, never chosen.
JOURNAL_SOCKET = "/run/systemd/journal/socket"

# Fixed for good: the catalog, and whoever filters on them, depend on these.
MESSAGE_ID_SUMMARY = "82ebde8e507c4a8697327d454867265c"
MESSAGE_ID_LINKED = "4542b0f81b7c4caab36f9fbfeb11630b"
MESSAGE_ID_NOT_LINKABLE = "7f976927272a40129fbc293969ee74a3"
MESSAGE_ID_NOT_LINKED = "9e6a3c5faca349d1bd1eb717670bf4bb"

PRIORITY_ERR = 3
PRIORITY_WARNING = 4
PRIORITY_INFO = 6

_MESSAGE_IDS = {
    State.LINKED: MESSAGE_ID_LINKED,
    State.NOT_LINKABLE: MESSAGE_ID_NOT_LINKABLE,
    State.NOT_LINKED: MESSAGE_ID_NOT_LINKED,
}

Entry = Mapping[str, str]


def _flag(value: bool) -> str:
    return "1" if value else "0"


def summary_priority(resolution: Resolution) -> int:
    if resolution.problems:
        return PRIORITY_ERR
    if resolution.in_state(State.NOT_LINKABLE):
        return PRIORITY_WARNING
    return PRIORITY_INFO


def program_priority(program: ProgramChange) -> int:
    return PRIORITY_WARNING if program.state is State.NOT_LINKABLE else PRIORITY_INFO


def program_message(resolution: Resolution, program: ProgramChange) -> str:
    """The entry's MESSAGE: a headline, then one line per reason (or the hint for a blocked
    link)."""
    kernel, dry_run = resolution.kernel, resolution.dry_run
    state = program.state
    verdict = program.verdict.value if program.verdict is not None else None
    if program.blocked:
        return f"{resolution.blocked_error(program)}\n  hint: {resolution.blocked_hint()}"
    if state is State.LINKED:
        verb = "would be linked" if dry_run else "linked"
        head = f"{program.path} {verb} for kernel {kernel} ({verdict})"
    elif state is State.NOT_LINKABLE:
        head = f"{program.path} is not linkable on kernel {kernel}: {verdict}"
        if program.verdict is Verdict.COMPATIBLE_UNSTABLE:  # not blocked: the configuration
            head += " (it uses symbols off the kABI stablelist, and link_unstable = no)"
        elif program.verdict is Verdict.COMPATIBLE_PARTIAL:
            head += (
                " (some of its programs cannot attach there, and link_partial = no, or it also "
                "uses symbols off the kABI stablelist and link_unstable = no)"
            )
        if program.was_linked:
            head += "; its link would be removed" if dry_run else "; its link was removed"
    elif program.verdict is None:
        verb = "would be removed" if dry_run else "removed"
        head = f"{program.path}: link for kernel {kernel} {verb} (object or kernel gone)"
    elif program.superseded_by is not None:
        holder = program.superseded_by
        if holder.startswith(f"usr/lib/modules/{kernel}/bpf/extra/"):
            head = f"{program.path}: the native build {holder} is used on kernel {kernel}"
        else:
            head = f"{program.path}: {holder} holds the link for kernel {kernel}"
    else:
        head = f"{program.path} is native to kernel {kernel} and stays in bpf/extra/"
    lines = [head]
    for r in program.reasons:
        subject = f"{r.code.value} {r.symbol}" if r.symbol else r.code.value
        lines.append(f"  {subject}: {r.detail}")
    return "\n".join(lines)


def entries(resolution: Resolution) -> list[dict[str, str]]:
    """The journal entries for `resolution`, summary first. Pure."""
    common = {
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "WEAK_BPF_KERNEL": resolution.kernel,
        "WEAK_BPF_ACTION": resolution.action.value,
        "WEAK_BPF_DRY_RUN": _flag(resolution.dry_run),
    }
    summary = resolution.summary
    if resolution.errors:  # a blocked link is told in its program's entry
        summary += "\n" + "\n".join(f"  error: {e}" for e in resolution.errors)
    out = [
        {
            "MESSAGE_ID": MESSAGE_ID_SUMMARY,
            "PRIORITY": str(summary_priority(resolution)),
            "MESSAGE": summary,
            **common,
            "WEAK_BPF_PROGRAMS": str(len(resolution.programs)),
            "WEAK_BPF_LINKED_COUNT": str(len(resolution.in_state(State.LINKED))),
            "WEAK_BPF_NOT_LINKABLE_COUNT": str(len(resolution.in_state(State.NOT_LINKABLE))),
            "WEAK_BPF_CHANGED_COUNT": str(len(resolution.changed)),
            "WEAK_BPF_ERROR_COUNT": str(len(resolution.problems)),
        }
    ]
    for p in resolution.reported:
        out.append(
            {
                "MESSAGE_ID": _MESSAGE_IDS[p.state],
                "PRIORITY": str(program_priority(p)),
                "MESSAGE": program_message(resolution, p),
                **common,
                "WEAK_BPF_PROGRAM": p.path,
                "WEAK_BPF_PACKAGE": p.package or "",
                "WEAK_BPF_VERDICT": p.verdict.value if p.verdict is not None else "",
                "WEAK_BPF_REASONS": ",".join(dict.fromkeys(r.code.value for r in p.reasons)),
                "WEAK_BPF_LINKED": _flag(p.linked),
                "WEAK_BPF_WAS_LINKED": _flag(p.was_linked),
            }
        )
    return out


def fields(entry: Entry) -> list[bytes]:
    """`entry` as the FIELD=value items sendv() takes. Bytes, so that a value that is not valid
    UTF-8 (a path from the disk) is sent with replacement characters, not refused."""
    return [
        key.encode("ascii") + b"=" + value.encode("utf-8", "replace")
        for key, value in entry.items()
    ]


def _systemd_journal() -> Any | None:
    """systemd.journal when journald listens and python3-systemd is installed, else None."""
    if not os.path.exists(JOURNAL_SOCKET):
        return None
    try:
        import systemd.journal  # untyped: no stubs
    except ImportError:  # no python3-systemd, or no libsystemd under it
        return None
    return systemd.journal


def send_to_journal(resolution: Resolution) -> bool:
    """Send the entries of `resolution`; True when journald took all of them. Never raises."""
    module = _systemd_journal()
    if module is None:
        return False
    try:
        for entry in entries(resolution):
            module.sendv(*fields(entry))
    except (OSError, ValueError, TypeError):  # ECONNREFUSED (nobody listens), EPERM, ...
        return False
    return True


def log_handler(identifier: str) -> logging.Handler | None:
    """A logging handler that writes structured journal entries (systemd.journal.JournalHandler),
    or None where send_to_journal() would find no journal."""
    module = _systemd_journal()
    if module is None:
        return None
    handler: logging.Handler = module.JournalHandler(SYSLOG_IDENTIFIER=identifier)
    return handler


def stderr_report(resolution: Resolution) -> str:
    """The same report as text, for stderr when there is no journal."""
    lines = [f"weak-bpf-progs: {resolution.summary}"]
    for p in resolution.reported:
        level = "warning" if p.state is State.NOT_LINKABLE else "info"
        message = program_message(resolution, p)
        lines.append(f"weak-bpf-progs: {level}: " + message.replace("\n", "\n    "))
    lines += [f"weak-bpf-progs: error: {e}" for e in resolution.errors]
    return "\n".join(lines) + "\n"
