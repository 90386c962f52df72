"""The one pass over a real Debian kernel's modules (kernel/modscan.py): split over worker
processes, it finds what one process finds, in the same order; an unreadable module is a problem
that costs only itself; a cold kernel read fills both module indexes of the cache at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from weak_bpf.kernel import modscan
from weak_bpf.kernel.cache import Cache
from weak_bpf.kernel.facts import load_kernel_facts, load_vmlinux_btf
from weak_bpf.kernel.find import find_kernel

from exampleroot import copy_root, install_kernel

NEW = "6.1.0-56-cloud-amd64"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, debian_kernels: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("modscan") / "root"
    install_kernel(root, NEW, debian_kernels[NEW])
    return root


def test_workers_find_what_one_process_finds(root: Path) -> None:
    artifacts = find_kernel(root, NEW)
    vmlinux, _ = load_vmlinux_btf(artifacts, Cache(root, writable=False))
    alone = modscan.scan_modules(artifacts, vmlinux, jobs=1)
    spread = modscan.scan_modules(artifacts, vmlinux, jobs=3)
    assert len(artifacts.modules) > modscan.PARALLEL_FROM  # so the pass was split
    assert alone.problems == spread.problems == []
    assert alone.kfuncs == spread.kfuncs
    assert list(alone.symbols.items()) == list(spread.symbols.items())
    assert alone.kfuncs["bpf_xdp_ct_lookup"].module == "nf_conntrack"
    assert alone.symbols["nf_conntrack_free"] == "nf_conntrack"
    assert len(alone.symbols) > 40_000


def test_an_unreadable_module_costs_only_itself(root: Path, tmp_path: Path) -> None:
    broken = copy_root(root, tmp_path / "root")
    shutil.rmtree(broken / "var/cache", ignore_errors=True)
    artifacts = find_kernel(broken, NEW)
    victim = next(p for p in artifacts.modules if p.name == "nf_nat.ko")
    victim.unlink()  # a hard link to the shared kernel: replaced, not written through
    victim.write_bytes(b"\x7fELF" + b"\xff" * 60)
    vmlinux, _ = load_vmlinux_btf(artifacts, Cache(broken, writable=False))
    index = modscan.scan_modules(artifacts, vmlinux, jobs=2)
    assert len(index.problems) == 1 and "nf_nat.ko" in index.problems[0]
    assert index.kfuncs["bpf_xdp_ct_lookup"].module == "nf_conntrack"
    assert "nf_nat_setup_info" not in index.symbols

    facts = load_kernel_facts(artifacts, Cache(broken, writable=True), jobs=2)
    assert facts.module_of_symbol("nf_conntrack_free") == "nf_conntrack"
    assert any("nf_nat.ko" in p for p in facts.problems)
    cache = broken / "var/cache/weak-bpf-progs"
    assert not list(cache.rglob("kfuncs-*.json")), "an index with a problem was cached"


def test_a_cold_read_caches_both_indexes(root: Path, tmp_path: Path) -> None:
    """One scan fills both: a later run that looks a symbol up scans nothing."""
    facts = load_kernel_facts(find_kernel(root, NEW), Cache(root, writable=True), jobs=2)
    assert "bpf_xdp_ct_lookup" in facts.module_kfuncs  # reads vmlinux, scans the modules
    cache = root / "var/cache/weak-bpf-progs"
    assert list(cache.rglob("kfuncs-*.json")) and list(cache.rglob("modsyms-*.json"))

    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("scanned again: the cache was not used")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(modscan, "scan_modules", no_scan)
        again = load_kernel_facts(find_kernel(root, NEW), Cache(root, writable=True), jobs=2)
        assert again.module_of_symbol("nf_conntrack_free") == "nf_conntrack"
        assert again.module_kfuncs["bpf_xdp_ct_lookup"].module == "nf_conntrack"
