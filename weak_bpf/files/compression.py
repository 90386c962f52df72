"""Decompress kernel artifacts: gzip, xz, lzma, bzip2 (stdlib), lz4 and zstd (module or program).

The format is found by its magic, never by a file name. Output is bounded by `max_size`, so a
compression bomb ends with a DecompressError instead of eating memory. lz4 and zstd use the `lz4` /
`zstandard` Python modules when they are importable, else the `lz4` / `zstd` programs (stdin to
stdout); this module is the one reader that may spawn a process.

The decoding itself is always the library's or the program's. What is done here: the bound (the
stdlib's one-shot gzip/lzma/bz2.decompress() have none, so their decoder objects are fed with
`max_length`), and the walk of the containers (lz4 legacy blocks, lz4 and zstd frame layouts) so
that the exact end of each stream is known: concatenated streams are joined, and bytes after the
last stream are an error unless `strict=False` (a vmlinuz appends the uncompressed size after its
payload). The programs need that walk (they must be given one stream), lz4's frame API cannot
read the legacy format at all, and zstandard's bounded reader does not report a frame cut short.
See "Own code or a distribution package" in docs/decisions.md.
"""

from __future__ import annotations

import bz2
import enum
import importlib
import io
import lzma
import os
import shutil
import struct
import subprocess
import threading
import zlib
from typing import Any, Callable

from weak_bpf.errors import DecompressError

DEFAULT_MAX_SIZE = 1 << 30  # 1 GiB: more than any vmlinux or symvers
_CHUNK = 4096  # input fed per step, so that the output can be checked against max_size
_LZ4_LEGACY_BLOCK = 8 << 20  # every legacy block but the last unpacks to exactly this
_LZ4_LEGACY_BOUND = _LZ4_LEGACY_BLOCK + _LZ4_LEGACY_BLOCK // 255 + 16  # LZ4_compressBound


# What a decoder may allocate for its dictionary or window, whatever a header claims: the kernel's
# own xz and zstd streams need far less.
DECODER_MEMORY = 256 << 20


class Format(str, enum.Enum):
    GZIP = "gzip"
    XZ = "xz"
    LZMA = "lzma"  # the legacy .lzma ("lzma_alone") container
    BZIP2 = "bzip2"
    LZ4 = "lz4"  # the lz4 frame format
    LZ4_LEGACY = "lz4-legacy"  # `lz4 -l`, used by the kernel for vmlinuz
    ZSTD = "zstd"

    @property
    def magic(self) -> bytes:
        return _MAGICS[self]

    def matches(self, data: bytes, pos: int = 0) -> bool:
        """Whether a stream of this format starts at data[pos]."""
        if not data.startswith(self.magic, pos):
            return False
        if self is Format.BZIP2:
            # "BZh" + block size digit + a block magic or the end-of-stream magic
            level = data[pos + 3 : pos + 4]
            tail = data[pos + 4 : pos + 10]
            return level in b"123456789" and len(level) == 1 and tail in _BZIP2_NEXT
        if self is Format.LZMA:
            # properties byte 0x5d, then a dictionary size that is a power of two (kernel: 2^n MiB)
            dict_size = data[pos + 1 : pos + 5]
            if len(dict_size) < 4:
                return False
            size = int.from_bytes(dict_size, "little")
            return size >= 4096 and size & (size - 1) == 0
        return True


_MAGICS = {
    Format.GZIP: b"\x1f\x8b\x08",
    Format.XZ: b"\xfd7zXZ\x00",
    Format.LZMA: b"\x5d",
    Format.BZIP2: b"BZh",
    Format.LZ4: b"\x04\x22\x4d\x18",
    Format.LZ4_LEGACY: b"\x02\x21\x4c\x18",
    Format.ZSTD: b"\x28\xb5\x2f\xfd",
}
_BZIP2_NEXT = (b"1AY&SY", b"\x17\x72\x45\x38\x50\x90")

_INSTALL_HINT = {
    Format.LZ4: "install python3-lz4 (dnf/apt-get install python3-lz4) or the lz4 program",
    Format.ZSTD: (
        "install python3-zstandard (dnf install python3-zstandard / "
        "apt-get install python3-zstandard) or the zstd program"
    ),
}
_PROGRAMS = {
    Format.LZ4: ["lz4", "-d", "-c"],
    Format.LZ4_LEGACY: ["lz4", "-d", "-c"],
    Format.ZSTD: ["zstd", "-d", "-c", "-q"],
}


