"""The guest's side of a verify boot: its /init script, and reading back what it printed.

Pure: text in, values out. /init mounts what libbpf needs, inserts the modules, runs one command
per object and tries each kprobe target, and prints each outcome between marker lines on the
serial console:

    @@MODULE <module> rc=<N>   then the base64 of insmod's output, then @@END <module>
    @@RESULT <name> rc=<N>     then the base64 of the command's output, then @@END <name>
    @@KPROBE k<i> rc=<N>       then the base64 of the error, then @@END k<i>: whether a kprobe
                               could be placed on the i-th symbol (tracefs kprobe_events)
    @@DONE

The loader's output (tools/verify-loader.c) is read by `parse_loader_output`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Sequence

from weak_bpf.engine.verified import ProgramLoad
from weak_bpf.errors import WeakBpfError

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # names that go into paths and the script
_BASE64_LINE = re.compile(r"^[A-Za-z0-9+/=]+$")
_MARKER = re.compile(r"@@(MODULE|RESULT|KPROBE) (\S+) rc=(\d+)$")  # after any escape codes
CONSOLE_TAIL = 40  # lines of the console in an error


class GuestError(WeakBpfError):
    """The guest did not boot, did not finish, or reported something unreadable."""


@dataclasses.dataclass(frozen=True)
class GuestReport:
    """What one boot printed: the output of each object's command, insmod's per module, and
    whether each kprobe could be placed."""

    results: dict[str, tuple[int, str]]  # name -> (exit status, output)
    modules: tuple[tuple[str, int, str], ...]  # (module, insmod's status, its output)
    kprobes: tuple[tuple[str, bool], ...]  # (symbol, placed)


def init_script(
    runs: Sequence[tuple[str, str]], modules: Sequence[str], kprobes: Sequence[str] = ()
) -> str:
    """The guest's /init. `runs`: (name, shell command) per object, whose output is reported;
    `modules`: inserted in this order, from /modules/<name>.ko; `kprobes`: symbols to try."""
    for name in [n for n, _ in runs] + list(modules) + list(kprobes):
        if not NAME.match(name):
            raise ValueError(f"{name!r} is not a plain name")
    lines = [
        "#!/bin/busybox sh",
        "/bin/busybox --install -s /bin",
        "export PATH=/bin:/usr/sbin",
        "mount -t proc proc /proc",
        "mount -t sysfs sysfs /sys",
        "mount -t devtmpfs devtmpfs /dev",
        "mount -t bpf bpf /sys/fs/bpf",
        "mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null",
        "mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null",
        "ulimit -l unlimited",
        'report() { echo "@@$1 $2 rc=$3"; base64 "$4"; echo "@@END $2"; }',
    ]
    for module in modules:
        lines.append(f"insmod /modules/{module}.ko >/tmp/{module}.insmod 2>&1")
        lines.append(f"report MODULE {module} $? /tmp/{module}.insmod")
    for name, command in runs:
        lines.append(f"{{ {command}; }} >/tmp/{name}.log 2>&1")
        lines.append(f"report RESULT {name} $? /tmp/{name}.log")
        lines.append(f"rm -f /tmp/{name}.log")
    events = "/sys/kernel/tracing/kprobe_events"
    for i, symbol in enumerate(kprobes):
        lines.append(f"echo 'p:wbp/k{i} {symbol}' >> {events} 2>/tmp/k{i}.log")
        lines.append(f"report KPROBE k{i} $? /tmp/k{i}.log")
    lines += ["echo @@DONE", "poweroff -f", ""]
    return "\n".join(lines)


def parse_console(
    console: str, names: Sequence[str], modules: Sequence[str], kprobes: Sequence[str] = ()
) -> GuestReport:
    """The markers of init_script() in the console output. Raises GuestError when one is
    missing (the guest crashed or was stopped), with the console's tail."""
    blocks: dict[tuple[str, str], tuple[int, str]] = {}
    current: tuple[str, str, int] | None = None
    chunks: list[str] = []
    done = False
    for raw in console.splitlines():
        line = raw.strip("\r\n ")
        marker = _MARKER.search(line)
        if marker:
            current = (marker.group(1), marker.group(2), int(marker.group(3)))
            chunks = []
        elif current is not None and line.endswith(f"@@END {current[1]}"):
            blocks[(current[0], current[1])] = (current[2], _decode("".join(chunks)))
            current = None
        elif current is not None and _BASE64_LINE.match(line):
            chunks.append(line)  # anything else is a kernel message in between
        elif line.endswith("@@DONE"):
            done = True
    missing = [n for n in names if ("RESULT", n) not in blocks]
    missing += [m for m in modules if ("MODULE", m) not in blocks]
    missing += [s for i, s in enumerate(kprobes) if ("KPROBE", f"k{i}") not in blocks]
    if missing or not done:
        raise GuestError(
            f"the guest did not report {', '.join(missing[:5]) or '@@DONE'}; console tail:\n"
            + tail(console)
        )
    return GuestReport(
        {n: blocks[("RESULT", n)] for n in names},
        tuple((m, *blocks[("MODULE", m)]) for m in modules),
        tuple((s, blocks[("KPROBE", f"k{i}")][0] == 0) for i, s in enumerate(kprobes)),
    )


def parse_loader_output(text: str) -> tuple[tuple[ProgramLoad, ...], str | None]:
    """The loader's report on one object: its programs, or why it could not be opened."""
    programs: list[ProgramLoad] = []
    open_error: str | None = None
    head: list[str] | None = None
    log: list[str] = []
    for line in text.splitlines():
        if line.startswith("| "):
            log.append(line[2:])
        elif line.startswith(("@prog ", "@open ")):
            head, log = line.split(), []
        elif line == "@end" and head is not None:
            if head[0] == "@open" and len(head) == 2:
                open_error = f"error {head[1]}: " + " ".join(log[-3:]).strip()
            elif head[0] == "@prog" and len(head) == 4 and head[3].isdigit():
                programs.append(ProgramLoad(head[1], head[2], int(head[3]), "\n".join(log)))
            head = None
    if not programs and open_error is None and "@object" not in text:
        open_error = "the loader did not run: " + " ".join(text.split())[:300]
    return tuple(programs), open_error


def _decode(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode(errors="replace")
    except (binascii.Error, ValueError):
        return "(garbled on the console)\n"


def tail(text: str, lines: int = CONSOLE_TAIL) -> str:
    return "\n".join(text.splitlines()[-lines:])
