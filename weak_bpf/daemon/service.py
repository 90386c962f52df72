"""weak-bpf-progsd's D-Bus service (SPEC §7): the main loop that serves org.weakbpf.Manager1 on
the system bus.

It registers the object (manager.py) with Gio and then owns the name, watches the workers
(workers.py) and the stamp every run rewrites, tells systemd it is ready, and exits when idle or on
SIGTERM, after the change in progress. With manager.py, the only modules that import gi.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gi.repository import Gio, GLib

from weak_bpf import ops
from weak_bpf.apply import writer as actions
from weak_bpf.daemon.interface import BUS_NAME, INTERFACE, INTERFACE_XML, OBJECT_PATH
from weak_bpf.daemon.manager import Manager, ask_bus
from weak_bpf.daemon.workers import Child, Scheduler

# What __main__, the tests and harden/ import from here.
__all__ = ["BUS_NAME", "INTERFACE", "INTERFACE_XML", "OBJECT_PATH", "Service"]

log = logging.getLogger("weak-bpf-progsd")

POLICY = (
    "/usr/share/dbus-1/system.d/org.weakbpf.Manager1.conf"  # the bus policy the package installs
)


# --- sd_notify -----------------------------------------------------------------------------------


def sd_notify(state: str) -> None:
    """Tell systemd (READY=1, STATUS=..., STOPPING=1); nothing when not run by systemd."""
    try:
        daemon = importlib.import_module("systemd.daemon")  # python3-systemd
        daemon.notify(state)
        return
    except ImportError:
        pass
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(state.encode(), address)


# --- the service ---------------------------------------------------------------------------------


class Service:
    """The main loop: publish, watch the stamp and the workers, exit when idle or on SIGTERM
    (after the change in progress, if any)."""

    def __init__(
        self,
        root: Path,
        *,
        idle_timeout: float,
        journal: bool = True,
        max_reads: int | None = None,
    ) -> None:
        self.root = root
        self.idle_timeout = idle_timeout
        self.loop = GLib.MainLoop()
        settings = ops.settings(root)  # a broken file: the defaults
        if max_reads is None:
            max_reads = settings.daemon_max_reads
        self.scheduler = Scheduler(self, max_reads=max_reads, inherited=self._bus_fds)
        self.manager = Manager(
            root,
            self.scheduler,
            journal=journal,
            activity=self._reset_idle,
            verify_new_kernels=settings.verify_in_daemon,
        )
        self._idle_source = 0
        self._monitor: Any = None

    # -- workers (workers.Loop) --

    def watch(self, child: Child, done: Callable[[], None]) -> None:
        def readable(_fd: int, _condition: GLib.IOCondition) -> bool:
            if child.feed():
                return GLib.SOURCE_CONTINUE
            if child.done:
                done()
            return GLib.SOURCE_REMOVE

        def exited(_pid: int, status: int) -> None:
            child.status = status
            if child.done:
                done()

        condition = GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR
        GLib.unix_fd_add_full(GLib.PRIORITY_DEFAULT, child.fd, condition, readable)
        GLib.child_watch_add(GLib.PRIORITY_DEFAULT, child.pid, exited)

    def _bus_fds(self) -> list[int]:
        """The bus connection's socket: a worker closes it, so that the bus sees the daemon
        leave when it does, whatever its workers do."""
        connection = self.manager.connection
        try:
            return [connection.get_stream().get_socket().get_fd()]  # type: ignore[union-attr]
        except (AttributeError, GLib.Error):
            return []

    # -- idle and signals --

    def _reset_idle(self) -> None:
        if self._idle_source:
            GLib.source_remove(self._idle_source)
            self._idle_source = 0
        if self.idle_timeout > 0:
            ms = int(self.idle_timeout * 1000)
            self._idle_source = GLib.timeout_add(ms, self._on_idle)

    def _on_idle(self) -> bool:
        if not self.scheduler.idle:
            return GLib.SOURCE_CONTINUE  # a call is still being answered
        log.info("idle for %g s: exiting", self.idle_timeout)
        self._idle_source = 0
        self.loop.quit()
        return GLib.SOURCE_REMOVE

    def _on_signal(self) -> bool:
        self.manager.stopping = True
        self.scheduler.stop()
        if self.scheduler.idle:
            log.info("stopping on a signal")
            self.loop.quit()
        else:
            log.info("stopping on a signal, once the change in progress is done")
            self.scheduler.when_idle = self.loop.quit
        return GLib.SOURCE_REMOVE

    def _watch_stamp(self) -> None:
        stamp = self.root / actions.STAMP
        with contextlib.suppress(OSError):  # a missing directory is watched less promptly
            stamp.parent.mkdir(parents=True, exist_ok=True)
        gfile = Gio.File.new_for_path(str(stamp))
        self._monitor = gfile.monitor_file(Gio.FileMonitorFlags.WATCH_MOVES, None)
        self._monitor.connect("changed", lambda *_: self.manager.check_stamp())

    # -- the bus --

    def _publish(self) -> tuple[Gio.DBusConnection, int]:
        """Connect, register the object, then own the name (so that a call that activated us
        finds the object). Raises GLib.Error or RuntimeError."""
        connection = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
        node = Gio.DBusNodeInfo.new_for_xml(INTERFACE_XML)
        self.manager.connection = connection
        registration = connection.register_object(
            OBJECT_PATH, node.interfaces[0], self.manager.on_call, None, None
        )
        try:
            args = GLib.Variant("(su)", (BUS_NAME, 4))  # DO_NOT_QUEUE
            (code,) = ask_bus(connection, "RequestName", args, "(u)").unpack()
            if code != 1:  # 1: we own it; 3: another connection does
                raise RuntimeError("the name is owned by another connection")
        except BaseException:
            connection.unregister_object(registration)
            raise
        return connection, registration

    def _unpublish(self, connection: Gio.DBusConnection, registration: int) -> None:
        with contextlib.suppress(GLib.Error):  # the bus may be gone already
            connection.unregister_object(registration)
            ask_bus(connection, "ReleaseName", GLib.Variant("(s)", (BUS_NAME,)), None)
            connection.flush_sync(None)

    def run(self) -> int:
        try:
            connection, registration = self._publish()
        except (RuntimeError, GLib.Error) as e:
            log.error("cannot serve %s on the system bus: %s", BUS_NAME, e)
            log.error(
                "hint: is dbus running, is the policy %s installed, and is no other "
                "weak-bpf-progsd running?",
                POLICY,
            )
            return 1
        self._watch_stamp()
        for signum in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, self._on_signal)
        self._reset_idle()
        log.info(
            "serving %s for the root %s (at most %d reads at a time)",
            BUS_NAME,
            self.root,
            self.scheduler.max_reads,
        )
        sd_notify(f"READY=1\nSTATUS=serving {BUS_NAME} for {self.root}")
        try:
            self.loop.run()
        finally:
            sd_notify("STOPPING=1\nSTATUS=stopping")
            self._monitor.cancel()
            self._unpublish(connection, registration)
        return 0
