"""A read-only file interface over bytes, for pyelftools (parsers do no I/O, so no `io`)."""

from __future__ import annotations


class ByteStream:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, len(self._data))[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._pos + size
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk
