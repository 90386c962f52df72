"""A vmlinux's error-injection list: the functions built with ALLOW_ERROR_INJECTION(), whose
return value error injection, and BPF fmod_ret programs, may change. The linker puts it between
two symbols as an array of `struct error_injection_entry { unsigned long addr; int etype; }`."""

from __future__ import annotations

import struct

from weak_bpf.errors import ELFError
from weak_bpf.parsers.elf import Buffer, bytes_at_address, elf_header

START = "__start_error_injection_whitelist"
STOP = "__stop_error_injection_whitelist"


def error_injection_addresses(
    elf: Buffer, start: int, stop: int, source: str | None = None
) -> frozenset[int]:
    """The function addresses on the list of the vmlinux ELF `elf`, whose START and STOP symbols
    are at `start` and `stop`. Raises ELFError."""
    header = elf_header(elf, source)
    word = "Q" if header.elf_class == 64 else "I"
    entry = 2 * struct.calcsize(word)  # addr, then etype padded to a word
    if stop < start or (stop - start) % entry:
        raise ELFError(
            f"the error-injection list's bounds ({start:#x} to {stop:#x}) do not hold whole "
            "entries",
            source=source,
        )
    data = bytes_at_address(elf, start, stop - start, source)
    if data is None:
        raise ELFError(f"no section holds the error-injection list at {start:#x}", source=source)
    fmt = ("<" if header.byteorder == "little" else ">") + word
    found = frozenset(struct.unpack_from(fmt, data, at)[0] for at in range(0, len(data), entry))
    if 0 in found:  # arm64 links with --no-apply-dynamic-relocs: the boot fills them in
        raise ELFError(
            "the error-injection list's addresses are left for the kernel to fill in at boot",
            source=source,
        )
    return found
