"""The helper table and the license list, checked against real kernels: the helper ids against the
running kernel's and Debian 6.1's BTF and libbpf's bpf_helper_defs.h; the GPL-only flags and the
license list against the running kernel's verifier (programs loaded with bpftool)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

from weak_bpf.engine.bpf_helpers import (
    HELPERS,
    TABLE_KERNEL,
    helper_name,
    is_gpl_only,
    license_is_gpl_compatible,
)
from weak_bpf.parsers.btf import BTF, Kind

import bpfbuild
from conftest import require, require_root, require_tool

SYSFS_VMLINUX = Path("/sys/kernel/btf/vmlinux")
HELPER_DEFS = Path("/usr/include/bpf/bpf_helper_defs.h")
GPL_REFUSAL = "cannot call GPL-restricted function from non-GPL compatible program"


# --- the table itself ------------------------------------------------------------------------


def test_table_shape() -> None:
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", TABLE_KERNEL)
    assert sorted(HELPERS) == list(range(1, max(HELPERS) + 1))
    assert max(HELPERS) >= 211
    names = [h.name for h in HELPERS.values()]
    assert len(set(names)) == len(names)
    assert any(h.gpl_only for h in HELPERS.values())
    assert not all(h.gpl_only for h in HELPERS.values())


def test_helper_name() -> None:
    assert helper_name(1) == "bpf_map_lookup_elem"
    assert helper_name(113) == "bpf_probe_read_kernel"
    assert helper_name(0) == "helper #0"
    assert helper_name(100000) == "helper #100000"
    assert helper_name(-1) == "helper #-1"


def test_unknown_helpers_count_as_gpl_only() -> None:
    assert is_gpl_only(100000)
    assert is_gpl_only(113)
    assert not is_gpl_only(1)


@pytest.mark.parametrize(
    "license, compatible",
    [
        ("GPL", True),
        ("GPL v2", True),
        ("GPL and additional rights", True),
        ("Dual BSD/GPL", True),
        ("Dual MIT/GPL", True),
        ("Dual MPL/GPL", True),
        ("GPL\0junk", True),
        ("GPL-2.0", False),
        ("GPL-2.0-only", False),
        ("gpl", False),
        ("GPL ", False),
        ("Dual BSD/GPL\n", False),
        ("BSD", False),
        ("Proprietary", False),
        ("", False),
    ],
)
def test_license_list(license: str, compatible: bool) -> None:
    assert license_is_gpl_compatible(license) is compatible


# --- ids and names against real kernels and libbpf ------------------------------------------


def _btf_helper_ids(btf: BTF) -> dict[int, str]:
    """{id: name} from the BTF's `enum bpf_func_id`."""
    ids = btf.find("bpf_func_id", Kind.ENUM)
    assert len(ids) == 1, f"expected one enum bpf_func_id, found {ids}"
    out = {}
    for value in btf.type(ids[0]).values:
        assert value.name.startswith("BPF_FUNC_") or value.name == "__BPF_FUNC_MAX_ID"
        if value.name.startswith("BPF_FUNC_") and value.value != 0:
            out[value.value] = value.name[len("BPF_FUNC_") :]
    return out


def _check_ids(found: dict[int, str], where: str) -> None:
    assert len(found) > 150, f"too few helpers in {where}: {len(found)}"
    wrong = {
        i: (n, HELPERS[i].name) for i, n in found.items() if i in HELPERS and HELPERS[i].name != n
    }
    assert not wrong, f"{where} disagrees (id: theirs, ours): {wrong}"
    newer = {i: n for i, n in found.items() if i not in HELPERS}
    assert not newer, f"{where} has helpers newer than the table ({TABLE_KERNEL}): {newer}"


def test_ids_match_running_kernel_btf() -> None:
    require(SYSFS_VMLINUX.exists(), f"{SYSFS_VMLINUX} is missing")
    found = _btf_helper_ids(BTF.from_bytes(SYSFS_VMLINUX.read_bytes(), source=str(SYSFS_VMLINUX)))
    _check_ids(found, "the running kernel's BTF")
    assert max(found) >= 211


def test_ids_match_debian_6_1_btf(old_vmlinux: Path) -> None:
    found = _btf_helper_ids(BTF.from_bytes(old_vmlinux.read_bytes(), source=str(old_vmlinux)))
    _check_ids(found, f"{old_vmlinux}")
    assert max(found) >= 209  # 6.1 ends with bpf_user_ringbuf_drain


def test_ids_match_libbpf_helper_defs() -> None:
    require(HELPER_DEFS.exists(), f"{HELPER_DEFS} is missing (libbpf-dev)")
    text = HELPER_DEFS.read_text()
    decls = re.findall(
        r"\(\s*\*\s*(?:const\s+)?bpf_(\w+)\)\s*\([^;]*?\)\s*=\s*\(void \*\)\s*(\d+);", text
    )
    found = {int(i): n for n, i in decls}
    assert len(found) == len(decls), "an id declared twice"
    _check_ids(found, str(HELPER_DEFS))


# --- GPL-only flags against the running kernel's verifier ------------------------------------

