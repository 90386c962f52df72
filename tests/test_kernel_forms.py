"""Verdicts on every form a kernel comes in: raw BTF files, the running kernel with nothing
installed, debuginfo. Each is compared with the same kernel in its usual form, or with what the
kernel itself does (real loads, real kprobes)."""

from __future__ import annotations

import gzip
import io
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from weak_bpf import cli, ops
from weak_bpf.kernel import load as kernel_data
from weak_bpf.model import Outcome, Result, Verdict

import exampleroot
import qemuload
from bpfprogs import vmlinux_of
from conftest import require, require_root, require_tool
from realload import SYSFS_BTF, install_programs, install_running_kernel

RUNNING = platform.release()
OLD = "6.1.0-47-cloud-amd64"
DEBUG_VMLINUX = f"usr/lib/debug/boot/vmlinux-{OLD}"
DEBUG_MAP = f"usr/lib/debug/boot/System.map-{OLD}"


def _verdicts(root: Path, kver: str) -> dict[str, Result]:
    report = ops.audit(root, [kver], cache=False)
    return {Path(p.program.path).name: p.results[kver][0] for p in report.programs}


def _codes(result: Result) -> set[str]:
    return {r.code.value for r in result.reasons}


def _only_symbols_missing(result: Result) -> bool:
    """Undecided for want of a symbol table alone (kallsyms, System.map, debuginfo)."""
    undecided = [c for c in result.checks if c.outcome is Outcome.UNDECIDED]
    return bool(undecided) and all("no usable System.map" in c.detail for c in undecided)


def _only_kfunc_sets_missing(result: Result) -> bool:
    """Undecided for want of `.BTF_ids` alone: what raw BTF cannot carry."""
    undecided = [c for c in result.checks if c.outcome is Outcome.UNDECIDED]
    return bool(undecided) and all(
        c.subject.startswith("kfunc ") and "kfunc sets" in c.detail for c in undecided
    )


@pytest.fixture(scope="module")
def sysfs_btf() -> Path:
    require(SYSFS_BTF.exists(), "the running kernel has no /sys/kernel/btf/vmlinux")
    return SYSFS_BTF


# --- raw BTF ---------------------------------------------------------------------------------


def test_raw_btf_of_the_running_kernel_as_an_installed_vmlinux(
    tmp_path: Path, sysfs_btf: Path, old_progs: dict[str, Path]
) -> None:
    """The host's sysfs BTF copied to usr/lib/modules/K/vmlinux gives the verdicts that the
    running kernel gets from sysfs itself, but for what only kallsyms can tell."""
    running_root = tmp_path / "running"
    install_running_kernel(running_root, RUNNING)
    install_programs(running_root, old_progs)
    raw_root, kver = tmp_path / "raw", f"{RUNNING}+raw"
    moddir = raw_root / "usr/lib/modules" / kver
    moddir.mkdir(parents=True)
    (moddir / "modules.dep").touch()
    shutil.copyfile(sysfs_btf, moddir / "vmlinux")
    install_programs(raw_root, old_progs)

    summary = ops.list_kernels(raw_root)[0]
    assert summary.btf_types is not None and summary.btf_types > 50_000, summary.problems
    sysfs, raw = _verdicts(running_root, RUNNING), _verdicts(raw_root, kver)
    assert set(sysfs) == set(raw) and len(raw) >= 20
    symbols_only = []
    for name, result in sorted(raw.items()):
        assert not any("no BTF" in r.detail for r in result.reasons), (name, result.reasons)
        if result.verdict != sysfs[name].verdict and _only_symbols_missing(result):
            symbols_only.append(name)  # kallsyms knows typeless ksyms and kprobe targets
            continue
        assert result.verdict == sysfs[name].verdict, (name, result.reasons, sysfs[name].reasons)
    assert symbols_only == ["alt_kprobe.bpf.o", "kprobe_nobtf.bpf.o", "ksyms.bpf.o"]


