"""The configuration: `etc/weak-bpf-progs.conf` and `etc/weak-bpf-progs.conf.d/*.conf` (INI).

    [main]
    link_unstable = yes     # link compatible-unstable programs (default yes)
    link_partial = yes      # link compatible-partial programs (default yes)
    lock_timeout = 60       # seconds a run waits for another to finish (default 60)
    verify_timeout = 120    # seconds one kernel's VM may take under `verify` (default 120)
    verify_in_daemon = no   # let weak-bpf-progsd verify new kernels in a VM (default no)
    daemon_max_reads = 8    # Audit and Explain calls weak-bpf-progsd answers at once (default 8)

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
    link_partial: bool = True
    verify_timeout: float = 120.0
    verify_in_daemon: bool = False
    daemon_max_reads: int = 8

    def kabi_override(self, kver: str) -> str | None:
        return dict(self.kabi_overrides).get(kver)


_HINT = (
    "this run ignores the whole configuration and uses the defaults (link_unstable = yes, "
    "link_partial = yes, lock_timeout = 60, verify_timeout = 120, verify_in_daemon = no, "
    "daemon_max_reads = 8); fix the file, see weak-bpf-progs.conf(5)"
)


_BOOLS = ("link_unstable", "link_partial", "verify_in_daemon")
_SECONDS = ("lock_timeout", "verify_timeout")


def _seconds(value: str) -> float:
    seconds = float(value)
    if not seconds >= 0 or seconds == float("inf"):  # NaN too
        raise ValueError(value)
    return seconds


def _bool(value: str, where: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{where} = {value!r}: expected yes or no")


def _count(value: str, where: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{where} = {value!r}: expected a whole number, 1 or more")
    return number


def _apply(name: str, text: str, values: dict[str, object]) -> None:
    """Read one file into `values`; its errors name it. Raises FormatError."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))

    def bad(message: str) -> FormatError:
        return FormatError(message, source=name, hint=_HINT)

    try:
        parser.read_string(text, source=name)
    except configparser.Error as e:
        raise bad(str(e).splitlines()[0]) from None
    overrides = values.setdefault("kabi_overrides", {})
    assert isinstance(overrides, dict)
    for section in parser.sections():
        if section == "main":
            for key, value in parser[section].items():
                try:
                    if key in _BOOLS:
                        values[key] = _bool(value, f"[main] {key}")
                    elif key in _SECONDS:
                        values[key] = _seconds(value)
                    elif key == "daemon_max_reads":
                        values[key] = _count(value, f"[main] {key}")
                    else:
                        known = ", ".join((*_BOOLS, *_SECONDS, "daemon_max_reads"))
                        raise bad(f"[main]: unknown option {key!r} (known: {known})")
                except ValueError as e:
                    if key not in _SECONDS:
                        raise bad(str(e)) from None
                    raise bad(f"[main] {key} = {value!r}: not a number of seconds") from None
        elif section.startswith("kernel "):
            kver = section[len("kernel ") :].strip()
            for key, value in parser[section].items():
                if key != "kabi_stablelist":
                    raise bad(f"[{section}]: unknown option {key!r} (it takes kabi_stablelist)")
                overrides[kver] = value.strip().lstrip("/")
        else:
            raise bad(f"unknown section [{section}] (known: [main], [kernel K])")


def parse_config(sources: Iterable[tuple[str, str]]) -> Config:
    """`sources`: (name, text) pairs in the order they are read; a later value wins.
    Raises FormatError naming the file at fault."""
    values: dict[str, object] = {}
    for name, text in sources:
        _apply(name, text, values)
    overrides = values.get("kabi_overrides") or {}
    assert isinstance(overrides, dict)
    return Config(
        bool(values.get("link_unstable", True)),
        float(values.get("lock_timeout", 60.0)),  # type: ignore[arg-type]
        tuple(sorted(overrides.items())),
        bool(values.get("link_partial", True)),
        float(values.get("verify_timeout", 120.0)),  # type: ignore[arg-type]
        bool(values.get("verify_in_daemon", False)),
        int(values.get("daemon_max_reads", 8)),  # type: ignore[call-overload]
    )


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
