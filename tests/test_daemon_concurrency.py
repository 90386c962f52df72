"""weak-bpf-progsd never makes a caller wait for another's work (issue #13), on a real dbus-daemon
and real Debian kernels: reads are answered while a slow AddKernel runs, and while a RemoveKernel
waits behind it and runs; a slow Audit runs in a worker, at most daemon_max_reads of them at a
time; changes run one at a time in the order they came; a caller that leaves mid-call leaves no
process and no lock behind; SIGTERM lets the change in progress finish; the daemon stays small."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonclient import Daemon

from weak_bpf.daemon.service import BUS_NAME, INTERFACE, OBJECT_PATH
from weak_bpf.versions import kernel_sort_key

from conftest import require_root, require_tool
from exampleroot import build_example_root, copy_root

GLib = pytest.importorskip("gi.repository.GLib")
Gio = pytest.importorskip("gi.repository.Gio")

PROPERTIES = "org.freedesktop.DBus.Properties"
ERROR = f"{INTERFACE}.Error."
COPIES = 30  # the example programs (11 CO-RE objects) installed this many times over
LOCK = "run/weak-bpf-progs.lock"
RSS_LIMIT_MB = 60


# --- a root, a bus, a daemon, an asynchronous client ---------------------------------------------


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory, debian_kernels: dict[str, Path]) -> Path:
    """The example root (both Debian kernels, the example programs). Never changed."""
    require_root()
    for tool in ("dbus-daemon", "busctl"):
        require_tool(tool)
    root = tmp_path_factory.mktemp("example") / "root"
    build_example_root(root, debian_kernels)
    return root


@pytest.fixture(scope="module")
def large(example: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A large root: the example programs installed COPIES times over by as many vendors (each
    copy read and linked on its own, as another package's would be)."""
    root = copy_root(example, tmp_path_factory.mktemp("large") / "root")
    packages = sorted(p for p in (root / "usr/lib/bpf").iterdir() if p.is_dir())
    for i in range(COPIES):
        for package in packages:
            shutil.copytree(package, root / f"usr/lib/bpf/vendor{i:02d}-{package.name}")
    return root


def kernels_of(root: Path) -> list[str]:
    return sorted(os.listdir(root / "usr/lib/modules"), key=kernel_sort_key)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Path], Daemon]]:
    daemons: list[Daemon] = []

    def start(source: Path, config: str = "") -> Daemon:
        root = copy_root(source, tmp_path / f"root{len(daemons)}")
        if config:
            (root / "etc").mkdir(exist_ok=True)
            (root / "etc/weak-bpf-progs.conf").write_text(config)
        daemon = Daemon(root)
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.close()


