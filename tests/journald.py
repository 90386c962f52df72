"""A real systemd-journald of the tests' own, isolated from any host journal.

It runs as a journal *namespace* instance (`systemd-journald NS`: sockets in
/run/systemd/journal.NS/, files in /var/log/journal/MACHINE-ID.NS/), inside a private mount
namespace (`unshare --mount`) where /run and /var/log are bind mounts of directories under the
test's tmp dir. So its sockets and files appear under `base/`, and nothing it does reaches the
host's /run or /var/log. A namespace instance reads neither /dev/kmsg nor audit. Readiness comes
from the sd_notify READY=1 it sends to a NOTIFY_SOCKET of ours.

Writing: systemd.journal (sd_journal_sendv) always sends to /run/systemd/journal/socket. So a
process that is to log to this journald runs in a mount namespace of its own (`unshare --mount`)
where a directory is bind-mounted over /run/systemd/journal: `with_journal_dir(d, argv)`, with
`d` this journald's runtime directory (/run/systemd/journal.NS/ under `base/run`), or an empty one
for a system without journald (no socket). `Journald.send()` sends a Resolution that way.

Reading: `journalctl -D <journal dir> -o json`. For `journalctl -x`, the catalog database is the
fixed path /var/lib/systemd/catalog/database, so `catalog_text()` builds a database from the
given catalog files under a temp root (`journalctl --root=R --update-catalog`) and runs
`journalctl -x` in a private mount namespace where that database is bind-mounted over the
host's catalog directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from weak_bpf.apply.resolution import Resolution

JOURNALD = "/lib/systemd/systemd-journald"
NAMESPACE = "weakbpftest"

_START = 'mount --bind "$1" /run && mount --bind "$2" /var/log && exec "$3" "$4"'
_WITH_CATALOG = 'mount --bind "$1" /var/lib/systemd/catalog && shift && exec "$@"'
# $1 over /run/systemd/journal, then exec the rest. A host without journald may have no
# /run/systemd/journal to mount over: then a tmpfs of this namespace's own holds one (over
# /run/systemd, which only this namespace then sees empty). The command keeps the shell's PID.
_WITH_JOURNAL_DIR = r"""
set -e
dir=$1
shift
if [ ! -d /run/systemd/journal ]; then
    top=/run/systemd
    [ -d "$top" ] || top=/run
    mount -t tmpfs -o mode=0755 weak-bpf-test "$top"
    mkdir -p /run/systemd/journal
fi
mount --bind "$dir" /run/systemd/journal
exec "$@"
"""
# Sends the Resolution (JSON on stdin) with journal.send_to_journal(); prints what it returned.
_SEND = """
import json, sys
from weak_bpf.apply import journal
from weak_bpf.apply.resolution import Resolution
print(journal.send_to_journal(Resolution.from_json(json.load(sys.stdin))))
"""
REPO = Path(__file__).resolve().parent.parent


# a shell script run in a private mount namespace: `*_SH, script, "sh", args...`
_UNSHARE_SH = ("unshare", "--mount", "--propagation", "private", "--", "sh", "-c")


def with_journal_dir(directory: Path, argv: Sequence[str]) -> list[str]:
    """`argv`, run in a mount namespace of its own where `directory` is /run/systemd/journal.
    Needs root; its PID is the command's."""
    return [*_UNSHARE_SH, _WITH_JOURNAL_DIR, "sh", str(directory), *argv]


@dataclasses.dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    pid: int  # the _PID of what it logged: tells this run's journal entries from others'


