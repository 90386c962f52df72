"""weak-bpf-progsd's D-Bus service (SPEC §7): org.weakbpf.Manager1 on the system bus.

The only module that imports gi (or pydbus). The object is registered with Gio directly, so that
a reply goes out when the call's worker is done, not when the handler returns: the main loop
never waits for work. Properties and cached Audit answers are answered at once; Audit and
Explain run in workers side by side; AddKernel, RemoveKernel and Verify wait in a queue and run
one at a time (workers.py). Every answer comes from answers.py (weak_bpf.ops, as the CLI's do). This
module checks the caller, and announces other runs and its own (Resolved, PropertiesChanged) as
rootstate.py, which also caches Audit answers, sees them.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gi.repository import Gio, GLib

from weak_bpf import ops
from weak_bpf.apply import writer as actions
from weak_bpf.daemon.answers import (
    STOPPING,
    AccessDenied,
    Failed,
    ServiceError,
    add_kernel_answer,
    audit_answer,
    explain_answer,
    guarded,
    plain_name,
    remove_kernel_answer,
    summary_json,
    verify_answer,
)
from weak_bpf.daemon.interface import BUS_NAME, INTERFACE, INTERFACE_XML, OBJECT_PATH
from weak_bpf.daemon.rootstate import PROPERTIES as PROPERTY_NAMES
from weak_bpf.daemon.rootstate import RootState
from weak_bpf.daemon.workers import Child, Job, Reply, Scheduler

log = logging.getLogger("weak-bpf-progsd")

POLICY = (
    "/usr/share/dbus-1/system.d/org.weakbpf.Manager1.conf"  # the bus policy the package installs
)
PROPERTIES = "org.freedesktop.DBus.Properties"
DBUS = "org.freedesktop.DBus"


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


# --- the object ----------------------------------------------------------------------------------


def _ask_bus(
    connection: Gio.DBusConnection,
    method: str,
    args: GLib.Variant,
    reply: str | None,
    then: Callable[[Gio.DBusConnection, Gio.AsyncResult], None] | None = None,
) -> Any:
    """Call the bus itself: wait for its answer, or, given `then`, have `then` called with it."""
    call = (DBUS, "/org/freedesktop/DBus", DBUS, method, args)
    reply_type = GLib.VariantType(reply) if reply else None
    if then is None:
        return connection.call_sync(*call, reply_type, Gio.DBusCallFlags.NONE, -1, None)
    connection.call(*call, reply_type, Gio.DBusCallFlags.NONE, -1, None, then)
    return None


def _answer(invocation: Gio.DBusMethodInvocation, answer: str) -> None:
    invocation.return_value(GLib.Variant("(s)", (answer,)))


class Manager:
    """org.weakbpf.Manager1: each call checked and answered now, or handed to the scheduler
    with a reply sent when its worker is done."""

    def __init__(
        self,
        root: Path,
        scheduler: Scheduler,
        *,
        journal: bool,
        activity: Callable[[], None],
        verify_new_kernels: bool = False,
    ) -> None:
        self.root = root
        self.scheduler = scheduler
        self.journal = journal
        self.verify_new_kernels = verify_new_kernels  # verify_in_daemon
        self._activity = activity
        self.connection: Gio.DBusConnection | None = None  # set once registered
        self.stopping = False
        self.state = RootState(root)

    # -- dispatch --

    def on_call(
        self,
        _connection: Gio.DBusConnection,
        sender: str,
        _path: str,
        interface: str,
        method: str,
        parameters: GLib.Variant,
        invocation: Gio.DBusMethodInvocation,
    ) -> None:
        """Gio's method handler (properties too: no get_property handler is registered)."""
        self._activity()
        try:
            if self.stopping:
                raise Failed(STOPPING)
            args = parameters.unpack()
            if interface == PROPERTIES:
                self._properties_call(method, args, invocation)
            elif method == "Audit":
                self._audit(invocation, *args)
            elif method == "Explain":
                self._explain(invocation, *args)
            elif method == "AddKernel":
                self._add_kernel(invocation, sender, *args)
            elif method == "RemoveKernel":
                self._remove_kernel(invocation, sender, *args)
            elif method == "Verify":
                self._verify(invocation, sender, *args)
            else:  # Gio checks calls against the interface: a member added there but not here
                raise Failed(f"{method} is not served")
        except ServiceError as e:
            self._refuse(invocation, method, e)
        except Exception as e:  # a bug: answer it, log it, keep serving
            log.exception("%s: internal error", method)
            self._refuse(invocation, method, Failed(f"internal error: {type(e).__name__}: {e}"))

    @staticmethod
    def _refuse(invocation: Gio.DBusMethodInvocation, method: str, e: ServiceError) -> None:
        log.info("%s refused: %s: %s", method, e.kind, e)
        invocation.return_dbus_error(e.dbus_name, str(e))

    def _replier(
        self,
        invocation: Gio.DBusMethodInvocation,
        method: str,
        before: Callable[[str | None], None] | None = None,
    ) -> Reply:
        """The reply to a call: `before(answer or None)` first (caches, signals), then the
        answer or the error. A caller that has left is sent nothing (the bus drops it)."""

        def reply(answer: str | None, error: ServiceError | None) -> None:
            if before is not None:
                try:
                    before(answer)
                except Exception:  # a bug: the caller still gets its answer
                    log.exception("%s: after the answer", method)
            if error is not None:
                self._refuse(invocation, method, error)
            elif answer is not None:
                _answer(invocation, answer)
            self._activity()

        return reply

    # -- reads --

    def _audit(self, invocation: Gio.DBusMethodInvocation, kernels: Sequence[str]) -> None:
        kvers = tuple(kernels)
        for kver in kvers:
            plain_name(kver)
        self.check_stamp()
        cached = self.state.audit(kvers)
        if cached is not None:
            _answer(invocation, cached)
            return
        generation = self.state.generation

        def keep(answer: str | None) -> None:
            if answer is not None:
                self.state.keep_audit(kvers, answer, generation)

        self._read(
            Job(
                "Audit",
                lambda _emit: guarded("Audit", lambda: audit_answer(self.root, kvers)),
                [self._replier(invocation, "Audit", keep)],
                key=("Audit", kvers, generation),
            )
        )

    def _explain(self, invocation: Gio.DBusMethodInvocation, path: str, kver: str) -> None:
        if kver:
            plain_name(kver)
        self.check_stamp()
        self._read(
            Job(
                "Explain",
                lambda _emit: guarded("Explain", lambda: explain_answer(self.root, path, kver)),
                [self._replier(invocation, "Explain")],
                key=("Explain", path, kver, self.state.generation),
            )
        )

    def _read(self, job: Job) -> None:
        self.scheduler.read(job)  # Busy beyond daemon_max_reads

    # -- properties: directory listings, answered at once --

    def _properties_call(
        self, method: str, args: tuple[Any, ...], invocation: Gio.DBusMethodInvocation
    ) -> None:
        if method == "Get":
            value = self.state.listing(args[1])
            invocation.return_value(GLib.Variant("(v)", (GLib.Variant("as", value),)))
        elif method == "GetAll":
            values = {k: GLib.Variant("as", self.state.listing(k)) for k in PROPERTY_NAMES}
            invocation.return_value(GLib.Variant("(a{sv})", (values,)))
        else:  # Gio refuses to set a read-only property before it gets here
            invocation.return_dbus_error(
                "org.freedesktop.DBus.Error.PropertyReadOnly", "the properties are read-only"
            )

    # -- changes: one at a time, in order, root only --

    def _add_kernel(
        self, invocation: Gio.DBusMethodInvocation, sender: str, kver: str, dry_run: bool
    ) -> None:
        def work() -> str:
            return add_kernel_answer(self.root, kver, dry_run=dry_run, journal=self.journal)

        self._change(invocation, sender, "AddKernel", kver=kver, dry_run=dry_run, work=work)

    def _remove_kernel(
        self, invocation: Gio.DBusMethodInvocation, sender: str, kver: str, dry_run: bool
    ) -> None:
        def work() -> str:
            return remove_kernel_answer(self.root, kver, dry_run=dry_run, journal=self.journal)

        self._change(invocation, sender, "RemoveKernel", kver=kver, dry_run=dry_run, work=work)

    def _change(
        self,
        invocation: Gio.DBusMethodInvocation,
        sender: str,
        method: str,
        *,
        kver: str,
        dry_run: bool,
        work: Callable[[], str],
    ) -> None:
        """Queue a change once the bus says the caller is root. Its reply (and Resolved, for
        a real run) goes out when it is done; the caller may wait as long as the queue takes."""

        def started() -> None:
            self.check_stamp()  # another run's end, not yet seen, is announced first
            self.state.changing = True

        def finished(answer: str | None) -> None:
            self.state.changing = False
            own = {doc["kernel"]: doc for doc in json.loads(answer)} if answer else {}
            self.check_stamp(own)  # a failed run may have changed something too

        def queue() -> None:
            if self.stopping:
                raise Failed(STOPPING)
            plain_name(kver)
            job = Job(
                method,
                lambda _emit: guarded(method, work),
                [self._replier(invocation, method, None if dry_run else finished)],
                on_start=None if dry_run else started,
            )
            ahead = self.scheduler.submit(job)
            if ahead:
                log.info("%s %s waits for %d change(s) before it", method, kver, ahead)

        self._as_root(invocation, sender, method, queue)

    # -- verify: each kernel's own verifier in a VM; root only, queued with the changes --

    def _verify(
        self, invocation: Gio.DBusMethodInvocation, sender: str, kernels: Sequence[str]
    ) -> None:
        kvers = tuple(kernels)
        for kver in kvers:
            plain_name(kver)

        def queue() -> None:
            if self.stopping:
                raise Failed(STOPPING)
            self.queue_verify(kvers, self._replier(invocation, "Verify"))

        self._as_root(invocation, sender, "Verify", queue)

    def queue_verify(self, kvers: tuple[str, ...], reply: Reply | None = None) -> None:
        """Verify `kvers` (none: every kernel with an image) after the changes queued before:
        VerifyProgress while it runs, Verified for each kernel, then `reply`. Raises Busy."""

        def work(emit: Callable[[Any], None]) -> str:
            return guarded("Verify", lambda: verify_answer(self.root, kvers, emit))

        def progress(line: Any) -> None:
            self._emit(INTERFACE, "VerifyProgress", GLib.Variant("(s)", (str(line),)))

        job = Job(
            "Verify",
            work,
            [self._announce_verified] + ([reply] if reply else []),
            on_event=progress,
            finish=False,  # it changes no link: stopping the daemon stops its VM
        )
        ahead = self.scheduler.submit(job)
        log.info("Verify %s queued (%d change(s) before it)", " ".join(kvers) or "*", ahead)

    def _announce_verified(self, answer: str | None, error: ServiceError | None) -> None:
        if error is not None:
            log.warning("Verify failed: %s", error)
            return
        assert answer is not None
        for kver, run in json.loads(answer)["kernels"].items():
            log.info("Verified %s: %s", kver, run)
            self._emit(INTERFACE, "Verified", GLib.Variant("(ss)", (kver, json.dumps(run))))
        self.check_stamp()  # verify moved the stamp: cached Audit answers are dropped

    def _verify_added(self, resolved: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """verify_in_daemon: verify each kernel a real run just added."""
        added = tuple(k for k, doc in resolved if doc.get("action") == "add-kernel")
        if not added or not self.verify_new_kernels or self.stopping:
            return
        try:
            self.queue_verify(added)
        except ServiceError as e:
            log.warning("cannot verify %s: %s", " ".join(added), e)

    def _as_root(
        self,
        invocation: Gio.DBusMethodInvocation,
        sender: str,
        method: str,
        then: Callable[[], None],
    ) -> None:
        """`then()` if the bus says the caller is uid 0, else AccessDenied (asked without
        waiting: the bus answers in the order asked, so changes stay in the callers' order)."""

        def got(connection: Gio.DBusConnection, result: Gio.AsyncResult) -> None:
            try:
                (uid,) = connection.call_finish(result).unpack()
            except GLib.Error as e:
                log.warning("%s: the caller cannot be identified: %s", method, e)
                self._refuse(invocation, method, AccessDenied("the caller cannot be identified"))
                return
            if uid != 0:
                log.info("%s refused to uid %s", method, uid)
                error = AccessDenied(f"only root may change links (caller uid {uid})")
                self._refuse(invocation, method, error)
                return
            try:
                then()
            except ServiceError as e:
                self._refuse(invocation, method, e)

        assert self.connection is not None
        args = GLib.Variant("(s)", (sender,))
        _ask_bus(self.connection, "GetConnectionUnixUser", args, "(u)", got)

    # -- runs: ours and others' --

    def check_stamp(self, own: Mapping[str, dict[str, Any]] | None = None) -> None:
        """Announce what runs changed (`own`: the reports of our own run, just ended)."""
        news = self.state.news(own)
        if news is None:
            return
        if news.properties:  # first: a client woken by Resolved reads them fresh
            variants = {k: GLib.Variant("as", v) for k, v in news.properties.items()}
            args = GLib.Variant("(sa{sv}as)", (INTERFACE, variants, []))
            self._emit(PROPERTIES, "PropertiesChanged", args)
        for kver, doc in news.resolved:
            self.emit_resolved(kver, doc)
        self._verify_added(news.resolved)

    def emit_resolved(self, kver: str, doc: dict[str, Any]) -> None:
        log.info("Resolved %s: %s", kver, doc.get("summary", ""))
        self._emit(INTERFACE, "Resolved", GLib.Variant("(ss)", (kver, summary_json(doc))))

    def _emit(self, interface: str, name: str, args: GLib.Variant) -> None:
        if self.connection is None:
            return
        try:
            self.connection.emit_signal(None, OBJECT_PATH, interface, name, args)
        except GLib.Error as e:
            log.warning("cannot emit %s: %s", name, e)


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
            (code,) = _ask_bus(connection, "RequestName", args, "(u)").unpack()
            if code != 1:  # 1: we own it; 3: another connection does
                raise RuntimeError("the name is owned by another connection")
        except BaseException:
            connection.unregister_object(registration)
            raise
        return connection, registration

    def _unpublish(self, connection: Gio.DBusConnection, registration: int) -> None:
        with contextlib.suppress(GLib.Error):  # the bus may be gone already
            connection.unregister_object(registration)
            _ask_bus(connection, "ReleaseName", GLib.Variant("(s)", (BUS_NAME,)), None)
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
