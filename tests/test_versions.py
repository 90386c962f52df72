"""weak_bpf.versions: the pure rpmvercmp agrees with rpm's own labelCompare."""

from __future__ import annotations

import itertools
import random

import pytest

from weak_bpf.versions import compare_kernel_releases, kernel_sort_key, rpmvercmp

from conftest import require

try:
    import rpm
except ImportError:  # checked by require() in the tests that need it
    rpm = None

TABLE = [  # (a, b, expected sign)
    ("1.0", "1.0", 0),
    ("1.0", "2.0", -1),
    ("2.0.1", "2.0", 1),
    ("1.0~rc1", "1.0", -1),
    ("1.0~rc1", "1.0~rc2", -1),
    ("1.0~~", "1.0~", -1),
    ("1.0^git1", "1.0", 1),
    ("1.0^git1", "1.0.1", -1),
    ("1.0^git1~pre", "1.0^git1", -1),
    ("1.0a", "1.0", 1),
    ("1.0a", "1.0.1", -1),  # letters sort before numbers
    ("1.010", "1.9", 1),
    ("1.001", "1.1", 0),
    ("1_0", "1.0", 0),  # separators are all the same
    ("6.1.0+", "6.1.0", 0),
    ("6.1.0+1", "6.1.0", 1),
    ("5.14.0-427.el9", "5.14.0-70.13.1.el9_0", 1),
]
KERNELS_IN_ORDER = [
    "4.18.0-80.el8.x86_64",
    "5.14.0-70.13.1.el9_0.x86_64",
    "5.14.0-427.el9.x86_64",
    "5.14.0-427.13.1.el9_4.x86_64",
    "6.1.0-47-cloud-amd64",
    "6.1.0-56-cloud-amd64",
    "6.1.0-56-cloud-amd64+1",
    "6.10.0-0.rc1.fc41.x86_64",
    "6.10.0-1.fc41.x86_64",
]


def sign(x: int) -> int:
    return (x > 0) - (x < 0)


@pytest.mark.parametrize(("a", "b", "expected"), TABLE)
def test_table(a: str, b: str, expected: int) -> None:
    if "-" in a:
        assert compare_kernel_releases(a, b) == expected
    else:
        assert rpmvercmp(a, b) == expected
        assert rpmvercmp(b, a) == -expected


def test_kernel_order() -> None:
    shuffled = KERNELS_IN_ORDER[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=kernel_sort_key) == KERNELS_IN_ORDER


def rpm_label_compare(a: str, b: str) -> int:
    return int(rpm.labelCompare(("0", a, ""), ("0", b, "")))


def test_agrees_with_rpm_on_table() -> None:
    require(rpm is not None, "python3-rpm is not installed")
    versions = sorted({v for a, b, _ in TABLE for v in (a, b) if "-" not in v})
    for a, b in itertools.product(versions, versions):
        assert rpmvercmp(a, b) == rpm_label_compare(a, b), (a, b)


def test_agrees_with_rpm_on_kernels() -> None:
    require(rpm is not None, "python3-rpm is not installed")
    for a, b in itertools.product(KERNELS_IN_ORDER, KERNELS_IN_ORDER):
        va, _, ra = a.partition("-")
        vb, _, rb = b.partition("-")
        expected = sign(rpm.labelCompare(("0", va, ra), ("0", vb, rb)))
        assert compare_kernel_releases(a, b) == expected, (a, b)


def test_agrees_with_rpm_on_random_versions() -> None:
    require(rpm is not None, "python3-rpm is not installed")
    rng = random.Random(1)
    alphabet = "019a.Z~^+_"
    compared = 0
    for _ in range(5000):
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
        try:
            expected = rpm_label_compare(a, b)
        except ValueError:  # rpm refuses some strings as versions
            continue
        compared += 1
        assert rpmvercmp(a, b) == expected, (a, b)
    assert compared > 4000


def test_an_empty_version_is_ordered_where_rpm_refuses_it() -> None:
    """Why rpm.labelCompare is not used where installed (docs/decisions.md): it refuses an empty
    version with ValueError; this order is total, an empty version first."""
    assert compare_kernel_releases("-1.x", "6.1.0-47-cloud-amd64") == -1
    assert compare_kernel_releases("", "") == 0
    require(rpm is not None, "python3-rpm is not installed")
    with pytest.raises(ValueError):
        rpm.labelCompare(("0", "", "1.x"), ("0", "6.1.0", "47-cloud-amd64"))