def lock_is_free(root: Path) -> bool:
    fd = os.open(root / LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def no_children_soon(daemon: Daemon, timeout: float = 60.0) -> bool:
    """Every worker has exited and been reaped (a zombie is still listed as a child)."""
    deadline = time.monotonic() + timeout
    while daemon.children():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# --- the tests -----------------------------------------------------------------------------------


def test_reads_are_answered_while_a_slow_add_kernel_runs(
    serve: Callable[..., Daemon], large: Path
) -> None:
    """20 property reads, Audit and Explain calls, sent while AddKernel resolves a kernel whose
    facts nobody has read yet for several hundred programs: all are answered, rightly, before
    AddKernel's reply."""
    daemon = serve(large)
    old, new = kernels_of(daemon.root)
    assert daemon.rss_mb() < RSS_LIMIT_MB
    daemon.call("warm", "Audit", "(as)", [old])
    (warm, error) = daemon.wait("warm")["warm"]
    assert error is None
    programs = json.loads(warm)["programs"]
    core = len(list((daemon.root / "usr/lib/bpf").glob("[!v]*/*.bpf.o")))
    assert len(programs) == core * (COPIES + 1) + 1 > 300  # and the native build

    daemon.call("add", "AddKernel", "(sb)", new, False)
    daemon.wait_for_worker()  # the change is running
    reads: dict[str, tuple[Any, ...]] = {}
    for i in range(6):
        reads[f"kernels{i}"] = ("Get", "(ss)", INTERFACE, "Kernels")
    for i in range(4):
        reads[f"programs{i}"] = ("Get", "(ss)", INTERFACE, "Programs")
    for i in range(2):
        reads[f"all{i}"] = ("GetAll", "(s)", INTERFACE)
    for i in range(4):
        reads[f"audit{i}"] = ("Audit", "(as)", [old])  # the answer cached by the first call
    explained = [
        "usr/lib/bpf/acme-net/xdp_ct.bpf.o",
        "usr/lib/bpf/vendor07-acme-trace/exec_state.bpf.o",
    ]
    for i, path in enumerate(explained):
        reads[f"explain{i}"] = ("Explain", "(ss)", path, old)  # each in a worker
    reads["explain-same"] = ("Explain", "(ss)", explained[0], old)  # shares the first's worker
    reads["explain-other"] = (
        "Explain",
        "(ss)",
        "usr/lib/bpf/vendor19-globex-net/ct_keepalive.bpf.o",
        old,
    )
    assert len(reads) == 20
    for tag, (method, signature, *args) in reads.items():
        daemon.call(tag, method, signature, *args)
    daemon.wait("add", *reads)

    order = [tag for tag, _, _ in daemon.replies]
    assert order[-1] == "add", f"AddKernel was answered before some reads: {daemon.when}"
    got = {tag: (value, error) for tag, value, error in daemon.replies}
    assert not [(tag, e) for tag, (_, e) in got.items() if e], "every call succeeds"
    listed = sorted(p["path"] for p in programs)
    for i in range(6):
        assert got[f"kernels{i}"][0] == [old, new]
    for i in range(4):
        assert sorted(got[f"programs{i}"][0]) == listed
    for i in range(2):
        assert got[f"all{i}"][0]["Kernels"] == [old, new]
        assert sorted(got[f"all{i}"][0]["Programs"]) == listed
    for i in range(4):
        assert got[f"audit{i}"][0] == warm
    for i, path in enumerate(explained):
        doc = json.loads(got[f"explain{i}"][0])
        assert doc["path"] == path and list(doc["kernels"]) == [old]
    assert got["explain-same"][0] == got["explain0"][0]
    other = json.loads(got["explain-other"][0])
    assert other["kernels"][old]["verdict"] == "compatible-unstable"  # its greylist came along

    (run,) = json.loads(got["add"][0])
    assert run["kernel"] == new and run["counts"]["linked"] > COPIES
    daemon.pump(lambda: bool(daemon.resolved))
    assert [k for k, _ in daemon.resolved] == [new]
    assert no_children_soon(daemon)
    assert lock_is_free(daemon.root)
    assert daemon.rss_mb() < RSS_LIMIT_MB, "idle after the calls"
    # the cache was dropped: Audit now shows the new links
    daemon.call("after", "Audit", "(as)", [new])
    after = json.loads(daemon.wait("after")["after"][0])
    assert sum(p["results"][new]["linked"] for p in after["programs"]) == run["counts"]["linked"]


def test_reads_are_answered_while_a_remove_kernel_waits_and_runs(
    serve: Callable[..., Daemon], large: Path
) -> None:
    """A RemoveKernel queued behind a slow AddKernel, then property reads and Explain calls:
    each read is answered before the RemoveKernel, which comes after the AddKernel and leaves
    the kernel without links."""
    daemon = serve(large)
    old, new = kernels_of(daemon.root)
    daemon.call("add", "AddKernel", "(sb)", new, False)
    daemon.call("remove", "RemoveKernel", "(sb)", new, False)
    daemon.wait_for_worker()  # the AddKernel is running, the RemoveKernel waits
    reads: dict[str, tuple[Any, ...]] = {}
    for i in range(8):
        reads[f"kernels{i}"] = ("Get", "(ss)", INTERFACE, "Kernels")
    for i, kver in enumerate((old, new)):
        reads[f"explain{i}"] = ("Explain", "(ss)", "usr/lib/bpf/acme-net/xdp_ct.bpf.o", kver)
    for tag, (method, signature, *args) in reads.items():
        daemon.call(tag, method, signature, *args)
    daemon.wait("add", "remove", *reads)

    order = [tag for tag, _, _ in daemon.replies]
    assert order.index("add") < order.index("remove") == len(order) - 1, daemon.when
    got = {tag: (value, error) for tag, value, error in daemon.replies}
    assert not [(tag, e) for tag, (_, e) in got.items() if e], "every call succeeds"
    for i in range(8):
        assert got[f"kernels{i}"][0] == [old, new]
    for i, kver in enumerate((old, new)):
        assert list(json.loads(got[f"explain{i}"][0])["kernels"]) == [kver]
    linked = json.loads(got["add"][0])[0]["counts"]["linked"]
    (removed,) = json.loads(got["remove"][0])
    assert removed["action"] == "remove-kernel" and removed["counts"]["changed"] == linked > COPIES
    links = daemon.root / f"usr/lib/modules/{new}/bpf"
    assert not [p for p in links.rglob("*.bpf.o") if p.is_symlink()]
    assert no_children_soon(daemon)
    assert lock_is_free(daemon.root)


def test_a_slow_audit_runs_in_a_worker_and_reads_are_bounded(
    serve: Callable[..., Daemon], large: Path
) -> None:
    """daemon_max_reads = 1: while a cold Audit is computed, properties are answered, an
    identical Audit shares its worker, and another read is refused with Busy, at once."""
    daemon = serve(large, "[main]\ndaemon_max_reads = 1\n")
    _old, new = kernels_of(daemon.root)
    daemon.call("audit", "Audit", "(as)", [new])  # nothing is cached for this kernel
    worker = daemon.wait_for_worker()
    daemon.call("kernels", "Get", "(ss)", INTERFACE, "Kernels")
    daemon.call("busy", "Explain", "(ss)", "usr/lib/bpf/acme-net/xdp_ct.bpf.o", new)
    daemon.call("same", "Audit", "(as)", [new])
    daemon.wait("kernels", "busy")
    assert worker in daemon.children(), "the Audit was still being computed"
    assert {t for t, _, _ in daemon.replies} == {"kernels", "busy"}
    got = {tag: (value, error) for tag, value, error in daemon.replies}
    assert got["kernels"] == (kernels_of(daemon.root), None)
    assert f"{ERROR}Busy" in str(got["busy"][1])
    assert "1 Audit and Explain calls are being answered (daemon_max_reads" in str(got["busy"][1])
    daemon.wait("audit", "same")
    got = {tag: (value, error) for tag, value, error in daemon.replies}
    assert got["audit"][1] is None and got["same"] == got["audit"]
    assert json.loads(got["audit"][0])["kernels"] == [new]
    assert no_children_soon(daemon)
    daemon.call("busy-no-more", "Explain", "(ss)", "usr/lib/bpf/acme-net/xdp_ct.bpf.o", new)
    assert daemon.wait("busy-no-more")["busy-no-more"][1] is None
    daemon.call("cached", "Audit", "(as)", [new])
    assert daemon.wait("cached")["cached"] == got["audit"]
    assert "serving org.weakbpf.Manager1" in daemon.log.read_text()
    assert "(at most 1 reads at a time)" in daemon.log.read_text()


def test_changes_run_one_at_a_time_in_order(serve: Callable[..., Daemon], example: Path) -> None:
    daemon = serve(example)
    old, new = kernels_of(daemon.root)
    calls = [
        ("add-new", "AddKernel", new, False),
        ("dry-remove-new", "RemoveKernel", new, True),
        ("remove-new", "RemoveKernel", new, False),
        ("add-old", "AddKernel", old, False),
        ("bad", "AddKernel", "9.9.9", False),
        ("add-new-again", "AddKernel", new, False),
    ]
    for tag, method, kver, dry_run in calls:
        daemon.call(tag, method, "(sb)", kver, dry_run)
    daemon.wait(*(c[0] for c in calls))
    assert [t for t, _, _ in daemon.replies] == [c[0] for c in calls]
    got = {tag: (value, error) for tag, value, error in daemon.replies}
    assert f"{ERROR}InvalidArgument" in str(got["bad"][1])
    assert [tag for tag, (_, error) in got.items() if error] == ["bad"]
    linked = json.loads(got["add-new"][0])[0]["counts"]["linked"]
    assert linked > 0
    # the dry run came after the first AddKernel was done: it would remove what that linked
    dry = json.loads(got["dry-remove-new"][0])[0]
    assert dry["dry_run"] is True and dry["action"] == "remove-kernel"
    assert dry["counts"]["changed"] == linked, "it would remove what the AddKernel linked"
    daemon.pump(lambda: len(daemon.resolved) == 4)
    assert [(k, d["action"]) for k, d in daemon.resolved] == [
        (new, "add-kernel"),
        (new, "remove-kernel"),
        (old, "add-kernel"),
        (new, "add-kernel"),
    ]
    assert "another weak-bpf-progs run held" not in daemon.log.read_text()
    links = daemon.root / f"usr/lib/modules/{new}/bpf/weak-updates"
    assert len([p for p in links.rglob("*.bpf.o") if p.is_symlink()]) == linked


def test_a_caller_that_leaves_mid_call(serve: Callable[..., Daemon], example: Path) -> None:
    """busctl killed while its AddKernel runs, then while its Audit runs: the kernel is still
    resolved (a half-done install is never left), Resolved tells the others, every worker is
    reaped, the lock is free, and the daemon serves on."""
    daemon = serve(example)
    _old, new = kernels_of(daemon.root)
    address = f"--address={daemon.bus.address}"
    for method, args in (("AddKernel", ["sb", new, "false"]), ("Audit", ["as", "0"])):
        caller = subprocess.Popen(
            ["busctl", address, "call", BUS_NAME, OBJECT_PATH, INTERFACE, method, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        worker = daemon.wait_for_worker()
        caller.kill()
        caller.wait()
        assert worker in daemon.children(), f"{method}: the worker was still running"
        assert no_children_soon(daemon), f"{method}: a worker is left"
        assert lock_is_free(daemon.root)
    daemon.pump(lambda: bool(daemon.resolved))
    assert [(k, d["action"]) for k, d in daemon.resolved] == [(new, "add-kernel")]
    report = json.loads((daemon.root / f"var/lib/weak-bpf-progs/reports/{new}.json").read_text())
    links = daemon.root / f"usr/lib/modules/{new}/bpf/weak-updates"
    assert {str(p.relative_to(links)) for p in links.rglob("*.bpf.o")} == {
        p["link"] for p in report["programs"] if p["linked"]
    }
    assert report["counts"]["linked"] > 0
    assert daemon.process.poll() is None
    daemon.call("kernels", "Get", "(ss)", INTERFACE, "Kernels")
    assert daemon.wait("kernels")["kernels"] == (kernels_of(daemon.root), None)
    assert "Traceback" not in daemon.log.read_text()


def test_sigterm_lets_the_change_in_progress_finish(
    serve: Callable[..., Daemon], example: Path
) -> None:
    daemon = serve(example)
    old, new = kernels_of(daemon.root)
    daemon.call("running", "AddKernel", "(sb)", new, False)
    daemon.call("queued", "AddKernel", "(sb)", old, False)
    daemon.wait_for_worker()
    daemon.process.send_signal(signal.SIGTERM)
    daemon.wait("running", "queued")
    got = {tag: (value, error) for tag, value, error in daemon.replies}
    assert got["running"][1] is None
    assert json.loads(got["running"][0])[0]["kernel"] == new
    assert "weak-bpf-progsd is stopping: nothing was done; call again" in str(got["queued"][1])
    assert daemon.process.wait(timeout=30) == 0
    assert not (daemon.root / f"usr/lib/modules/{old}/bpf/weak-updates").exists()
    assert (daemon.root / f"var/lib/weak-bpf-progs/reports/{new}.json").exists()
    assert lock_is_free(daemon.root)
    assert "once the change in progress is done" in daemon.log.read_text()
