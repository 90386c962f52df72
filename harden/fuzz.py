"""Campaign 1: fuzz every reader and the CLI with hypothesis, from real seeds.

Each reader runs in its own process under RLIMIT_AS; every input has a time bound (SIGALRM).
An outcome is `ok` (parsed), `error` (a weak_bpf.errors type: the expected refusal), or a
failure: `traceback` (any other exception), `hang` (over the time bound), `memory`.
"""

from __future__ import annotations

import bz2
import collections
import concurrent.futures
import contextlib
import gzip
import json
import lzma
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

MEMORY_LIMIT = 2 << 30
TIME_BOUND = 5.0  # seconds per input
BUILD_CACHE = Path(tempfile.gettempdir()) / f"weak-bpf-progs-build-{os.getuid()}"
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


class Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Hang()


# --- seeds -------------------------------------------------------------------------------------


def _objects() -> list[Path]:
    found = sorted(BUILD_CACHE.glob("objs/*/*.bpf.o"))
    return found or sorted(Path(common.REPO).glob("build/**/*.bpf.o"))


def _kernel_dir(kver: str) -> Path:
    return common.debian_kernels()[kver]


def _small_kos(kver: str, count: int) -> list[Path]:
    kos = sorted(_kernel_dir(kver).rglob("*.ko"), key=lambda p: p.stat().st_size)
    return [ko for ko in kos if ko.stat().st_size > 4096][:count]


def _line_slices(data: bytes, pieces: int, lines: int) -> list[bytes]:
    """Short runs of consecutive lines from a big text file: the parsers are line based."""
    rows = data.splitlines(keepends=True)
    rng = random.Random(7)
    out = [b"".join(rows[:lines])]
    for _ in range(pieces - 1):
        at = rng.randrange(max(1, len(rows) - lines))
        out.append(b"".join(rows[at : at + lines]))
    return out


def _compressed(data: bytes) -> list[bytes]:
    from weak_bpf import compression

    out = [
        data,
        gzip.compress(data),
        bz2.compress(data),
        lzma.compress(data),
        lzma.compress(data, format=lzma.FORMAT_ALONE),
    ]
    for name in ("lz4.frame", "zstandard"):
        with contextlib.suppress(ImportError):
            module = compression._module(name)
            out.append(
                module.compress(data)
                if name == "lz4.frame"
                else module.ZstdCompressor().compress(data)
            )
    return out


def seeds(reader: str) -> list[bytes]:
    from weak_bpf.parsers.btf import BTF
    from weak_bpf.parsers.elf import section_headers
    from weak_bpf.parsers.kmod import read_kernel_object

    kdir = _kernel_dir(common.OLD)
    if reader in ("object", "btf-elf"):
        return [p.read_bytes() for p in _objects()[:40]]
    if reader == "btf-raw":
        out = []
        for p in _objects()[:20]:
            btf = BTF.from_bytes(p.read_bytes())
            out.append(btf.to_bytes("little"))
            out.append(btf.to_bytes("big"))
        return out
    if reader == "btf-ext":
        out = []
        for p in _objects()[:40]:
            data = p.read_bytes()
            for sh in section_headers(data):
                if sh.name == ".BTF.ext":
                    out.append(data[sh.offset : sh.offset + sh.size])
        return out
    if reader in ("btf-split", "kmod"):
        kos = _small_kos(common.OLD, 12)
        if reader == "kmod":
            return [ko.read_bytes() for ko in kos]
        blobs = [read_kernel_object(ko.read_bytes()).btf for ko in kos]
        return [b for b in blobs if b]
    if reader == "symvers":
        text = (kdir / f"usr/src/linux-headers-{common.OLD}/Module.symvers").read_bytes()
        out = []
        for piece in _line_slices(text, 4, 40):
            out.extend(_compressed(piece))
        return out
    if reader == "greylist":
        text = (kdir / f"usr/src/linux-headers-{common.OLD}/Module.symvers").read_bytes()
        head = b"# greylist of acme-trace\n# build-kernel: " + common.OLD.encode() + b"\n"
        return [head + piece for piece in _line_slices(text, 6, 12)]
    if reader == "kabi":
        text = (kdir / f"usr/src/linux-headers-{common.OLD}/Module.symvers").read_bytes()
        out = []
        for piece in _line_slices(text, 6, 30):
            names = [row.split(b"\t")[1] for row in piece.splitlines() if b"\t" in row]
            out.append(b"[rhel9_x86_64_stablelist]\n" + b"".join(b"\t" + n + b"\n" for n in names))
        return out
    if reader == "sysmap":
        text = (kdir / f"boot/System.map-{common.OLD}").read_bytes()
        sysmap = b"".join(
            f"{0xFFFFFFFF81000000 + 16 * i:016x} {'TtDdBbRrWw'[i % 10]} sym_{i}\n".encode()
            for i in range(60)
        )
        return [text[:4096], sysmap]
    if reader == "kconfig":
        return _line_slices((kdir / f"boot/config-{common.OLD}").read_bytes(), 6, 60)
    if reader == "vmlinuz":
        image = (kdir / f"boot/vmlinuz-{common.OLD}").read_bytes()
        small_elf = _objects()[0].read_bytes()
        return [
            image[:0x4000],
            image[:0x4000] + image[-0x400:],
            b"\x00" * 64 + gzip.compress(small_elf),
            b"junk" + lzma.compress(small_elf) + b"tail",
            small_elf,
        ]
    if reader == "config-file":
        return [
            b"[main]\nlink_unstable = yes\nlock_timeout = 30\n",
            b"[main]\nlink_unstable = no\n\n[kernel 5.14.0-427.el9.x86_64]\n"
            b"kabi_stablelist = /usr/lib/modules/kabi-rhel94/kabi_stablelist_x86_64\n",
            b"# comment\n[main]\nlock_timeout = 0.5\n",
        ]
    if reader == "cli":
        return [p.read_bytes() for p in _objects()[:10]]
    raise KeyError(reader)


