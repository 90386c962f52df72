"""What weak-bpf-progsd knows between calls (weak_bpf/daemon/rootstate.py), on a root written by
the real writer: the Audit cache and when it is dropped, the runs it announces, the listings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from weak_bpf.apply import writer
from weak_bpf.daemon import rootstate
from weak_bpf.daemon.rootstate import RootState

OLD, NEW = "6.1.0-47-cloud-amd64", "6.1.0-56-cloud-amd64"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for kver in (OLD, NEW):
        modules = tmp_path / "usr/lib/modules" / kver
        modules.mkdir(parents=True)
        (modules / "modules.dep").touch()
        (modules / "vmlinuz").write_bytes(b"an image")
    (tmp_path / "usr/lib/bpf/acme").mkdir(parents=True)
    (tmp_path / "usr/lib/bpf/acme/a.bpf.o").write_bytes(b"\x7fELF")
    return tmp_path


def report(root: Path, kver: str, action: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"kernel": kver, "action": action, "summary": action, "programs": []}
    writer.write_report(root, kver, json.dumps(doc).encode())
    return doc


def test_the_audit_cache_lasts_until_a_run(root: Path) -> None:
    state = RootState(root)
    assert state.news() is None
    generation = state.generation
    state.keep_audit((), "all", generation)
    state.keep_audit((OLD,), "old", generation)
    assert (state.audit(()), state.audit((OLD,)), state.audit((NEW,))) == ("all", "old", None)
    doc = report(root, NEW, "add-kernel")  # another run: the CLI, a hook
    writer.bump_stamp(root)
    news = state.news()
    assert news is not None and news.resolved == [(NEW, doc)] and news.properties == {}
    assert state.audit(()) is None and state.generation == generation + 1
    state.keep_audit((), "computed before the run", generation)  # too late: not kept
    assert state.audit(()) is None
    assert state.news() is None  # told once


def test_our_own_run_is_announced_at_its_end(root: Path) -> None:
    state = RootState(root)
    state.changing = True
    ours = report(root, NEW, "add-kernel")
    writer.bump_stamp(root)
    assert state.news() is None, "the run's end tells"
    theirs = report(root, OLD, "add-progs")  # a run that ended before ours took the lock
    state.changing = False
    news = state.news({NEW: {**ours, "programs": ["as the run answered"]}})
    assert news is not None
    assert news.resolved == [(OLD, theirs), (NEW, {**ours, "programs": ["as the run answered"]})]


def test_listings_are_reused_for_a_moment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = RootState(root)
    assert state.listing("Kernels") == [OLD, NEW]
    assert state.listing("Programs") == ["usr/lib/bpf/acme/a.bpf.o"]
    (root / "usr/lib/bpf/acme/b.bpf.o").write_bytes(b"\x7fELF")
    assert state.listing("Programs") == ["usr/lib/bpf/acme/a.bpf.o"]  # within LISTING_TTL
    monkeypatch.setattr(rootstate, "LISTING_TTL", 0.0)
    assert state.listing("Programs") == ["usr/lib/bpf/acme/a.bpf.o", "usr/lib/bpf/acme/b.bpf.o"]
    writer.bump_stamp(root)  # add-progs ran
    news = state.news()
    assert news is not None and news.resolved == []
    assert news.properties == {"Programs": ["usr/lib/bpf/acme/a.bpf.o", "usr/lib/bpf/acme/b.bpf.o"]}


def test_the_audit_cache_is_bounded(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootstate, "AUDIT_CACHE_BYTES", 10)
    state = RootState(root)
    state.keep_audit((OLD,), "4444", 0)
    state.keep_audit((NEW,), "4444", 0)
    assert state.audit((OLD,)) == "4444"  # now the most recently used
    state.keep_audit((), "4444", 0)
    assert (state.audit((OLD,)), state.audit((NEW,)), state.audit(())) == ("4444", None, "4444")
    state.keep_audit((OLD, NEW), "x" * 11, 0)  # bigger than the whole cache: not kept
    assert state.audit((OLD, NEW)) is None
    assert (state.audit((OLD,)), state.audit(())) == ("4444", "4444")
