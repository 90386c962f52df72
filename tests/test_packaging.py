"""Packaging end to end: this project's rpm, an example BPF program package built with the rpm
macros, and two kernel-like packages made from the real Debian cloud kernels in the RHEL layout,
installed with the distribution's `rpm` into a test root, where the real scriptlets and file
triggers run (chrooted into the root, which gets the host's interpreter through read-only bind
mounts in a private mount namespace, and a test journald's directory as its /run/systemd/journal:
see packaging/README.md). After each transaction the links, `audit`'s verdicts and the journal
entries of the scriptlets' runs are the fixed ones written here."""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from weak_bpf.apply import journal
from weak_bpf.apply.resolution import Action, Resolution

import bpfbuild
from conftest import REPO, audit_json, require_root, require_tool
from journald import Journald, require_journald

EXAMPLES = REPO / "packaging" / "examples"
MACROS = REPO / "packaging" / "macros.weak-bpf-progs"
PROGDIR = "usr/lib/bpf/acme-example-bpf"
LINKABLE = {"compatible", "compatible-unstable"}  # link_unstable = yes, the default

# What the chrooted scriptlets need from the host, bound read-only into the root.
HOST_DIRS = (
    "usr/bin",
    "usr/lib/x86_64-linux-gnu",
    "usr/lib64",
    f"usr/lib/python3.{sys.version_info[1]}",
    "usr/lib/python3/dist-packages/elftools",
    "usr/lib/python3/dist-packages/systemd",  # python3-systemd: the journal
)
# Runs rpm inside the root's own mount namespace: the binds vanish with it.
IN_ROOT = r"""
set -eu
root=$1; shift
for d in $HOST_DIRS; do
    [ -e "/$d" ] || continue
    mkdir -p "$root/$d"
    mount --bind -o ro "/$d" "$root/$d"
done
mkdir -p "$root/dev" "$root/tmp"
touch "$root/dev/null"
mount --bind /dev/null "$root/dev/null"
if [ -n "${JOURNAL_DIR:-}" ]; then
    mkdir -p "$root/run/systemd/journal"
    mount --bind "$JOURNAL_DIR" "$root/run/systemd/journal"
fi
exec rpm --root "$root" --dbpath /var/lib/rpm "$@"
"""


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


# --- package builds -----------------------------------------------------------------------------


def rpmbuild(spec: Path, topdir: Path, *defines: str, **kwargs: Any) -> Path:
    """Build `spec`'s binary rpm; the macros file is loaded first, so that defines win."""
    argv = [require_tool("rpmbuild"), "-bb", "--nodeps", "--load", str(MACROS)]
    argv += ["--define", f"_topdir {topdir}"]
    for d in defines:
        argv += ["--define", d]
    run([*argv, str(spec)], **kwargs)
    (rpm,) = [p for p in (topdir / "RPMS").rglob("*.rpm") if p.name.startswith(spec.stem)]
    return rpm


def simple_spec(
    path: Path, name: str, version: str, files: dict[str, Path], scripts: dict[str, str]
) -> Path:
    """A spec installing `files` ({path in the root: source}) with the given scriptlets."""
    stage = path.parent / f"{name}-stage"
    for dest, src in files.items():
        (stage / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, stage / dest)
    body = "".join(f"\n%{section}\n{text}\n" for section, text in scripts.items())
    listing = "\n".join(f"/{dest}" for dest in files)
    path.write_text(
        f"Name: {name}\nVersion: {version}\nRelease: 1\nSummary: test package {name}\n"
        f"License: GPL-2.0-only\nBuildArch: noarch\n%define __os_install_post %{{nil}}\n"
        f"%description\ntest package\n"
        f"%install\nmkdir -p %{{buildroot}}\ncp -a {stage}/. %{{buildroot}}/\n"
        f"{body}\n%files\n{listing}\n"
    )
    return path