@pytest.fixture(scope="module")
def old_raw_btf(tmp_path_factory: pytest.TempPathFactory, old_vmlinux: Path) -> Path:
    """The .BTF section of the older Debian kernel, cut out of its vmlinux with objcopy."""
    objcopy = require_tool("objcopy")
    out = tmp_path_factory.mktemp("rawbtf") / "vmlinux.btf"
    subprocess.run(
        [objcopy, "--dump-section", f".BTF={out}", str(old_vmlinux), os.devnull],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes()[:2] == b"\x9f\xeb"
    return out


def test_raw_btf_cut_from_a_debian_image_judges_as_the_image(
    tmp_path: Path,
    old_kernel: tuple[str, Path],
    old_raw_btf: Path,
    old_progs: dict[str, Path],
) -> None:
    """Every test and example program gets the same verdict from the raw BTF as from the image,
    kfunc sets aside: they are read from .BTF_ids, which only the image has."""
    kver, unpacked = old_kernel
    vmlinux = vmlinux_of(unpacked, kver)
    examples = {
        f"ex-{s.parent.name}-{s.name[: -len('.bpf.c')]}": o
        for s, o in zip(
            exampleroot.example_sources(),
            exampleroot.install_programs(
                tmp_path / "ex", vmlinux, exampleroot.example_sources(), "objs"
            ),
        )
    }
    roots = {}
    for form in ("image", "raw"):
        root = roots[form] = tmp_path / form
        exampleroot.install_kernel(root, kver, unpacked)
        install_programs(root, {**old_progs, **examples})
    moddir = roots["raw"] / "usr/lib/modules" / kver
    (moddir / "vmlinuz").unlink()
    shutil.copyfile(old_raw_btf, moddir / "vmlinux")

    image, raw = _verdicts(roots["image"], kver), _verdicts(roots["raw"], kver)
    assert set(image) == set(raw) and len(raw) >= 30
    kfunc_sets = []
    for name, result in sorted(raw.items()):
        if result.verdict != image[name].verdict and _only_kfunc_sets_missing(result):
            kfunc_sets.append(name)
            continue
        assert result.verdict == image[name].verdict, (name, result.reasons, image[name].reasons)
        failed = {c.code for c in result.checks if c.outcome is Outcome.FAIL}
        assert failed == {c.code for c in image[name].checks if c.outcome is Outcome.FAIL}, name
    # the programs that call vmlinux kfuncs: 6.1's BTF has no bpf_kfunc tags
    assert kfunc_sets == [
        "greylist.bpf.o",
        "kfunc_not_registered.bpf.o",
        "kfunc_vmlinux.bpf.o",
        "subprogs.bpf.o",
    ]


def test_greylist_reads_a_raw_btf_file(
    tmp_path: Path,
    old_raw_btf: Path,
    old_progs: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`greylist --btf` takes the same raw BTF as every other reader."""
    status = cli.main(
        ["--root", str(tmp_path), "greylist", str(old_progs["greylist"]), "--btf", str(old_raw_btf)]
    )
    out = capsys.readouterr().out
    assert status == cli.Exit.OK
    assert "\tvmlinux\t" in out


# --- the running kernel, nothing installed -----------------------------------------------------


@pytest.fixture(scope="module")
def bare_root(
    tmp_path_factory: pytest.TempPathFactory, sysfs_btf: Path, old_progs: dict[str, Path]
) -> Path:
    """A container's view: sys/kernel/btf/vmlinux and proc/kallsyms, no usr/lib/modules/K."""
    root = tmp_path_factory.mktemp("bare") / "root"
    (root / "sys/kernel/btf").mkdir(parents=True)
    shutil.copyfile(sysfs_btf, root / "sys/kernel/btf/vmlinux")
    (root / "proc").mkdir()
    shutil.copyfile("/proc/kallsyms", root / "proc/kallsyms")
    install_programs(root, old_progs)
    return root


def test_running_kernel_alone_is_judged(
    bare_root: Path, tmp_path: Path, old_progs: dict[str, Path]
) -> None:
    installed = tmp_path / "installed"
    install_running_kernel(installed, RUNNING)
    install_programs(installed, old_progs)
    report = ops.audit(bare_root, cache=False)
    assert report.kernels == (RUNNING,)
    bare = {Path(p.program.path).name: p.results[RUNNING] for p in report.programs}
    full = _verdicts(installed, RUNNING)
    assert len(bare) >= 20 and set(bare) == set(full)
    for name, (result, linked) in bare.items():
        assert not linked
        assert result.verdict == full[name].verdict, (name, result.reasons)
    assert bare["kfunc_task.bpf.o"][0].verdict is Verdict.COMPATIBLE


def test_running_kernel_alone_on_the_command_line(
    bare_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = ["--root", str(bare_root), "--no-journal"]
    assert cli.main([*root, "kernels"]) == cli.Exit.OK
    out = capsys.readouterr().out
    assert f"{RUNNING} (running, not installed here: judged, never linked)" in out
    assert "kallsyms of the running kernel" in out
    assert cli.main([*root, "explain", "usr/lib/bpf/tests/kfunc_task.bpf.o", RUNNING]) == 0
    assert f"on {RUNNING}: compatible" in capsys.readouterr().out
    assert cli.main([*root, "audit", "--json"]) == cli.Exit.FINDINGS  # ksyms, break_*: findings
    assert json.loads(capsys.readouterr().out)["kernels"] == [RUNNING]
    # nothing can be linked for it: add-kernel says so, add-progs passes it over
    assert cli.main([*root, "add-kernel", RUNNING]) == cli.Exit.USAGE
    assert "not installed under" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert cli.main([*root, "add-progs"]) == cli.Exit.OK
    assert not (bare_root / "usr/lib/modules").exists()


# --- debuginfo ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def old_debug(old_kernel: tuple[str, Path]) -> Path:
    """The unpacked vmlinux of linux-image-OLD-dbg (scripts/fetch-debian-kernels)."""
    _, unpacked = old_kernel
    vmlinux = unpacked / DEBUG_VMLINUX
    require(vmlinux.exists(), f"{vmlinux} is missing: run scripts/fetch-debian-kernels")
    return unpacked


def _debug_root(root: Path, unpacked: Path, *files: str) -> Path:
    exampleroot.install_kernel(root, OLD, unpacked)
    for relative in files:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        os.link(unpacked / relative, root / relative)
    return root


def test_debuginfo_symbol_table_is_the_real_system_map(old_debug: Path) -> None:
    """The .symtab of the -dbg vmlinux lists every symbol of the -dbg package's System.map, with
    the same nm letter for every function."""
    symtab = kernel_data._symbols_in(old_debug / DEBUG_VMLINUX)
    system_map = kernel_data.load_system_map(old_debug / DEBUG_MAP)
    assert symtab is not None and len(system_map) > 80_000
    missing = [n for n in system_map.names if n not in symtab]
    assert not missing, missing[:10]
    for name in system_map.names[:: max(1, len(system_map) // 5000)]:
        real, ours = system_map.get(name), symtab.get(name)
        assert real is not None and ours is not None
        if real.type in "Tt" and system_map.is_unique(name):
            assert (ours.type, ours.address) == (real.type, real.address), name


@pytest.mark.parametrize("files", [(DEBUG_VMLINUX,), (DEBUG_MAP,)], ids=["vmlinux", "map"])
def test_debuginfo_decides_what_the_placeholder_cannot(
    tmp_path: Path, old_debug: Path, old_progs: dict[str, Path], files: tuple[str, ...]
) -> None:
    plain = _debug_root(tmp_path / "plain", old_debug)
    debug = _debug_root(tmp_path / "debug", old_debug, *files)
    for root in (plain, debug):
        install_programs(root, old_progs)
    before, after = _verdicts(plain, OLD), _verdicts(debug, OLD)
    for name in ("ksyms.bpf.o", "kprobe_nobtf.bpf.o", "alt_kprobe.bpf.o"):
        assert before[name].verdict is Verdict.UNKNOWN, (name, before[name].reasons)
    assert after["ksyms.bpf.o"].verdict is Verdict.COMPATIBLE, after["ksyms.bpf.o"].reasons
    assert after["kprobe_nobtf.bpf.o"].verdict is Verdict.COMPATIBLE
    alt = after["alt_kprobe.bpf.o"]
    assert alt.verdict is Verdict.COMPATIBLE_PARTIAL
    assert [(r.code.value, r.symbol) for r in alt.reasons] == [("attach-target", "swap_read_folio")]
    undecided = {n for n, r in after.items() if r.verdict is Verdict.UNKNOWN}
    assert undecided < {n for n, r in before.items() if r.verdict is Verdict.UNKNOWN}

    summary = ops.list_kernels(debug, [OLD])[0]
    assert summary.symbols_source == debug / files[0]
    assert summary.symbols_count is not None and summary.symbols_count > 80_000


def test_debuginfo_verdicts_agree_with_the_kernel(
    tmp_path: Path, old_debug: Path, old_progs: dict[str, Path]
) -> None:
    """Booted under qemu, the older Debian kernel loads the programs and says where a kprobe can
    be placed: the debuginfo verdicts must agree."""
    require_tool("qemu-system-x86_64")
    root = _debug_root(tmp_path / "debug", old_debug, DEBUG_VMLINUX)
    names = ("ksyms", "kprobe_nobtf", "alt_kprobe")
    install_programs(root, {n: old_progs[n] for n in names})
    verdicts = _verdicts(root, OLD)
    symbols = ("tcp_small_queue_check.isra.0", "swap_readpage", "swap_read_folio")
    report = qemuload.boot_and_load(
        old_debug / f"boot/vmlinuz-{OLD}",
        None,
        {n: old_progs[n] for n in names},
        modules_to_load=(),
        kprobes=symbols,
    )
    loaded = {r.name: r.loaded for r in report.results}
    placed = dict(report.kprobes)
    assert all(loaded.values()), report.results
    assert placed == {
        "tcp_small_queue_check.isra.0": True,
        "swap_readpage": True,
        "swap_read_folio": False,
    }
    assert verdicts["ksyms.bpf.o"].verdict.usable
    assert verdicts["kprobe_nobtf.bpf.o"].verdict is Verdict.COMPATIBLE
    partial = verdicts["alt_kprobe.bpf.o"]
    cannot = {c.symbol for c in partial.checks if c.outcome is Outcome.CANNOT_ATTACH}
    assert cannot == {s for s, ok in placed.items() if not ok}


# --- objects with alternatives -----------------------------------------------------------------


def test_alternatives_on_the_running_kernel(
    bare_root: Path, tmp_path: Path, old_progs: dict[str, Path]
) -> None:
    """alt_kprobe loads here, and kallsyms lists one of its two targets: compatible-partial.
    With the kernel's config, which says whether it has kprobes at all, the data decides more:
    a kernel built without kprobes can attach none of them."""
    from realload import load_running

    require_root()
    assert load_running(old_progs["alt_kprobe"], "alt_kprobe").ok
    result = _verdicts(bare_root, RUNNING)["alt_kprobe.bpf.o"]
    assert result.verdict is Verdict.COMPATIBLE_PARTIAL
    reasons = [(r.code.value, r.symbol) for r in result.reasons]
    assert reasons == [("attach-target", "swap_readpage")]
    assert "the program loads, but cannot attach" in result.reasons[0].detail

    config = Path("/proc/config.gz")
    require(config.exists(), "the running kernel's /proc/config.gz")
    root = tmp_path / "root"
    install_running_kernel(root, RUNNING)
    install_programs(root, {"alt_kprobe": old_progs["alt_kprobe"]})
    text = gzip.decompress(config.read_bytes())
    (root / "usr/lib/modules" / RUNNING / "config").write_bytes(text)
    result = _verdicts(root, RUNNING)["alt_kprobe.bpf.o"]
    if b"\nCONFIG_KPROBES=y\n" in text:
        assert result.verdict is Verdict.COMPATIBLE_PARTIAL
    else:  # this host: "# CONFIG_KPROBES is not set"
        assert result.verdict is Verdict.INCOMPATIBLE, result.reasons
        assert all("built without kprobes" in r.detail for r in result.reasons)


def test_an_object_that_can_attach_nowhere_is_incompatible(
    tmp_path: Path, bare_root: Path, old_vmlinux: Path
) -> None:
    import bpfbuild

    source = Path(__file__).parent / "progs/attach_only/nowhere.bpf.c"
    include = bpfbuild.vmlinux_h(old_vmlinux)
    obj = bpfbuild.compile_program(source, [include, source.parent.parent])
    root = exampleroot.copy_root(bare_root, tmp_path / "root")
    install_programs(root, {"nowhere": obj})
    result = _verdicts(root, RUNNING)["nowhere.bpf.o"]
    assert result.verdict is Verdict.INCOMPATIBLE
    assert _codes(result) == {"attach-target"}
    assert "no other program of the object can attach there" in result.reasons[0].detail


@pytest.mark.parametrize("link_partial", ["yes", "no"])
def test_link_partial_decides_whether_partial_objects_are_linked(
    tmp_path: Path, sysfs_btf: Path, old_progs: dict[str, Path], link_partial: str
) -> None:
    root = tmp_path / "root"
    install_running_kernel(root, RUNNING)
    install_programs(root, {"alt_kprobe": old_progs["alt_kprobe"]})
    (root / "etc").mkdir()
    (root / "etc/weak-bpf-progs.conf").write_text(f"[main]\nlink_partial = {link_partial}\n")
    assert cli.main(["--root", str(root), "--no-journal", "add-kernel", RUNNING]) == 0
    link = root / "usr/lib/modules" / RUNNING / "bpf/weak-updates/tests/alt_kprobe.bpf.o"
    assert link.is_symlink() == (link_partial == "yes")
    report = json.loads((root / f"var/lib/weak-bpf-progs/reports/{RUNNING}.json").read_text())
    (entry,) = report["programs"]
    assert entry["verdict"] == "compatible-partial"
    assert entry["linked"] == (link_partial == "yes")