# --- the readers under test ----------------------------------------------------------------------


def _walk_btf(btf: Any) -> None:
    from weak_bpf.errors import BTFError

    for n, tid in enumerate(btf.own_ids()):
        if n > 3000:
            break
        for call in (btf.type, btf.resolve, btf.type_size, btf.name):
            with contextlib.suppress(BTFError):
                call(tid)
    btf.find("task_struct")
    btf.to_bytes("big")


def _readers() -> dict[str, Callable[[bytes], object]]:
    from weak_bpf import compression, config
    from weak_bpf.parsers import bpfobject, btfext, greylist, kabi, kconfig, kmod, symvers, sysmap
    from weak_bpf.parsers.btf import BTF
    from weak_bpf.parsers.vmlinuz import vmlinux_from_vmlinuz

    base = BTF.from_bytes(_base_btf())
    object_btf = BTF.from_bytes(_objects()[0].read_bytes())
    conf_root = Path(tempfile.mkdtemp(prefix="weak-bpf-harden-conf-"))

    def object_(data: bytes) -> object:
        obj = bpfobject.read_bpf_object(data, "fuzz.bpf.o")
        if obj.btf is not None:
            _walk_btf(obj.btf)
        return obj

    def btf_(data: bytes) -> object:
        btf = BTF.from_bytes(data, source="fuzz")
        _walk_btf(btf)
        return btf

    def split(data: bytes) -> object:
        btf = BTF.from_bytes(data, base=base, source="fuzz.ko")
        _walk_btf(btf)
        return btf

    def ext(data: bytes) -> object:
        return btfext.parse_btf_ext(data, object_btf, source="fuzz")

    def symvers_(data: bytes) -> object:
        raw = compression.maybe_decompress(data, "fuzz", max_size=64 << 20)
        return symvers.parse_symvers(raw, "fuzz")

    def vmlinuz(data: bytes) -> object:
        return vmlinux_from_vmlinuz(
            data, "fuzz", decompress=compression.decompress, max_size=64 << 20
        )

    def config_file(data: bytes) -> object:
        (conf_root / "etc").mkdir(exist_ok=True)
        (conf_root / "etc/weak-bpf-progs.conf").write_bytes(data)
        return config.load_config(conf_root)

    return {
        "object": object_,
        "btf-raw": btf_,
        "btf-elf": btf_,
        "btf-split": split,
        "btf-ext": ext,
        "symvers": symvers_,
        "greylist": lambda d: greylist.parse_greylist(d, "fuzz"),
        "kabi": lambda d: kabi.parse_kabi_list(d, "fuzz"),
        "sysmap": lambda d: sysmap.parse_system_map(d, "fuzz"),
        "kconfig": lambda d: kconfig.parse_kconfig(d, "fuzz"),
        "vmlinuz": vmlinuz,
        "kmod": lambda d: kmod.read_kernel_object(d, "fuzz.ko"),
        "config-file": config_file,
    }


_BASE: list[Any] = []


def _base_btf() -> bytes:
    """The older Debian kernel's vmlinux BTF (raw), the base of its modules' split BTF."""
    from weak_bpf import compression
    from weak_bpf.parsers.btf import BTF
    from weak_bpf.parsers.vmlinuz import vmlinux_from_vmlinuz

    cache = BUILD_CACHE / f"harden-base-{common.OLD}.btf"
    if not cache.exists():
        image = (_kernel_dir(common.OLD) / f"boot/vmlinuz-{common.OLD}").read_bytes()
        vmlinux = vmlinux_from_vmlinuz(image, decompress=compression.decompress)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(BTF.from_bytes(vmlinux).to_bytes("little"))
    return cache.read_bytes()