PRELUDE = """\
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} arr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, 4);
	__uint(value_size, 4);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16);
	__uint(key_size, 4);
	__uint(value_size, 8 * 127);
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} rb SEC(".maps");

struct tval {
	struct bpf_timer t;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct tval);
} tmap SEC(".maps");
"""


class Sample(NamedTuple):
    helper: str  # name in HELPERS
    section: str
    body: str  # C statements; `ctx` is the program's context


SAMPLES = (
    # GPL-only in the table
    Sample("probe_read", "kprobe/do_nanosleep", "u64 v = 0; bpf_probe_read(&v, 8, ctx); return v;"),
    Sample(
        "probe_read_kernel",
        "kprobe/do_nanosleep",
        "u64 v = 0; bpf_probe_read_kernel(&v, 8, ctx); return v;",
    ),
    Sample(
        "probe_read_user",
        "kprobe/do_nanosleep",
        "u64 v = 0; bpf_probe_read_user(&v, 8, ctx); return v;",
    ),
    Sample(
        "trace_printk",
        "kprobe/do_nanosleep",
        'static const char f[] = "x\\n"; bpf_trace_printk(f, sizeof(f)); return 0;',
    ),
    Sample("get_current_task", "kprobe/do_nanosleep", "return bpf_get_current_task() != 0;"),
    Sample(
        "perf_event_output",
        "kprobe/do_nanosleep",
        "u64 v = 1; bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &v, 8); return 0;",
    ),
    Sample("get_stackid", "kprobe/do_nanosleep", "return bpf_get_stackid(ctx, &stacks, 0) > 0;"),
    Sample(
        "get_stack",
        "kprobe/do_nanosleep",
        "u64 b[4]; return bpf_get_stack(ctx, b, sizeof(b), 0) > 0;",
    ),
    Sample(
        "snprintf",
        "kprobe/do_nanosleep",
        'static const char f[] = "%d"; char out[8]; u64 a[1] = {1};'
        " bpf_snprintf(out, sizeof(out), f, a, sizeof(a)); return out[0];",
    ),
    Sample("get_func_ip", "kprobe/do_nanosleep", "return bpf_get_func_ip(ctx) != 0;"),
    Sample(
        "fib_lookup",
        "xdp",
        "struct bpf_fib_lookup p = {}; bpf_fib_lookup(ctx, &p, sizeof(p), 0); return XDP_PASS;",
    ),
    Sample("check_mtu", "tc", "u32 m = 0; bpf_check_mtu(ctx, 0, &m, 0, 0); return 0;"),
    Sample(
        "timer_init",
        "socket",
        "u32 k = 0; struct tval *v = bpf_map_lookup_elem(&tmap, &k);"
        " if (v) bpf_timer_init(&v->t, &tmap, 1); return 0;",
    ),
    # not GPL-only
    Sample(
        "map_lookup_elem",
        "socket",
        "u32 k = 0; u64 *v = bpf_map_lookup_elem(&arr, &k); return v ? *v : 0;",
    ),
    Sample("ktime_get_ns", "kprobe/do_nanosleep", "return bpf_ktime_get_ns() > 0;"),
    Sample("get_current_pid_tgid", "kprobe/do_nanosleep", "return bpf_get_current_pid_tgid() > 0;"),
    Sample("get_prandom_u32", "socket", "return bpf_get_prandom_u32() & 1;"),
    Sample("get_smp_processor_id", "socket", "return bpf_get_smp_processor_id();"),
    Sample(
        "ringbuf_output",
        "kprobe/do_nanosleep",
        "u64 v = 1; bpf_ringbuf_output(&rb, &v, 8, 0); return 0;",
    ),
    Sample(
        "get_current_comm",
        "kprobe/do_nanosleep",
        "char c[16]; bpf_get_current_comm(c, sizeof(c)); return c[0];",
    ),
    Sample("send_signal", "kprobe/do_nanosleep", "bpf_send_signal(0); return 0;"),
    Sample("skb_load_bytes", "socket", "u8 b[4]; bpf_skb_load_bytes(ctx, 0, b, 4); return b[0];"),
    Sample("xdp_adjust_head", "xdp", "bpf_xdp_adjust_head(ctx, 0); return XDP_PASS;"),
    Sample("redirect", "tc", "return bpf_redirect(1, 0);"),
    Sample("csum_diff", "tc", "bpf_csum_diff(0, 0, 0, 0, 0); return 0;"),
)


def _source(sample: Sample, license: str) -> str:
    return (
        f"{PRELUDE}\n"
        f'SEC("{sample.section}")\nint prog(void *ctx)\n{{\n\t{sample.body}\n}}\n\n'
        f'char _license[] SEC("license") = "{license}";\n'
    )


class Loaded(NamedTuple):
    ok: bool
    log: str
    gpl_compatible: bool  # what the kernel recorded; False when the load failed


