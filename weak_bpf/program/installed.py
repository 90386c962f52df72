"""Installed BPF programs under the root (SPEC §2), and what each one is read as. Reads only.

- CO-RE programs: `usr/lib/bpf/<pkg>/<name>.bpf.o`;
- native programs, built for kernel K: `usr/lib/modules/K/bpf/extra/<pkg>/<name>.bpf.o`.

`<pkg>/<name>.bpf.o` (the *link name*) is where a kernel's weak-updates link for it goes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from weak_bpf.errors import ParseError
from weak_bpf.files import compression
from weak_bpf.files.paths import module_dirs, resolve_in_root
from weak_bpf.files.read import mapped, read_file
from weak_bpf.parsers.greylist import Greylist, parse_greylist
from weak_bpf.versions import kernel_sort_key

if TYPE_CHECKING:
    from weak_bpf.parsers.objvalues import BpfObject

SUFFIX = ".bpf.o"
CORE_DIR = "usr/lib/bpf"
MAX_OBJECT_SIZE = 64 << 20
MAX_GREYLIST_SIZE = 4 << 20


@dataclasses.dataclass(frozen=True)
class InstalledProgram:
    path: str  # relative to the root, e.g. "usr/lib/bpf/acme/lb.bpf.o"
    link_name: str  # "<pkg>/<name>.bpf.o"
    native_kernel: str | None  # K for usr/lib/modules/K/bpf/extra/..., else None

    @property
    def package_dir(self) -> str:
        return self.link_name.split("/", 1)[0] if "/" in self.link_name else ""


@dataclasses.dataclass(frozen=True)
class LoadedProgram:
    """An installed program as read: the object and its greylist, or why it could not be."""

    program: InstalledProgram
    obj: BpfObject | None
    greylist: Greylist | None
    error: str | None = None  # set when the object or its greylist is malformed
    # a hash of what its verdicts depend on (object and greylist bytes, the kernel it was built
    # for): identical objects under other paths or packages share their results
    digest: str | None = None

    @property
    def build_kernel(self) -> str | None:
        if self.program.native_kernel is not None:
            return self.program.native_kernel
        return self.greylist.build_kernel if self.greylist is not None else None


def _objects_below(root: Path, top: str) -> Iterator[str]:
    """Relative paths of the *.bpf.o regular files below root/top, not following links out."""
    base = resolve_in_root(root, top)
    if base is None or not base.is_dir():
        return
    found: list[str] = []
    pending = [""]
    while pending:  # never descends into linked directories
        rel_dir = pending.pop()
        try:
            entries = list(os.scandir(os.path.join(base, rel_dir)))
        except OSError:
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_dir(follow_symlinks=False):
                pending.append(rel)
            elif not entry.name.endswith(SUFFIX):
                continue
            elif entry.is_file(follow_symlinks=False):
                found.append(rel)
            elif entry.is_symlink():
                target = resolve_in_root(root, f"{top}/{rel}")
                if target is not None and target.is_file():
                    found.append(rel)
    yield from sorted(found)


def installed_programs(root: Path) -> tuple[InstalledProgram, ...]:
    """Every installed program: CO-RE ones first, then native ones by kernel."""
    programs = [
        InstalledProgram(f"{CORE_DIR}/{rel}", rel, None) for rel in _objects_below(root, CORE_DIR)
    ]
    native: dict[str, list[InstalledProgram]] = {}
    for mods in module_dirs(root):
        base = resolve_in_root(root, mods)
        if base is None:
            continue
        for kver in sorted(os.listdir(base)):
            extra = f"{mods}/{kver}/bpf/extra"
            for rel in _objects_below(root, extra):
                native.setdefault(kver, []).append(InstalledProgram(f"{extra}/{rel}", rel, kver))
    for kver in sorted(native, key=kernel_sort_key):
        programs.extend(native[kver])
    return tuple(programs)


def program_for_path(root: Path, path: Path) -> InstalledProgram | None:
    """The installed program at `path` (absolute, or relative to the root), if it is one."""
    absolute = path if path.is_absolute() else root / path
    try:
        rel = str(absolute.relative_to(root))
    except ValueError:
        return None
    return next((p for p in installed_programs(root) if p.path == rel), None)


def load_program(
    root: Path, program: InstalledProgram, *, seen: Mapping[str, BpfObject] | None = None
) -> LoadedProgram:
    """Read the object and its greylist (sidecar `<object>.greylist`, else the `.greylist`
    section); a malformed one is reported in `error`, never raised. `seen`: objects read before,
    by digest, that an identical object is taken from instead of being read again."""
    source = program.path
    try:
        target = resolve_in_root(root, program.path)
        if target is None:
            why = (
                "a link leads out of the root" if os.path.lexists(root / source) else "no such file"
            )
            raise ParseError(why, source=source)
        obj = _read_object(target, source, seen)
        digest = hashlib.sha256(obj.digest.encode())
        digest.update(b"\0" + (program.native_kernel or "").encode("utf-8", "surrogateescape"))
    except ParseError as e:
        return LoadedProgram(program, None, None, str(e.located(source)))
    greylist_source = sidecar_greylist(program.path)
    try:
        sidecar = find_sidecar_greylist(root, program.path)
        if sidecar is not None:
            raw = read_file(sidecar, max_size=MAX_GREYLIST_SIZE)
            digest.update(b"\0greylist\0" + raw)
            greylist = parse_greylist(raw, greylist_source)
        elif obj.greylist is not None:
            greylist = parse_greylist(obj.greylist, f"{source} (.greylist section)")
        else:
            greylist = None
    except ParseError as e:
        return LoadedProgram(program, obj, None, str(e))
    return LoadedProgram(program, obj, greylist, digest=digest.hexdigest())


def _read_object(path: Path, source: str, seen: Mapping[str, BpfObject] | None) -> BpfObject:
    """The object at `path`, mapped so that its DWARF (most of its bytes) is never read; a
    compressed one is unpacked first."""
    from weak_bpf.parsers.bpfobject import read_bpf_object  # a warm run reads no object

    with mapped(path, max_size=MAX_OBJECT_SIZE) as data:
        head = bytes(data[:16])  # enough for every compression magic
        if compression.detect(head) is not None:
            raw = compression.maybe_decompress(bytes(data), str(path), max_size=MAX_OBJECT_SIZE)
            return read_bpf_object(raw, source, seen=seen)
        if len(data) > MAX_OBJECT_SIZE:
            raise ParseError(
                f"larger than {compression.size_text(MAX_OBJECT_SIZE)}, the most it reads",
                source=str(path),
            )
        return read_bpf_object(data, source, seen=seen)


def loose_program(path: Path) -> LoadedProgram:
    """An object that is not installed (a packager's build output), read the same way."""
    absolute = path.absolute()
    program = InstalledProgram(str(absolute), path.name, None)
    return load_program(Path("/"), program)


def sidecar_greylist(object_path: str) -> str:
    """Where a package ships an object's greylist: beside it, as OBJECT.greylist (SPEC §2)."""
    return f"{object_path}.greylist"


def find_sidecar_greylist(root: Path, object_path: str) -> Path | None:
    """The greylist shipped beside the object at `object_path` (below `root`), looked up as in a
    chroot; None if there is none. The one lookup of a sidecar greylist: `audit` and the
    resolver read it, `inspect` names it. Raises ParseError when the name is taken by something
    that is not a readable file."""
    name = sidecar_greylist(object_path)
    found = resolve_in_root(root, name)
    if os.path.lexists(root / name) and (found is None or not found.is_file()):
        raise ParseError(
            "the greylist is not a readable file (a dangling link, a link out of the root, or "
            "a directory)",
            source=name,
        )
    return found


def object_path(root: Path, path: Path) -> Path:
    """Where OBJECT is: an absolute path as given; a relative one under the root if it is there,
    else relative to the current directory."""
    if path.is_absolute():
        return path
    under_root = root / path
    return under_root if under_root.exists() else path


def greylist_beside(root: Path, path: Path) -> str | None:
    """OBJECT.greylist, the greylist a package ships next to OBJECT, as shown to users (with the
    reason when it cannot be read); None if there is none. It wins over a .greylist section in
    the object. An object outside the root is looked up from /, as a loose program is read."""
    where = os.path.abspath(object_path(root, path))
    top = os.path.abspath(root)
    inside = where.startswith(top.rstrip("/") + "/")
    base, rel = (Path(top), where[len(top.rstrip("/")) + 1 :]) if inside else (Path("/"), where)
    try:
        found = find_sidecar_greylist(base, rel)
    except ParseError as e:
        return str(e)
    return None if found is None else sidecar_greylist(rel)