def size_text(size: int) -> str:
    """A byte count as people read it: 1 GiB, 64 MiB, 4096 bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def detect(data: bytes, pos: int = 0) -> Format | None:
    """The format whose stream starts at data[pos], or None."""
    for fmt in Format:
        if fmt.matches(data, pos):
            return fmt
    return None


def decompress(
    data: bytes,
    source: str | None = None,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    strict: bool = True,
    use_modules: bool = True,
) -> bytes:
    """Unpack `data`, whose format is found by magic.

    Concatenated streams of the same format are joined, as `gzip -d` does. `strict=False` ignores
    trailing bytes after the last stream. `use_modules=False` forces the lz4/zstd programs (tests).
    """
    data = bytes(data)
    fmt = detect(data)
    if fmt is None:
        raise DecompressError(
            "unknown compression format (no known magic)", source=source, offset=0
        )
    out: list[bytes] = []
    total = 0
    pos = 0
    while True:
        chunk, end = _one_stream(
            fmt, data, pos, source=source, max_size=max_size - total, use_modules=use_modules
        )
        out.append(chunk)
        total += len(chunk)
        pos = end
        rest = data[pos:]
        if not rest or not rest.strip(b"\0"):
            break  # the end, or zero padding (xz and the kernel pad streams)
        if not fmt.matches(data, pos):
            if strict:
                raise DecompressError(
                    f"{len(rest)} bytes of trailing data after the {fmt.value} stream",
                    source=source,
                    offset=pos,
                )
            break
    return out[0] if len(out) == 1 else b"".join(out)  # a vmlinux is 50 MB: no second copy


def maybe_decompress(
    data: bytes,
    source: str | None = None,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    use_modules: bool = True,
) -> bytes:
    """`data` unpacked if it starts with a known magic, else unchanged (a plain file)."""
    if detect(data) is None:
        if len(data) > max_size:
            raise DecompressError(f"larger than {size_text(max_size)}", source=source)
        return bytes(data)
    return decompress(data, source, max_size=max_size, use_modules=use_modules)


# --- one stream: returns (output, offset just past the stream) ------------------------------------


def _one_stream(
    fmt: Format, data: bytes, pos: int, *, source: str | None, max_size: int, use_modules: bool
) -> tuple[bytes, int]:
    try:
        if fmt is Format.GZIP:
            return _zlib_stream(zlib.decompressobj(16 + zlib.MAX_WBITS), data, pos, max_size)
        if fmt is Format.XZ:
            decoder = lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=DECODER_MEMORY)
            return _lzma_like_stream(decoder, data, pos, max_size)
        if fmt is Format.LZMA:
            decoder = lzma.LZMADecompressor(lzma.FORMAT_ALONE, memlimit=DECODER_MEMORY)
            return _lzma_like_stream(decoder, data, pos, max_size)
        if fmt is Format.BZIP2:
            return _lzma_like_stream(bz2.BZ2Decompressor(), data, pos, max_size)
        if fmt is Format.LZ4_LEGACY:
            end = _lz4_legacy_end(data, pos)
            if use_modules and _module("lz4.block") is not None:
                return _lz4_legacy_module(data, pos, end, max_size), end
        elif fmt is Format.LZ4:
            end = _lz4_frame_end(data, pos)
            if use_modules and _module("lz4.frame") is not None:
                return _lz4_frame_module(data[pos:end], max_size), end
        else:
            end = _zstd_frame_end(data, pos)
            if use_modules and _module("zstandard") is not None:
                return _zstd_module(data[pos:end], max_size), end
    except _TooLarge:
        raise DecompressError(
            f"{fmt.value} data unpacks to more than {size_text(max_size)}",
            source=source,
            offset=pos,
        ) from None
    except _Truncated as e:
        raise DecompressError(
            f"truncated or corrupt {fmt.value} data: {e}", source=source, offset=pos
        ) from None
    except MemoryError:
        raise DecompressError(
            f"{fmt.value} data needs more memory to unpack than allowed", source=source, offset=pos
        ) from None
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError, RuntimeError) as e:
        # lz4 and zstandard raise RuntimeError / their own subclasses of it or of ValueError
        raise DecompressError(f"corrupt {fmt.value} data: {e}", source=source, offset=pos) from None
    except _library_errors() as e:  # lz4.block.LZ4BlockError, zstandard.ZstdError, ...
        raise DecompressError(f"corrupt {fmt.value} data: {e}", source=source, offset=pos) from None
    return _program(fmt, data[pos:end], source, pos, max_size), end


def _library_errors() -> tuple[type[BaseException], ...]:
    """The error types of the optional lz4 and zstandard modules that are installed."""
    errors: list[type[BaseException]] = []
    for module, name in (("lz4.block", "LZ4BlockError"), ("zstandard", "ZstdError")):
        found = getattr(_module(module), name, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            errors.append(found)
    return tuple(errors)


class _TooLarge(Exception):
    pass


class _Truncated(Exception):
    pass


def _module(name: str) -> Any:
    """The module `name` when importable (lz4 and zstandard are optional), else None."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _lzma_like_stream(
    decoder: lzma.LZMADecompressor | bz2.BZ2Decompressor, data: bytes, pos: int, max_size: int
) -> tuple[bytes, int]:
    out: list[bytes] = []
    total = 0
    feed = pos
    while not decoder.eof:
        piece = b""
        if decoder.needs_input:
            if feed >= len(data):
                raise _Truncated("the stream ends early")
            piece = data[feed : feed + _CHUNK]
            feed += len(piece)
        got = decoder.decompress(piece, max_length=max_size - total + 1)
        total += len(got)
        if total > max_size:
            raise _TooLarge
        out.append(got)
    return b"".join(out), feed - len(decoder.unused_data)


