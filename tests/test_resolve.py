"""add-kernel, remove-kernel, add-progs and remove-progs on an example root with the two real
Debian kernels: the link sets, the weak-modules regression scenarios, --dry-run, the hooks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from weak_bpf import cli, ops
from weak_bpf.apply.writer import current_links

import exampleroot
from conftest import REPO, require_tool

OLD, NEW = "6.1.0-47-cloud-amd64", "6.1.0-56-cloud-amd64"
# The example programs linked for the new kernel, and what each link resolves to. Left out:
# task_guard (proprietary, calls kfuncs), and three that the new kernel changed under:
# acme-fs/buddy_load (an unguarded read of a renamed field), acme-power/padata_offline (a removed
# enumerator) and globex-obs/epoll_leak (its fentry target is gone). ct_keepalive is
# compatible-unstable, linked by default. xdp_ct: the CO-RE build and a build native to the old
# kernel share a link name; the old kernel's build is older.
LINKED_ON_NEW = {
    "acme-net/tcp_retrans.bpf.o": "usr/lib/bpf/acme-net/tcp_retrans.bpf.o",
    "acme-net/xdp_ct.bpf.o": f"usr/lib/modules/{OLD}/bpf/extra/acme-net/xdp_ct.bpf.o",
    "acme-trace/exec_state.bpf.o": "usr/lib/bpf/acme-trace/exec_state.bpf.o",
    "acme-trace/open_count.bpf.o": "usr/lib/bpf/acme-trace/open_count.bpf.o",
    "globex-net/ct_keepalive.bpf.o": "usr/lib/bpf/globex-net/ct_keepalive.bpf.o",
    "globex-storage/bitmap_release.bpf.o": "usr/lib/bpf/globex-storage/bitmap_release.bpf.o",
}


def tree_hash(root: Path, skip: tuple[str, ...] = ()) -> str:
    """Everything under the root (but `skip`): names, types, link targets, contents."""
    h = hashlib.sha256()
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(files + subdirs):
            path = Path(directory, name)
            if str(path.relative_to(root)).startswith(skip):
                continue
            h.update(str(path.relative_to(root)).encode() + b"\0")
            if path.is_symlink():
                h.update(b"L" + os.readlink(path).encode())
            elif path.is_file():
                h.update(b"F" + path.read_bytes())
    return h.hexdigest()


def links(root: Path, kver: str) -> dict[str, str]:
    """K's links, each resolved through the filesystem to its object (relative to the root)."""
    wu = root / "usr/lib/modules" / kver / "bpf/weak-updates"
    found = {}
    for name in current_links(root, kver):
        found[name] = str((wu / name).resolve().relative_to(root.resolve()))
    return found


