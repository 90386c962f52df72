"""weak-bpf-progsd's Verify (issue #14), on a real dbus-daemon with the real Debian kernels booted
under QEMU: root only; progress as signals while reads are answered; Verified for each kernel;
the Audit that follows shows the verified verdicts; with verify_in_daemon = yes a kernel that a
hook adds is verified without being asked; stopping the daemon stops its VM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from daemonclient import Daemon
from vmprocs import qemu_children, require_verify_tools, zombie

from weak_bpf.daemon.service import BUS_NAME, INTERFACE, OBJECT_PATH

from bpfprogs import bpf_compiler, old_progs  # noqa: F401  (session fixtures)
from conftest import REPO, require_root, require_tool
from exampleroot import copy_root, install_kernel
from realload import install_programs

OLD, NEW = "6.1.0-47-cloud-amd64", "6.1.0-56-cloud-amd64"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
PROGRAMS = ("kprobe_nobtf", "ksyms")  # an `unknown` only a boot settles, and a `compatible`
KPROBE = "usr/lib/bpf/tests/kprobe_nobtf.bpf.o"


@pytest.fixture(scope="module")
def source(
    tmp_path_factory: pytest.TempPathFactory,
    debian_kernels: dict[str, Path],
    old_progs: dict[str, Path],  # noqa: F811
) -> Path:
    """A root with the older kernel and two programs (the newer kernel comes later, by hand)."""
    require_root()
    require_verify_tools()
    require_tool("dbus-daemon")
    require_tool("setpriv")
    root = tmp_path_factory.mktemp("daemon-verify") / "root"
    install_kernel(root, OLD, debian_kernels[OLD])
    install_programs(root, {name: old_progs[name] for name in PROGRAMS})
    return root


@pytest.fixture
def daemon(source: Path, tmp_path: Path) -> Any:
    started: list[Daemon] = []

    def start(config: str = "") -> Daemon:
        root = copy_root(source, tmp_path / f"root{len(started)}")
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc/weak-bpf-progs.conf").write_text(config)
        started.append(Daemon(root))
        return started[-1]

    yield start
    for one in started:
        one.close()


def _signals(daemon: Daemon, name: str) -> list[tuple[Any, ...]]:
    return [values for signal_name, values in daemon.signals if signal_name == name]


def hook_adds(root: Path, kver: str, unpacked: Path) -> None:
    """Install a kernel under `root` and run add-kernel for it, as its kernel hook does."""
    install_kernel(root, kver, unpacked)
    hook = subprocess.run(
        [sys.executable, "-m", "weak_bpf", "--root", str(root), "add-kernel", kver],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert hook.returncode in (0, 1), hook.stderr


def _results(answer: str) -> dict[str, dict[str, Any]]:
    doc = json.loads(answer)
    return {Path(p["path"]).name: p["results"] for p in doc["programs"]}


def test_verify_over_the_bus(daemon: Any, debian_kernels: dict[str, Path]) -> None:
    """Nobody may not; root's Verify boots the kernel, says how it goes while reads are
    answered, and its answer is `verify --json`'s; a later Audit shows the verified verdicts.
    With verify_in_daemon = yes, a kernel a hook adds is verified by the daemon itself."""
    d = daemon("[main]\nverify_in_daemon = yes\n")
    busctl = ["busctl", f"--address={d.bus.address}", "call", BUS_NAME, OBJECT_PATH]
    before = subprocess.run(
        [*NOBODY, *busctl, INTERFACE, "Verify", "as", "1", OLD],
        capture_output=True,
        text=True,
        check=False,
    )
    assert before.returncode != 0 and "Access denied" in before.stderr, before

    d.call("audit-before", "Audit", "(as)", [OLD])
    audit_before = d.wait("audit-before")["audit-before"][0]
    d.call("verify", "Verify", "(as)", [OLD])
    d.pump(lambda: bool(_signals(d, "VerifyProgress")))
    for i in range(5):  # reads are answered while the VM runs
        d.call(f"kernels{i}", "Get", "(ss)", INTERFACE, "Kernels")
        d.call(f"audit{i}", "Audit", "(as)", [OLD])
    got = d.wait("verify", *(f"kernels{i}" for i in range(5)), *(f"audit{i}" for i in range(5)))
    order = [tag for tag, _, _ in d.replies]
    for i in range(5):
        assert order.index(f"kernels{i}") < order.index("verify"), order
        assert order.index(f"audit{i}") < order.index("verify"), order
        assert got[f"audit{i}"][1] is None and got[f"kernels{i}"][0] == [OLD]

    answer, error = got["verify"]
    assert error is None, error
    doc = json.loads(answer)
    assert doc["kernels"][OLD]["booted"] is True and doc["kernels"][OLD]["problem"] is None
    assert _results(json.dumps(doc["audit"]))["kprobe_nobtf.bpf.o"][OLD]["verified"] is True
    progress = [values[0] for values in _signals(d, "VerifyProgress")]
    assert any(line.startswith(f"booting {OLD}") for line in progress), progress
    (verified,) = _signals(d, "Verified")
    assert verified[0] == OLD
    assert json.loads(verified[1]) == doc["kernels"][OLD]

    static = _results(audit_before)["kprobe_nobtf.bpf.o"][OLD]
    assert static["verdict"] == "unknown" and static["verified"] is False
    d.call("audit-after", "Audit", "(as)", [OLD])  # not the answer cached before the boot
    after = _results(d.wait("audit-after")["audit-after"][0])["kprobe_nobtf.bpf.o"][OLD]
    assert after["verdict"] == "compatible" and after["verified"] is True

    # a kernel hook adds NEW: the daemon verifies it by itself (verify_in_daemon = yes)
    hook_adds(d.root, NEW, debian_kernels[NEW])
    d.pump(lambda: len(_signals(d, "Verified")) == 2, timeout=300)
    kver, run = _signals(d, "Verified")[1]
    assert kver == NEW and json.loads(run)["booted"] is True, run
    assert d.process.poll() is None


def test_verify_is_not_run_unasked(daemon: Any, debian_kernels: dict[str, Path]) -> None:
    """verify_in_daemon = no (the default): a kernel a hook adds is announced, never booted."""
    d = daemon()
    hook_adds(d.root, NEW, debian_kernels[NEW])
    d.pump(lambda: any(kver == NEW for kver, _ in d.resolved))
    time.sleep(2)
    d.pump(lambda: True)
    assert not _signals(d, "VerifyProgress") and not _signals(d, "Verified")
    assert not d.children()


def test_stopping_the_daemon_stops_its_vm(daemon: Any) -> None:
    """SIGTERM while Verify boots: the daemon does not wait for the VM, which dies with its
    worker; the caller gets an error; nothing is cached."""
    d = daemon()
    d.call("verify", "Verify", "(as)", [OLD])
    deadline = time.monotonic() + 60
    qemus: list[int] = []
    while time.monotonic() < deadline and not qemus:
        d.pump(lambda: True)
        qemus = [q for worker in d.children() for q in qemu_children(worker)]
        time.sleep(0.1)
    assert qemus, f"no VM was started; the log: {d.log.read_text()}"
    d.process.send_signal(signal.SIGTERM)
    value, error = d.wait("verify")["verify"]
    assert value is None and error is not None
    assert d.process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{q}") for q in qemus):
        time.sleep(0.1)
    alive = [q for q in qemus if os.path.exists(f"/proc/{q}") and zombie(q) is False]
    assert not alive, f"qemu {alive} outlived the daemon"
    assert not list((d.root / "var/cache/weak-bpf-progs/verify").glob("*/*.json"))
