"""weak-bpf-progsd on a private bus, with an asynchronous Gio client: calls sent at once, their
replies and the daemon's signals recorded as they come."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbus_bus import PrivateBus, start_daemon, stop
from gi.repository import Gio, GLib

from weak_bpf.daemon.service import BUS_NAME, INTERFACE, OBJECT_PATH

PROPERTIES = "org.freedesktop.DBus.Properties"


class Daemon:
    """weak-bpf-progsd on its own private bus, with an asynchronous Gio client."""

    def __init__(self, root: Path, environ: dict[str, str] | None = None) -> None:
        self.root = root
        self.bus_dir = Path(tempfile.mkdtemp(prefix="wbp-bus-"))  # a short socket path
        self.bus_dir.chmod(0o755)  # other users may connect (and be refused by the policy)
        self.bus = PrivateBus(self.bus_dir)
        self.bus.start()
        self.log = self.bus_dir / "daemon.log"
        self.process = start_daemon(
            self.bus, root, ["--idle-timeout", "0"], log=self.log, environ=environ
        )
        self.client = Gio.DBusConnection.new_for_address_sync(
            self.bus.address,
            Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
            | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
            None,
            None,
        )
        self.replies: list[tuple[str, Any, str | None]] = []  # (tag, value, error), as they come
        self.when: dict[str, float] = {}  # tag -> seconds from its call to its reply
        self.resolved: list[tuple[str, dict[str, Any]]] = []
        self.signals: list[tuple[str, tuple[Any, ...]]] = []  # (name, arguments), every one
        self.client.signal_subscribe(
            None, INTERFACE, None, OBJECT_PATH, None, Gio.DBusSignalFlags.NONE, self._signal
        )

    def _signal(self, *args: Any) -> None:
        name, values = args[4], args[5].unpack()
        self.signals.append((name, values))
        if name == "Resolved":
            self.resolved.append((values[0], json.loads(values[1])))

    def call(self, tag: str, method: str, signature: str, *args: Any) -> None:
        """Send a call now; its reply is appended to `replies` when it comes."""
        interface = PROPERTIES if method in ("Get", "GetAll") else INTERFACE
        sent = time.monotonic()

        def done(connection: Any, result: Any) -> None:
            self.when[tag] = round(time.monotonic() - sent, 3)
            try:
                value = connection.call_finish(result).unpack()
            except GLib.Error as e:
                self.replies.append((tag, None, str(e)))
                return
            self.replies.append((tag, value[0] if len(value) == 1 else value, None))

        self.client.call(
            BUS_NAME,
            OBJECT_PATH,
            interface,
            method,
            GLib.Variant(signature, args),
            None,
            Gio.DBusCallFlags.NONE,
            120_000,
            None,
            done,
        )

    def pump(self, until: Callable[[], bool], timeout: float = 120.0) -> None:
        context = GLib.MainContext.default()
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"timed out; the log: {self.log.read_text()}"
            if not context.iteration(False):
                time.sleep(0.005)

    def wait(self, *tags: str) -> dict[str, tuple[Any, str | None]]:
        self.pump(lambda: {t for t, _, _ in self.replies} >= set(tags))
        return {t: (v, e) for t, v, e in self.replies if t in tags}

    def children(self) -> list[int]:
        pid = self.process.pid
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]

    def wait_for_worker(self) -> int:
        deadline = time.monotonic() + 60
        while not self.children():
            assert time.monotonic() < deadline, "no worker started"
            time.sleep(0.002)
        return self.children()[0]

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def close(self) -> None:
        self.client.close_sync(None)
        stop(self.process)
        self.bus.stop()
        shutil.rmtree(self.bus_dir)
