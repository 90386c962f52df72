"""Kernel version ordering by rpm's rules (rpmvercmp and labelCompare), in pure Python.

A kernel release such as "5.14.0-427.el9.x86_64" or "6.1.0-47-cloud-amd64" is split at its first
"-" into an rpm version and release, and compared as rpm's labelCompare compares (epoch, version,
release). Nothing else is read into a version: it is an ordering key.

python3-rpm's `rpm.labelCompare` is not used even where it is installed: kernels must be ordered
on hosts without it (Debian), one rule everywhere beats two that should agree, and it refuses an
empty version ("-1.x") with ValueError where this order is total. The tests check that the two
agree.
"""

from __future__ import annotations

import functools
from typing import Any


def _is_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def _skip_separators(s: str, i: int) -> int:
    """Skip characters that only separate segments (everything but ASCII alnum, "~" and "^")."""
    while i < len(s) and not _is_alnum(s[i]) and s[i] not in "~^":
        i += 1
    return i


def _segment(s: str, i: int, digits: bool) -> int:
    """The end of the run of digits (or of ASCII letters) that starts at s[i]."""
    while i < len(s) and s[i].isascii() and (s[i].isdigit() if digits else s[i].isalpha()):
        i += 1
    return i


def rpmvercmp(a: str, b: str) -> int:
    """-1, 0 or 1 as version `a` sorts before, with or after `b`, by rpm's rules.

    Segments are runs of digits (compared as numbers) or letters (compared as strings); other
    characters separate them. "~" sorts before anything, even the end ("1.0~rc1" < "1.0"); "^"
    sorts after the end but before anything else ("1.0" < "1.0^git1" < "1.0.1"). A numeric
    segment beats an alphabetic one.
    """
    if a == b:
        return 0
    i = j = 0
    while i < len(a) or j < len(b):
        i = _skip_separators(a, i)
        j = _skip_separators(b, j)
        ca = a[i] if i < len(a) else ""
        cb = b[j] if j < len(b) else ""
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not ca or not cb:
            break
        digits = ca.isdigit()
        end_a = _segment(a, i, digits)
        end_b = _segment(b, j, digits)
        if end_b == j:
            # b has a segment of the other kind here: numbers sort after letters
            return 1 if digits else -1
        seg_a, seg_b = a[i:end_a], b[j:end_b]
        if digits:
            seg_a, seg_b = seg_a.lstrip("0"), seg_b.lstrip("0")
            if len(seg_a) != len(seg_b):
                return 1 if len(seg_a) > len(seg_b) else -1
        if seg_a != seg_b:
            return 1 if seg_a > seg_b else -1
        i, j = end_a, end_b
    rest_a, rest_b = i < len(a), j < len(b)
    if not rest_a and not rest_b:
        return 0
    return 1 if rest_a else -1


def split_kernel_release(kver: str) -> tuple[str, str, str]:
    """(epoch, version, release) of a kernel release string: the version ends at the first "-"."""
    version, _, release = kver.partition("-")
    return "0", version, release


def label_compare(a: tuple[str, str, str], b: tuple[str, str, str]) -> int:
    """rpm's labelCompare on (epoch, version, release) tuples, in pure Python."""
    for x, y in zip(a, b):
        result = rpmvercmp(x or "", y or "")
        if result:
            return result
    return 0


def compare_kernel_releases(a: str, b: str) -> int:
    """-1, 0 or 1: the order of two kernel release strings by rpm's rules."""
    return label_compare(split_kernel_release(a), split_kernel_release(b))


_key = functools.cmp_to_key(compare_kernel_releases)


def kernel_sort_key(kver: str) -> Any:
    """A sort key: sorted(kvers, key=kernel_sort_key) puts the oldest first."""
    return _key(kver)
