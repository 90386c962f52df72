"""weak-bpf-progsd's D-Bus service (SPEC §7): org.weakbpf.Manager1 on the system bus.

The only module that imports pydbus or gi. It adds no logic: every answer comes from answers.py
(weak_bpf.ops, as the CLI's do); this module checks the caller, caches Audit answers until the
stamp that every run rewrites changes, and emits Resolved.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

from gi.repository import Gio, GLib
from pydbus import SystemBus
from pydbus.generic import signal as dbus_signal

from weak_bpf.apply import writer as actions
from weak_bpf.daemon.answers import (
    ERROR_PREFIX,
    ERRORS,
    INTERFACE,
    AccessDenied,
    Failed,
    ServiceError,
    add_kernel_answer,
    audit_answer,
    explain_answer,
    guarded,
    remove_kernel_answer,
    summary_json,
)
from weak_bpf.kernel import find as kernel
from weak_bpf.program import installed as programs

log = logging.getLogger("weak-bpf-progsd")

BUS_NAME = "org.weakbpf.Manager1"
OBJECT_PATH = "/org/weakbpf/Manager1"
POLICY = (
    "/usr/share/dbus-1/system.d/org.weakbpf.Manager1.conf"  # the bus policy the package installs
)

# Also installed as usr/share/dbus-1/interfaces/org.weakbpf.Manager1.xml (a test compares them).
INTERFACE_XML = """<node>
  <interface name="org.weakbpf.Manager1">
    <method name="Audit">
      <arg name="kernels" type="as" direction="in"/>
      <arg name="json" type="s" direction="out"/>
    </method>
    <method name="Explain">
      <arg name="object" type="s" direction="in"/>
      <arg name="kernel" type="s" direction="in"/>
      <arg name="json" type="s" direction="out"/>
    </method>
    <method name="AddKernel">
      <arg name="kernel" type="s" direction="in"/>
      <arg name="dry_run" type="b" direction="in"/>
      <arg name="json" type="s" direction="out"/>
    </method>
    <method name="RemoveKernel">
      <arg name="kernel" type="s" direction="in"/>
      <arg name="dry_run" type="b" direction="in"/>
      <arg name="json" type="s" direction="out"/>
    </method>
    <property name="Kernels" type="as" access="read"/>
    <property name="Programs" type="as" access="read"/>
    <signal name="Resolved">
      <arg name="kernel" type="s"/>
      <arg name="summary_json" type="s"/>
    </signal>
  </interface>
</node>
"""


# --- errors: pydbus 0.6 sends type(e).__name__ as the D-Bus error name when it holds a dot -------

for _cls in ERRORS.values():
    _cls.__name__ = _cls.__qualname__ = ERROR_PREFIX + _cls.kind


class _QuietExpectedErrors(logging.Filter):
    """pydbus logs a traceback for every exception a method raises; ours are answers, logged by
    this module in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ServiceError))


logging.getLogger("pydbus.registration").addFilter(_QuietExpectedErrors())


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


