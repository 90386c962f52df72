"""The shared ELF section-table check, and the hang it prevents: pyelftools trusts e_shentsize and
the extended section count, and looped for hours on a crafted object (found by review)."""

from __future__ import annotations

import signal
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from weak_bpf.errors import ParseError
from weak_bpf.parsers.bpfobject import read_bpf_object
from weak_bpf.parsers.btf import BTF
from weak_bpf.parsers.elf import section_headers
from weak_bpf.parsers.kmod import read_kernel_object

READERS: dict[str, Callable[[bytes], object]] = {
    "btf": BTF.from_bytes,
    "bpf object": read_bpf_object,
    "kernel module": read_kernel_object,
}


def _crafted(obj: bytes, shentsize: int, shnum: int, count: int) -> bytes:
    """`obj` with its section-header fields replaced; section 0's sh_size holds `count`."""
    bad = bytearray(obj)
    (shoff,) = struct.unpack_from("<Q", bad, 0x28)
    struct.pack_into("<HH", bad, 0x3A, shentsize, shnum)
    struct.pack_into("<Q", bad, shoff + 0x20, count)
    return bytes(bad)


def test_section_headers_of_a_real_object(old_progs: dict[str, Path]) -> None:
    headers = section_headers(old_progs["kconfig"].read_bytes())
    names = [h.name for h in headers]
    assert names[0] == "" and ".BTF" in names and "license" in names
    assert all(h.index == i for i, h in enumerate(headers))


@pytest.mark.parametrize(
    ("shentsize", "shnum", "count"),
    [(0, 0, 1 << 40), (64, 0, 1 << 40), (64, 0xFFFF, 0), (1, 3, 0), (64, 0, 0)],
)
@pytest.mark.parametrize("reader", sorted(READERS))
def test_crafted_section_table_is_a_quick_typed_error(
    old_progs: dict[str, Path], reader: str, shentsize: int, shnum: int, count: int
) -> None:
    bad = _crafted(old_progs["kconfig"].read_bytes(), shentsize, shnum, count)
    # a guard against a hang, not a speed target: walking 2**40 entries would never end
    previous = signal.signal(signal.SIGALRM, _walked_the_table)
    signal.setitimer(signal.ITIMER_REAL, 30)
    try:
        with pytest.raises(ParseError):
            READERS[reader](bad)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _walked_the_table(signum: int, frame: object) -> None:
    raise AssertionError("the reader walked the claimed section table")
