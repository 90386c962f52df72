"""weak_bpf.files.compression: round trips through the real programs, both the module and
program paths, bounds, trailing data, and corrupt input."""

from __future__ import annotations

import contextlib
import functools
import random
import shutil
import subprocess
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weak_bpf.errors import DecompressError
from weak_bpf.files import compression
from weak_bpf.files.compression import Format, decompress, detect, maybe_decompress

from conftest import require_tool

# format -> the command that makes it
COMPRESSORS = {
    Format.GZIP: ["gzip", "-c"],
    Format.XZ: ["xz", "-c"],
    Format.LZMA: ["xz", "--format=lzma", "-c"],
    Format.BZIP2: ["bzip2", "-c"],
    Format.LZ4_LEGACY: ["lz4", "-l", "-c"],
    Format.LZ4: ["lz4", "-c"],
    Format.ZSTD: ["zstd", "-q", "-c"],
}
EXTRA_VARIANTS = [  # other header layouts of the frame formats
    (Format.LZ4, ["lz4", "-c", "--content-size", "-BX", "-B4"]),
    (Format.LZ4, ["lz4", "-c", "--no-frame-crc"]),
    (Format.ZSTD, ["zstd", "-q", "-c", "--no-check", "-19"]),
    (Format.ZSTD, ["zstd", "-q", "-c", "--no-content-size", "-1"]),
]
PROGRAM_FORMATS = (Format.LZ4, Format.LZ4_LEGACY, Format.ZSTD)


