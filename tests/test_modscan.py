"""The one pass over a real Debian kernel's modules (kernel/modscan.py): a name found by its
strings is the module a full index of every module's FUNC and VAR names gives; split over worker
processes, the pass keeps what one process keeps, in the same order; an unreadable module is a
problem that costs only itself; a cold kernel read fills both cache entries at once."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from weak_bpf.kernel import modscan
from weak_bpf.kernel.cache import Cache
from weak_bpf.kernel.facts import load_kernel_facts, load_vmlinux_btf
from weak_bpf.kernel.find import find_kernel
from weak_bpf.parsers.btf import BTF, Kind

from conftest import REPO, require_tool
from exampleroot import copy_root, install_kernel

NEW = "6.1.0-56-cloud-amd64"
T = TypeVar("T")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, debian_kernels: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("modscan") / "root"
    install_kernel(root, NEW, debian_kernels[NEW])
    return root


@pytest.fixture(scope="module")
def scanned(root: Path) -> tuple[BTF, modscan.ModuleScan]:
    artifacts = find_kernel(root, NEW)
    vmlinux, _ = load_vmlinux_btf(artifacts, Cache(root, writable=False))
    return vmlinux, modscan.scan_modules(artifacts)


def _full_index(vmlinux: BTF, raw_btf: dict[str, modscan.Buffer]) -> dict[str, str]:
    """Every module's FUNC and VAR names, the first module winning: what a search must match."""
    index: dict[str, str] = {}
    for module, raw in raw_btf.items():
        btf = BTF.from_bytes(raw, base=vmlinux)
        for kind in (Kind.FUNC, Kind.VAR):
            for type_id in btf.ids_of_kind(kind):
                index.setdefault(btf.name(type_id), module)
    return index


def test_a_search_finds_what_a_full_index_finds(scanned: tuple[BTF, modscan.ModuleScan]) -> None:
    vmlinux, scan = scanned
    assert scan.problems == []
    assert len(scan.raw_btf) > 1000
    problems: list[str] = []
    kfuncs = modscan.name_kfuncs(scan, vmlinux, problems)
    assert problems == []
    assert kfuncs["bpf_xdp_ct_lookup"].module == "nf_conntrack"
    assert (
        kfuncs["bpf_xdp_ct_lookup"].path
        == f"usr/lib/modules/{NEW}/kernel/net/netfilter/nf_conntrack.ko"
    )
    index = _full_index(vmlinux, scan.raw_btf)
    assert len(index) > 40_000
    names = random.Random(13).sample(sorted(index), 300)
    # names a module defines that are also strings of vmlinux (a parameter's, a type's name)
    shared = [n for n in sorted(index) if vmlinux.has_string(n)][:50]
    assert len(shared) == 50
    absent = ["ep_free", "swap_read_folio", "no_such_function_anywhere", "tcp_v4_connect"]
    lookups = modscan.ModuleBtf(scan.raw_btf, vmlinux, [])
    for name in ["nf_conntrack_free", *names, *shared, *absent]:
        assert lookups.module_of(name) == index.get(name), name
    assert lookups.module_of("nf_conntrack_free") == "nf_conntrack"
    assert lookups.module_of("tcp_v4_connect") is None  # vmlinux's, not a module's


def test_the_cache_entry_of_module_btf_reads_back(scanned: tuple[BTF, modscan.ModuleScan]) -> None:
    _, scan = scanned
    back = modscan.unpack_btf(modscan.pack_btf(scan.raw_btf))
    assert back is not None
    assert list(back) == list(scan.raw_btf)
    assert all(bytes(back[m]) == bytes(scan.raw_btf[m]) for m in scan.raw_btf)
    assert modscan.unpack_btf(b'[["nf_nat", 99]]\n' + b"\0" * 10) is None  # cut short
    assert modscan.unpack_btf(b"not json\n") is None


_REAL_SCAN = modscan._scan
_PARENT = os.getpid()


def _killed_in_a_worker(artifacts: object, paths: object) -> modscan.ModuleScan:
    if os.getpid() != _PARENT:
        os.kill(os.getpid(), signal.SIGKILL)
    return _REAL_SCAN(artifacts, paths)  # type: ignore[arg-type]