def _zlib_stream(decoder: Any, data: bytes, pos: int, max_size: int) -> tuple[bytes, int]:
    out: list[bytes] = []
    total = 0
    feed = pos
    while not decoder.eof:
        piece = decoder.unconsumed_tail
        if not piece:
            if feed >= len(data):
                raise _Truncated("the stream ends early")
            piece = data[feed : feed + _CHUNK]
            feed += len(piece)
        got = decoder.decompress(piece, max_size - total + 1)
        total += len(got)
        if total > max_size:
            raise _TooLarge
        out.append(got)
    return b"".join(out), feed - len(decoder.unconsumed_tail) - len(decoder.unused_data)


def _lz4_legacy_end(data: bytes, pos: int) -> int:
    """The end of a legacy lz4 stream: blocks of <le32 size><data> until EOF, a magic or a size
    that no block can have (the kernel appends the vmlinux size after the stream)."""
    p = pos + 4
    while p + 4 <= len(data):
        (size,) = struct.unpack_from("<I", data, p)
        if size == 0 or size > _LZ4_LEGACY_BOUND or len(data) - p == 4:
            break  # the last 4 bytes of a kernel payload are the unpacked size, not a block
        if p + 4 + size > len(data):
            raise _Truncated(f"block at {p:#x} of {size} bytes runs past the end")
        p += 4 + size
    return p


def _lz4_legacy_module(data: bytes, pos: int, end: int, max_size: int) -> bytes:
    lz4_block: Any = _module("lz4.block")
    out: list[bytes] = []
    total = 0
    p = pos + 4
    while p < end:
        (size,) = struct.unpack_from("<I", data, p)
        block = lz4_block.decompress(
            data[p + 4 : p + 4 + size], uncompressed_size=_LZ4_LEGACY_BLOCK
        )
        total += len(block)
        if total > max_size:
            raise _TooLarge
        out.append(block)
        p += 4 + size
    return b"".join(out)


def _lz4_frame_end(data: bytes, pos: int) -> int:
    """The end of one lz4 frame, walked from its header (FLG, BD, sizes, blocks, checksums)."""
    try:
        flg = data[pos + 4]
        if flg >> 6 != 1:
            raise _Truncated(f"unsupported lz4 frame version {flg >> 6}")
        p = pos + 6 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0) + 1  # + header checksum
        block_checksum = 4 if flg & 0x10 else 0
        while True:
            (size,) = struct.unpack_from("<I", data, p)
            p += 4
            if size == 0:
                break  # end mark
            p += (size & 0x7FFFFFFF) + block_checksum
            if p > len(data):
                raise _Truncated("a block runs past the end")
        p += 4 if flg & 0x04 else 0  # content checksum
    except (IndexError, struct.error):
        raise _Truncated("the frame ends early") from None
    if p > len(data):
        raise _Truncated("the content checksum is missing")
    return p


def _lz4_frame_module(frame: bytes, max_size: int) -> bytes:
    lz4_frame: Any = _module("lz4.frame")
    d = lz4_frame.LZ4FrameDecompressor()
    out: list[bytes] = []
    total = 0
    view = memoryview(frame)
    for start in range(0, len(frame), _CHUNK):
        out.append(
            d.decompress(bytes(view[start : start + _CHUNK]), max_length=max_size - total + 1)
        )
        total += len(out[-1])
        while not d.needs_input and not d.eof and total <= max_size:
            out.append(d.decompress(b"", max_length=max_size - total + 1))
            total += len(out[-1])
        if total > max_size:
            raise _TooLarge
    if not d.eof:
        raise _Truncated("the frame ends early")
    return b"".join(out)


