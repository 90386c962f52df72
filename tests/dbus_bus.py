"""A private system-like D-Bus for tests: a real dbus-daemon with its own config and socket, the
weak-bpf-progsd policy file included, and the daemon started on it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POLICY = REPO / "dbus" / "org.weakbpf.Manager1.conf"
BUS_NAME = "org.weakbpf.Manager1"

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus.Debug.Stats"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  {policy}
</busconfig>
"""
_PERMISSIVE = """<policy user="root"><allow own="org.weakbpf.Manager1"/></policy>
  <policy context="default"><allow send_destination="org.weakbpf.Manager1"/></policy>"""


class PrivateBus:
    """dbus-daemon on `directory`/bus, with the system bus's default-deny policy (as Debian's
    system.conf has it) and our policy file in its system.d; or, `permissive`, a policy that
    lets anyone call anything (to test the daemon's own checks)."""

    def __init__(self, directory: Path, *, permissive: bool = False) -> None:
        self.directory = directory
        self.socket = directory / "bus"
        self.address = f"unix:path={self.socket}"
        system_d = directory / "system.d"
        system_d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(POLICY, system_d / POLICY.name)
        self.config = directory / "bus.conf"
        policy = _PERMISSIVE if permissive else f"<includedir>{system_d}</includedir>"
        self.config.write_text(_CONFIG.format(socket=self.socket, policy=policy))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.directory / "dbus-daemon.log", "ab") as log:
            self.process = subprocess.Popen(
                ["dbus-daemon", "--nofork", "--nopidfile", f"--config-file={self.config}"],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        _wait_for(self.socket.exists, f"dbus-daemon did not create {self.socket}")
        os.chmod(self.socket, 0o777)  # nobody must reach it, as on a real system bus

    def env(self) -> dict[str, str]:
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def _wait_for(condition: object, why: str, timeout: float = 10.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(why)
        time.sleep(0.02)


def name_owned(bus: PrivateBus) -> bool:
    proc = subprocess.run(
        ["busctl", f"--address={bus.address}", "status", BUS_NAME],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


def start_daemon(
    bus: PrivateBus,
    root: Path,
    extra: Sequence[str] = (),
    *,
    log: Path,
    environ: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`python3 -m weak_bpf.daemon --root ROOT --no-journal` on the private bus, once it owns its
    name. Its reports and its log go to `log` (stderr), never to the host's journal."""
    env = bus.env()
    env["PYTHONPATH"] = str(REPO)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("JOURNAL_STREAM", None)  # else, under a systemd unit, it would log to the journal
    env.update(environ or {})
    with open(log, "ab") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "weak_bpf.daemon", "--root", str(root), "--no-journal", *extra],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def up() -> bool:
        if daemon.poll() is not None:
            raise AssertionError(f"the daemon exited: {log.read_text()}")
        return name_owned(bus)

    _wait_for(up, f"the daemon did not own {BUS_NAME}")
    return daemon


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
