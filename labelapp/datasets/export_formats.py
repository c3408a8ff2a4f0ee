"""What an export can be and how its rows are written: kinds, formats, options,
Arrow schemas and the JSONL / Parquet writers. No database access here."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings

from labelapp.errors import ValidationFailed

Kind = Literal["preferences", "sft", "labels"]
Format = Literal["jsonl", "parquet"]
KINDS: tuple[str, ...] = ("preferences", "sft", "labels")
FORMATS: tuple[str, ...] = ("jsonl", "parquet")
ProgressFn = Callable[[float, str], None]


@dataclass
class ExportOptions:
    """What to export and how. ``from_mapping`` accepts the JSON params of a Job."""

    format: str = "jsonl"
    # Conversations (TRL's conversational format) or plain strings.
    messages: bool = True
    # Preferences: keep pairs whose label agreement is at least this (0..1).
    min_agreement: float | None = None
    # Preferences: keep pairs with at least this many non-rejected labels.
    min_labels: int = 1
    # Labels: annotator usernames instead of stable pseudonyms.
    reveal_annotators: bool = False
    # SFT: only these round numbers (all rounds when empty).
    rounds: list[int] = field(default_factory=list)
    # Parent folder of the export folder; ARTIFACTS_DIR/exports when unset.
    out_dir: str | None = None
    chunk_size: int = 2000
    # Recorded in the card as the generating command (the CLI fills it in).
    command: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ExportOptions:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValidationFailed(
                f"unknown export options: {', '.join(sorted(unknown))}"
            )
        return cls(**dict(data))

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise ValidationFailed(f"format must be one of {', '.join(FORMATS)}")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise ValidationFailed("min_agreement must be between 0 and 1")
        if self.min_labels < 1:
            raise ValidationFailed("min_labels must be at least 1")
        if self.chunk_size < 1:
            raise ValidationFailed("chunk_size must be at least 1")


class _Writer(Protocol):
    def write(self, rows: list[dict[str, Any]]) -> None: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------------------
# Helpers (pure)
# ---------------------------------------------------------------------------


def annotator_pseudonym(user_id: int, *, secret: str | None = None) -> str:
    """Stable pseudonym for an annotator: HMAC-SHA256 of the user id keyed with the
    SECRET_KEY. Stable across exports (so labels of one person line up), not
    reversible without the key, and different between deployments."""
    key = (secret if secret is not None else settings.SECRET_KEY).encode("utf-8")
    digest = hmac.new(key, f"pairloop-annotator:{user_id}".encode(), hashlib.sha256)
    return "ann-" + digest.hexdigest()[:12]


def clean_messages(messages: Any) -> list[dict[str, str]]:
    """Messages reduced to ``{role, content}`` strings, the shape TRL expects; extra
    keys would become sparse columns that differ from file to file."""
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def messages_to_text(messages: list[dict[str, str]]) -> str:
    """A conversation as one string. A single user turn is its content as is (the
    common case); longer conversations are written as ``Role: content`` blocks."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def strength_margin(p_a: float, mean_strength: float | None) -> float:
    """Margin for TRL's ``margin`` column, in [0, 1].

    Llama 2 adds a margin by rating: 0 for "negligibly better", up to 1 for
    "significantly better"; here (mean strength − 1) / 3. It is scaled by how
    one-sided the labels are, |2·p_a − 1|, so split pairs get no margin even when
    every annotator felt strongly (in opposite directions)."""
    if mean_strength is None:
        return 0.0
    return round(max(0.0, (mean_strength - 1.0) / 3.0) * abs(2.0 * p_a - 1.0), 6)


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------


class _JsonlWriter:
    def __init__(self, path: Path) -> None:
        self._fh = path.open("w", encoding="utf-8")

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._fh.writelines(
            json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n"
            for r in rows
        )

    def close(self) -> None:
        self._fh.close()


class _ParquetWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._schema = schema
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")

    def write(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._writer.write_table(pa.Table.from_pylist(rows, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


def open_writer(
    folder: Path, stem: str, fmt: str, schema: pa.Schema
) -> tuple[_Writer, Path]:
    path = folder / f"{stem}.{fmt}"
    if fmt == "parquet":
        return _ParquetWriter(path, schema), path
    return _JsonlWriter(path), path


MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def preference_schema(messages: bool) -> pa.Schema:
    text = MESSAGES if messages else pa.string()
    return pa.schema(
        [
            ("prompt", text),
            ("chosen", text),
            ("rejected", text),
            ("p_a", pa.float64()),
            ("p_chosen", pa.float64()),
            ("agreement", pa.float64()),
            ("n_labels", pa.int32()),
            ("strength", pa.float64()),
            ("margin", pa.float64()),
            ("comparison_id", pa.int64()),
            ("prompt_id", pa.int64()),
            ("chosen_id", pa.int64()),
            ("rejected_id", pa.int64()),
            ("chosen_is_a", pa.bool_()),
            ("round", pa.int32()),
            ("strategy", pa.string()),
            ("origin", pa.string()),
        ]
    )


def sft_schema(messages: bool) -> pa.Schema:
    head = (
        [("messages", MESSAGES)]
        if messages
        else [("prompt", pa.string()), ("completion", pa.string())]
    )
    return pa.schema(
        [
            *head,
            ("reward", pa.float64()),
            ("round", pa.int32()),
            ("prompt_id", pa.int64()),
            ("response_id", pa.int64()),
        ]
    )


LABEL_SCHEMA = pa.schema(
    [
        ("label_id", pa.int64()),
        ("comparison_id", pa.int64()),
        ("prompt_id", pa.int64()),
        ("response_a_id", pa.int64()),
        ("response_b_id", pa.int64()),
        ("annotator", pa.string()),
        ("choice", pa.string()),
        ("displayed_choice", pa.string()),
        ("strength", pa.int32()),
        ("p_a", pa.float64()),
        ("shown_swapped", pa.bool_()),
        ("duration_ms", pa.int64()),
        ("rationale", pa.string()),
        ("review_state", pa.string()),
        ("source", pa.string()),
        ("is_gold", pa.bool_()),
        ("round", pa.int32()),
        ("created_at", pa.string()),
    ]
)


def label_schema(_messages: bool) -> pa.Schema:
    """Labels have one shape whatever ``messages`` says."""
    return LABEL_SCHEMA