def _zstd_frame_end(data: bytes, pos: int) -> int:
    """The end of one zstd frame, walked from its header and 3-byte block headers."""
    try:
        fhd = data[pos + 4]
        if fhd & 0x08:
            raise _Truncated("reserved bit set in the frame header")
        single = fhd & 0x20
        fcs_size = (0, 2, 4, 8)[fhd >> 6] or (1 if single else 0)
        did_size = (0, 1, 2, 4)[fhd & 0x03]
        p = pos + 5 + (0 if single else 1) + did_size + fcs_size
        while True:
            header = int.from_bytes(data[p : p + 3], "little")
            if p + 3 > len(data):
                raise _Truncated("a block header is missing")
            p += 3
            block_type = (header >> 1) & 3
            if block_type == 3:
                raise _Truncated(f"reserved block type at {p - 3:#x}")
            p += 1 if block_type == 1 else header >> 3
            if header & 1:
                break
            if p > len(data):
                raise _Truncated("a block runs past the end")
        p += 4 if fhd & 0x04 else 0
    except IndexError:
        raise _Truncated("the frame ends early") from None
    if p > len(data):
        raise _Truncated("the frame ends early")
    return p


def _zstd_module(frame: bytes, max_size: int) -> bytes:
    """One whole frame (checked by _zstd_frame_end) through python3-zstandard.

    read_to_iter() hands the output over in chunks of at most 128 KiB, so the bound holds
    (decompressobj() has no output limit: 4 KiB of a bomb gave 126 MiB at once). It ends quietly
    on a frame cut short, which is why the frame is walked first.
    """
    zstandard: Any = _module("zstandard")
    decoder = zstandard.ZstdDecompressor(max_window_size=DECODER_MEMORY)
    out: list[bytes] = []
    total = 0
    for piece in decoder.read_to_iter(frame):
        total += len(piece)
        if total > max_size:
            raise _TooLarge
        out.append(piece)
    return b"".join(out)


# --- the program fallback ------------------------------------------------------------------------


def _program(fmt: Format, stream: bytes, source: str | None, offset: int, max_size: int) -> bytes:
    argv = _PROGRAMS[fmt]
    exe = shutil.which(argv[0])
    kind = Format.ZSTD if fmt is Format.ZSTD else Format.LZ4
    module = "zstandard" if kind is Format.ZSTD else "lz4"
    if exe is None:
        raise DecompressError(
            f"cannot unpack {fmt.value}: neither the Python module {module} "
            f"nor the {argv[0]} program is installed",
            source=source,
            offset=offset,
            hint=_INSTALL_HINT[kind],
        )
    out, err, rc = _run_bounded([exe, *argv[1:]], stream, max_size)
    if rc is None:
        raise DecompressError(
            f"{fmt.value} data unpacks to more than {size_text(max_size)}",
            source=source,
            offset=offset,
        )
    if rc != 0:
        msg = err.decode("utf-8", "replace").strip().splitlines()
        raise DecompressError(
            f"{argv[0]} failed (exit {rc}): {msg[-1] if msg else 'no message'}",
            source=source,
            offset=offset,
        )
    return out


def _run_bounded(argv: list[str], stdin: bytes, max_size: int) -> tuple[bytes, bytes, int | None]:
    """Run a filter; kill it once it writes more than max_size. rc None means it was killed."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    errors: list[bytes] = []

    def feed() -> None:
        try:
            proc.stdin.write(stdin)  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError, OSError):
            pass

    def drain_stderr() -> None:
        errors.append(proc.stderr.read(1 << 16))  # type: ignore[union-attr]

    threads = [
        threading.Thread(target=feed, daemon=True),
        threading.Thread(target=drain_stderr, daemon=True),
    ]
    for t in threads:
        t.start()
    buf = io.BytesIO()
    killed = False
    while True:
        piece = os.read(proc.stdout.fileno(), 1 << 20)
        if not piece:
            break
        buf.write(piece)
        if buf.tell() > max_size:
            proc.kill()
            killed = True
            break
    proc.stdout.close()
    rc = proc.wait()
    for t in threads:
        t.join(timeout=5)
    proc.stderr.close()
    return buf.getvalue(), b"".join(errors), None if killed else rc


Decompress = Callable[..., bytes]
"""The type of `decompress`, for parsers that take it as a parameter."""
