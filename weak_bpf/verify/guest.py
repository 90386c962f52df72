"""The guest's side of a verify boot: its /init script, and reading back what it printed.

Pure: text in, values out. /init mounts what libbpf needs, inserts the modules, runs one command
per object, and prints each outcome between marker lines on the serial console:

    @@MODULE <module> rc=<N>   then the base64 of insmod's output, then @@END <module> <sha1>
    @@RESULT <name> rc=<N>     then the base64 of the command's output, then @@END <name> <sha1>
    @@DONE

A block whose content does not match its SHA-1 (a kernel message cut into it on the console) is
read as garbled, and so is unknown.

The loader's output (tools/verify-loader.c) is read by `read_loader_output`, which trusts a
record only when it is whole: the loader's protocol line, a count, every program, a done line
and an exit status the loader gives. Anything else makes that object's outcome unknown.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import re
from collections.abc import Collection, Sequence

from weak_bpf.engine.verified import ProgramLoad, Verification
from weak_bpf.errors import WeakBpfError

LOADER_PROTOCOL = 2  # the "@loader" line of tools/verify-loader.c
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # names that go into paths and the script
_BASE64_LINE = re.compile(r"^[A-Za-z0-9+/=]+$")
_MARKER = re.compile(r"@@(MODULE|RESULT) (\S+) rc=(\d+)$")  # after any escape codes
_END = re.compile(r"@@END (\S+) ([0-9a-f]{40})$")
_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")
GARBLED = "(garbled on the console)\n"
_EOPNOTSUPP = 95  # bpf_program__attach: libbpf cannot auto-attach this kind of program
CONSOLE_TAIL = 40  # lines of the console in an error


class GuestError(WeakBpfError):
    """The guest did not boot, did not finish, or reported something unreadable."""


@dataclasses.dataclass(frozen=True)
class GuestReport:
    """What one boot printed: the output of each object's command, and insmod's per module."""

    results: dict[str, tuple[int, str]]  # name -> (exit status, output)
    modules: tuple[tuple[str, int, str], ...]  # (module, insmod's status, its output)

    def module_failures(self) -> dict[str, str]:
        """{module: insmod's message} for each module that could not be inserted."""
        return {m: output.strip() or f"status {rc}" for m, rc, output in self.modules if rc}


def init_script(runs: Sequence[tuple[str, str]], modules: Sequence[str]) -> str:
    """The guest's /init. `runs`: (name, shell command) per object, whose output is reported;
    `modules`: inserted in this order, from /modules/<name>.ko."""
    for name in [n for n, _ in runs] + list(modules):
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
        'sum() { sha1sum <"$1" | cut -d" " -f1; }',
        'report() { echo "@@$1 $2 rc=$3"; base64 "$4"; echo "@@END $2 $(sum "$4")"; }',
    ]
    for module in modules:
        lines.append(f"insmod /modules/{module}.ko >/tmp/{module}.insmod 2>&1")
        lines.append(f"report MODULE {module} $? /tmp/{module}.insmod")
    for name, command in runs:
        lines.append(f"{{ {command}; }} >/tmp/{name}.log 2>&1")
        lines.append(f"report RESULT {name} $? /tmp/{name}.log")
        lines.append(f"rm -f /tmp/{name}.log")
    lines += ["echo @@DONE", "poweroff -f", ""]
    return "\n".join(lines)


def parse_console(console: str, names: Sequence[str], modules: Sequence[str]) -> GuestReport:
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
        elif current is not None and (end := _END.search(line)) and end[1] == current[1]:
            blocks[(current[0], current[1])] = (current[2], _decode("".join(chunks), end[2]))
            current = None
        elif current is not None and _BASE64_LINE.match(line):
            chunks.append(line)  # anything else is a kernel message in between
        elif line.endswith("@@DONE"):
            done = True
    missing = [n for n in names if ("RESULT", n) not in blocks]
    missing += [m for m in modules if ("MODULE", m) not in blocks]
    if missing or not done:
        raise GuestError(
            f"the guest did not report {', '.join(missing[:5]) or '@@DONE'}; console tail:\n"
            + tail(console)
        )
    return GuestReport(
        {n: blocks[("RESULT", n)] for n in names},
        tuple((m, *blocks[("MODULE", m)]) for m in modules),
    )


def read_loader_output(text: str, status: int, expected: Collection[str] = ()) -> Verification:
    """The loader's report on one object, run with exit `status`; `expected`: the programs the
    offline reader found in it. A report that is not whole is a `failure` (unknown), never a
    list of the programs that happened to come through."""

    def broken(why: str) -> Verification:
        return Verification(failure=f"{why}; the loader printed:\n{tail(text, 20)}")

    if status not in (0, 1):
        return broken(f"the loader failed (exit status {status})")
    lines = text.splitlines()
    version = next((line.split() for line in lines if line.startswith("@loader ")), None)
    if version is None or version[1:2] != [str(LOADER_PROTOCOL)]:
        return broken(f"the loader did not run, or speaks another protocol than {LOADER_PROTOCOL}")
    programs: list[ProgramLoad] = []
    open_error: str | None = None
    count: int | None = None
    done: int | None = None
    head: list[str] | None = None
    log: list[str] = []
    for line in lines:
        if line.startswith("| "):
            log.append(line[2:])
        elif line.startswith(("@prog ", "@open ")):
            head, log = line.split(" "), []
        elif line.startswith("@count ") and line[7:].isdigit():
            count = int(line[7:])
        elif line.startswith("@done ") and line[6:].isdigit():
            done = int(line[6:])
        elif line == "@end" and head is not None:
            if head[0] == "@open" and len(head) == 2 and head[1].isdigit():
                open_error = f"error {head[1]}: " + " ".join(log[-3:]).strip()
            elif head[0] == "@prog" and len(head) == 5 and head[1].isdigit():
                attach = None if head[2] == "-" else int(head[2]) if head[2].isdigit() else -1
                if attach == -1:
                    return broken(f"a garbled record: {' '.join(head)}")
                if attach == _EOPNOTSUPP:
                    attach = None
                name, section = _unescape(head[3]), _unescape(head[4])
                programs.append(ProgramLoad(name, section, int(head[1]), "\n".join(log), attach))
            else:
                return broken(f"a garbled record: {' '.join(head)}")
            head = None
    if open_error is not None:
        return Verification(open_error=open_error) if done == 0 else broken("no @done line")
    if count is None or done != count or len(programs) != count:
        return broken(f"{len(programs)} of {count} programs reported, done line {done}")
    if status != int(any(not p.loaded for p in programs)):
        return broken(f"exit status {status} does not match the programs reported")
    missing = sorted(set(expected) - {p.name for p in programs})
    if missing:
        return broken(f"no record of program {', '.join(missing)}")
    return Verification(tuple(programs))


def _unescape(text: str) -> str:
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode())
    return raw.decode(errors="replace")


def _decode(text: str, sha1: str) -> str:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return GARBLED
    if hashlib.sha1(data).hexdigest() != sha1:
        return GARBLED
    return data.decode(errors="replace")


def tail(text: str, lines: int = CONSOLE_TAIL) -> str:
    return "\n".join(text.splitlines()[-lines:])
