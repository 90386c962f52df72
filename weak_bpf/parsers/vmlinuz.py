"""The ELF vmlinux inside a kernel image (vmlinuz), for its `.BTF` section.

Accepted: an ELF vmlinux as is; an x86 bzImage (the setup header says where the payload is); an
EFI zboot image (arm64/riscv `vmlinuz.efi`, "zimg" header); else any image that holds a compressed
ELF, found by scanning for compression magics (arm64 Image.gz, s390x, ...).

Decompression is injected (`decompress=`, usually weak_bpf.compression.decompress, which may run
the lz4/zstd programs), so that this module stays pure.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable

from weak_bpf.errors import DecompressError, ELFError, ParseError

if TYPE_CHECKING:
    Decompress = Callable[..., bytes]

ELF_MAGIC = b"\x7fELF"
DEFAULT_MAX_SIZE = 1 << 30

# x86 boot protocol (Documentation/arch/x86/boot.rst): offsets into the setup header
_SETUP_SECTS = 0x1F1
_HDRS = 0x202
_VERSION = 0x206
_PAYLOAD_OFFSET = 0x248  # u32, from the start of the protected-mode code; protocol >= 2.08
_PAYLOAD_LENGTH = 0x24C

# EFI zboot (drivers/firmware/efi/libstub/zboot-header.S): "MZ", then "zimg" at 4
_ZIMG_MAGIC = b"zimg"

# Stream magics tried by the scan, and how many candidates to try before giving up.
_SCAN_MAGICS = (
    b"\x1f\x8b\x08",  # gzip
    b"\xfd7zXZ\x00",  # xz
    b"\x5d\x00\x00",  # lzma (legacy .lzma, as the kernel writes it)
    b"BZh",  # bzip2
    b"\x02\x21\x4c\x18",  # lz4 legacy
    b"\x04\x22\x4d\x18",  # lz4 frame
    b"\x28\xb5\x2f\xfd",  # zstd
)
_MAX_CANDIDATES = 64


def vmlinux_from_vmlinuz(
    data: bytes,
    source: str | None = None,
    *,
    decompress: Decompress,
    max_size: int = DEFAULT_MAX_SIZE,
) -> bytes:
    """The ELF vmlinux held by `data` (a vmlinuz, or already a vmlinux).

    `decompress(data, source, *, max_size, strict)` unpacks one compressed payload; strict=False
    must ignore bytes after the stream. Raises ELFError when no vmlinux is found, and the
    decompressor's DecompressError when the payload cannot be unpacked (e.g. no zstd program).
    """
    data = bytes(data)
    if data.startswith(ELF_MAGIC):
        return data
    payload = _bzimage_payload(data, source)
    if payload is None:
        payload = _zboot_payload(data, source)
    if payload is not None:
        start, end = payload
        if data.startswith(ELF_MAGIC, start):
            return data[start:end]  # an uncompressed payload
        vmlinux = decompress(data[start:end], source, max_size=max_size, strict=False)
        if not vmlinux.startswith(ELF_MAGIC):
            raise ELFError(
                "the kernel image's payload does not unpack to an ELF vmlinux",
                source=source,
                offset=start,
            )
        return vmlinux
    return _scan(data, source, decompress, max_size)


def _bzimage_payload(data: bytes, source: str | None) -> tuple[int, int] | None:
    """(start, end) of the compressed kernel in an x86 bzImage, or None if not a bzImage."""
    if len(data) < _PAYLOAD_LENGTH + 4 or data[_HDRS : _HDRS + 4] != b"HdrS":
        return None
    (version,) = struct.unpack_from("<H", data, _VERSION)
    if version < 0x208:
        return None  # no payload fields before boot protocol 2.08: scan instead
    setup_sects = data[_SETUP_SECTS] or 4  # 0 means 4, for old boot loaders
    offset, length = struct.unpack_from("<II", data, _PAYLOAD_OFFSET)
    start = (setup_sects + 1) * 512 + offset
    end = start + length
    if length == 0 or end > len(data):
        raise ELFError(
            f"bzImage payload [{start:#x}, {end:#x}) lies outside the file ({len(data)} bytes)",
            source=source,
            offset=_PAYLOAD_OFFSET,
        )
    return start, end


def _zboot_payload(data: bytes, source: str | None) -> tuple[int, int] | None:
    """(start, end) of the compressed kernel in an EFI zboot image, or None."""
    if len(data) < 16 or not data.startswith(b"MZ") or data[4:8] != _ZIMG_MAGIC:
        return None
    start, length = struct.unpack_from("<II", data, 8)
    end = start + length
    if length == 0 or end > len(data):
        raise ELFError(
            f"zboot payload [{start:#x}, {end:#x}) lies outside the file ({len(data)} bytes)",
            source=source,
            offset=8,
        )
    return start, end


def _scan(data: bytes, source: str | None, decompress: Decompress, max_size: int) -> bytes:
    """Try every compression magic in file order; the first stream that unpacks to ELF wins."""
    candidates: list[int] = []
    for magic in _SCAN_MAGICS:
        pos = data.find(magic)
        while pos >= 0 and len(candidates) < _MAX_CANDIDATES * len(_SCAN_MAGICS):
            candidates.append(pos)
            pos = data.find(magic, pos + 1)
    missing_tool: DecompressError | None = None
    for pos in sorted(candidates)[:_MAX_CANDIDATES]:
        try:
            vmlinux = decompress(data[pos:], source, max_size=max_size, strict=False)
        except DecompressError as e:
            if e.hint is not None and missing_tool is None:
                missing_tool = e  # a missing lz4/zstd: report it if nothing else works
            continue
        except ParseError:
            continue
        if vmlinux.startswith(ELF_MAGIC):
            return vmlinux
    if missing_tool is not None:
        raise missing_tool
    raise ELFError(
        "no ELF vmlinux found: neither an ELF file, a bzImage, a zboot image, "
        "nor a compressed ELF inside",
        source=source,
        offset=0,
    )
