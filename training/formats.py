"""Preference-pair records: the file formats Pairloop reads, parsed in one place.

A :class:`Pair` is a conversation (list of ``{role, content}``), two candidate
responses, ``p_a`` (probability that A is preferred: 1, 0, ½ for ties, or any soft
label), an optional strength level 1..4 and an id.

Files: ``.jsonl`` or ``.jsonl.gz`` (one object per line) or ``.parquet`` (one
object per row; Pairloop's own exports write both). The format is detected per
record:

- Pairloop pairs: ``{"prompt" | "messages", "response_a", "response_b", "p_a",
  "strength"?, "id"?}``
- TRL: ``{"prompt", "chosen", "rejected"}`` with strings or message lists
  (A = chosen). Pairloop's preference export is this format plus ``p_chosen`` (the
  aggregated soft label of the chosen side, used as ``p_a``), a mean ``strength``
  (a float in [1, 4], rounded to the nearest level as the in-app loop does) and
  bookkeeping columns (``agreement``, ``margin``, ids...) that are ignored.
- Anthropic HH: ``{"chosen", "rejected"}`` full ``\\n\\nHuman:``/``\\n\\nAssistant:``
  transcripts; the shared turns become the conversation and the final assistant
  replies the two responses.

Pairloop's SFT export (``prompt``/``completion`` or ``messages`` alone) and its raw
labels export (ids, no texts) are recognised and refused with a message that says
which export to use instead.

Bad input raises :class:`PairFormatError` naming file, line (row for Parquet),
field and value.

The HH helpers :func:`split_hh_reply` and :func:`hh_prompt_messages` give the
stricter reading of one transcript that the labelling app's importer applies
(same prefix on both sides, no empty turn), raising :class:`RecordError`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Message = dict[str, str]


class RecordError(ValueError):
    """A problem with one record; the caller adds where it came from."""


class PairFormatError(ValueError):
    """A pair file line that cannot be turned into a valid :class:`Pair`."""

    def __init__(
        self, path: str | os.PathLike[str], line: int, field: str, value: Any, why: str
    ) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{path}:{line}: field {field!r} = {shown}: {why}")
        self.path = str(path)
        self.line = line
        self.field = field
        self.value = value


@dataclass(frozen=True)
class Pair:
    conversation: tuple[Message, ...]
    response_a: str
    response_b: str
    p_a: float = 1.0
    strength: int | None = None
    id: str = ""

    def __post_init__(self) -> None:
        # Frozen dataclass: normalise via object.__setattr__ so Pair(...) built in code
        # (not only from files) gets a tuple conversation and a stable id.
        conv = tuple(dict(m) for m in self.conversation)
        object.__setattr__(self, "conversation", conv)
        if not self.id:
            object.__setattr__(
                self, "id", content_id(conv, self.response_a, self.response_b)
            )


def content_id(conversation: Sequence[Message], a: str, b: str) -> str:
    blob = json.dumps([list(conversation), a, b], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- HH

_HUMAN, _ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_hh_transcript(text: str) -> list[Message]:
    """Split an Anthropic HH transcript into messages (``user`` / ``assistant``)."""
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise ValueError("text before the first '\\n\\nHuman:' turn")
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if speaker == "Human" else "assistant"
        messages.append({"role": role, "content": content.strip()})
    return messages


def split_hh_reply(transcript: str, key: str) -> tuple[str, str]:
    """Split an HH transcript into (conversation prefix, final assistant reply)."""
    cut = transcript.rfind(_ASSISTANT)
    if cut < 0 or not transcript.lstrip("\n").startswith("Human:"):
        raise RecordError(f"field {key!r} is not a Human:/Assistant: transcript")
    return transcript[:cut], transcript[cut + len(_ASSISTANT) :].strip()


def hh_prompt_messages(prefix: str) -> list[Message]:
    """The messages of a transcript prefix (as :func:`split_hh_reply` returns it):
    every turn non-empty, the last one the user's."""
    try:
        messages = parse_hh_transcript(prefix)
    except ValueError:
        raise RecordError(
            "transcript turn does not start with Human: or Assistant:"
        ) from None
    for message in messages:
        if not message["content"]:
            raise RecordError(f"an empty {message['role']} turn in the transcript")
    if not messages or messages[-1]["role"] != "user":
        raise RecordError("the transcript must end with a Human turn before the reply")
    return messages


# ------------------------------------------------------------------------ fields


def _messages(raw: Any, where: tuple[Path, int], name: str) -> list[Message]:
    path, line = where
    if isinstance(raw, str):
        if not raw.strip():
            raise PairFormatError(path, line, name, raw, "empty text")
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise PairFormatError(path, line, name, raw, "expected text or message list")
    out = []
    for i, msg in enumerate(raw):
        if (
            not isinstance(msg, dict)
            or not isinstance(msg.get("role"), str)
            or not isinstance(msg.get("content"), str)
        ):
            raise PairFormatError(
                path, line, f"{name}[{i}]", msg, "expected {role, content} strings"
            )
        out.append({"role": msg["role"], "content": msg["content"]})
    return out


