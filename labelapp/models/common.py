"""Hashes, size limits and defaults shared by the models, the API and import_data."""

from __future__ import annotations

import hashlib
import json


def content_hash(value: object) -> str:
    """SHA-256 of a canonical JSON encoding (stable across key order)."""
    data = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Size limits of one prompt and one text, the same for the API's serializers and for
# import_data: one answer to "how long may a response be".
MAX_MESSAGES = 200
MAX_TEXT_CHARS = 200_000


DEFAULT_PAIR_MIX = {
    "best_vs_runner_up": 0.4,
    "best_vs_random": 0.2,
    "closest": 0.2,
    "random": 0.2,
}


def default_pair_mix() -> dict[str, float]:
    return dict(DEFAULT_PAIR_MIX)


def default_selection_strategy() -> str | dict[str, float]:
    """The queue's order before issue 17: random (within priority)."""
    return "random"
