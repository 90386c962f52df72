"""Typed errors. Library code raises these; only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class WeakBpfError(Exception):
    """Base class. `hint` tells the user what to do next."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ParseError(WeakBpfError):
    """Input that cannot be read: where (source, offset) and what is wrong."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        offset: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.source = source
        self.offset = offset

    def __str__(self) -> str:
        where = self.source or "<input>"
        if self.offset is not None:
            where += f" at offset {self.offset:#x}"
        return f"{where}: {self.message}"

    def located(self, source: str) -> ParseError:
        """The same error, naming `source` if it named nothing yet."""
        if self.source is None:
            self.source = source
        return self


class BTFError(ParseError):
    """Bad BTF or .BTF.ext data."""


class ELFError(ParseError):
    """A bad ELF file, or not a BPF object."""


class FormatError(ParseError):
    """A bad text artifact: symvers, greylist, kABI list, System.map, config."""


class DecompressError(ParseError):
    """Compressed data that cannot be unpacked, or a missing decompressor."""


class KernelNotFound(WeakBpfError):
    """A kernel version that is not installed under the root."""


class ApplyError(WeakBpfError):
    """A plan that could not be applied (disk, permissions, a weak-updates we did not make)."""


class LockTimeout(ApplyError):
    """Another run held the lock for longer than the configured timeout."""