def _load(bpftool: str, obj: Path) -> Loaded:
    """Load `obj` with bpftool, read the kernel's gpl_compatible flag, then unpin it."""
    pin = Path("/sys/fs/bpf") / f"weak_bpf_test_{os.getpid()}_{obj.parent.name}"
    proc = subprocess.run(
        [bpftool, "prog", "load", str(obj), str(pin)], capture_output=True, text=True, check=False
    )
    try:
        if proc.returncode != 0:
            return Loaded(False, proc.stdout + proc.stderr, False)
        show = subprocess.run(
            [bpftool, "-j", "prog", "show", "pinned", str(pin)],
            capture_output=True,
            text=True,
            check=True,
        )
        return Loaded(True, "", bool(json.loads(show.stdout)["gpl_compatible"]))
    finally:
        if pin.exists():
            pin.unlink()


def _compile_all(sources: dict[str, str], include_dirs: list[Path]) -> dict[str, Path]:
    """Compile each {key: C source} in parallel (cached by content by bpfbuild)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for key, text in sources.items():
            path = Path(tmp) / f"{key}.c"
            path.write_text(text)
            paths[key] = path
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 4) as pool:
            futures = {
                key: pool.submit(bpfbuild.compile_program, path, include_dirs)
                for key, path in paths.items()
            }
            return {key: future.result() for key, future in futures.items()}


@pytest.fixture(scope="session")
def bpftool_as_root() -> str:
    require_root()
    bpftool = require_tool("bpftool")
    require_tool("clang")
    require(SYSFS_VMLINUX.exists(), f"{SYSFS_VMLINUX} is missing")
    require(Path("/sys/fs/bpf").is_dir(), "bpffs is not mounted on /sys/fs/bpf")
    return bpftool


@pytest.fixture(scope="session")
def helper_loads(bpftool_as_root: str) -> dict[tuple[str, str], Loaded]:
    """{(helper, license): outcome} for every sample under "GPL" and "Proprietary"."""
    include = bpfbuild.vmlinux_h(SYSFS_VMLINUX)
    sources = {
        f"{s.helper}-{lic}": _source(s, lic) for s in SAMPLES for lic in ("GPL", "Proprietary")
    }
    objs = _compile_all(sources, [include])
    return {
        (s.helper, lic): _load(bpftool_as_root, objs[f"{s.helper}-{lic}"])
        for s in SAMPLES
        for lic in ("GPL", "Proprietary")
    }


def test_samples_cover_both_kinds() -> None:
    flags = [HELPERS[i].gpl_only for i in _ids_of(s.helper for s in SAMPLES)]
    assert sum(flags) >= 10 and len(flags) - sum(flags) >= 10


def _ids_of(names: Iterable[str]) -> list[int]:
    by_name = {h.name: i for i, h in HELPERS.items()}
    return [by_name[n] for n in names]


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.helper for s in SAMPLES])
def test_gpl_only_matches_running_kernel(
    sample: Sample, helper_loads: dict[tuple[str, str], Loaded]
) -> None:
    (helper_id,) = _ids_of([sample.helper])
    gpl = helper_loads[(sample.helper, "GPL")]
    # The control: under GPL the program is valid, so a refusal below is about the license.
    assert gpl.ok, f"bpf_{sample.helper} does not load even under GPL:\n{gpl.log}"
    assert gpl.gpl_compatible
    proprietary = helper_loads[(sample.helper, "Proprietary")]
    if HELPERS[helper_id].gpl_only:
        assert not proprietary.ok, f"the kernel lets a non-GPL program call bpf_{sample.helper}"
        assert GPL_REFUSAL in proprietary.log, proprietary.log
        assert f"call bpf_{sample.helper}#{helper_id}" in proprietary.log, proprietary.log
    else:
        assert proprietary.ok, (
            f"bpf_{sample.helper} refused for a non-GPL program:\n{proprietary.log}"
        )
        assert not proprietary.gpl_compatible


LICENSES = (
    "GPL",
    "GPL v2",
    "GPL and additional rights",
    "Dual BSD/GPL",
    "Dual MIT/GPL",
    "Dual MPL/GPL",
    "GPL-2.0",
    "GPL-2.0-only",
    "GPL v3",
    "gpl",
    "Dual BSD/GPL ",
    "Dual MIT/GPL/BSD",
    "BSD",
    "MIT",
    "Proprietary",
)


def test_license_list_matches_running_kernel(bpftool_as_root: str) -> None:
    """The kernel's own verdict (bpf_prog_info.gpl_compatible) for each license string."""
    sources = {
        f"lic{n}": (
            '__attribute__((section("socket"), used)) int prog(void *ctx) { return 0; }\n'
            f'char _license[] __attribute__((section("license"), used)) = "{lic}";\n'
        )
        for n, lic in enumerate(LICENSES)
    }
    objs = _compile_all(sources, [])
    wrong = {}
    for n, lic in enumerate(LICENSES):
        loaded = _load(bpftool_as_root, objs[f"lic{n}"])
        assert loaded.ok, loaded.log
        if loaded.gpl_compatible != license_is_gpl_compatible(lic):
            wrong[lic] = loaded.gpl_compatible
    assert not wrong, f"the kernel's gpl_compatible disagrees: {wrong}"
