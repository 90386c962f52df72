"""Load a kernel's artifacts: read the files that weak_bpf.kernel found, unpack them, and hand the
bytes to the pure parsers. Every error names the file (ParseError.located)."""

from __future__ import annotations

import array
import contextlib
import dataclasses
import sys
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

from weak_bpf.errors import BTFError, ParseError, WeakBpfError
from weak_bpf.files import compression
from weak_bpf.files.read import MAX_FILE_SIZE, mapped, read_file
from weak_bpf.kernel.find import KernelArtifacts
from weak_bpf.parsers.btf import BTF
from weak_bpf.parsers.elf import Buffer, section_bytes
from weak_bpf.parsers.elfsyms import symbol_map
from weak_bpf.parsers.errinject import error_injection_addresses
from weak_bpf.parsers.kabi import KabiList, parse_kabi_list
from weak_bpf.parsers.kconfig import KernelConfig, parse_kconfig
from weak_bpf.parsers.modulesdep import parse_modules_dep
from weak_bpf.parsers.symvers import Symvers, parse_symvers
from weak_bpf.parsers.sysmap import SystemMap, parse_system_map
from weak_bpf.parsers.vmlinuz import vmlinux_from_vmlinuz

if TYPE_CHECKING:
    from weak_bpf.parsers.kmod import KernelObject

T = TypeVar("T")
BTF_MAGICS = (b"\x9f\xeb", b"\xeb\x9f")  # raw BTF, little and big endian
ELF_MAGIC = b"\x7fELF"
MAX_TEXT_SIZE = 64 << 20  # symvers, System.map, config, kABI lists: a few MB in real kernels
MAX_MODULE_SIZE = 256 << 20


def _load(
    path: Path, parse: Callable[[bytes, str | None], T], *, max_size: int = MAX_FILE_SIZE
) -> T:
    try:
        return parse(read_file(path, max_size=max_size), str(path))
    except ParseError as e:
        raise e.located(str(path)) from None


def load_symvers(path: Path) -> Symvers:
    return _load(path, parse_symvers, max_size=MAX_TEXT_SIZE)


def load_system_map(path: Path) -> SystemMap:
    return _load(path, parse_system_map, max_size=MAX_TEXT_SIZE)


def load_config(path: Path) -> KernelConfig:
    return _load(path, parse_kconfig, max_size=MAX_TEXT_SIZE)


def load_kabi_list(path: Path) -> KabiList:
    return _load(path, parse_kabi_list, max_size=MAX_TEXT_SIZE)


def load_kernel_object(path: Path) -> KernelObject:
    """A module (.ko, .ko.xz, .ko.zst, .ko.gz) or a vmlinux ELF."""
    from weak_bpf.parsers.kmod import read_kernel_object  # pyelftools: only when a module is read

    return _load(path, read_kernel_object, max_size=MAX_MODULE_SIZE)


def load_module_bytes(path: Path) -> bytes:
    """A module's ELF, unpacked when compressed: what insmod takes."""
    return read_file(path, max_size=MAX_MODULE_SIZE)


def load_module_depends(path: Path) -> list[str]:
    """The modules a module's modinfo `depends=` names."""
    value = load_kernel_object(path).modinfo_value("depends") or ""
    return [name for name in value.split(",") if name]


def load_modules_dep(path: Path) -> dict[str, tuple[str, ...]]:
    """modules.dep: {module file: the module files it depends on}."""
    return _load(path, parse_modules_dep, max_size=MAX_TEXT_SIZE)


def load_config_bytes(path: Path) -> bytes:
    """K's config file as it is (unpacked when compressed), to hand to a booted kernel."""
    return read_file(path, max_size=MAX_TEXT_SIZE)


def load_vmlinux(path: Path) -> bytes:
    """The vmlinux ELF from a vmlinuz (or a vmlinux as is)."""
    return _load(
        path,
        lambda data, source: vmlinux_from_vmlinuz(data, source, decompress=compression.decompress),
    )


@contextlib.contextmanager
def module_data(path: Path) -> Iterator[Buffer]:
    """A module's bytes: mapped when it is not compressed, so that a scan of every module
    reads only the sections it looks at."""
    if path.name.endswith(".ko"):
        with mapped(path, max_size=MAX_MODULE_SIZE) as data:
            yield data
    else:
        yield read_file(path, max_size=MAX_MODULE_SIZE)


@dataclasses.dataclass(frozen=True)
class KernelBtf:
    """A kernel's vmlinux BTF, whatever form it came in."""

    btf: BTF
    btf_ids: frozenset[int] | None  # the words of `.BTF_ids`; None when the form has none (raw)


def load_kernel_btf(path: Path) -> KernelBtf:
    """K's BTF from a raw BTF file (sysfs, `pahole --btf_encode_detached`), an ELF vmlinux
    (read in place), or a kernel image; a compressed file of any of these is unpacked first. The
    one reader of a kernel's BTF: `kernels`, the checks and `greylist --btf` all use it."""
    source = str(path)
    with mapped(path) as data:
        head = bytes(data[:4])
        if head[:2] in BTF_MAGICS:
            return KernelBtf(BTF.from_bytes(data, source=source), None)
        if head == ELF_MAGIC:
            return _elf_btf(data, source)
    unpacked = read_file(path)  # a vmlinuz, or a compressed vmlinux or BTF file
    if unpacked[:2] in BTF_MAGICS:
        return KernelBtf(BTF.from_bytes(unpacked, source=source), None)
    try:
        elf = vmlinux_from_vmlinuz(unpacked, source, decompress=compression.decompress)
    except ParseError as e:
        raise e.located(source) from None
    return _elf_btf(elf, source)


