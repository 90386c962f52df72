"""weak-bpf-progsd on a real dbus-daemon (a private system-like bus), over an example root with
the real Debian kernels: every method and property through busctl and pydbus, Resolved after
our runs and the CLI's, authorization (bus policy and the daemon's own check), validation
errors, idle exit and sd_notify, and the units through systemd-analyze verify."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_bus import PrivateBus, name_owned, start_daemon, stop

from weak_bpf.daemon.answers import InvalidArgument, check_program
from weak_bpf.daemon.service import BUS_NAME, INTERFACE, INTERFACE_XML, OBJECT_PATH

from conftest import REPO, require, require_root, require_tool

pydbus = pytest.importorskip("pydbus")
GLib = pytest.importorskip("gi.repository.GLib")

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
ERROR = f"{INTERFACE}.Error."
BROKEN = "usr/lib/bpf/broken/garbage.bpf.o"
KERNELS = ["6.1.0-47-cloud-amd64", "6.1.0-56-cloud-amd64"]
# What scripts/exampleroot.py installs, plus BROKEN: CO-RE programs by path, then the native
# build for the older kernel (the order of weak_bpf.program.installed.installed_programs).
PROGRAMS = [
    "usr/lib/bpf/acme-fs/buddy_load.bpf.o",
    "usr/lib/bpf/acme-net/tcp_retrans.bpf.o",
    "usr/lib/bpf/acme-net/xdp_ct.bpf.o",
    "usr/lib/bpf/acme-power/padata_offline.bpf.o",
    "usr/lib/bpf/acme-sec/task_guard.bpf.o",
    "usr/lib/bpf/acme-trace/exec_state.bpf.o",
    "usr/lib/bpf/acme-trace/open_count.bpf.o",
    BROKEN,
    "usr/lib/bpf/globex-net/ct_keepalive.bpf.o",
    "usr/lib/bpf/globex-obs/epoll_leak.bpf.o",
    "usr/lib/bpf/globex-storage/bitmap_release.bpf.o",
    "usr/lib/modules/6.1.0-47-cloud-amd64/bpf/extra/acme-net/xdp_ct.bpf.o",
]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, debian_kernels: dict[str, Path]
) -> Iterator[dict[str, Any]]:
    """An example root (plus one malformed object), a private bus and the daemon on it."""
    require_root()
    for tool in ("dbus-daemon", "busctl", "setpriv", "dbus-send"):
        require_tool(tool)
    import exampleroot

    assert sorted(debian_kernels) == KERNELS
    tmp = tmp_path_factory.mktemp("daemon")
    root = tmp / "root"
    exampleroot.build_example_root(root, debian_kernels)
    (root / BROKEN).parent.mkdir(parents=True)
    (root / BROKEN).write_bytes(b"\x7fELF not really")
    bus = PrivateBus(public_dir())
    bus.start()
    daemon = start_daemon(bus, root, ["--idle-timeout", "0"], log=tmp / "daemon.log")
    client = pydbus.connect(bus.address)
    try:
        yield {
            "root": root,
            "bus": bus,
            "daemon": daemon,
            "log": tmp / "daemon.log",
            "proxy": client.get(BUS_NAME, OBJECT_PATH),
            "kernels": KERNELS,
        }
    finally:
        client.con.close_sync(None)
        stop(daemon)
        bus.stop()
        shutil.rmtree(bus.directory)


def public_dir() -> Path:
    """A directory nobody can reach (pytest's tmp_path is private to root), for a bus socket."""
    path = Path(tempfile.mkdtemp(prefix="wbp-bus-"))
    path.chmod(0o755)
    return path


def busctl(world: dict[str, Any], *args: str, user: list[str] | None = None) -> Any:
    """busctl --json=short against the daemon: the reply's data, or the failed process."""
    cmd = [*(user or []), "busctl", f"--address={world['bus'].address}", "--json=short", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return proc
    return json.loads(proc.stdout)


def call(world: dict[str, Any], method: str, signature: str, *args: str, **kw: Any) -> Any:
    return busctl(world, "call", BUS_NAME, OBJECT_PATH, INTERFACE, method, signature, *args, **kw)


def dbus_send(world: dict[str, Any], method: str, *args: str, user: list[str]) -> str:
    """dbus-send's output: it names the D-Bus error ("Error org.weakbpf...: message")."""
    cmd = [
        *user,
        "dbus-send",
        f"--bus={world['bus'].address}",
        "--print-reply",
        f"--dest={BUS_NAME}",
        OBJECT_PATH,
        f"{INTERFACE}.{method}",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return proc.stdout + proc.stderr


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weak_bpf", "--root", str(root), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


def dbus_error(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """The D-Bus error name of a GLib.Error from a pydbus call."""
    message = str(excinfo.value)
    assert "GDBus.Error:" in message, message
    return message.split("GDBus.Error:", 1)[1].split(":", 1)[0]


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest.update(f"{path.relative_to(root)} {st.st_mode} {st.st_mtime_ns}".encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


class Signals:
    """Resolved signals received by a pydbus client, waited for on a GLib main context."""

    def __init__(self, proxy: Any) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._subscription = proxy.Resolved.connect(
            lambda kver, doc: self.received.append((kver, json.loads(doc)))
        )

    def wait(self, kver: str, timeout: float = 20.0) -> dict[str, Any]:
        context = GLib.MainContext.default()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for got, doc in self.received:
                if got == kver:
                    return doc
            if not context.iteration(False):
                time.sleep(0.01)
        raise AssertionError(f"no Resolved for {kver} in {timeout} s: {self.received}")

    def close(self) -> None:
        self._subscription.disconnect()


# --- reading: properties, Audit, Explain ---------------------------------------------------------


def test_properties(world: dict[str, Any]) -> None:
    """Fixed lists, not the product's own answers: the two Debian kernels and the programs
    installed by the example root (the daemon could serve a wrong list that the product's
    installed_programs() shares)."""
    for name, expected in (("Kernels", KERNELS), ("Programs", PROGRAMS)):
        got = busctl(world, "get-property", BUS_NAME, OBJECT_PATH, INTERFACE, name)
        assert got == {"type": "as", "data": expected}
        assert getattr(world["proxy"], name) == expected
    everything = world["proxy"].GetAll(INTERFACE)
    assert everything == {"Kernels": KERNELS, "Programs": PROGRAMS}


def test_audit_is_the_cli_document(world: dict[str, Any]) -> None:
    root = world["root"]
    expected = json.loads(cli(root, "audit", "--json").stdout)
    by_busctl = call(world, "Audit", "as", "0")
    assert by_busctl["type"] == "s"
    assert json.loads(by_busctl["data"][0]) == expected
    assert json.loads(world["proxy"].Audit([])) == expected
    newest = world["kernels"][-1]
    one = json.loads(world["proxy"].Audit([newest]))
    assert one == json.loads(cli(root, "audit", "--json", newest).stdout)
    assert one["kernels"] == [newest]
    broken = next(p["results"][newest] for p in one["programs"] if p["path"] == BROKEN)
    assert [r["code"] for r in broken["reasons"]] == ["malformed"]


def test_explain(world: dict[str, Any]) -> None:
    root = world["root"]
    path = "usr/lib/bpf/acme-net/xdp_ct.bpf.o"
    audit = json.loads(world["proxy"].Audit([]))
    expected = next(p for p in audit["programs"] if p["path"] == path)
    for given in (path, f"/{path}", str(root / path)):
        doc = json.loads(world["proxy"].Explain(given, ""))
        assert doc["path"] == path
        assert list(doc["kernels"]) == world["kernels"]
        for kver, result in doc["kernels"].items():
            assert result["verdict"] == expected["results"][kver]["verdict"]
            assert result["reasons"] == expected["results"][kver]["reasons"]
            assert result["checks"], "every check is listed"
    newest = world["kernels"][-1]
    by_busctl = call(world, "Explain", "ss", path, newest)
    assert list(json.loads(by_busctl["data"][0])["kernels"]) == [newest]


def test_malformed_object_is_an_answer(world: dict[str, Any]) -> None:
    doc = json.loads(world["proxy"].Explain(BROKEN, ""))
    assert list(doc["kernels"]) == KERNELS  # the loop below is over every kernel, never none
    for result in doc["kernels"].values():
        assert result["verdict"] == "incompatible"
        assert [r["code"] for r in result["reasons"]] == ["malformed"]
    assert world["daemon"].poll() is None
    assert world["proxy"].Kernels == world["kernels"]  # still serving


# --- validation ----------------------------------------------------------------------------------

BAD_CALLS = [
    ("Explain", ("../etc/passwd", "")),
    ("Explain", ("usr/lib/bpf/../../../etc/passwd", "")),
    ("Explain", ("/etc/passwd", "")),
    ("Explain", ("usr/lib/bpf/acme-net/missing.bpf.o", "")),
    ("Explain", ("usr/lib/bpf/acme-net/xdp_ct.bpf.o", "9.9.9")),
    ("Explain", ("usr/lib/bpf/acme-net/xdp_ct.bpf.o", "../6.1")),
    ("Audit", (["9.9.9"],)),
    ("Audit", (["../x"],)),
    ("Audit", ([""],)),
    ("AddKernel", ("9.9.9", True)),
    ("AddKernel", ("", True)),
    ("AddKernel", ("..", True)),
    ("AddKernel", ("a/b", True)),
    ("RemoveKernel", ("9.9.9", True)),
    ("RemoveKernel", ("../../etc", True)),
]


@pytest.mark.parametrize(("method", "args"), BAD_CALLS)
def test_invalid_arguments(world: dict[str, Any], method: str, args: tuple[Any, ...]) -> None:
    with pytest.raises(GLib.Error) as excinfo:
        getattr(world["proxy"], method)(*args)
    assert dbus_error(excinfo) == ERROR + "InvalidArgument"
    assert world["daemon"].poll() is None


def test_invalid_argument_by_busctl(world: dict[str, Any]) -> None:
    proc = call(world, "Explain", "ss", "../../etc/shadow", "")
    assert isinstance(proc, subprocess.CompletedProcess)
    assert "'..' is not allowed" in proc.stderr


def test_nul_and_outside_paths(world: dict[str, Any]) -> None:
    """D-Bus strings cannot carry NUL (GLib refuses to send one); the check refuses it too."""
    root = world["root"]
    outside = root.parent / "outside.bpf.o"
    shutil.copyfile(root / "usr/lib/bpf/acme-net/xdp_ct.bpf.o", outside)
    for path in ("usr/lib/bpf/acme-net/xdp_ct.bpf.o\0x", str(outside), "../outside.bpf.o"):
        with pytest.raises(InvalidArgument):
            check_program(root, path)
    with pytest.raises(GLib.Error) as excinfo:
        world["proxy"].Explain(str(outside), "")
    assert dbus_error(excinfo) == ERROR + "InvalidArgument"


# --- authorization -------------------------------------------------------------------------------


def test_nobody_may_read_but_not_change(world: dict[str, Any]) -> None:
    root, kver = world["root"], world["kernels"][-1]
    audit = call(world, "Audit", "as", "0", user=NOBODY)
    assert json.loads(audit["data"][0])["kernels"] == world["kernels"], audit
    explain = call(world, "Explain", "ss", "usr/lib/bpf/acme-net/xdp_ct.bpf.o", kver, user=NOBODY)
    assert json.loads(explain["data"][0])["path"] == "usr/lib/bpf/acme-net/xdp_ct.bpf.o"
    got = busctl(world, "get-property", BUS_NAME, OBJECT_PATH, INTERFACE, "Kernels", user=NOBODY)
    assert got["data"] == world["kernels"]
    before = tree_hash(root)
    for method in ("AddKernel", "RemoveKernel"):
        for dry_run in ("false", "true"):
            proc = call(world, method, "sb", kver, dry_run, user=NOBODY)
            assert isinstance(proc, subprocess.CompletedProcess), proc
            assert "Access denied" in proc.stderr
        # the bus policy refuses it before the daemon sees it
        out = dbus_send(world, method, f"string:{kver}", "boolean:false", user=NOBODY)
        assert "org.freedesktop.DBus.Error.AccessDenied" in out
    assert tree_hash(root) == before
    assert world["daemon"].poll() is None


def test_daemon_checks_the_caller_itself(world: dict[str, Any]) -> None:
    """On a bus whose policy lets anyone call anything, the daemon still refuses nobody; then,
    idle, it exits on its own, having told systemd READY and STOPPING."""
    tmp = public_dir()
    bus = PrivateBus(tmp, permissive=True)
    bus.start()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify"))
    notify.settimeout(15)
    daemon = start_daemon(
        bus,
        world["root"],
        ["--idle-timeout", "2"],
        log=tmp / "log",
        environ={"NOTIFY_SOCKET": str(tmp / "notify")},
    )
    try:
        assert b"READY=1" in notify.recv(4096)
        root, kver = world["root"], world["kernels"][-1]
        before = tree_hash(root)
        for method in ("AddKernel", "RemoveKernel"):
            world_here = {"bus": bus}
            out = dbus_send(world_here, method, f"string:{kver}", "boolean:false", user=NOBODY)
            assert f"{ERROR}AccessDenied" in out, out
            assert "caller uid 65534" in out
        assert tree_hash(root) == before
        daemon.wait(timeout=15)  # idle exit
        assert daemon.returncode == 0
        assert b"STOPPING=1" in notify.recv(4096)
        assert not name_owned(bus)
    finally:
        notify.close()
        stop(daemon)
        bus.stop()
        shutil.rmtree(tmp)


# --- changing: AddKernel, RemoveKernel, and runs of the CLI --------------------------------------


def test_add_kernel_emits_resolved(world: dict[str, Any]) -> None:
    root, kver = world["root"], world["kernels"][-1]
    signals = Signals(world["proxy"])
    try:
        dry = json.loads(world["proxy"].AddKernel(kver, True))
        assert dry[0]["dry_run"] is True
        assert not (root / f"usr/lib/modules/{kver}/bpf/weak-updates").exists()
        runs = json.loads(world["proxy"].AddKernel(kver, False))
        doc = signals.wait(kver)
    finally:
        signals.close()
    assert [run["kernel"] for run in runs] == [kver]
    assert doc["action"] == "add-kernel"
    assert doc["summary"] == runs[0]["summary"]
    assert doc["counts"] == runs[0]["counts"]
    assert "programs" not in doc
    report = json.loads((root / f"var/lib/weak-bpf-progs/reports/{kver}.json").read_text())
    assert report == runs[0]
    linked = [p["path"] for p in runs[0]["programs"] if p["linked"]]
    assert linked, "the example root links something"
    links = root / f"usr/lib/modules/{kver}/bpf/weak-updates"
    on_disk = {str(p.relative_to(links)) for p in links.rglob("*.bpf.o") if p.is_symlink()}
    assert on_disk == {p["link"] for p in runs[0]["programs"] if p["linked"]}
    # the cached Audit answer was refreshed: it shows the new links
    audit = json.loads(world["proxy"].Audit([]))
    now_linked = [p["path"] for p in audit["programs"] if p["results"][kver]["linked"]]
    assert sorted(now_linked) == sorted(linked)


def test_cli_run_emits_resolved(world: dict[str, Any]) -> None:
    root, kver = world["root"], world["kernels"][0]
    before = json.loads(world["proxy"].Audit([]))  # cached now
    assert not any(p["results"][kver]["linked"] for p in before["programs"])
    signals = Signals(world["proxy"])
    try:
        proc = cli(root, "--no-journal", "add-kernel", kver)
        assert proc.returncode == 0, proc.stderr
        doc = signals.wait(kver)
    finally:
        signals.close()
    assert doc["kernel"] == kver and doc["action"] == "add-kernel"
    after = json.loads(world["proxy"].Audit([]))
    assert after == json.loads(cli(root, "audit", "--json").stdout)
    assert any(p["results"][kver]["linked"] for p in after["programs"])


def test_remove_kernel(world: dict[str, Any]) -> None:
    root, kver = world["root"], world["kernels"][-1]
    json.loads(world["proxy"].AddKernel(kver, False))
    links = root / f"usr/lib/modules/{kver}/bpf/weak-updates"
    assert any(links.rglob("*.bpf.o"))
    dry = call(world, "RemoveKernel", "sb", kver, "true")
    assert json.loads(dry["data"][0])[0]["dry_run"] is True
    assert any(links.rglob("*.bpf.o"))
    signals = Signals(world["proxy"])
    try:
        done = call(world, "RemoveKernel", "sb", kver, "false")
        doc = signals.wait(kver)
    finally:
        signals.close()
    assert json.loads(done["data"][0])[0]["action"] == "remove-kernel"
    assert doc["action"] == "remove-kernel"
    assert not any(links.rglob("*.bpf.o")) if links.exists() else True
    added = call(world, "AddKernel", "sb", kver, "false")  # busctl, as root
    assert json.loads(added["data"][0])[0]["counts"]["linked"] > 0


def test_new_program_by_the_cli(world: dict[str, Any]) -> None:
    """A package installs a program and its trigger runs add-progs: Resolved for every kernel,
    and PropertiesChanged with the new Programs."""
    root = world["root"]
    new = "usr/lib/bpf/acme-new/xdp_ct.bpf.o"
    (root / new).parent.mkdir(parents=True)
    shutil.copyfile(root / "usr/lib/bpf/acme-net/xdp_ct.bpf.o", root / new)
    changed: list[dict[str, Any]] = []
    subscription = world["proxy"].PropertiesChanged.connect(
        lambda iface, values, invalidated: changed.append(values)
    )
    signals = Signals(world["proxy"])
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "weak_bpf", "--root", str(root), "--no-journal", "add-progs"],
            input=f"/{new}\n",
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        for kver in world["kernels"]:
            assert signals.wait(kver)["action"] == "add-progs"
        deadline = time.monotonic() + 10
        while not changed and time.monotonic() < deadline:
            if not GLib.MainContext.default().iteration(False):
                time.sleep(0.01)
    finally:
        signals.close()
        subscription.disconnect()
    assert any(new in values.get("Programs", []) for values in changed), changed
    assert new in world["proxy"].Programs


# --- the installed files -------------------------------------------------------------------------


def _interface(xml: str) -> list[tuple[str, ...]]:
    """Every member of the interface with its arguments (or type and access), sorted."""
    node = ET.fromstring(xml)
    iface = next(i for i in node.iter("interface") if i.get("name") == INTERFACE)
    members = []
    for member in iface:
        args = [f"{a.get('name')}:{a.get('type')}:{a.get('direction')}" for a in member.iter("arg")]
        members.append((member.tag, str(member.get("name")), str(member.get("type")), *args))
    return sorted(members)


def test_introspection_xml(world: dict[str, Any]) -> None:
    installed = (REPO / "dbus/org.weakbpf.Manager1.xml").read_text()
    assert _interface(installed) == _interface(INTERFACE_XML)
    live = world["proxy"].Introspect()
    assert _interface(live) == _interface(installed)


def test_activation_file() -> None:
    text = (REPO / "dbus/org.weakbpf.Manager1.service").read_text()
    lines = set(text.splitlines())
    assert "[D-BUS Service]" in lines
    for line in (
        f"Name={BUS_NAME}",
        "Exec=/usr/sbin/weak-bpf-progsd",
        "User=root",
        "SystemdService=weak-bpf-progsd.service",
    ):
        assert line in lines


def test_units_verify(tmp_path: Path) -> None:
    """systemd-analyze verify on each unit. /usr/sbin/weak-bpf-progs{,d} are not installed
    here: the copies verified run stub executables at the same names in a temp directory."""
    analyze = require_tool("systemd-analyze")
    require(Path("/usr/lib/systemd/system/sysinit.target").exists(), "systemd units installed")
    stubs = tmp_path / "sbin"
    stubs.mkdir()
    for name in ("weak-bpf-progs", "weak-bpf-progsd"):
        (stubs / name).write_text("#!/bin/sh\nexit 0\n")
        (stubs / name).chmod(0o755)
    units = sorted((REPO / "systemd").glob("*.service"))
    assert {u.name for u in units} >= {"weak-bpf-progsd.service", "weak-bpf-progs-verify.service"}
    for unit in units:
        text = unit.read_text()
        assert "/usr/sbin/" in text
        (tmp_path / unit.name).write_text(text.replace("/usr/sbin/", f"{stubs}/"))
        proc = subprocess.run(
            [analyze, "verify", str(tmp_path / unit.name)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0 and not proc.stderr.strip(), (unit.name, proc.stderr)
    daemon = (REPO / "systemd/weak-bpf-progsd.service").read_text().splitlines()
    for line in ("Type=dbus", f"BusName={BUS_NAME}", "PrivateNetwork=yes", "NoNewPrivileges=yes"):
        assert line in daemon