def kernel_spec(workdir: Path, kver: str, kdir: Path) -> Path:
    """A kernel-like package in the RHEL layout whose scriptlets make RHEL's weak-modules calls
    for weak-bpf-progs (packaging/README.md)."""
    mods = kdir / "lib" / "modules" / kver
    symvers_gz = workdir / f"symvers-{kver}.gz"
    symvers = kdir / "usr" / "src" / f"linux-headers-{kver}" / "Module.symvers"
    symvers_gz.write_bytes(gzip.compress(symvers.read_bytes()))
    base = f"usr/lib/modules/{kver}"
    files = {
        f"{base}/vmlinuz": kdir / "boot" / f"vmlinuz-{kver}",
        f"{base}/config": kdir / "boot" / f"config-{kver}",
        f"{base}/System.map": kdir / "boot" / f"System.map-{kver}",
        f"{base}/symvers.gz": symvers_gz,
    }
    wanted = "kernel/net/netfilter/nf_conntrack.ko"
    files[f"{base}/{wanted}"] = mods / wanted
    # its dependencies, from its .modinfo "depends=" (Debian's package has no modules.dep)
    modinfo = (mods / wanted).read_bytes()
    start = modinfo.index(b"\0depends=") + len(b"\0depends=")
    for dep in modinfo[start : modinfo.index(b"\0", start)].decode().split(","):
        if dep:
            (found,) = mods.rglob(f"{dep}.ko")
            files[f"{base}/{found.relative_to(mods)}"] = found
    assert f"{base}/{wanted}" in files
    scripts = {
        "posttrans": f"if [ -x /usr/sbin/weak-bpf-progs ]; then\n"
        f"    /usr/sbin/weak-bpf-progs --add-kernel {kver} || :\nfi",
        "preun": f"if [ -x /usr/sbin/weak-bpf-progs ]; then\n"
        f"    /usr/sbin/weak-bpf-progs --remove-kernel {kver} || :\nfi",
    }
    name = f"kernel-test-{kver.split('-')[1]}"
    return simple_spec(workdir / f"{name}.spec", name, "6.1.0", files, scripts)


@pytest.fixture(scope="module")
def packages(
    tmp_path_factory: pytest.TempPathFactory, debian_kernels: dict[str, Path]
) -> dict[str, Path]:
    require_root()
    require_tool("rpm")
    require_tool("rpmbuild")
    require_tool("unshare")
    require_tool("clang")
    require_tool("bpftool")
    work = tmp_path_factory.mktemp("packages")
    built: dict[str, Path] = {}

    # this project, as `make rpm` builds it (without %check: it would run this test again)
    topdir = work / "tool"
    env = dict(os.environ, WEAK_BPF_RPM_TOPDIR=str(topdir))
    run([str(REPO / "scripts" / "make-rpm"), "--without", "check"], env=env)
    (built["tool"],) = (topdir / "RPMS").glob("*/weak-bpf-progs-0*.rpm")  # arch: the loader

    # the example program package, two versions, greylists by the macro against the old kernel
    old = min(debian_kernels)
    vmlinux = bpfbuild.vmlinux_of(debian_kernels[old] / "boot" / f"vmlinuz-{old}")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    symvers = debian_kernels[old] / "usr" / "src" / f"linux-headers-{old}" / "Module.symvers"
    for version, progs in (("1.0", "sys_key open_count"), ("2.0", "sys_key exec_state")):
        built[f"prog-{version}"] = rpmbuild(
            EXAMPLES / "acme-example-bpf.spec",
            work / f"prog-{version}",
            f"_sourcedir {EXAMPLES}",
            f"vmlinux_h_dir {bpfbuild.vmlinux_h(vmlinux)}",
            f"weak_bpf_build_btf {vmlinux}",
            f"weak_bpf_build_symvers {symvers}",
            f"__weak_bpf_progs {sys.executable} -m weak_bpf",
            f"example_version {version}",
            f"progs {progs}",
            env=env,
        )

    for kver, kdir in debian_kernels.items():
        spec = kernel_spec(work, kver, kdir)
        built[kver] = rpmbuild(spec, work / f"k-{kver}")

    garbage = work / "garbage.bpf.o"
    garbage.write_bytes(b"\x7fELF this is not a BPF object\n" * 10)
    spec = simple_spec(
        work / "acme-broken-bpf.spec",
        "acme-broken-bpf",
        "1.0",
        {"usr/lib/bpf/acme-broken/x.bpf.o": garbage},
        {},
    )
    built["broken"] = rpmbuild(spec, work / "broken")
    return built


