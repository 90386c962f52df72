"""Reading a file: bounded in size, unpacked when compressed, or mapped where a file is large and a
few of its parts are wanted. Unreadable files are ParseErrors that name the file."""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from weak_bpf.errors import ParseError
from weak_bpf.files import compression
from weak_bpf.parsers.elf import Buffer

MAX_FILE_SIZE = 1 << 30  # a vmlinux with its debug info


def read_file(path: Path, *, max_size: int = MAX_FILE_SIZE) -> bytes:
    """The bytes of `path`, unpacked when compressed. Unreadable files are ParseErrors."""
    try:
        with open(path, "rb") as f:
            data = _read_at_most(f, path, max_size)
    except OSError as e:
        raise ParseError(f"cannot read: {e.strerror or e}", source=str(path)) from None
    return compression.maybe_decompress(data, str(path), max_size=max_size)


def _read_at_most(f: BinaryIO, path: Path, max_size: int) -> bytes:
    """An open file's bytes, or a ParseError when it holds more than `max_size`."""
    data = f.read(max_size + 1)
    if len(data) > max_size:
        raise ParseError(
            f"larger than {compression.size_text(max_size)}, the most it reads", source=str(path)
        )
    return data


@contextlib.contextmanager
def mapped(path: Path, *, max_size: int = MAX_FILE_SIZE) -> Iterator[Buffer]:
    """The file's bytes, mapped rather than read where the file allows it: a debuginfo vmlinux is
    600 MB, of which a few sections are wanted. Files that cannot be mapped (sysfs, procfs) are
    read, up to `max_size`."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; an open error must be a ParseError)
    except OSError as e:
        raise ParseError(f"cannot read: {e.strerror or e}", source=str(path)) from None
    with f:
        view = None
        with contextlib.suppress(OSError, ValueError):  # empty, or a file with no pages
            view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if view is None:
            try:
                data = _read_at_most(f, path, max_size)
            except OSError as e:
                raise ParseError(f"cannot read: {e.strerror or e}", source=str(path)) from None
            yield data
            return
        shown = memoryview(view)
        try:
            yield shown
        finally:
            # views the caller still holds keep the mapping open until they go
            with contextlib.suppress(BufferError):
                shown.release()
                view.close()