def in_worker(work: Callable[[], str]) -> str:
    """`work()` run in a forked child, which sends back its answer or its ServiceError; the
    memory it used goes with it. The child runs no GLib code and leaves by os._exit."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read_end)
            try:
                outcome = {"answer": work()}
            except ServiceError as e:
                outcome = {"error": e.kind, "message": str(e)}
            with os.fdopen(write_end, "w", encoding="utf-8") as out:
                json.dump(outcome, out)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as answer:
        data = answer.read()
    _, status = os.waitpid(pid, 0)
    try:
        outcome = json.loads(data)
    except ValueError:
        raise Failed(f"the worker died ({_status(status)})") from None
    if "answer" in outcome:
        return str(outcome["answer"])
    raise ERRORS.get(str(outcome.get("error")), Failed)(str(outcome.get("message")))


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


# --- the object ----------------------------------------------------------------------------------

StatKey = Optional[tuple[int, int, int]]


def _stat_key(path: Path) -> StatKey:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


class Manager:
    """org.weakbpf.Manager1. Methods run on the main loop, one at a time."""

    dbus = INTERFACE_XML
    Resolved = dbus_signal()
    PropertiesChanged = dbus_signal()

    def __init__(self, root: Path, *, journal: bool, activity: Callable[[], None]) -> None:
        self.root = root
        self.journal = journal
        self._activity = activity
        self._audits: dict[tuple[str, ...], str] = {}
        self._stamp = _stat_key(root / actions.STAMP)
        self._reports = self._report_keys()
        self._properties = self._property_values()
        self.bus: Any = None  # set once published: asks the bus who calls

    # -- methods --

    def Audit(self, kernels: Sequence[str]) -> str:
        kvers = tuple(kernels)
        self._begin()
        answer = self._audits.get(kvers)
        if answer is None:
            answer = self._serve("Audit", lambda: audit_answer(self.root, kvers))
            self._audits[kvers] = answer
        return answer

    def Explain(self, path: str, kver: str) -> str:
        self._begin()
        return self._serve("Explain", lambda: explain_answer(self.root, path, kver))

    def AddKernel(self, kver: str, dry_run: bool, dbus_context: Any = None) -> str:
        self._begin()
        self._require_root("AddKernel", dbus_context)
        answer = self._serve(
            "AddKernel",
            lambda: add_kernel_answer(self.root, kver, dry_run=dry_run, journal=self.journal),
        )
        return self._after_run(answer, dry_run)

    def RemoveKernel(self, kver: str, dry_run: bool, dbus_context: Any = None) -> str:
        self._begin()
        self._require_root("RemoveKernel", dbus_context)
        answer = self._serve(
            "RemoveKernel",
            lambda: remove_kernel_answer(self.root, kver, dry_run=dry_run, journal=self.journal),
        )
        return self._after_run(answer, dry_run)

    # -- properties --

    @property
    def Kernels(self) -> list[str]:
        self._activity()
        return list(kernel.installed_kernels(self.root))

    @property
    def Programs(self) -> list[str]:
        self._activity()
        return [p.path for p in programs.installed_programs(self.root)]

    # -- the work --

    def _begin(self) -> None:
        self._activity()
        self.check_stamp()

    def _serve(self, method: str, work: Callable[[], str]) -> str:
        """Run one call in a worker process (what it reads, BTF above all, is freed with it, so
        the daemon stays small): every failure becomes a D-Bus error, never a dead daemon."""
        try:
            return in_worker(lambda: guarded(method, work))
        except ServiceError as e:
            log.info("%s refused: %s: %s", method, type(e).__name__, e)
            raise

    def _require_root(self, method: str, context: Any) -> None:
        sender = getattr(context, "sender", None)
        try:
            uid = self.bus.dbus.GetConnectionUnixUser(sender)
        except (AttributeError, TypeError, GLib.Error) as e:
            log.warning("%s: the caller cannot be identified: %s", method, e)
            raise AccessDenied("the caller cannot be identified") from None
        if uid != 0:
            log.info("%s refused to uid %s", method, uid)
            raise AccessDenied(f"only root may change links (caller uid {uid})")

    def _after_run(self, answer: str, dry_run: bool) -> str:
        if not dry_run:
            # our own run bumped the stamp: take it in now, so the monitor sees no other run
            self._stamp = _stat_key(self.root / actions.STAMP)
            self._reports = self._report_keys()
            self._audits.clear()
            self._properties_maybe_changed()
            for doc in json.loads(answer):
                self.emit_resolved(doc["kernel"], doc)
        return answer

    # -- other runs --

    def check_stamp(self) -> None:
        """If another run (CLI, hook) changed the stamp: drop the cache, emit Resolved for each
        kernel whose report it rewrote."""
        stamp = _stat_key(self.root / actions.STAMP)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        self._audits.clear()
        self._properties_maybe_changed()  # first: a client woken by Resolved reads them fresh
        reports = self._report_keys()
        for kver, key in sorted(reports.items()):
            if self._reports.get(kver) == key:
                continue
            try:
                doc = json.loads((self.root / actions.REPORTS / f"{kver}.json").read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict):
                self.emit_resolved(kver, doc)
        self._reports = reports

    def emit_resolved(self, kver: str, doc: dict[str, Any]) -> None:
        log.info("Resolved %s: %s", kver, doc.get("summary", ""))
        self.Resolved(kver, summary_json(doc))

    def _report_keys(self) -> dict[str, StatKey]:
        directory = self.root / actions.REPORTS
        try:
            names = [n for n in os.listdir(directory) if n.endswith(".json")]
        except OSError:
            return {}
        return {n[: -len(".json")]: _stat_key(directory / n) for n in names}

    def _property_values(self) -> dict[str, list[str]]:
        return {
            "Kernels": list(kernel.installed_kernels(self.root)),
            "Programs": [p.path for p in programs.installed_programs(self.root)],
        }

    def _properties_maybe_changed(self) -> None:
        values = self._property_values()
        changed = {k: v for k, v in values.items() if self._properties.get(k) != v}
        self._properties = values
        if changed:
            self.PropertiesChanged(INTERFACE, changed, [])


# --- the service ---------------------------------------------------------------------------------


class Service:
    """The main loop: publish, watch the stamp, exit when idle or on SIGTERM."""

    def __init__(self, root: Path, *, idle_timeout: float, journal: bool = True) -> None:
        self.root = root
        self.idle_timeout = idle_timeout
        self.loop = GLib.MainLoop()
        self.manager = Manager(root, journal=journal, activity=self._reset_idle)
        self._idle_source = 0
        self._monitor: Any = None

    def _reset_idle(self) -> None:
        if self._idle_source:
            GLib.source_remove(self._idle_source)
            self._idle_source = 0
        if self.idle_timeout > 0:
            ms = int(self.idle_timeout * 1000)
            self._idle_source = GLib.timeout_add(ms, self._on_idle)

    def _on_idle(self) -> bool:
        log.info("idle for %g s: exiting", self.idle_timeout)
        self._idle_source = 0
        self.loop.quit()
        return False

    def _on_signal(self) -> bool:
        log.info("stopping on a signal")
        self.loop.quit()
        return False

    def _watch_stamp(self) -> None:
        stamp = self.root / actions.STAMP
        with contextlib.suppress(OSError):  # a missing directory is watched less promptly
            stamp.parent.mkdir(parents=True, exist_ok=True)
        gfile = Gio.File.new_for_path(str(stamp))
        self._monitor = gfile.monitor_file(Gio.FileMonitorFlags.WATCH_MOVES, None)
        self._monitor.connect("changed", lambda *_: self.manager.check_stamp())

    def run(self) -> int:
        try:
            bus = SystemBus()
            self.manager.bus = bus
            publication = bus.publish(BUS_NAME, (OBJECT_PATH, self.manager))
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
        log.info("serving %s for the root %s", BUS_NAME, self.root)
        sd_notify(f"READY=1\nSTATUS=serving {BUS_NAME} for {self.root}")
        try:
            self.loop.run()
        finally:
            sd_notify("STOPPING=1\nSTATUS=stopping")
            self._monitor.cancel()
            with contextlib.suppress(GLib.Error):  # the bus may be gone already
                publication.unpublish()
        return 0