def run(root: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weak_bpf", "--root", str(root), "--no-journal", *args],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def test_add_kernel_links_the_compatible_programs(root: Path) -> None:
    proc = run(root, "add-kernel", NEW)
    assert proc.returncode == 0, proc.stderr
    assert links(root, NEW) == LINKED_ON_NEW
    # links are relative: they resolve from outside the root too
    link = root / "usr/lib/modules" / NEW / "bpf/weak-updates/acme-trace/exec_state.bpf.o"
    assert not os.readlink(link).startswith("/")
    assert (root / f"var/lib/weak-bpf-progs/reports/{NEW}.json").is_file()


def test_native_programs_stay_in_extra(root: Path) -> None:
    assert run(root, "add-kernel", OLD).returncode == 0
    # the old kernel has its own native xdp_ct: no weak-updates link for that name
    assert "acme-net/xdp_ct.bpf.o" not in links(root, OLD)
    assert "acme-trace/exec_state.bpf.o" in links(root, OLD)


def test_add_kernel_twice_gives_the_same_state(root: Path) -> None:
    reports = "var/lib/weak-bpf-progs"  # the last report and the stamp: rewritten by each run
    assert run(root, "add-kernel", NEW).returncode == 0
    first = tree_hash(root, skip=(reports,))
    proc = run(root, "--json", "add-kernel", NEW)
    assert proc.returncode == 0
    assert tree_hash(root, skip=(reports,)) == first
    [doc] = json.loads(proc.stdout)
    assert doc["counts"]["changed"] == 0 and doc["counts"]["linked"] == len(LINKED_ON_NEW)


def test_dry_run_changes_nothing_and_prints_the_plan(root: Path) -> None:
    before = tree_hash(root)
    proc = run(root, "--dry-run", "add-kernel", NEW)
    assert proc.returncode == 0, proc.stderr
    assert tree_hash(root) == before
    weak = f"usr/lib/modules/{NEW}/bpf/weak-updates"
    assert f"link   {weak}/acme-trace/exec_state.bpf.o -> " in proc.stdout


def test_remove_kernel_cleans_only_its_own_links(root: Path) -> None:
    assert run(root, "add-kernel", OLD).returncode == 0
    assert run(root, "add-kernel", NEW).returncode == 0
    old_links = links(root, OLD)
    assert run(root, "remove-kernel", NEW).returncode == 0
    assert links(root, NEW) == {}
    assert links(root, OLD) == old_links
    assert (root / "usr/lib/modules" / OLD / "bpf/extra/acme-net/xdp_ct.bpf.o").is_file()


def test_remove_progs_then_add_progs_round_trip(root: Path) -> None:
    assert run(root, "add-kernel", NEW).returncode == 0
    linked = links(root, NEW)
    # the old kernel's native xdp_ct is being removed: the CO-RE build takes its place
    native = f"/usr/lib/modules/{OLD}/bpf/extra/acme-net/xdp_ct.bpf.o"
    assert run(root, "remove-progs", stdin=native + "\n").returncode == 0
    assert links(root, NEW)["acme-net/xdp_ct.bpf.o"] == "usr/lib/bpf/acme-net/xdp_ct.bpf.o"
    # a program removed for good loses its link
    (root / "usr/lib/bpf/acme-trace/open_count.bpf.o").unlink()
    proc = run(root, "--remove-modules", stdin="/usr/lib/bpf/acme-trace/open_count.bpf.o\n")
    assert proc.returncode == 0
    assert "acme-trace/open_count.bpf.o" not in links(root, NEW)
    # counted and reported: the summary adds up, and the gone program has its entry (the
    # native xdp_ct, still on disk, is a candidate again and takes its link back)
    assert (
        f"remove-progs {NEW}: 11 programs: 5 linked (1 new), 4 not linkable, 1 not linked "
        "(another build is used), 1 gone; 2 links removed"
    ) in proc.stdout
    doc = json.loads((root / f"var/lib/weak-bpf-progs/reports/{NEW}.json").read_text())
    (gone,) = [p for p in doc["programs"] if p["path"] == "usr/lib/bpf/acme-trace/open_count.bpf.o"]
    assert (gone["verdict"], gone["was_linked"], gone["linked"]) == (None, True, False)
    # and comes back with add-progs
    shutil.copyfile(
        root / "usr/lib/bpf/acme-trace/exec_state.bpf.o",
        root / "usr/lib/bpf/acme-trace/open_count.bpf.o",
    )
    assert (
        run(root, "add-progs", stdin="/usr/lib/bpf/acme-trace/open_count.bpf.o\n").returncode == 0
    )
    assert set(links(root, NEW)) == set(linked)


def test_a_link_whose_target_was_deleted_by_hand_goes(root: Path) -> None:
    assert run(root, "add-kernel", NEW).returncode == 0
    (root / "usr/lib/bpf/acme-trace/exec_state.bpf.o").unlink()
    assert run(root, "add-kernel", NEW).returncode == 0
    assert "acme-trace/exec_state.bpf.o" not in links(root, NEW)


def test_foreign_files_in_weak_updates_are_never_touched(root: Path) -> None:
    assert run(root, "add-kernel", NEW).returncode == 0
    wu = root / "usr/lib/modules" / NEW / "bpf/weak-updates"
    (wu / "local").mkdir()
    (wu / "local/mine.bpf.o").write_bytes(b"admin's own file")
    os.symlink("/opt/elsewhere.bpf.o", wu / "local/other.bpf.o")
    # a regular file where weak-bpf-progs wants a link: the file wins
    (wu / "acme-trace/open_count.bpf.o").unlink()
    (wu / "acme-trace/open_count.bpf.o").write_bytes(b"pinned by hand")
    blocked = (
        f"usr/lib/bpf/acme-trace/open_count.bpf.o is compatible with kernel {NEW} but not "
        f"linked: usr/lib/modules/{NEW}/bpf/weak-updates/acme-trace/open_count.bpf.o is a file "
        "weak-bpf-progs did not create, and it is kept"
    )
    # a dry run predicts it
    plan = run(root, "--dry-run", "add-kernel", NEW).stdout
    assert f"skip   usr/lib/modules/{NEW}/bpf/weak-updates/acme-trace/open_count.bpf.o (" in plan
    dry = run(root, "--dry-run", "--json", "add-kernel", NEW)
    assert dry.returncode == 0, dry.stderr
    assert blocked in dry.stderr
    (planned,) = [
        p
        for p in json.loads(dry.stdout)[0]["programs"]
        if p["link"] == "acme-trace/open_count.bpf.o"
    ]
    assert (planned["state"], planned["linked"]) == ("not-linkable", False)
    proc = run(root, "add-kernel", NEW)
    assert proc.returncode == 0, proc.stderr
    # said once, with what to do; not counted as linked
    assert proc.stderr.count(blocked) == 1, proc.stderr
    assert (
        "hint: if it is not yours to keep, move it away and run "
        f"'weak-bpf-progs add-kernel {NEW}'" in proc.stderr
    )
    doc = json.loads((root / f"var/lib/weak-bpf-progs/reports/{NEW}.json").read_text())
    assert doc["errors"] == [blocked]
    (entry,) = [p for p in doc["programs"] if p["link"] == "acme-trace/open_count.bpf.o"]
    assert (entry["state"], entry["linked"]) == ("not-linkable", False)
    assert (wu / "local/mine.bpf.o").read_bytes() == b"admin's own file"
    assert os.readlink(wu / "local/other.bpf.o") == "/opt/elsewhere.bpf.o"
    assert (wu / "acme-trace/open_count.bpf.o").read_bytes() == b"pinned by hand"
    assert run(root, "remove-kernel", NEW).returncode == 0
    leftovers = [p for p in (root / "usr/lib/modules" / NEW / "bpf").rglob("*") if p.is_file()]
    assert sorted(p.read_bytes() for p in leftovers if not p.is_symlink()) == [
        b"admin's own file",
        b"pinned by hand",
    ]


def test_a_foreign_file_or_link_on_the_path_of_links_holds_them_back(
    root: Path, tmp_path: Path
) -> None:
    """weak-updates/acme-trace a regular file, weak-updates/globex-net a link to a directory
    outside: the links below them are held back (a link would land outside the set, or fail),
    the dry run says so, and the real run exits 0 and keeps both."""
    assert run(root, "add-kernel", NEW).returncode == 0
    wu = root / "usr/lib/modules" / NEW / "bpf/weak-updates"
    shutil.rmtree(wu / "acme-trace")
    (wu / "acme-trace").write_bytes(b"admin's notes")
    shutil.rmtree(wu / "globex-net")
    outside = tmp_path / "outside"
    outside.mkdir()
    (wu / "globex-net").symlink_to(outside)
    held = ["acme-trace/exec_state.bpf.o", "acme-trace/open_count.bpf.o",
            "globex-net/ct_keepalive.bpf.o"]  # fmt: skip
    plan = run(root, "--dry-run", "add-kernel", NEW).stdout
    for name in held:
        assert f"skip   usr/lib/modules/{NEW}/bpf/weak-updates/{name} (" in plan, plan
    proc = run(root, "add-kernel", NEW)
    assert proc.returncode == 0, proc.stderr
    assert links(root, NEW) == {k: v for k, v in LINKED_ON_NEW.items() if k not in held}
    # the sentence names the entry that holds the place: the file acme-trace, not the link
    base = f"usr/lib/modules/{NEW}/bpf/weak-updates"
    assert (
        f"not linked: {base}/acme-trace, where the directory of its link "
        f"{base}/acme-trace/open_count.bpf.o should be, is a file weak-bpf-progs did not create"
    ) in proc.stderr, proc.stderr
    doc = json.loads((root / f"var/lib/weak-bpf-progs/reports/{NEW}.json").read_text())
    holders = {p["link"]: p["blocked_by"] for p in doc["programs"] if p["blocked"]}
    assert holders == {
        "acme-trace/exec_state.bpf.o": "acme-trace",
        "acme-trace/open_count.bpf.o": "acme-trace",
        "globex-net/ct_keepalive.bpf.o": "globex-net",
    }
    assert (wu / "acme-trace").read_bytes() == b"admin's notes"
    assert os.readlink(wu / "globex-net") == str(outside)
    assert list(outside.iterdir()) == []


def test_a_kernel_without_symvers_or_btf_gets_unknown_and_no_link(root: Path) -> None:
    moddir = root / "usr/lib/modules" / NEW
    (moddir / "vmlinuz").unlink()
    (moddir / "symvers.gz").unlink()
    (moddir / "modules.dep").touch()
    proc = run(root, "add-kernel", NEW)
    assert proc.returncode == 0, proc.stderr
    assert links(root, NEW) == {}
    doc = ops.audit(root, [NEW], cache=False)
    verdicts = {r.verdict.value for p in doc.programs for r, _ in p.results.values()}
    # never compatible; the proprietary program is incompatible whatever the kernel
    assert verdicts == {"unknown", "incompatible"}


def test_kernel_versions_with_regex_characters(root: Path) -> None:
    odd = NEW + "+debug.x86_64"
    shutil.copytree(
        root / "usr/lib/modules" / NEW,
        root / "usr/lib/modules" / odd,
        copy_function=exampleroot.copy_file,
    )
    assert run(root, "add-kernel", odd).returncode == 0
    assert "acme-trace/exec_state.bpf.o" in links(root, odd)
    assert run(root, "remove-kernel", odd).returncode == 0
    assert links(root, odd) == {}


def test_a_program_built_for_a_kernel_that_is_not_installed(root: Path) -> None:
    gone = "6.1.0-99-cloud-amd64"
    extra = root / "usr/lib/modules" / gone / "bpf/extra/acme-old/exec.bpf.o"
    extra.parent.mkdir(parents=True)
    shutil.copyfile(root / "usr/lib/bpf/acme-trace/exec_state.bpf.o", extra)
    assert run(root, "add-kernel", NEW).returncode == 0
    assert links(root, NEW)["acme-old/exec.bpf.o"] == str(extra.relative_to(root))


def test_an_incompatible_newer_build_does_not_block_an_older_one(root: Path) -> None:
    # a "newer" build of exec_state (greylist says built for the new kernel) that cannot load
    core = root / "usr/lib/bpf/acme-trace/exec_state.bpf.o"
    shutil.copyfile(root / "usr/lib/bpf/acme-sec/task_guard.bpf.o", core)
    core.with_name(core.name + ".greylist").write_text(f"# build-kernel: {NEW}\n")
    older = root / "usr/lib/modules" / OLD / "bpf/extra/acme-trace/exec_state.bpf.o"
    older.parent.mkdir(parents=True)
    shutil.copyfile(root / "usr/lib/bpf/acme-trace/open_count.bpf.o", older)
    assert run(root, "add-kernel", NEW).returncode == 0
    assert links(root, NEW)["acme-trace/exec_state.bpf.o"] == str(older.relative_to(root))


def test_the_debian_layout(tmp_path: Path, debian_kernels: dict[str, Path]) -> None:
    """boot/vmlinuz-K and usr/src/linux-headers-K/Module.symvers, modules in lib/modules."""
    root = tmp_path / "root"
    unpacked = debian_kernels[NEW]
    shutil.copytree(unpacked / "boot", root / "boot", copy_function=os.link)
    shutil.copytree(unpacked / "usr/src", root / "usr/src", copy_function=os.link, symlinks=True)
    moddir = root / "usr/lib/modules" / NEW / "kernel/net/netfilter"
    moddir.mkdir(parents=True)
    os.link(
        unpacked / "lib/modules" / NEW / "kernel/net/netfilter/nf_conntrack.ko",
        moddir / "nf_conntrack.ko",
    )
    # CO-RE builds against the old kernel, as vendors ship them (some example sources are written
    # for the old kernel's vmlinux.h and do not build against the new one's)
    exampleroot.install_programs(
        root,
        exampleroot.bpfbuild.vmlinux_of(debian_kernels[OLD] / f"boot/vmlinuz-{OLD}"),
        exampleroot.example_sources(),
        "usr/lib/bpf",
    )
    assert run(root, "add-kernel", NEW).returncode == 0
    # the same verdicts as in the RHEL layout; no native build here, so xdp_ct's CO-RE build
    # holds its link
    assert links(root, NEW) == {
        **LINKED_ON_NEW,
        "acme-net/xdp_ct.bpf.o": "usr/lib/bpf/acme-net/xdp_ct.bpf.o",
    }


@pytest.mark.parametrize("command", ["add-progs", "remove-progs"])
def test_bad_paths_on_stdin_are_reported_and_the_rest_handled(root: Path, command: str) -> None:
    program = "usr/lib/bpf/acme-net/tcp_retrans.bpf.o"
    if command == "remove-progs":
        assert run(root, "add-kernel", NEW).returncode == 0
        (root / program).unlink()
    proc = run(root, command, stdin=f"/etc/passwd\n../../x.bpf.o\n/{program}\n")
    assert proc.returncode == 0
    assert ("acme-net/tcp_retrans.bpf.o" in links(root, NEW)) == (command == "add-progs")
    # said once for the run, not once per kernel, and counted in no kernel's report
    assert proc.stderr.count("/etc/passwd: not a BPF program location") == 1, proc.stderr
    assert proc.stderr.count("not a plain path") == 1, proc.stderr
    for kver in (OLD, NEW):
        report = json.loads((root / f"var/lib/weak-bpf-progs/reports/{kver}.json").read_text())
        assert report["errors"] == [] and report["counts"]["errors"] == 0, report
        assert "error" not in report["summary"], report["summary"]


def test_a_kernel_with_only_a_boot_image_does_not_stop_the_others(root: Path) -> None:
    """A boot/vmlinuz-K without usr/lib/modules/K is an installed kernel with nowhere for
    links: add-progs passes it over, says so, and resolves the others (it used to exit 3
    before reaching the kernels after it, and write no report)."""
    homeless = "6.1.0-99-cloud-amd64"
    (root / "boot").mkdir(exist_ok=True)
    shutil.copyfile(root / f"usr/lib/modules/{NEW}/vmlinuz", root / f"boot/vmlinuz-{homeless}")
    proc = run(root, "add-progs", stdin="/usr/lib/bpf/acme-net/tcp_retrans.bpf.o\n")
    assert proc.returncode == 0, proc.stderr
    assert f"kernel {homeless} is passed over" in proc.stderr
    assert links(root, NEW) == LINKED_ON_NEW
    reports = root / "var/lib/weak-bpf-progs/reports"
    assert sorted(p.name for p in reports.iterdir()) == [f"{OLD}.json", f"{NEW}.json"]
    # named on its own, the kernel still fails, with the reason
    proc = run(root, "add-kernel", homeless)
    assert proc.returncode == 3 and "nowhere to put" in proc.stderr


def test_a_kernel_whose_links_cannot_be_made_does_not_stop_the_others(root: Path) -> None:
    """A weak-updates that is an admin's link (not the tool's) stops that kernel only: the
    others are resolved and reported, and the run exits 3 with the reason."""
    assert run(root, "add-kernel", NEW).returncode == 0
    wu = root / "usr/lib/modules" / OLD / "bpf/weak-updates"
    if wu.is_symlink() or wu.exists():
        wu.unlink() if wu.is_symlink() else shutil.rmtree(wu)
    (root / "admin").mkdir()
    wu.symlink_to("/admin")
    gone = "acme-net/tcp_retrans.bpf.o"
    os.unlink(root / "usr/lib/modules" / NEW / "bpf/weak-updates" / gone)
    proc = run(root, "--json", "add-progs", stdin=f"/usr/lib/bpf/{gone}\n")
    assert proc.returncode == 3
    assert f"usr/lib/modules/{OLD}/bpf/weak-updates is a link weak-bpf-progs did not make" in (
        proc.stderr
    )
    assert links(root, NEW) == LINKED_ON_NEW  # resolved: the removed link is back
    # and reported: the resolved kernel's document is printed before the error
    assert [doc["kernel"] for doc in json.loads(proc.stdout)] == [NEW]
    assert os.readlink(wu) == "/admin"


def test_hooks_run_by_run_parts_never_fail(root: Path, tmp_path: Path) -> None:
    run_parts = require_tool("run-parts")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "weak-bpf-progs"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m weak_bpf --no-journal "$@"\n')
    wrapper.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "WEAK_BPF_ROOT": str(root),
        "PYTHONPATH": str(REPO),
    }
    for hooks, kver in (("postinst.d", NEW), ("prerm.d", NEW), ("postinst.d", "9.9.9-not-here")):
        proc = subprocess.run(
            [
                run_parts,
                "--verbose",
                "--arg",
                kver,
                "--arg",
                f"/boot/vmlinuz-{kver}",
                str(REPO / "etc/kernel" / hooks),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "weak-bpf-progs" in proc.stderr  # run-parts --verbose names the hook
        if hooks == "postinst.d" and kver == NEW:
            assert "acme-trace/exec_state.bpf.o" in links(root, NEW)
        if hooks == "prerm.d":
            assert links(root, NEW) == {}
    # the hook said nothing on stdout (Debian runs it under debconf)
    assert proc.stdout == ""


def test_kernel_install_plugin(root: Path, tmp_path: Path) -> None:
    kernel_install = require_tool("kernel-install")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "weak-bpf-progs").write_text(
        f'#!/bin/sh\nexec {sys.executable} -m weak_bpf --no-journal "$@"\n'
    )
    (bindir / "weak-bpf-progs").chmod(0o755)
    plugin = REPO / "usr/lib/kernel/install.d/60-weak-bpf-progs.install"
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "WEAK_BPF_ROOT": str(root),
        "PYTHONPATH": str(REPO),
        "KERNEL_INSTALL_PLUGINS": str(plugin),
        "KERNEL_INSTALL_VERBOSE": "1",
        "KERNEL_INSTALL_LAYOUT": "other",
        "KERNEL_INSTALL_MACHINE_ID": "0123456789abcdef0123456789abcdef",
    }
    image = root / "usr/lib/modules" / NEW / "vmlinuz"
    proc = subprocess.run(
        [kernel_install, "add", NEW, str(image)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "acme-trace/exec_state.bpf.o" in links(root, NEW)
    proc = subprocess.run(
        [kernel_install, "remove", NEW], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert links(root, NEW) == {}


def test_lock_timeout_exits_3(root: Path) -> None:
    import fcntl

    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/weak-bpf-progs.conf").write_text("[main]\nlock_timeout = 0.2\n")
    (root / "run").mkdir(exist_ok=True)
    with open(root / "run/weak-bpf-progs.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = run(root, "add-kernel", NEW)
    assert proc.returncode == cli.Exit.APPLY
    assert "lock" in proc.stderr
    assert "hint: nothing was changed" in proc.stderr and "run the same command" in proc.stderr


def _install_greylisted(root: Path, old_progs: dict[str, Path]) -> str:
    """The greylisted test program: compatible-unstable on Debian, which has no stablelist."""
    target = root / "usr/lib/bpf/acme-keys/keys.bpf.o"
    target.parent.mkdir(parents=True)
    shutil.copyfile(old_progs["greylist"], target)
    return "acme-keys/keys.bpf.o"


def test_link_unstable_policy(root: Path, old_progs: dict[str, Path]) -> None:
    name = _install_greylisted(root, old_progs)
    assert run(root, "add-kernel", NEW).returncode == 0
    assert name in links(root, NEW)  # default: link_unstable = yes
    (root / "etc").mkdir()
    (root / "etc/weak-bpf-progs.conf").write_text("[main]\nlink_unstable = no\n")
    proc = run(root, "add-kernel", NEW)
    assert proc.returncode == 0
    assert name not in links(root, NEW)
    assert (
        f"is not linkable on kernel {NEW}: compatible-unstable (it uses symbols off the kABI "
        "stablelist, and link_unstable = no)" in proc.stderr
    )


def test_a_kabi_stablelist_named_by_the_configuration(
    root: Path, old_progs: dict[str, Path]
) -> None:
    _install_greylisted(root, old_progs)
    stablelist = root / "usr/lib/modules/kabi-custom/kabi_stablelist_x86_64"
    stablelist.parent.mkdir(parents=True)
    stablelist.write_text("[custom_x86_64_stablelist]\n\tbpf_key_put\n\tbpf_lookup_system_key\n")
    (root / "etc/weak-bpf-progs.conf.d").mkdir(parents=True)
    (root / "etc/weak-bpf-progs.conf.d/kabi.conf").write_text(
        f"[kernel {NEW}]\nkabi_stablelist = /usr/lib/modules/kabi-custom/kabi_stablelist_x86_64\n"
    )
    verdicts = {
        k: r.verdict.value
        for p in ops.audit(root, [OLD, NEW], cache=False).programs
        if p.program.path.endswith("keys.bpf.o")
        for k, (r, _) in p.results.items()
    }
    assert verdicts == {OLD: "compatible-unstable", NEW: "compatible"}


def test_a_broken_configuration_falls_back_to_the_defaults(root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc/weak-bpf-progs.conf").write_text("[main]\nlink_unstable = perhaps\n")
    proc = run(root, "add-kernel", NEW)
    assert proc.returncode == 0
    assert "etc/weak-bpf-progs.conf: [main] link_unstable = 'perhaps': expected yes or no" in (
        proc.stderr
    )
    assert "uses the defaults" in proc.stderr
    assert "acme-trace/exec_state.bpf.o" in links(root, NEW)


def test_a_build_native_to_the_kernel_supersedes_the_others(root: Path) -> None:
    proc = run(root, "--json", "add-kernel", OLD)
    assert proc.returncode == 0, proc.stderr
    [doc] = json.loads(proc.stdout)
    states = {p["path"]: (p["state"], p["superseded_by"]) for p in doc["programs"]}
    native = f"usr/lib/modules/{OLD}/bpf/extra/acme-net/xdp_ct.bpf.o"
    assert states["usr/lib/bpf/acme-net/xdp_ct.bpf.o"] == ("not-linked", native)
    assert states[native] == ("not-linked", None)
    # on the old kernel, every CO-RE build but task_guard (license) and xdp_ct (superseded by the
    # native build) is linked
    linked = {p["path"] for p in doc["programs"] if p["state"] == "linked"}
    assert linked == {
        f"usr/lib/bpf/{name}"
        for name in (
            "acme-fs/buddy_load.bpf.o",
            "acme-net/tcp_retrans.bpf.o",
            "acme-power/padata_offline.bpf.o",
            "acme-trace/exec_state.bpf.o",
            "acme-trace/open_count.bpf.o",
            "globex-net/ct_keepalive.bpf.o",
            "globex-obs/epoll_leak.bpf.o",
            "globex-storage/bitmap_release.bpf.o",
        )
    }
    assert doc["counts"]["linked"] == 8 and doc["counts"]["not_linkable"] == 1
