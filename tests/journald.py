"""A real systemd-journald of the tests' own, isolated from any host journal.

It runs as a journal *namespace* instance (`systemd-journald NS`: sockets in
/run/systemd/journal.NS/, files in /var/log/journal/MACHINE-ID.NS/), inside a private mount
namespace (`unshare --mount`) where /run and /var/log are bind mounts of directories under the
test's tmp dir. So its sockets and files appear under `base/`, and nothing it does reaches the
host's /run or /var/log. A namespace instance reads neither /dev/kmsg nor audit. Readiness comes
from the sd_notify READY=1 it sends to a NOTIFY_SOCKET of ours.

Reading: `journalctl -D <journal dir> -o json`. For `journalctl -x`, the catalog database is the
fixed path /var/lib/systemd/catalog/database, so `catalog_text()` builds a database from the
given catalog files under a temp root (`journalctl --root=R --update-catalog`) and runs
`journalctl -x` in a private mount namespace where that database is bind-mounted over the
host's catalog directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

JOURNALD = "/lib/systemd/systemd-journald"
NAMESPACE = "weakbpftest"

_START = 'mount --bind "$1" /run && mount --bind "$2" /var/log && exec "$3" "$4"'
_WITH_CATALOG = 'mount --bind "$1" /var/lib/systemd/catalog && shift && exec "$@"'


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
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
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
    def socket(self) -> str:
        return str(self.base / "run" / "systemd" / f"journal.{self.namespace}" / "socket")

    @property
    def directory(self) -> Path:
        """Where it writes its journal files (persistent or volatile storage)."""
        for top in (self.base / "log" / "journal", self.base / "run" / "log" / "journal"):
            found = sorted(top.glob(f"*.{self.namespace}"))
            if found:
                return found[0]
        raise FileNotFoundError(f"no journal files of namespace {self.namespace} under {self.base}")

    def read(self, *matches: str) -> list[dict[str, Any]]:
        """The entries matching `matches` (FIELD=value), as `journalctl -o json` gives them."""
        proc = subprocess.run(
            [
                "journalctl",
                "-D",
                str(self.directory),
                "-o",
                "json",
                "--all",
                "--no-pager",
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


def start(base: Path, namespace: str) -> Journald:
    """A private journald for a test module or session; fails in CI if it cannot run here."""
    from conftest import require, require_root, require_tool

    require_root()
    require_tool("unshare")
    require_tool("journalctl")
    require(os.access(JOURNALD, os.X_OK), f"{JOURNALD} is not installed (systemd-journald)")
    return Journald(base, namespace=namespace)