def _text(raw: Any, where: tuple[Path, int], name: str) -> str:
    if not isinstance(raw, str):
        raise PairFormatError(*where, name, raw, "expected a string")
    if not raw.strip():
        raise PairFormatError(*where, name, raw, "empty text")
    return raw


def _completion(raw: Any, where: tuple[Path, int], name: str) -> list[Message]:
    """TRL completion: a string or a message list (possibly several turns)."""
    if isinstance(raw, str):
        return [{"role": "assistant", "content": _text(raw, where, name)}]
    msgs = _messages(raw, where, name)
    if not msgs[-1]["content"].strip():
        raise PairFormatError(*where, name, raw, "empty final message")
    return msgs


def _split_shared(
    a: list[Message], b: list[Message], where: tuple[Path, int], name: str
) -> tuple[list[Message], str, str]:
    """Shared leading messages become the conversation; the rest are the responses."""
    n = 0
    while n < min(len(a), len(b)) - 1 and a[n] == b[n]:
        n += 1
    conv = a[:n]

    def rest(msgs: list[Message]) -> str:
        # Transcripts that diverge before the final reply keep the diverging turns in
        # the response text rather than being dropped.
        if len(msgs) == n + 1:
            return msgs[n]["content"]
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in msgs[n:])

    if not conv:
        raise PairFormatError(*where, name, a[:1], "no shared conversation found")
    resp_a, resp_b = rest(a), rest(b)
    for label, text in (("chosen", resp_a), ("rejected", resp_b)):
        if not text.strip():
            raise PairFormatError(*where, label, text, "empty final assistant reply")
    return conv, resp_a, resp_b


