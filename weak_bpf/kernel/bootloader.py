"""Which kernel boots by default, read from the boot loader's files under a root (never run).

Two sources, both built on Boot Loader Specification entries (`loader/entries/*.conf`):
GRUB's environment block (`saved_entry=<entry id>`, as grubby writes it) and systemd-boot's
`loader.conf` (`default <glob>`). Anything else, or anything ambiguous, is "unknown"."""

from __future__ import annotations

import fnmatch
from pathlib import Path, PurePosixPath

from weak_bpf.files.paths import resolve_in_root

# where an ESP or /boot holding loader/ may be mounted
_LOADER_DIRS = ("boot/loader", "efi/loader", "boot/efi/loader")
_GRUBENV = ("boot/grub2/grubenv", "boot/grub/grubenv")
_MAX_FILE = 64 * 1024  # entries, grubenv (1 KiB) and loader.conf are small


def _read_text(root: Path, relative: str) -> str | None:
    path = resolve_in_root(root, relative)
    if path is None or not path.is_file():
        return None
    try:
        with path.open("rb") as f:
            return f.read(_MAX_FILE).decode("utf-8", errors="replace")
    except OSError:
        return None


def _entry_kernel(text: str) -> str | None:
    """The kernel release a BLS entry boots: its `version`, else its `linux` image's name."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and not key.startswith("#"):
            fields.setdefault(key, value.strip())
    if fields.get("version"):
        return fields["version"]
    image = PurePosixPath(fields.get("linux", "")).name
    if image.startswith("vmlinuz-") and len(image) > len("vmlinuz-"):
        return image[len("vmlinuz-") :]
    return None


def bls_entries(root: Path) -> dict[str, str]:
    """{entry id (file name without .conf): kernel release} for every readable BLS entry."""
    entries: dict[str, str] = {}
    for loader in _LOADER_DIRS:
        directory = resolve_in_root(root, f"{loader}/entries")
        if directory is None or not directory.is_dir():
            continue
        for conf in sorted(directory.glob("*.conf")):
            text = _read_text(root, f"{loader}/entries/{conf.name}")
            kver = _entry_kernel(text) if text is not None else None
            if kver is not None:
                entries.setdefault(conf.name[: -len(".conf")], kver)
    return entries


def _grub_saved_entry(root: Path) -> str | None:
    for name in _GRUBENV:
        text = _read_text(root, name)
        if text is None:
            continue
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "saved_entry" and value.strip():
                return value.strip()
    return None


def _systemd_boot_pattern(root: Path) -> str | None:
    for loader in _LOADER_DIRS:
        text = _read_text(root, f"{loader}/loader.conf")
        if text is None:
            continue
        for line in text.splitlines():
            key, _, value = line.strip().partition(" ")
            if key == "default" and value.strip():
                return value.strip()
    return None


def default_kernel(root: Path) -> str | None:
    """The kernel release that boots by default, or None when the files do not say."""
    entries = bls_entries(root)
    if not entries:
        return None
    saved = _grub_saved_entry(root)
    if saved is not None:
        return entries.get(saved)
    pattern = _systemd_boot_pattern(root)
    if pattern is None or pattern.startswith("@"):  # @saved etc. live in EFI variables
        return None
    # systemd-boot's entry ids keep the .conf suffix; accept patterns written either way
    kvers = {
        kver
        for entry, kver in entries.items()
        if fnmatch.fnmatchcase(entry, pattern) or fnmatch.fnmatchcase(f"{entry}.conf", pattern)
    }
    return kvers.pop() if len(kvers) == 1 else None
