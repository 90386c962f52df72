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
import shutil
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
    from weak_bpf.files import compression

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
    from weak_bpf.parsers.elf import section_bytes
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
        found = (section_bytes(p.read_bytes(), ".BTF.ext") for p in _objects()[:40])
        return [ext for ext in found if ext is not None]
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
    if reader == "cli":  # the object that argv may name, mutated like the others
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
    from weak_bpf import config
    from weak_bpf.files import compression
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
    from weak_bpf.files import compression
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
    "sysmap", "kconfig", "vmlinuz", "kmod", "config-file", "cli",
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


class _Outcomes:
    """Counts of ok / error / traceback / hang / memory over the inputs run, and the failures."""

    def __init__(self, bound: float) -> None:
        self.bound = bound
        self.counts: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        signal.signal(signal.SIGALRM, _alarm)

    def run(self, function: Callable[[Any], bool], data: Any, describe: str) -> None:
        """`function` returns True for a parse, False for an expected refusal; anything it
        raises other than a weak_bpf.errors type is a failure."""
        from weak_bpf.errors import WeakBpfError

        signal.setitimer(signal.ITIMER_REAL, self.bound)
        try:
            self.counts["ok" if function(data) else "error"] += 1
        except WeakBpfError:
            self.counts["error"] += 1
        except Hang:
            self.counts["hang"] += 1
            self.failures.append(f"hang on {describe}")
        except MemoryError:
            self.counts["memory"] += 1
            self.failures.append(f"MemoryError on {describe}")
        except Exception:
            self.counts["traceback"] += 1
            if len(self.failures) < 20:
                self.failures.append(traceback.format_exc(limit=6) + f"input: {describe}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def result(self, reader: str) -> dict[str, Any]:
        return {
            "reader": reader,
            "inputs": sum(self.counts.values()),
            **self.counts,
            "failures": self.failures,
        }


def _hypothesis_settings(count: int) -> Any:
    from hypothesis import HealthCheck, Phase, settings

    return settings(
        max_examples=max(1, count),
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def fuzz_reader(reader: str, count: int) -> dict[str, Any]:
    """Run `count` mutated inputs through `reader`; returns the outcome counts and failures."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    from hypothesis import given
    from hypothesis import strategies as st

    function = _readers()[reader]
    pool = seeds(reader)
    outcomes = _Outcomes(TIME_BOUND)

    def parse(data: bytes) -> bool:
        function(data)
        return True

    for data in pool:  # every seed once, unchanged
        outcomes.run(parse, data, f"{len(data)} bytes: {data[:80]!r}")

    @_hypothesis_settings(count - len(pool))
    @given(st.data())
    def run(draw: Any) -> None:
        # an index, not sampled_from(pool): hypothesis would hash and repr every large seed
        data = mutate(pool[draw.draw(st.integers(0, len(pool) - 1))], draw.draw, st)
        outcomes.run(parse, data, f"{len(data)} bytes: {data[:80]!r}")

    run()
    return outcomes.result(reader)


# --- the whole CLI: argv, stdin and the files it names -----------------------------------------

CLI_TIME_BOUND = 60.0  # a cold add-kernel reads two kernels' BTF
CLI_WORDS = (
    "add-kernel", "remove-kernel", "add-progs", "remove-progs", "audit", "explain", "greylist",
    "symvers", "kernels", "inspect", "--add-kernel", "--remove-kernel", "--add-progs",
    "--remove-progs", "--add-modules", "--remove-modules", "-v", "--verbose", "--json",
    "--dry-run", "--no-journal", "--version", "-h", "--kernel", "--program", "--btf", "--symvers",
    "--", "-", "--bogus",
)  # fmt: skip


def _cli_values(obj: Path) -> tuple[str, ...]:
    return (
        common.OLD, common.NEW, "9.9.9-none", "..", "../" + common.NEW, "a/b", "", " ", "*",
        "acme-*", "[", "usr/lib/bpf/acme-trace/exec_state.bpf.o",
        "/usr/lib/bpf/acme-net/xdp_ct.bpf.o", "usr/lib/bpf/../../etc/passwd", str(obj),
        f"usr/lib/modules/{common.OLD}/vmlinuz", f"usr/lib/modules/{common.NEW}/symvers.gz",
        "/dev/null", "/", "usr/lib/bpf", "bad\udcff.bpf.o", "x\ny", "-x", "\x00",
    )  # fmt: skip


def fuzz_cli(root: Path, count: int) -> dict[str, Any]:
    """`count` runs of the CLI's main() on `root`: argv drawn from its words, values that are
    kernels, paths (good, hostile, absolute) and random text; stdin from the same, or bytes;
    and the object file argv may name, a mutated real object. Stdin is decoded strictly, as
    under an en_US.UTF-8 locale. A run may exit 0-3; "internal error" is a failure."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    import io
    import logging

    from hypothesis import given
    from hypothesis import strategies as st

    from weak_bpf import cli

    os.environ.pop("WEAK_BPF_FAULT_STEP", None)
    logging.getLogger().handlers = [logging.NullHandler()]  # formatted, then dropped
    logging.getLogger().setLevel(logging.DEBUG)
    obj = root.parent / f"{root.name}-fuzz.bpf.o"
    pool = seeds("cli")
    values = _cli_values(obj)
    outcomes = _Outcomes(CLI_TIME_BOUND)

    def run_main(spec: tuple[list[str], bytes, bytes]) -> bool:
        argv, stdin, object_bytes = spec
        obj.write_bytes(object_bytes)
        out, err = io.StringIO(), io.StringIO()
        saved = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8", errors="strict")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(["--root", str(root), "--no-journal", *argv])  # not the host's
        except SystemExit as e:  # argparse: usage errors, --help, --version
            code = e.code if isinstance(e.code, int) else 2
        finally:
            sys.stdin = saved
        if "internal error" in err.getvalue() or code not in (0, 1, 2, 3):
            raise AssertionError(f"exit {code}: {err.getvalue()[-400:]}")
        return code == 0

    word = st.one_of(st.sampled_from(CLI_WORDS), st.sampled_from(values), st.text(max_size=8))
    line = st.one_of(st.sampled_from(values), st.text(max_size=16))

    @_hypothesis_settings(count)
    @given(
        verb=st.sampled_from((*CLI_WORDS[:10], "")),
        rest=st.lists(word, max_size=6),
        lines=st.lists(line, max_size=4),
        raw=st.binary(max_size=24),
        data=st.data(),
    )
    def run(verb: str, rest: list[str], lines: list[str], raw: bytes, data: Any) -> None:
        argv = [verb, *rest] if verb else rest
        stdin = "\n".join(lines).encode(errors="surrogateescape") + raw
        seed = pool[data.draw(st.integers(0, len(pool) - 1))]
        object_bytes = mutate(seed, data.draw, st) if data.draw(st.booleans()) else seed
        outcomes.run(run_main, (argv, stdin, object_bytes), f"argv {argv!r} stdin {stdin!r}")

    run()
    return outcomes.result("cli")


def _child(reader: str, count: int, cli_root: Path | None) -> dict[str, Any]:
    try:
        if reader == "cli":
            assert cli_root is not None
            return fuzz_cli(cli_root, count)
        return fuzz_reader(reader, count)
    except Exception:
        return {"reader": reader, "inputs": 0, "traceback": 1, "failures": [traceback.format_exc()]}


def fuzz_all(
    count: int, work: Path, readers: tuple[str, ...] = READERS, jobs: int = 0
) -> list[dict[str, Any]]:
    _base_btf()  # build the cached base once, before the workers race for it
    cli_root = common.clone(common.example_root(work), work / "fuzz-cli-root")
    jobs = jobs or max(1, os.cpu_count() or 1)
    ctx = __import__("multiprocessing").get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        futures = [pool.submit(_child, reader, count, cli_root) for reader in readers]
        results = []
        for future in futures:
            try:
                results.append(future.result())
            except Exception as e:  # the worker died: a crash of the reader process
                results.append({"reader": "?", "inputs": 0, "traceback": 1, "failures": [repr(e)]})
    return results


# --- one corrupt program among valid ones ------------------------------------------------------


class _RandomDraw:
    """The strategies `mutate` draws from, answered by a seeded random.Random: corrupt
    variants for the campaign below, reproducible without hypothesis."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integers(self, low: int, high: int) -> Callable[[], int]:
        return lambda: self.rng.randint(low, high)

    def booleans(self) -> Callable[[], bool]:
        return lambda: self.rng.random() < 0.5

    def sampled_from(self, values: tuple[Any, ...]) -> Callable[[], Any]:
        return lambda: self.rng.choice(values)

    def binary(self, min_size: int, max_size: int) -> Callable[[], bytes]:
        return lambda: self.rng.randbytes(self.rng.randint(min_size, max_size))


def corrupt_variants(count: int) -> list[bytes]:
    """Objects the reader refuses: fixed cases first (empty, a bare ELF magic, text, a kernel
    module, halves of a real object), then mutations of real objects."""
    from weak_bpf.errors import WeakBpfError
    from weak_bpf.parsers.bpfobject import read_bpf_object

    seed = _objects()[0].read_bytes()
    fixed = [b"", b"\x7fELF", b"#!/bin/sh\nexit 0\n", _small_kos(common.OLD, 1)[0].read_bytes(),
             seed[: len(seed) // 2], seed[:64]]  # fmt: skip
    out = fixed[:count]
    pool = [p.read_bytes() for p in _objects()[:10]]
    n = 0
    while len(out) < count:
        n += 1
        draw = _RandomDraw(n)
        data = mutate(pool[n % len(pool)], lambda f: f(), draw)
        try:
            read_bpf_object(data, "corrupt.bpf.o")
        except WeakBpfError:
            out.append(data)
    return out


CORRUPT = "usr/lib/bpf/acme-bad/corrupt.bpf.o"


def _resolve_all(root: Path) -> tuple[dict[str, Any], list[str]]:
    """add-kernel on both kernels, then audit: {what: document} and any command failures."""
    docs: dict[str, Any] = {}
    problems = []
    for args in (["add-kernel", common.OLD], ["add-kernel", common.NEW], ["audit"]):
        proc = common.cli(root, "--json", *args)
        if proc.returncode not in (0, 1) or "internal error" in proc.stderr:
            problems.append(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr[-300:]}")
            continue
        docs[" ".join(args)] = json.loads(proc.stdout)
    docs["links"] = common.link_sets(root)
    return docs, problems


def _without_corrupt(docs: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """The documents without the corrupt program's entries, and those entries."""
    rest: dict[str, Any] = {}
    corrupt: list[Any] = []
    for key, doc in docs.items():
        if key == "links":
            rest[key] = doc
            continue
        runs = doc if isinstance(doc, list) else [doc]
        kept = []
        for run in runs:
            programs = [p for p in run["programs"] if p["path"] != CORRUPT]
            corrupt += [p for p in run["programs"] if p["path"] == CORRUPT]
            kept.append({**run, "programs": programs, "summary": None, "counts": None})
        rest[key] = kept
    return rest, corrupt


def _malformed(entry: dict[str, Any]) -> bool:
    results = entry["results"].values() if "results" in entry else [entry]
    return all(
        r["verdict"] == "incompatible"
        and not r["linked"]
        and [reason["code"] for reason in r["reasons"]] == ["malformed"]
        for r in results
    )


def corrupt_among_valid(work: Path, count: int) -> dict[str, Any]:
    """`count` corrupt objects, one at a time, next to the example programs: every valid
    program must get the verdicts and links it gets without it, and the corrupt one
    `malformed` in add-kernel's report and in the audit."""
    base = common.example_root(work)
    run_dir = work / "corrupt-run"  # one path for all: the audit names its root
    expected, problems = _resolve_all(common.clone(base, run_dir))
    expected_rest, _ = _without_corrupt(expected)
    differing = not_malformed = 0
    for n, data in enumerate(corrupt_variants(count)):
        root = common.clone(base, run_dir)
        (root / CORRUPT).parent.mkdir(parents=True, exist_ok=True)
        (root / CORRUPT).write_bytes(data)
        got, failed = _resolve_all(root)
        problems += [f"variant {n}: {p}" for p in failed]
        rest, entries = _without_corrupt(got)
        if rest != expected_rest:
            differing += 1
            problems.append(f"variant {n}: the valid programs' verdicts or links changed")
        # one entry per add-kernel run and one in the audit
        if len(entries) != 3 or not all(_malformed(e) for e in entries):
            not_malformed += 1
            problems.append(f"variant {n} ({len(data)} bytes): not reported as malformed")
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"variants": count, "differing": differing, "not_malformed": not_malformed,
            "problems": problems[:5]}  # fmt: skip


if __name__ == "__main__":
    which = tuple(sys.argv[2:]) or READERS
    scratch = Path(tempfile.mkdtemp(prefix="weak-bpf-harden-fuzz-"))
    try:
        out = fuzz_all(int(sys.argv[1]) if len(sys.argv) > 1 else 200, scratch, which)
    finally:
        shutil.rmtree(scratch)
    json.dump(out, sys.stdout, indent=1)