READERS = (
    "object", "btf-raw", "btf-elf", "btf-split", "btf-ext", "symvers", "greylist", "kabi",
    "sysmap", "kconfig", "vmlinuz", "kmod", "config-file",
)  # fmt: skip


# --- mutation ------------------------------------------------------------------------------------

TEXT_TOKENS = (
    b"\x00", b"\xff\xfe", b"\t", b"\t\t\t\t", b"\n", b"\r\n", b"#", b"[", b"]", b"=",
    b"0x", b"-1", b"99999999999999999999999", b"EXPORT_SYMBOL_GPL", b"vmlinux", b"\xc3\x28",
    b"y", b"m", b'"', b"CONFIG_", b"# build-kernel:", b"[main]", b"ffffffff81000000 T ",
)  # fmt: skip


def mutate(data: bytes, draw: Callable[[Any], Any], st: Any) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        size = len(buf)
        # half the mutations hit the first 256 bytes, where the headers are
        limit = min(size, 256) if draw(st.booleans()) else size
        at = draw(st.integers(0, max(0, limit - 1)))
        op = draw(st.integers(0, 8))
        if op == 0 and size:
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and size:
            buf[at] = draw(st.integers(0, 255))
        elif op == 2 and size >= 4:
            at &= ~3
            value = draw(st.sampled_from((*INTERESTING, size, size + 1, size - 1)))
            order = draw(st.sampled_from("<>"))
            buf[at : at + 4] = struct.pack(order + "I", value & 0xFFFFFFFF)[: len(buf[at : at + 4])]
        elif op == 3:
            del buf[draw(st.integers(0, max(0, size))) :]
        elif op == 4 and size:
            end = min(size, at + draw(st.integers(1, 64)))
            del buf[at:end]
        elif op == 5 and size:
            end = min(size, at + draw(st.integers(1, 64)))
            buf[at:at] = buf[at:end] * draw(st.integers(1, 4))
        elif op == 6:
            buf[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == 7:
            buf[at:at] = draw(st.sampled_from(TEXT_TOKENS))
        elif op == 8 and size >= 8:
            other = draw(st.integers(0, size - 1))
            buf[at], buf[other] = buf[other], buf[at]
    return bytes(buf)


# --- one reader, in its own process --------------------------------------------------------------


def fuzz_reader(reader: str, count: int, seed: int = 0) -> dict[str, Any]:
    """Run `count` mutated inputs through `reader`; returns the outcome counts and failures."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from weak_bpf.errors import WeakBpfError

    function = _readers()[reader]
    pool = seeds(reader)
    outcomes: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    signal.signal(signal.SIGALRM, _alarm)

    def one(data: bytes) -> None:
        signal.setitimer(signal.ITIMER_REAL, TIME_BOUND)
        try:
            function(data)
            outcomes["ok"] += 1
        except WeakBpfError:
            outcomes["error"] += 1
        except Hang:
            outcomes["hang"] += 1
            failures.append(f"hang on {len(data)} bytes: {data[:64]!r}")
        except MemoryError:
            outcomes["memory"] += 1
            failures.append(f"MemoryError on {len(data)} bytes")
        except Exception:
            outcomes["traceback"] += 1
            if len(failures) < 20:
                failures.append(traceback.format_exc(limit=6) + f"input head: {data[:80]!r}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    for data in pool:  # every seed once, unchanged
        one(data)

    @settings(
        max_examples=max(1, count - len(pool)),
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def run(data: Any) -> None:
        seed_bytes = data.draw(st.sampled_from(pool))
        one(mutate(seed_bytes, data.draw, st))

    run()
    return {"reader": reader, "inputs": sum(outcomes.values()), **outcomes, "failures": failures}


def _child(reader: str, count: int) -> dict[str, Any]:
    try:
        return fuzz_reader(reader, count)
    except Exception:
        return {"reader": reader, "inputs": 0, "traceback": 1, "failures": [traceback.format_exc()]}


def fuzz_all(count: int, readers: tuple[str, ...] = READERS, jobs: int = 0) -> list[dict[str, Any]]:
    _base_btf()  # build the cached base once, before the workers race for it
    jobs = jobs or max(1, os.cpu_count() or 1)
    ctx = __import__("multiprocessing").get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        futures = [pool.submit(_child, reader, count) for reader in readers]
        results = []
        for future in futures:
            try:
                results.append(future.result())
            except Exception as e:  # the worker died: a crash of the reader process
                results.append({"reader": "?", "inputs": 0, "traceback": 1, "failures": [repr(e)]})
    return results


if __name__ == "__main__":
    which = tuple(sys.argv[2:]) or READERS
    out = fuzz_all(int(sys.argv[1]) if len(sys.argv) > 1 else 200, which)
    json.dump(out, sys.stdout, indent=1)