# --- the test root ------------------------------------------------------------------------------


JOURNAL: dict[str, Journald] = {}  # the test journald, while the module runs


@pytest.fixture(scope="module", autouse=True)
def journald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journald]:
    """A journald of our own, whose directory is the root's /run/systemd/journal."""
    require_journald()
    daemon = Journald(tmp_path_factory.mktemp("journald"), namespace=f"weakbpfrpm{os.getpid()}")
    JOURNAL["daemon"] = daemon
    yield daemon
    del JOURNAL["daemon"]
    daemon.stop()


def rpm(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`rpm --root root --dbpath /var/lib/rpm ARGS`, with the host's interpreter bound in."""
    journal_dir = str(JOURNAL["daemon"].runtime_directory)
    env = dict(os.environ, HOST_DIRS=" ".join(HOST_DIRS), JOURNAL_DIR=journal_dir)
    env.pop("PYTHONPATH", None)
    return run(["unshare", "-m", "sh", "-c", IN_ROOT, "sh", str(root), *args], env=env)


@pytest.fixture
def root(tmp_path: Path, packages: dict[str, Path]) -> Path:
    """An empty root with an rpm database and weak-bpf-progs installed from its rpm."""
    r = tmp_path / "root"
    r.mkdir()
    for top in ("bin", "lib", "lib64", "sbin"):
        (r / top).symlink_to(f"usr/{top}")
    rpm(r, "--initdb")
    # --nodeps: the root's database knows nothing of the host's python3 and pyelftools
    rpm(r, "-i", "--nodeps", str(packages["tool"]))
    assert (r / "usr/sbin/weak-bpf-progs").is_file()
    return r


def links_of(root: Path, kver: str) -> set[str]:
    """The programs (paths in the root) linked for kver."""
    found = set()
    top = root / "usr/lib/modules" / kver / "bpf" / "weak-updates"
    for directory, _, names in os.walk(top, followlinks=True):
        for name in names:
            path = Path(directory, name)
            if path.is_symlink():
                target = os.readlink(path)
                if target.startswith("/"):
                    found.add(target.lstrip("/"))
                else:
                    resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
                    found.add(os.path.relpath(resolved, root))
    return found


def check(root: Path, programs: set[str], runs: dict[str, Run | None]) -> None:
    """The root's kernels are those of `runs`, its programs `programs`; on each kernel the
    programs whose VERDICTS are linkable are linked (audit agrees, link by link), and the last
    `runs[kver].action` for it logged exactly `runs[kver].entries` (None: not checked here)."""
    doc = audit_json(root)
    assert set(doc["kernels"]) == set(runs)
    assert {p["path"] for p in doc["programs"]} == programs
    linkable = {p for p in programs if VERDICTS[p] in LINKABLE}
    for kver, last_run in runs.items():
        assert {p["path"]: p["results"][kver]["verdict"] for p in doc["programs"]} == {
            p: VERDICTS[p] for p in programs
        }, kver
        assert {p["path"] for p in doc["programs"] if p["results"][kver]["linked"]} == linkable
        assert links_of(root, kver) == linkable, kver
        assert (root / "var/lib/weak-bpf-progs/reports" / f"{kver}.json").is_file()
        if last_run is not None:
            check_journal(root, kver, last_run)


_BARRIERS = itertools.count(1)


def barrier(daemon: Journald) -> dict[str, Any]:
    """Send a marker and wait for it; its entry. journald stores what reaches its socket in
    order: whatever the scriptlets sent before is stored."""
    marker = f"barrier-{os.getpid()}-{next(_BARRIERS)}"
    assert daemon.send(Resolution(marker, Action.ADD_KERNEL, False))
    (entry,) = daemon.wait_for(1, f"WEAK_BPF_KERNEL={marker}")
    return entry


def check_journal(root: Path, kver: str, expected: Run) -> None:
    """The entries of the last `expected.action` run for kver, sent from inside the root by a
    scriptlet: one per program that changed or is not linkable, with its verdict, reasons and
    link (SPEC §6); and the last summary for kver is the report file's."""
    daemon = JOURNAL["daemon"]
    barrier(daemon)
    # the tests run one after the other: the last summaries for kver are this root's
    summaries = daemon.read(f"WEAK_BPF_KERNEL={kver}", f"MESSAGE_ID={journal.MESSAGE_ID_SUMMARY}")
    assert summaries, f"no journal entry for {kver}"
    doc = report(root, kver)
    assert (summaries[-1]["MESSAGE"], summaries[-1]["WEAK_BPF_ACTION"]) == (
        doc["summary"],
        doc["action"],
    )
    runs = [s for s in summaries if s["WEAK_BPF_ACTION"] == expected.action]
    assert runs, f"no {expected.action} for {kver}"
    summary = runs[-1]
    assert summary["PRIORITY"] == ("4" if expected.not_linkable else "6")
    entries = daemon.read(f"_PID={summary['_PID']}", f"WEAK_BPF_KERNEL={kver}")
    logged = {
        e["WEAK_BPF_PROGRAM"]: (e["WEAK_BPF_VERDICT"], e["WEAK_BPF_LINKED"], e["WEAK_BPF_REASONS"])
        for e in entries
        if e["MESSAGE_ID"] != journal.MESSAGE_ID_SUMMARY
    }
    assert len(entries) == 1 + len(logged)
    assert logged == expected.entries, kver
    for e in entries:
        assert (e["SYSLOG_IDENTIFIER"], e["WEAK_BPF_ACTION"]) == ("weak-bpf-progs", expected.action)
        if "WEAK_BPF_PROGRAM" in e:  # warning: not linkable; info: linked, or the object gone
            assert e["PRIORITY"] == ("4" if not_linkable(e["WEAK_BPF_VERDICT"]) else "6"), e


def installed(root: Path) -> set[str]:
    out = rpm(root, "-qa", "--qf", "%{NAME}-%{VERSION}\\n").stdout
    return set(out.split())


def report(root: Path, kver: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (root / "var/lib/weak-bpf-progs/reports" / f"{kver}.json").read_text()
    )
    return doc


OLD, NEW = "6.1.0-47-cloud-amd64", "6.1.0-56-cloud-amd64"  # the build kernel, and a newer one
SYS_KEY = f"{PROGDIR}/sys_key.bpf.o"
OPEN_COUNT = f"{PROGDIR}/open_count.bpf.o"
EXEC_STATE = f"{PROGDIR}/exec_state.bpf.o"
BROKEN = "usr/lib/bpf/acme-broken/x.bpf.o"
V1 = {SYS_KEY, OPEN_COUNT}
V2 = {SYS_KEY, EXEC_STATE}
# Each program's verdict, the same on both kernels. sys_key's greylist has its two kfuncs with
# their CRCs on OLD, and NEW's are the same; a greylisted symbol is off the kABI stablelist where
# there is none (Debian's kernels): compatible-unstable, linked (link_unstable = yes). open_count's
# fentry target do_sys_openat2 and exec_state's CO-RE field task_struct.__state are in both
# kernels, and they use no kfunc: compatible. x.bpf.o is no BPF object: malformed, incompatible.
VERDICTS = {
    SYS_KEY: "compatible-unstable",
    OPEN_COUNT: "compatible",
    EXEC_STATE: "compatible",
    BROKEN: "incompatible",
}


@dataclasses.dataclass(frozen=True)
class Run:
    """A run for one kernel: its action, and its program entries as
    {WEAK_BPF_PROGRAM: (WEAK_BPF_VERDICT, WEAK_BPF_LINKED, WEAK_BPF_REASONS)}."""

    action: str
    entries: dict[str, tuple[str, str, str]]

    @property
    def not_linkable(self) -> bool:
        return any(not_linkable(verdict) for verdict, _, _ in self.entries.values())


def not_linkable(verdict: str) -> bool:
    """Of the verdicts these tests meet ("": the object is gone)."""
    return verdict not in {*LINKABLE, ""}


def linked(*programs: str) -> dict[str, tuple[str, str, str]]:
    return {p: (VERDICTS[p], "1", "") for p in programs}


def gone(*programs: str) -> dict[str, tuple[str, str, str]]:
    """Links removed because the object (or the kernel) goes: no verdict."""
    return {p: ("", "0", "") for p in programs}


# --- the transactions ---------------------------------------------------------------------------


def test_program_first_then_kernels_upgrade_erase(
    root: Path, packages: dict[str, Path], debian_kernels: dict[str, Path]
) -> None:
    assert sorted(debian_kernels) == [OLD, NEW]
    rpm(root, "-i", "--nodeps", str(packages["prog-1.0"]))
    check(root, V1, {})
    # the macro's greylists: the kfuncs with their CRCs on the build kernel (as tests/progs/
    # greylist.bpf.c has them from `greylist --kernel`), none for a program without kfuncs
    greylist = (root / f"{PROGDIR}/sys_key.bpf.o.greylist").read_text()
    assert "0xe1c9c661\tbpf_lookup_system_key\tvmlinux\t" in greylist
    assert "0x8b737d5b\tbpf_key_put\tvmlinux\t" in greylist
    open_count = (root / f"{PROGDIR}/open_count.bpf.o.greylist").read_text()
    assert [line for line in open_count.splitlines() if not line.startswith("#")] == []

    # a kernel's %posttrans: add-kernel, which links both programs, new to it
    rpm(root, "-i", "--nodeps", str(packages[OLD]))
    check(root, V1, {OLD: Run("add-kernel", linked(SYS_KEY, OPEN_COUNT))})
    assert report(root, OLD)["action"] == "add-kernel"

    rpm(root, "-i", "--nodeps", str(packages[NEW]))
    check(
        root,
        V1,
        {
            NEW: Run("add-kernel", linked(SYS_KEY, OPEN_COUNT)),
            OLD: Run("add-kernel", linked(SYS_KEY, OPEN_COUNT)),
        },
    )
    assert report(root, NEW)["action"] == "add-kernel"

    # 2.0 drops open_count and adds exec_state (its journal entries: the next test)
    rpm(root, "-U", "--nodeps", str(packages["prog-2.0"]))
    check(root, V2, {OLD: None, NEW: None})

    rpm(root, "-e", "--nodeps", "acme-example-bpf")
    erase = Run("remove-progs", gone(SYS_KEY, EXEC_STATE))
    check(root, set(), {OLD: erase, NEW: erase})
    assert audit_json(root)["programs"] == []

    rpm(root, "-i", "--nodeps", str(packages["prog-1.0"]))
    again = Run("add-progs", linked(SYS_KEY, OPEN_COUNT))
    check(root, V1, {OLD: again, NEW: again})

    # a kernel's %preun: remove-kernel takes its links away
    rpm(root, "-e", "--nodeps", f"kernel-test-{OLD.split('-')[1]}")
    check(root, V1, {NEW: again})
    assert links_of(root, OLD) == set()
    assert report(root, OLD)["action"] == "remove-kernel"
    # its "programs" are the links themselves (docs/messages.md): named as in weak-updates/
    removed = [p.removeprefix("usr/lib/bpf/") for p in (SYS_KEY, OPEN_COUNT)]
    check_journal(root, OLD, Run("remove-kernel", gone(*removed)))
    assert installed(root) == {
        "weak-bpf-progs-0.1.0",
        "acme-example-bpf-1.0",
        f"kernel-test-{NEW.split('-')[1]}-6.1.0",
    }


def test_kernels_first_then_program(
    root: Path, packages: dict[str, Path], debian_kernels: dict[str, Path]
) -> None:
    assert sorted(debian_kernels) == [OLD, NEW]
    rpm(root, "-i", "--nodeps", str(packages[OLD]), str(packages[NEW]))
    nothing = Run("add-kernel", {})
    check(root, set(), {OLD: nothing, NEW: nothing})
    rpm(root, "-i", "--nodeps", str(packages["prog-1.0"]))
    # the file trigger, not a scriptlet of the program package, made them
    by_trigger = Run("add-progs", linked(SYS_KEY, OPEN_COUNT))
    check(root, V1, {OLD: by_trigger, NEW: by_trigger})
    assert report(root, OLD)["action"] == report(root, NEW)["action"] == "add-progs"


def test_corrupt_object_does_not_stop_a_kernel(
    root: Path, packages: dict[str, Path], debian_kernels: dict[str, Path]
) -> None:
    assert sorted(debian_kernels) == [OLD, NEW]
    rpm(root, "-i", "--nodeps", str(packages["broken"]), str(packages["prog-1.0"]))
    rpm(root, "-i", "--nodeps", str(packages[NEW]))
    assert f"kernel-test-{NEW.split('-')[1]}-6.1.0" in installed(root)
    entries = {**linked(SYS_KEY, OPEN_COUNT), BROKEN: ("incompatible", "0", "malformed")}
    check(root, V1 | {BROKEN}, {NEW: Run("add-kernel", entries)})
    broken = [p for p in report(root, NEW)["programs"] if p["path"] == BROKEN]
    assert len(broken) == 1 and not broken[0]["linked"]
    assert [r["code"] for r in broken[0]["reasons"]] == ["malformed"]


def test_an_upgrade_reports_the_link_it_takes_away(
    root: Path, packages: dict[str, Path], debian_kernels: dict[str, Path]
) -> None:
    """2.0 drops open_count and adds exec_state. Whatever order rpm runs the file triggers in
    (add-progs, remove-progs), the transaction's entries for the kernel say exec_state was linked
    and open_count's link removed; sys_key, unchanged, is not logged."""
    assert sorted(debian_kernels) == [OLD, NEW]
    rpm(root, "-i", "--nodeps", str(packages["prog-1.0"]))
    rpm(root, "-i", "--nodeps", str(packages[NEW]))
    check(root, V1, {NEW: Run("add-kernel", linked(SYS_KEY, OPEN_COUNT))})
    daemon = JOURNAL["daemon"]
    cursor = barrier(daemon)["__CURSOR"]
    rpm(root, "-U", "--nodeps", str(packages["prog-2.0"]))
    check(root, V2, {NEW: None})
    barrier(daemon)
    entries = daemon.read(f"WEAK_BPF_KERNEL={NEW}", after_cursor=cursor)
    assert {e["WEAK_BPF_ACTION"] for e in entries} == {"add-progs", "remove-progs"}
    logged = {
        e["WEAK_BPF_PROGRAM"]: (e["WEAK_BPF_VERDICT"], e["WEAK_BPF_LINKED"], e["WEAK_BPF_REASONS"])
        for e in entries
        if e["MESSAGE_ID"] != journal.MESSAGE_ID_SUMMARY
    }
    assert logged == {**linked(EXEC_STATE), **gone(OPEN_COUNT)}
