"""The configuration: `etc/weak-bpf-progs.conf` and `etc/weak-bpf-progs.conf.d/*.conf` (INI).

    [main]
    link_unstable = yes     # link compatible-unstable programs (default yes)
    lock_timeout = 60       # seconds a run waits for another to finish (default 60)

    [kernel 5.14.0-427.el9.x86_64]
    kabi_stablelist = /usr/lib/modules/kabi-rhel94/kabi_stablelist_x86_64

Drop-ins are read in name order after the main file; a later value wins. `parse_config` is pure;
`load_config` reads the files under a root.
"""

from __future__ import annotations

import configparser
import dataclasses
from collections.abc import Iterable
from pathlib import Path

from weak_bpf.errors import FormatError

MAIN = "etc/weak-bpf-progs.conf"
DROP_INS = "etc/weak-bpf-progs.conf.d"
_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}


@dataclasses.dataclass(frozen=True)
class Config:
    link_unstable: bool = True
    lock_timeout: float = 60.0
    kabi_overrides: tuple[tuple[str, str], ...] = ()  # (kernel, stablelist path under the root)

    def kabi_override(self, kver: str) -> str | None:
        return dict(self.kabi_overrides).get(kver)


def _bool(value: str, where: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise FormatError(f"{where}: expected yes or no, not {value!r}")


def parse_config(sources: Iterable[tuple[str, str]]) -> Config:
    """`sources`: (name, text) pairs in the order they are read. Raises FormatError."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    for name, text in sources:
        try:
            parser.read_string(text, source=name)
        except configparser.Error as e:
            raise FormatError(str(e).splitlines()[0], source=name) from None
    link_unstable, lock_timeout, overrides = True, 60.0, []
    for section in parser.sections():
        values = parser[section]
        if section == "main":
            for key, value in values.items():
                if key == "link_unstable":
                    link_unstable = _bool(value, "link_unstable")
                elif key == "lock_timeout":
                    try:
                        lock_timeout = float(value)
                    except ValueError:
                        raise FormatError(f"lock_timeout: not a number: {value!r}") from None
                else:
                    raise FormatError(f"[main]: unknown option {key!r}")
        elif section.startswith("kernel "):
            kver = section[len("kernel ") :].strip()
            for key, value in values.items():
                if key != "kabi_stablelist":
                    raise FormatError(f"[{section}]: unknown option {key!r}")
                overrides.append((kver, value.strip().lstrip("/")))
        else:
            raise FormatError(f"unknown section [{section}]")
    return Config(link_unstable, lock_timeout, tuple(overrides))


def load_config(root: Path) -> Config:
    """Read the configuration under `root` (absent files are fine). Raises FormatError."""
    paths = [root / MAIN]
    drop_ins = root / DROP_INS
    if drop_ins.is_dir():
        paths += sorted(p for p in drop_ins.iterdir() if p.name.endswith(".conf"))
    sources = []
    for path in paths:
        try:
            sources.append((str(path.relative_to(root)), path.read_text(errors="replace")))
        except FileNotFoundError:
            continue
        except OSError as e:
            raise FormatError(f"cannot read: {e.strerror}", source=str(path)) from None
    return parse_config(sources)