def test_workers_keep_what_one_process_keeps(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compressed modules (RHEL's .ko.xz) are unpacked by worker processes."""
    packed = copy_root(root, tmp_path / "root")
    kodir = packed / "usr/lib/modules" / NEW
    chosen = sorted(kodir.rglob("*.ko"))[:40] + sorted(kodir.rglob("nf_conntrack.ko"))
    for ko in chosen:
        ko.with_name(ko.name + ".gz").write_bytes(gzip.compress(ko.read_bytes(), mtime=0))
        ko.unlink()
    for ko in kodir.rglob("*.ko"):
        if ko not in chosen:
            ko.unlink()
    artifacts = find_kernel(packed, NEW)
    assert len(artifacts.modules) == 41
    vmlinux, _ = load_vmlinux_btf(artifacts, Cache(packed, writable=False))
    monkeypatch.setattr(modscan, "PARALLEL_FROM", 8)
    pools: list[int] = []
    real = modscan.pooled

    def counted(context: object, processes: int) -> object:
        pools.append(processes)
        return real(context, processes)

    monkeypatch.setattr(modscan, "pooled", counted)
    alone = modscan.scan_modules(artifacts, jobs=1)
    assert pools == []
    spread = modscan.scan_modules(artifacts, jobs=3)
    assert pools == [2]  # three shares: this process and two workers
    assert alone.problems == spread.problems == []
    assert alone.kfunc_sets == spread.kfunc_sets
    kfuncs = modscan.name_kfuncs(spread, vmlinux, [])
    assert kfuncs["bpf_xdp_ct_lookup"].module == "nf_conntrack"
    assert list(alone.raw_btf) == list(spread.raw_btf)
    assert all(bytes(alone.raw_btf[m]) == bytes(spread.raw_btf[m]) for m in alone.raw_btf)
    # a worker killed (the OOM killer) leaves its share to this process, which is not told
    monkeypatch.setattr(modscan, "_scan", _killed_in_a_worker)
    survived = modscan.scan_modules(artifacts, jobs=3)
    assert survived.kfunc_sets == alone.kfunc_sets and list(survived.raw_btf) == list(alone.raw_btf)
    assert multiprocessing.active_children() == []


def test_an_unreadable_module_costs_only_itself(root: Path, tmp_path: Path) -> None:
    broken = copy_root(root, tmp_path / "root")
    shutil.rmtree(broken / "var/cache", ignore_errors=True)
    artifacts = find_kernel(broken, NEW)
    victim = next(p for p in artifacts.modules if p.name == "nf_nat.ko")
    victim.unlink()  # a hard link to the shared kernel: replaced, not written through
    victim.write_bytes(b"\x7fELF" + b"\xff" * 60)
    vmlinux, _ = load_vmlinux_btf(artifacts, Cache(broken, writable=False))
    scan = modscan.scan_modules(artifacts, jobs=2)
    assert len(scan.problems) == 1 and "nf_nat.ko" in scan.problems[0]
    assert modscan.name_kfuncs(scan, vmlinux, [])["bpf_xdp_ct_lookup"].module == "nf_conntrack"
    assert "nf_nat" not in scan.raw_btf and "nf_conntrack" in scan.raw_btf

    facts = load_kernel_facts(artifacts, Cache(broken, writable=True), jobs=2)
    assert facts.module_of_symbol("nf_conntrack_free") == "nf_conntrack"
    assert facts.module_of_symbol("nf_nat_setup_info") is None
    assert any("nf_nat.ko" in p for p in facts.problems)
    cache = broken / "var/cache/weak-bpf-progs"
    assert not list(cache.rglob("kfuncs-*.json")), "an index with a problem was cached"


def test_a_module_btf_that_does_not_parse_is_a_problem(
    scanned: tuple[BTF, modscan.ModuleScan],
) -> None:
    vmlinux, scan = scanned
    raw_btf = dict(scan.raw_btf)
    raw_btf["nf_conntrack"] = bytes(raw_btf["nf_conntrack"])[:100]
    problems: list[str] = []
    lookups = modscan.ModuleBtf(raw_btf, vmlinux, problems)
    assert lookups.btf("nf_conntrack") is None
    assert lookups.module_of("nf_conntrack_free") is None
    assert lookups.btf("nf-conntrack") is None  # the same module: one problem
    assert len(problems) == 1 and problems[0].startswith("module nf_conntrack: ")
    assert lookups.btf("nf_nat") is not None


def test_a_vmlinux_that_does_not_read_leaves_no_worker(root: Path, tmp_path: Path) -> None:
    """The pass runs in a worker while vmlinux is read; when that fails, it is waited for."""
    broken = copy_root(root, tmp_path / "root")
    shutil.rmtree(broken / "var/cache", ignore_errors=True)
    image = broken / "usr/lib/modules" / NEW / "vmlinuz"
    image.unlink()
    image.write_bytes(b"MZ" + b"\0" * 4096)
    facts = load_kernel_facts(find_kernel(broken, NEW), Cache(broken, writable=True), jobs=2)
    assert facts.vmlinux is None
    assert any(p.startswith("BTF: ") for p in facts.problems)
    assert facts.module_kfuncs == {}
    assert multiprocessing.active_children() == []


def test_a_cold_read_caches_both_entries(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One pass, in a worker while vmlinux is read, fills both: a later run that looks a symbol
    up scans nothing."""
    started: list[object] = []
    real = modscan.in_background

    def counted(context: object, function: Callable[..., T], *args: object) -> Callable[[], T]:
        started.append(function)
        return real(context, function, *args)

    monkeypatch.setattr(modscan, "in_background", counted)
    facts = load_kernel_facts(find_kernel(root, NEW), Cache(root, writable=True), jobs=2)
    assert "bpf_xdp_ct_lookup" in facts.module_kfuncs  # reads vmlinux, scans the modules
    assert started == [modscan.scan_modules]
    assert multiprocessing.active_children() == []
    cache = root / "var/cache/weak-bpf-progs"
    assert list(cache.rglob("kfuncs-*.json")) and list(cache.rglob("modbtf-*.bin"))

    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("scanned again: the cache was not used")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(modscan, "scan_modules", no_scan)
        again = load_kernel_facts(find_kernel(root, NEW), Cache(root, writable=True), jobs=2)
        assert again.module_of_symbol("nf_conntrack_free") == "nf_conntrack"
        assert again.module_kfuncs["bpf_xdp_ct_lookup"].module == "nf_conntrack"
        assert again.module_btf("nf_conntrack") is not None


def test_a_pass_whose_worker_is_killed_is_done_again_here(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed mid-pass (the OOM killer) hands nothing back: the parent is told, instead
    of waiting for ever as it would on a pool, and makes the pass itself."""
    fresh = copy_root(root, tmp_path / "root")
    shutil.rmtree(fresh / "var/cache", ignore_errors=True)
    real = modscan.in_background
    started: list[object] = []

    def die() -> Any:
        os.kill(os.getpid(), signal.SIGKILL)

    def killed(context: object, function: Callable[..., T], *args: object) -> Callable[[], T]:
        started.append(function)
        return real(context, die)

    def waited_too_long(signum: int, frame: object) -> None:
        raise TimeoutError("the parent waits for ever for a dead worker")

    monkeypatch.setattr(modscan, "in_background", killed)
    handler = signal.signal(signal.SIGALRM, waited_too_long)
    signal.alarm(120)  # a wait for ever fails the test instead of hanging the suite
    try:
        facts = load_kernel_facts(find_kernel(fresh, NEW), Cache(fresh, writable=False), jobs=2)
        assert facts.module_kfuncs["bpf_xdp_ct_lookup"].module == "nf_conntrack"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, handler)
    assert started == [modscan.scan_modules]
    assert facts.module_of_symbol("nf_conntrack_free") == "nf_conntrack"
    assert not facts.module_problems
    assert multiprocessing.active_children() == []


def _would_fork() -> bool:
    return modscan._may_fork(4)


def test_a_worker_starts_no_workers_of_its_own() -> None:
    """A kernel read in a worker makes its module pass there, not in a worker beside it: an
    image unpacking beside a module pass went over the 300 MB of the scale bench."""
    from weak_bpf.workerpool import in_background, pooled

    context = multiprocessing.get_context("fork")
    assert _would_fork()
    with pooled(context, 1) as pool:
        assert pool.submit(_would_fork).result() is False
    assert in_background(context, _would_fork)() is False


def test_a_root_where_no_worker_can_start_is_read_in_one_process(
    root: Path, tmp_path: Path, old_progs: dict[str, Path]
) -> None:
    """An rpm scriptlet's chroot may have no /dev/shm, without which no worker pool starts: the
    pass and the judging then run in one process, and the kernel is read all the same."""
    fresh = copy_root(root, tmp_path / "root")
    shutil.rmtree(fresh / "var/cache", ignore_errors=True)
    for name in ("kfunc_module_ct", "break_attach"):
        (fresh / "usr/lib/bpf/acme").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(old_progs[name], fresh / f"usr/lib/bpf/acme/{name}.bpf.o")
    command = (
        'mount -t tmpfs -o ro tmpfs /dev/shm && exec "$0" -m weak_bpf --root "$1" '
        "--no-journal audit --json --jobs 2"
    )
    proc = subprocess.run(
        [require_tool("unshare"), "-m", "sh", "-c", command, sys.executable, str(fresh)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr  # 1: findings (break_attach), not an error
    verdicts = {
        p["path"].rsplit("/", 1)[1]: p["results"][NEW]["verdict"]
        for p in json.loads(proc.stdout)["programs"]
    }
    assert verdicts == {
        "kfunc_module_ct.bpf.o": "compatible",
        "break_attach.bpf.o": "incompatible",
    }
    assert list((fresh / "var/cache/weak-bpf-progs").rglob("kfuncs-*.json"))
