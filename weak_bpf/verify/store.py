"""Verify outcomes in the cache (`var/cache/weak-bpf-progs/verify/`), one entry per (object
content, kernel image content): a second `verify`, and every `audit` after one, boots nothing.

A boot that failed is never kept (the next `verify` tries again). Entries are written through
weak_bpf.kernel.cache, and so through weak_bpf.apply.writer; a bad entry counts as absent.
"""

from __future__ import annotations

import json
from pathlib import Path

from weak_bpf.engine.verified import Verification
from weak_bpf.kernel.cache import Cache, content_key, file_key

FORMAT = "verify 1"  # bump when what a boot reports, or how, changes


def digest(path: Path) -> str:
    """The content key of an object or a kernel image."""
    return file_key(path)


def _name(object_key: str, image_key: str) -> str:
    return f"verify/{image_key[:16]}/{content_key(FORMAT, object_key, image_key)}.json"


def get(cache: Cache, object_key: str, image_key: str) -> Verification | None:
    doc = cache.get_json(_name(object_key, image_key))
    if not isinstance(doc, dict):
        return None
    try:
        return Verification.from_json(doc)
    except (KeyError, ValueError, TypeError):
        return None


def put(cache: Cache, object_key: str, image_key: str, outcome: Verification) -> None:
    if outcome.failure is None:
        cache.put(_name(object_key, image_key), json.dumps(outcome.to_json()).encode())