def _probability(raw: Any, where: tuple[Path, int], name: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise PairFormatError(*where, name, raw, "expected a number in [0, 1]")
    if not 0.0 <= float(raw) <= 1.0:
        raise PairFormatError(*where, name, raw, "must be in [0, 1]")
    return float(raw)


def strength_level(raw: Any) -> int | None:
    """A strength level 1..4 from an integer level or a mean strength (a float
    in [1, 4], as Pairloop's preference export writes it); ``None`` stays None.
    A mean rounds to the nearest level with Python's ``round``, exactly as the
    in-app loop turns a comparison's mean strength into the level it trains with.
    Anything else raises :class:`RecordError`."""
    if raw is None:
        return None
    if (
        isinstance(raw, bool)
        or not isinstance(raw, int | float)
        or not (math.isfinite(raw) and 1 <= raw <= 4)
    ):
        raise RecordError(
            "expected a strength 1..4 (an integer level or a mean) or null"
        )
    return round(raw)


def _strength(raw: Any, where: tuple[Path, int]) -> int | None:
    try:
        return strength_level(raw)
    except RecordError as exc:
        raise PairFormatError(*where, "strength", raw, str(exc)) from None


# ------------------------------------------------------------------------ records

# Keys that only Pairloop's other exports write, with what to use instead.
_LABELS_EXPORT = {"label_id", "response_a_id", "response_b_id", "choice"}


def _refuse_other_exports(record: dict[str, Any], where: tuple[Path, int]) -> None:
    if record.keys() >= _LABELS_EXPORT:
        raise PairFormatError(
            *where,
            "<keys>",
            sorted(record),
            "a Pairloop labels export (one row per label, response ids but no "
            "texts); export kind 'preferences' for training and evaluation",
        )
    if "completion" in record or ("messages" in record and "reward" in record):
        raise PairFormatError(
            *where,
            "<keys>",
            sorted(record),
            "an SFT record such as Pairloop's SFT export writes (one response per "
            "prompt, no pair); export kind 'preferences' for training and evaluation",
        )


def pair_from_record(record: Any, path: Path, line: int) -> Pair:
    """Turn one decoded record into a Pair (format detected from its keys)."""
    where = (path, line)
    if not isinstance(record, dict):
        raise PairFormatError(path, line, "<line>", record, "expected a JSON object")
    rid = record.get("id")
    rid = "" if rid is None else str(rid)
    if "response_a" in record or "response_b" in record:
        key = "messages" if "messages" in record else "prompt"
        if key not in record:
            raise PairFormatError(path, line, "prompt", None, "missing prompt/messages")
        for name in ("response_a", "response_b", "p_a"):
            if name not in record:
                raise PairFormatError(path, line, name, None, "missing field")
        return Pair(
            conversation=_messages(record[key], where, key),
            response_a=_text(record["response_a"], where, "response_a"),
            response_b=_text(record["response_b"], where, "response_b"),
            p_a=_probability(record["p_a"], where, "p_a"),
            strength=_strength(record.get("strength"), where),
            id=rid,
        )
    if "chosen" in record or "rejected" in record:
        for name in ("chosen", "rejected"):
            if name not in record:
                raise PairFormatError(path, line, name, None, "missing field")
        chosen, rejected = record["chosen"], record["rejected"]
        strength = _strength(record.get("strength"), where)
        # Pairloop's preference export: the soft label of the chosen side.
        p_chosen = record.get("p_chosen")
        p_a = 1.0 if p_chosen is None else _probability(p_chosen, where, "p_chosen")
        if not rid and record.get("comparison_id") is not None:
            rid = f"comparison-{record['comparison_id']}"
        if "prompt" in record:
            conv = _messages(record["prompt"], where, "prompt")
            ca = _completion(chosen, where, "chosen")
            cb = _completion(rejected, where, "rejected")
            conv2, a, b = _split_shared(conv + ca, conv + cb, where, "prompt")
            return Pair(conv2, a, b, p_a, strength, rid)
        if isinstance(chosen, str) and isinstance(rejected, str):
            try:
                ma, mb = parse_hh_transcript(chosen), parse_hh_transcript(rejected)
            except ValueError as exc:
                raise PairFormatError(
                    path, line, "chosen", chosen, f"not an HH transcript ({exc})"
                ) from None
            if not ma or ma[-1]["role"] != "assistant":
                raise PairFormatError(
                    path, line, "chosen", chosen, "must end with an Assistant turn"
                )
            if not mb or mb[-1]["role"] != "assistant":
                raise PairFormatError(
                    path, line, "rejected", rejected, "must end with an Assistant turn"
                )
            conv, a, b = _split_shared(ma, mb, where, "chosen")
            return Pair(conv, a, b, p_a, strength, rid)
        ma = _messages(chosen, where, "chosen")
        mb = _messages(rejected, where, "rejected")
        conv, a, b = _split_shared(ma, mb, where, "chosen")
        return Pair(conv, a, b, p_a, strength, rid)
    _refuse_other_exports(record, where)
    raise PairFormatError(
        path,
        line,
        "<keys>",
        sorted(record),
        "unknown format: need response_a/response_b/p_a or chosen/rejected",
    )


# -------------------------------------------------------------------------- files


def open_text(path: Path) -> io.TextIOBase:
    """A text file, gunzipped when its name ends in ``.gz``."""
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def is_parquet(path: Path) -> bool:
    return path.name.endswith(".parquet")


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based row number, row as a dict) for every row of a Parquet file."""
    import pyarrow.lib
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except (pyarrow.lib.ArrowException, OSError) as exc:
        raise PairFormatError(
            path, 0, "<file>", str(path), f"not a readable Parquet file ({exc})"
        ) from None
    row = 0
    with handle:
        for batch in handle.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield row, record


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, decoded JSON or the :class:`PairFormatError` of a bad line)."""
    with open_text(path) as fh:
        try:
            for line_no, raw_line in enumerate(fh, start=1):
                if not raw_line.strip():
                    continue
                try:
                    yield line_no, json.loads(raw_line)
                except json.JSONDecodeError as exc:
                    yield (
                        line_no,
                        PairFormatError(
                            path,
                            line_no,
                            "<json>",
                            raw_line.strip(),
                            f"bad JSON ({exc.msg})",
                        ),
                    )
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
            why = str(exc)
            if isinstance(exc, UnicodeDecodeError) and path.suffix != ".jsonl":
                why += " (pair files are .jsonl, .jsonl.gz or .parquet)"
            raise PairFormatError(path, 0, "<file>", str(path), why) from None


def iter_pairs(
    path: str | os.PathLike[str],
    *,
    skipped: list[PairFormatError] | None = None,
) -> Iterator[Pair]:
    """Yield the pairs of one file; raise on the first bad line.

    With ``skipped`` given, bad lines are appended to it instead of raising, so the
    caller can report how many were left out (real dumps such as HH contain a few
    empty replies). File-level problems always raise.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pair file not found: {path}")
    rows = _parquet_rows(path) if is_parquet(path) else _jsonl_rows(path)
    for line_no, record in rows:
        try:
            if isinstance(record, PairFormatError):
                raise record
            pair = pair_from_record(record, path, line_no)
        except PairFormatError as err:
            if skipped is None:
                raise
            skipped.append(err)
            continue
        yield pair


def read_pairs(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    limit: int | None = None,
    skipped: list[PairFormatError] | None = None,
) -> list[Pair]:
    """Read and validate every pair of one or more files (all of them, or ``limit``).

    Validation is eager — the whole file is checked before anything trains. Bad
    lines raise :class:`PairFormatError` unless a ``skipped`` list collects them.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    pairs: list[Pair] = []
    for path in paths:
        for pair in iter_pairs(path, skipped=skipped):
            if limit is not None and len(pairs) >= limit:
                return pairs
            pairs.append(pair)
    return pairs
