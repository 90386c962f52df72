"""The initramfs of a verify boot, built in memory from what the host has: a cpio "newc" archive
holding busybox, the loader and the libraries each links, the kernel's config, the modules the
objects need (dependencies first) and the objects."""

from __future__ import annotations

import gzip
import re
import stat
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from weak_bpf.errors import WeakBpfError
from weak_bpf.kernel import load as kernel_data
from weak_bpf.kernel.find import module_name

# A cpio entry: (path in the archive, mode with its file type bits, content, rdev major:minor).
CpioEntry = tuple[str, int, bytes, tuple[int, int]]


class InitramfsError(WeakBpfError):
    """A file the initramfs needs cannot be read, or a module cannot be found."""


def module_order(
    modules: Sequence[Path], modules_dep: Path | None, wanted: Iterable[str]
) -> list[tuple[str, Path]]:
    """[(module, file)] for `wanted` and what they depend on, dependencies first: as
    modules.dep orders them when K has one, else by each module's modinfo `depends=`."""
    index = {module_name(ko.name): ko for ko in sorted(modules)}
    deps: dict[str, list[str]] = {}
    try:
        if modules_dep is not None:
            listed = kernel_data.load_modules_dep(modules_dep)
            deps = {module_name(k): [module_name(d) for d in v] for k, v in listed.items()}
        ordered: list[str] = []

        def depends(name: str) -> list[str]:
            if name in deps:
                return list(reversed(deps[name]))  # modprobe inserts the last one first
            return [module_name(d) for d in kernel_data.load_module_depends(index[name])]

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in ordered or name in path:
                return  # a cycle cannot load anyway; insmod will say so
            if name not in index:
                raise InitramfsError(f"module {name} is not among the kernel's modules")
            for dep in depends(name):
                visit(dep, (*path, name))
            ordered.append(name)

        for name in wanted:
            visit(module_name(name), ())
    except InitramfsError:
        raise
    except WeakBpfError as e:
        raise InitramfsError(str(e)) from None
    return [(name, index[name]) for name in ordered]


def shared_objects(binary: Path) -> list[Path]:
    """The libraries `binary` links and the dynamic loader, as ldd lists them (none if static)."""
    try:
        proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    except OSError as e:
        raise InitramfsError(f"cannot run ldd on {binary}: {e.strerror}") from None
    if proc.returncode != 0:
        if "not a dynamic executable" in proc.stdout + proc.stderr:
            return []
        raise InitramfsError(f"ldd {binary} failed: {proc.stderr.strip()}")
    paths = []
    for line in proc.stdout.splitlines():
        found = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if found:
            paths.append(Path(found.group(1)))
    return paths


def files(
    *,
    script: str,
    programs: Mapping[str, Path],
    objects: Mapping[str, bytes],
    modules: Sequence[tuple[str, Path]],
    config: tuple[str, Path] | None,
) -> list[CpioEntry]:
    """The archive's entries. `programs`: guest path -> host binary (busybox must be
    bin/busybox), each with its libraries; `objects`: name -> bytes, in /objects/<name>.o."""
    content: dict[str, tuple[int, bytes]] = {"init": (0o755, script.encode())}

    def read(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as e:
            raise InitramfsError(f"{path}: cannot read: {e.strerror}") from None

    def kernel_file(load: Callable[[Path], bytes], path: Path) -> bytes:
        try:
            return load(path)
        except WeakBpfError as e:
            raise InitramfsError(str(e)) from None

    for guest, host in programs.items():
        content[guest] = (0o755, read(host))
        for lib in shared_objects(host):
            content[str(lib).lstrip("/")] = (0o755, read(lib))  # read_bytes follows symlinks
    for name, data in objects.items():
        content[f"objects/{name}.o"] = (0o644, data)
    for module, ko in modules:
        content[f"modules/{module}.ko"] = (0o644, kernel_file(kernel_data.load_module_bytes, ko))
    if config is not None:
        content[config[0]] = (0o644, kernel_file(kernel_data.load_config_bytes, config[1]))

    dirs = {"proc", "sys", "dev", "tmp", "usr/sbin", "bin"}
    for member in content:
        parent = Path(member).parent
        while str(parent) != ".":
            dirs.add(str(parent))
            parent = parent.parent
    entries: list[CpioEntry] = []
    # parents sort before their children; the kernel needs /dev/console before /init runs
    for directory in sorted(dirs):
        entries.append((directory, stat.S_IFDIR | 0o755, b"", (0, 0)))
    entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
    for member, (mode, data) in sorted(content.items()):
        entries.append((member, stat.S_IFREG | mode, data, (0, 0)))
    return entries


def cpio_newc(entries: Sequence[CpioEntry]) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks, owned by root, mtime 0."""
    out = bytearray()

    def add(name: str, mode: int, data: bytes, rdev: tuple[int, int], ino: int) -> None:
        name_bytes = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_bytes), 0)
        out.extend(b"070701" + b"".join(b"%08X" % field for field in fields))
        out.extend(name_bytes)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        add(name, mode, data, rdev, ino)
    add("TRAILER!!!", 0, b"", (0, 0), 0)
    return bytes(out)


def archive(entries: Sequence[CpioEntry]) -> bytes:
    """The gzip-compressed archive qemu passes as the initrd."""
    return gzip.compress(cpio_newc(entries), compresslevel=1, mtime=0)