def payload(size: int, seed: int = 1) -> bytes:
    """Text-like data that compresses, with some noise."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghij_0123456789") for _ in range(8)) for _ in range(500)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + (b"\n" if rng.random() < 0.1 else b"\t")
    return bytes(out[:size])


def compress(argv: list[str], data: bytes) -> bytes:
    require_tool(argv[0])
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def data() -> bytes:
    return payload(300_000)


@pytest.fixture(scope="module")
def samples(data: bytes) -> dict[Format, bytes]:
    return {fmt: compress(argv, data) for fmt, argv in COMPRESSORS.items()}


@pytest.mark.parametrize("fmt", list(Format), ids=lambda f: f.value)
def test_round_trip(fmt: Format, data: bytes, samples: dict[Format, bytes]) -> None:
    packed = samples[fmt]
    assert detect(packed) is fmt
    assert decompress(packed, "x") == data
    assert maybe_decompress(packed) == data


@pytest.mark.parametrize("fmt", PROGRAM_FORMATS, ids=lambda f: f.value)
def test_program_fallback(fmt: Format, data: bytes, samples: dict[Format, bytes]) -> None:
    assert decompress(samples[fmt], use_modules=False) == data


@pytest.mark.parametrize(("fmt", "argv"), EXTRA_VARIANTS, ids=str)
def test_frame_variants(fmt: Format, argv: list[str], data: bytes) -> None:
    packed = compress(argv, data)
    assert detect(packed) is fmt
    assert decompress(packed) == data
    assert decompress(packed, use_modules=False) == data
    assert decompress(packed + b"tail", strict=False, use_modules=False) == data


def test_lz4_legacy_many_blocks() -> None:
    """Legacy streams are cut in 8 MiB blocks; the kernel appends the vmlinux size after them."""
    big = payload(17 << 20, seed=2)
    packed = compress(["lz4", "-l", "-c"], big)
    with_size = packed + len(big).to_bytes(4, "little")
    for use_modules in (True, False):
        assert decompress(with_size, strict=False, use_modules=use_modules) == big
    with pytest.raises(DecompressError, match="trailing"):
        decompress(with_size)


@pytest.mark.parametrize("fmt", list(Format), ids=lambda f: f.value)
def test_trailing_data(fmt: Format, data: bytes, samples: dict[Format, bytes]) -> None:
    packed = samples[fmt] + b"\x01\x02\x03garbage"
    with pytest.raises(DecompressError, match="trailing") as info:
        decompress(packed, "file.z")
    assert info.value.source == "file.z"
    assert info.value.offset == len(samples[fmt])
    assert decompress(packed, strict=False) == data
    assert decompress(samples[fmt] + b"\0" * 16) == data  # zero padding is fine


@pytest.mark.parametrize("fmt", [Format.GZIP, Format.XZ, Format.BZIP2, Format.ZSTD, Format.LZ4])
def test_concatenated_streams(fmt: Format) -> None:
    one, two = payload(5000, 3), payload(7000, 4)
    argv = COMPRESSORS[fmt]
    assert decompress(compress(argv, one) + compress(argv, two)) == one + two


@pytest.mark.parametrize("fmt", list(Format), ids=lambda f: f.value)
def test_bomb_is_bounded(fmt: Format) -> None:
    zeros = compress(COMPRESSORS[fmt], b"\0" * (8 << 20))
    with pytest.raises(DecompressError, match="more than"):
        decompress(zeros, max_size=1 << 20)
    if fmt in PROGRAM_FORMATS:
        with pytest.raises(DecompressError, match="more than"):
            decompress(zeros, max_size=1 << 20, use_modules=False)


@pytest.mark.parametrize("fmt", list(Format), ids=lambda f: f.value)
def test_bomb_memory_is_bounded(fmt: Format) -> None:
    """Refusing a bomb costs a few MiB (a decoder's window, one 8 MiB lz4 legacy block), never what
    the bomb unpacks to: zstandard's decompressobj() had no output limit and took all 32 MiB."""
    zeros = compress(COMPRESSORS[fmt], bytes(32 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(DecompressError, match="more than"):
            decompress(zeros, max_size=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"{peak >> 20} MiB"


def test_missing_program_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, samples: dict[Format, bytes]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DecompressError) as info:
        decompress(samples[Format.ZSTD], "symvers.zst", use_modules=False)
    assert "zstandard" in str(info.value) and "zstd program" in str(info.value)
    assert info.value.hint is not None and "python3-zstandard" in info.value.hint
    with pytest.raises(DecompressError) as info:
        decompress(samples[Format.LZ4_LEGACY], use_modules=False)
    assert info.value.hint is not None and "lz4" in info.value.hint


def test_missing_module_falls_back(
    monkeypatch: pytest.MonkeyPatch, data: bytes, samples: dict[Format, bytes]
) -> None:
    monkeypatch.setattr(compression, "_module", lambda name: None)
    for fmt in PROGRAM_FORMATS:
        assert decompress(samples[fmt]) == data


def test_plain_and_unknown() -> None:
    assert maybe_decompress(b"0x1234\tfoo\tvmlinux\tEXPORT_SYMBOL\n").startswith(b"0x1234")
    with pytest.raises(DecompressError, match="unknown compression"):
        decompress(b"plain text")
    with pytest.raises(DecompressError):
        decompress(b"")


@pytest.mark.parametrize("fmt", list(Format), ids=lambda f: f.value)
def test_truncated(fmt: Format, samples: dict[Format, bytes]) -> None:
    packed = samples[fmt]
    for cut in (len(packed) // 2, len(packed) - 1, 12):
        with pytest.raises(DecompressError):
            decompress(packed[:cut])


@settings(max_examples=300, deadline=None)
@given(
    fmt=st.sampled_from(list(Format)),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
    cut=st.integers(0, 20_000),
)
def test_corrupt_streams_module_path(fmt: Format, flips: list[tuple[int, int]], cut: int) -> None:
    corrupt = bytearray(small_sample(fmt))
    for pos, xor in flips:
        corrupt[pos % len(corrupt)] ^= xor
    try:
        out = decompress(bytes(corrupt[: max(cut, 4)]), max_size=1 << 22)
    except DecompressError:
        return
    assert len(out) <= 1 << 22


@settings(max_examples=40, deadline=None)
@given(
    fmt=st.sampled_from(PROGRAM_FORMATS),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=3),
)
def test_corrupt_streams_program_path(fmt: Format, flips: list[tuple[int, int]]) -> None:
    corrupt = bytearray(small_sample(fmt))
    for pos, xor in flips:
        corrupt[pos % len(corrupt)] ^= xor
    with contextlib.suppress(DecompressError):
        decompress(bytes(corrupt), max_size=1 << 22, use_modules=False)


@functools.cache
def small_sample(fmt: Format) -> bytes:
    return compress(COMPRESSORS[fmt], payload(20_000, 5))
