"""Verify outcomes in the cache (`var/cache/weak-bpf-progs/verify/`), one entry per object content
and boot (K's image and config, by content). An entry names the modules inserted for the object,
by content too, and holds only while they are unchanged. A second `verify`, and every `audit`
after one, boots nothing.

An entry also names the loader (its protocol and libbpf's version) that produced it: `verify`
boots again when the loader changed, while an audit keeps reading what the last one found.
Content keys are found through an index by each file's inode, size and modification time, which
`verify` writes: an audit hashes nothing, and a file changed since the last `verify` (a new
inode, size or time) simply has no outcome. A boot that failed is never kept (the next `verify`
tries again). Entries are written through weak_bpf.kernel.cache, and so through
weak_bpf.apply.writer; a bad entry counts as absent.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path

from weak_bpf.engine.verified import Verification
from weak_bpf.kernel.cache import Cache, content_key, file_key

FORMAT = "verify 2"  # bump when what a boot reports, or how, changes
INDEX = "verify/index.json"


class Keys:
    """Content keys of files, looked up by their stat in the index a `verify` wrote; with
    `hashing`, a file missing from it is hashed (and added when `save` is called)."""

    def __init__(self, cache: Cache, *, hashing: bool) -> None:
        self.cache = cache
        self.hashing = hashing
        doc = cache.get_json(INDEX)
        self.index: dict[str, str] = doc if isinstance(doc, dict) else {}
        self.added = False

    def of(self, path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        stamp = f"{path}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}"
        key = self.index.get(stamp)
        if key is None and self.hashing:
            try:
                key = self.index[stamp] = file_key(path)
            except OSError:
                return None
            self.added = True
        return key if isinstance(key, str) else None

    def save(self) -> None:
        if self.added:
            self.cache.put(INDEX, json.dumps(self.index, sort_keys=True).encode())
            self.added = False


def boot_key(image: str, config: str | None) -> str:
    """The key of what a boot runs: K's image and config (libbpf reads `__kconfig` in it)."""
    return content_key(FORMAT, image, config or "-")


@dataclasses.dataclass(frozen=True)
class Entry:
    outcome: Verification
    loader: str  # the "@loader" line of the loader that produced it
    modules: dict[str, str]  # module -> content key: those the guest inserted for it

    def current(self, keys: Keys, files: Mapping[str, Path]) -> bool:
        """Every module it was verified with is still there, with the same content."""
        return all(keys.of(files.get(m)) == key for m, key in self.modules.items())


def _name(object_key: str, boot: str) -> str:
    return f"verify/{boot[:16]}/{content_key(object_key, boot)}.json"


def get(cache: Cache, object_key: str, boot: str) -> Entry | None:
    doc = cache.get_json(_name(object_key, boot))
    if not isinstance(doc, dict):
        return None
    try:
        loader, modules = doc["loader"], doc["modules"]
        if not isinstance(loader, str) or not isinstance(modules, dict):
            raise TypeError("loader")
        return Entry(Verification.from_json(doc["outcome"]), loader, modules)
    except (KeyError, ValueError, TypeError):
        return None


def put(cache: Cache, object_key: str, boot: str, entry: Entry) -> None:
    if entry.outcome.failure is None:
        doc = {"loader": entry.loader, "modules": entry.modules, "outcome": entry.outcome.to_json()}
        cache.put(_name(object_key, boot), json.dumps(doc).encode())


def has_boot(cache: Cache, boot: str) -> bool:
    return (cache.dir / "verify" / boot[:16]).is_dir()