def load_raw_btf(path: Path) -> tuple[BTF, bytes]:
    """A raw BTF file, such as the running kernel's /sys/kernel/btf/vmlinux, and its bytes."""
    raw = read_file(path)
    return BTF.from_bytes(raw, source=str(path)), raw


def image_btf_ids(image: Path, btf: bytes) -> frozenset[int] | None:
    """The `.BTF_ids` of the kernel image `image` when its `.BTF` is `btf` byte for byte (the ids
    only hold for that BTF), else None."""
    elf = load_vmlinux(image)
    if section_bytes(elf, ".BTF", str(image)) != btf:
        return None
    return btf_ids_of(elf, str(image))


def _elf_btf(elf: Buffer, source: str) -> KernelBtf:
    try:
        return KernelBtf(BTF.from_bytes(elf, source=source), btf_ids_of(elf, source))
    except BTFError as e:
        raise e.located(source) from None


def btf_ids_of(elf: Buffer, source: str) -> frozenset[int]:
    """Every u32 in a vmlinux ELF's `.BTF_ids` section: the ids of its kfunc sets and BTF_ID
    lists. A function whose id is not there is no kfunc of that kernel."""
    data = section_bytes(elf, ".BTF_ids", source)
    if data is None:
        return frozenset()
    words = array.array("I", data[: len(data) - len(data) % 4])
    if (elf[5] == 2) != (sys.byteorder == "big"):
        words.byteswap()
    return frozenset(words)


def load_error_injection(
    elfs: Sequence[Path], image: Path | None, start: int, stop: int
) -> frozenset[int] | None:
    """The function addresses on K's error-injection list, read from the first of `elfs` that is
    a readable vmlinux ELF (read in place), else from the kernel image; None if there is
    neither. `start`, `stop`: where K's symbols put the list. Raises the first error when every
    file failed."""
    errors: list[ParseError] = []

    def attempt(read: Callable[[], frozenset[int] | None], source: Path) -> frozenset[int] | None:
        try:
            return read()
        except ParseError as e:
            errors.append(e.located(str(source)))
            return None

    def in_place(path: Path) -> frozenset[int] | None:
        with mapped(path) as data:
            if bytes(data[:4]) != ELF_MAGIC:
                return None
            return error_injection_addresses(data, start, stop, str(path))

    for path in elfs:
        found = attempt(partial(in_place, path), path)
        if found is not None:
            return found

    def unpacked(path: Path) -> frozenset[int]:
        return error_injection_addresses(load_vmlinux(path), start, stop, str(path))

    if image is not None:
        found = attempt(partial(unpacked, image), image)
        if found is not None:
            return found
    if errors:
        raise errors[0]
    return None


@dataclasses.dataclass(frozen=True)
class KernelSymbols:
    """Where K's symbols were found, and them; `symbols` is None when no source lists them."""

    symbols: SystemMap | None
    source: Path | None = None
    is_kallsyms: bool = False  # the running kernel's kallsyms: exactly what libbpf reads
    problems: tuple[str, ...] = ()
    system_map_stub: bool = False  # K's System.map is Debian's placeholder, which lists nothing


def load_symbols(kernel: KernelArtifacts) -> KernelSymbols:
    """K's symbols, from the first source that lists them: System.map (not Debian's stub), the
    real System.map or vmlinux `.symtab` of a debuginfo package, else the running kernel's
    kallsyms. Unreadable sources are recorded in `problems` and passed over."""
    problems = []
    stub = False
    for path in ((kernel.system_map,) if kernel.system_map else ()) + kernel.symbol_files:
        what = "System.map" if path == kernel.system_map else str(kernel.relative(path))
        try:
            found = _symbols_in(path)
        except WeakBpfError as e:
            problems.append(f"{what}: {e}")
            continue
        if found is not None and found.placeholder:
            stub = stub or path == kernel.system_map
        elif found is not None:
            return KernelSymbols(found, path, False, tuple(problems), stub)
    kallsyms = kernel.kallsyms
    if kallsyms is not None:
        try:
            symbols = load_system_map(kallsyms)
            return KernelSymbols(symbols, kallsyms, True, tuple(problems), stub)
        except WeakBpfError as e:
            problems.append(f"kallsyms: {e}")
    return KernelSymbols(None, None, False, tuple(problems), stub)


def _symbols_in(path: Path) -> SystemMap | None:
    """A System.map, or the `.symtab` of an ELF file (None if it has none)."""
    with mapped(path) as data:
        if bytes(data[:4]) == ELF_MAGIC:
            try:
                return symbol_map(data, str(path))
            except ParseError as e:
                raise e.located(str(path)) from None
        if bytes(data[:2]) in BTF_MAGICS:
            return None  # a raw BTF vmlinux lists no symbols
    return load_system_map(path)