def run_with_journal_dir(
    directory: Path, argv: Sequence[str], *, timeout: float = 120, env: dict[str, str] | None = None
) -> Run:
    """`argv` run from this checkout, with `directory` as its /run/systemd/journal."""
    with subprocess.Popen(
        with_journal_dir(directory, argv),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        out, err = child.communicate(timeout=timeout)
    return Run(child.returncode, out, err, child.pid)


def send(directory: Path, resolution: Resolution, *, prefix: Sequence[str] = ()) -> bool:
    """What `journal.send_to_journal(resolution)` returns in a process (the system interpreter,
    this checkout, run through `prefix`) whose /run/systemd/journal is `directory`. It must print
    nothing else, and never raise."""
    argv = [*prefix, sys.executable, "-c", _SEND]
    proc = subprocess.run(
        with_journal_dir(directory, argv),
        input=json.dumps(resolution.to_json()),
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert proc.stdout in ("True\n", "False\n"), proc.stdout
    return proc.stdout == "True\n"


class Journald:
    def __init__(self, base: Path, namespace: str = NAMESPACE, timeout: float = 10.0) -> None:
        self.base = base
        self.namespace = namespace
        for d in ("run", "log"):
            (base / d).mkdir(parents=True, exist_ok=True)
        notify_path = base / "notify"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(timeout)
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
        env.pop("LISTEN_FDS", None)
        self._stderr = (base / "journald.log").open("wb")
        self.proc = subprocess.Popen(
            [
                *_UNSHARE_SH,
                _START,
                "sh",
                str(base / "run"),
                str(base / "log"),
                JOURNALD,
                namespace,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if b"READY=1" in notify.recv(4096):
                    break
            else:
                raise TimeoutError("systemd-journald did not get ready")
        except (OSError, TimeoutError) as e:
            self.stop()
            log = (base / "journald.log").read_text(errors="replace")
            raise RuntimeError(f"cannot start systemd-journald: {e}\n{log}") from e
        finally:
            notify.close()

    @property
    def runtime_directory(self) -> Path:
        """Its sockets: what a client sees as /run/systemd/journal."""
        return self.base / "run" / "systemd" / f"journal.{self.namespace}"

    def send(self, resolution: Resolution, *, prefix: Sequence[str] = ()) -> bool:
        """journal.send_to_journal(resolution), from a process that logs to this journald."""
        return send(self.runtime_directory, resolution, prefix=prefix)

    @property
    def directory(self) -> Path:
        """Where it writes its journal files (persistent or volatile storage)."""
        for top in (self.base / "log" / "journal", self.base / "run" / "log" / "journal"):
            found = sorted(top.glob(f"*.{self.namespace}"))
            if found:
                return found[0]
        raise FileNotFoundError(f"no journal files of namespace {self.namespace} under {self.base}")

    def read(self, *matches: str, after_cursor: str | None = None) -> list[dict[str, Any]]:
        """The entries matching `matches` (FIELD=value), as `journalctl -o json` gives them;
        only those stored after the entry whose __CURSOR is `after_cursor`, if given."""
        after = [] if after_cursor is None else [f"--after-cursor={after_cursor}"]
        proc = subprocess.run(
            [
                "journalctl",
                "-D",
                str(self.directory),
                "-o",
                "json",
                "--all",
                "--no-pager",
                *after,
                *matches,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    def wait_for(self, count: int, *matches: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Poll until at least `count` entries match: journald handles datagrams asynchronously."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.read(*matches)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def catalog_text(self, catalogs: list[Path], *matches: str) -> str:
        """`journalctl -x` output for `matches`, with only `catalogs` in the catalog database."""
        root = self.base / "catalog-root"
        shutil.rmtree(root, ignore_errors=True)
        source = root / "usr/lib/systemd/catalog"
        source.mkdir(parents=True)
        for c in catalogs:
            shutil.copy(c, source / c.name)
        subprocess.run(["journalctl", f"--root={root}", "--update-catalog"], check=True)
        database_dir = root / "var/lib/systemd/catalog"
        proc = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                _WITH_CATALOG,
                "sh",
                str(database_dir),
                "journalctl",
                "-D",
                str(self.directory),
                "-x",
                "--no-pager",
                "-o",
                "short",
                *matches,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return proc.stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


def require_journald() -> None:
    """What a private journald, and a client of it, need; fails in CI where it is missing."""
    from conftest import require, require_root, require_tool

    require_root()
    require_tool("unshare")
    require_tool("journalctl")
    require(os.access(JOURNALD, os.X_OK), f"{JOURNALD} is not installed (systemd-journald)")
    probe = subprocess.run(
        [sys.executable, "-I", "-c", "import systemd.journal"], capture_output=True, check=False
    )
    require(probe.returncode == 0, "python3-systemd is not installed (systemd.journal)")


def start(base: Path, namespace: str) -> Journald:
    """A private journald for a test module or session; fails in CI if it cannot run here."""
    require_journald()
    return Journald(base, namespace=namespace)
