"""org.weakbpf.Manager1, weak-bpf-progsd's D-Bus object (SPEC §7): Gio's handler of its calls.

A reply goes out when the call's worker is done, not when the handler returns: the main loop
(service.py) never waits for work. Properties and cached Audit answers are answered at once; Audit
and Explain run in workers side by side; AddKernel, RemoveKernel and Verify wait in a queue and run
one at a time (workers.py). Every answer comes from answers.py (weak_bpf.ops, as the CLI's do).
This module checks the caller, and announces other runs and its own (Resolved, PropertiesChanged)
as rootstate.py, which also caches Audit answers, sees them. With service.py, the only modules
that import gi.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gi.repository import Gio, GLib

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
from weak_bpf.daemon.interface import INTERFACE, OBJECT_PATH
from weak_bpf.daemon.rootstate import PROPERTIES as PROPERTY_NAMES
from weak_bpf.daemon.rootstate import RootState
from weak_bpf.daemon.workers import Job, Reply, Scheduler

log = logging.getLogger("weak-bpf-progsd")

PROPERTIES = "org.freedesktop.DBus.Properties"
DBUS = "org.freedesktop.DBus"


# --- the object ----------------------------------------------------------------------------------


def ask_bus(
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
        ask_bus(self.connection, "GetConnectionUnixUser", args, "(u)", got)

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
