"""Record formats of the import files: one JSON line (or Parquet row) in, one
prompt, response or labelled pair out. No database access here, so the parsing can
move to ``training.formats`` (shared with the training CLI) without change.

Line formats (detected per line):

* prompt: ``{"prompt": "..."}``, ``{"messages": [{"role", "content"}, ...]}``, or
  MT-bench / arena-hard style ``{"question_id": ..., "turns": [...]}`` (first turn;
  turns may be strings or ``{"content": ...}`` objects). ``question_id`` / ``uid``
  become the prompt's ``external_id``.
* response: ``{"prompt"|"messages": ..., "response": "..."}``, or an arena-hard
  model answer ``{"question_id"|"uid": ..., "model_id": ..., "choices": [{"turns":
  [{"content": ...}]}]}``, which joins to the prompt whose ``external_id`` equals
  its ``question_id`` / ``uid`` (import the questions file first, or earlier in the
  same command).
* labelled pair: TRL ``{"prompt", "chosen", "rejected"}`` (``chosen``/``rejected``
  as strings or as TRL's conversational one-assistant-message lists, with an
  optional soft label ``p_chosen``: Pairloop's own preference export reads back);
  Anthropic HH ``{"chosen", "rejected"}`` transcripts with ``\\n\\nHuman:`` /
  ``\\n\\nAssistant:`` turns; ``{"prompt"|"messages", "response_a", "response_b",
  "p_a", "strength"?}``. Labels are stored as labels of the ``imported``
  pseudo-annotator.
* ranking: ``{"prompt"|"messages": ..., "responses": ["...", ...], "ranking"?:
  [...]}`` with 2..9 distinct responses; ``ranking`` lists 0-based indices into
  ``responses``, best first, an inner list being a tie (``[2, [0, 3]]``: 2 is best,
  0 and 3 tie second, 1 is unranked). Without ``ranking`` the prompt becomes a
  ranking item for annotators; with it, also a ranking by the ``imported``
  pseudo-annotator (:mod:`training.rankings` says which pairs it implies).
  ``gold_tiers`` (instead of ``ranking``) makes the item a gold item with that
  known order: the API's field name and shape, indices into ``responses`` as in
  ``ranking``, checked by the same rule (``training.rankings.check_tiers``).
* Open-Assistant message trees (``{"message_tree_id", "prompt": {"text", "role",
  "replies": [...]}}``, its ``*_tree.jsonl`` exports): one ranking per message
  whose assistant replies are ranked (``rank``, 0 = best), on at least two of them;
  unranked and deleted replies are left out. The shared 100-tree sample gives 212
  rankings implying 754 pairs.

Files are JSON lines (``.gz`` too) or Parquet (``.parquet``, one record per row).
Every record is then checked against :class:`Limits` (the importer passes the
API's) and for NUL characters, which PostgreSQL cannot store.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from labelapp.errors import ImportFailed
from training.formats import (
    RecordError,
    hh_prompt_messages,
    split_hh_reply,
    strength_level,
)
from training.rankings import MAX_RESPONSES, MIN_RESPONSES, RankingError, check_tiers

ROLES = {"system", "user", "assistant"}

Messages = list[dict[str, str]]


# One record error type for the importer and the training CLI's parser, so the
# HH and strength rules (training.formats) refuse a line the same way in both.
LineError = RecordError


@dataclass
class PromptRec:
    messages: Messages
    external_id: str = ""


@dataclass
class ResponseRec:
    text: str
    messages: Messages | None = None
    external_id: str = ""
    model_ref: str = ""


@dataclass
class PairRec:
    messages: Messages
    text_a: str
    text_b: str
    p_a: float
    strength: int | None = None


@dataclass
class RankingRec:
    messages: Messages
    texts: list[str]
    # Tiers of indices into ``texts``, best first; None: no ranking (an item only).
    tiers: list[list[int]] | None = None
    # The known order of a gold item, the same way; None: not gold.
    gold_tiers: list[list[int]] | None = None


Record = PromptRec | ResponseRec | PairRec | RankingRec


@dataclass(frozen=True)
class Limits:
    """Sizes a record may have; the importer passes the database's and the API's
    (``None``: no limit)."""

    text_chars: int | None = None
    messages: int | None = None
    external_id_chars: int | None = None
    model_ref_chars: int | None = None


def check_record(rec: Record, limits: Limits) -> None:
    """Refuse what the database cannot store or the API would refuse: NUL
    characters (PostgreSQL text and jsonb cannot hold U+0000) and sizes over the
    limits. One check after parsing, so every format gets the same rules."""
    texts: list[tuple[str, str]] = []
    messages = getattr(rec, "messages", None) or []
    if limits.messages is not None and len(messages) > limits.messages:
        raise LineError(
            f"the prompt has {len(messages):,} messages, over the limit of "
            f"{limits.messages:,}"
        )
    texts += [(f"prompt message {i + 1}", m["content"]) for i, m in enumerate(messages)]
    if isinstance(rec, ResponseRec):
        texts.append(("the response", rec.text))
    elif isinstance(rec, PairRec):
        texts += [("the first response", rec.text_a), ("the second", rec.text_b)]
    elif isinstance(rec, RankingRec):
        texts += [(f"responses[{i}]", t) for i, t in enumerate(rec.texts)]
    for what, text in texts:
        if "\x00" in text:
            raise LineError(
                f"{what} contains a NUL character (\\u0000), which cannot be stored"
            )
        if limits.text_chars is not None and len(text) > limits.text_chars:
            raise LineError(
                f"{what} has {len(text):,} characters, over the limit of "
                f"{limits.text_chars:,} (the same as the API's)"
            )
    short = [
        ("question_id/uid", getattr(rec, "external_id", ""), limits.external_id_chars),
        ("model_id", getattr(rec, "model_ref", ""), limits.model_ref_chars),
    ]
    for what, value, limit in short:
        if "\x00" in value:
            raise LineError(f"{what} contains a NUL character (\\u0000)")
        if limit is not None and len(value) > limit:
            raise LineError(
                f"{what} has {len(value):,} characters, over the limit of {limit:,}"
            )


def _text(obj: dict, key: str, *, allow_empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise LineError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise LineError(f"field {key!r} is empty")
    return value


def _messages(value: object, key: str) -> Messages:
    if isinstance(value, str):
        if not value.strip():
            raise LineError(f"field {key!r} is empty")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise LineError(f"field {key!r} must be a non-empty string or message list")
    messages = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise LineError(f"{key}[{i}] must be an object with role and content")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise LineError(f"{key}[{i}].role={role!r} is not one of {sorted(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise LineError(f"{key}[{i}].content must be a non-empty string")
        messages.append({"role": role, "content": content})
    return messages


def _prompt_messages(obj: dict) -> Messages:
    if "messages" in obj:
        return _messages(obj["messages"], "messages")
    if "prompt" in obj:
        return _messages(obj["prompt"], "prompt")
    if "turns" in obj:
        turns = obj["turns"]
        if not isinstance(turns, list) or not turns:
            raise LineError("field 'turns' must be a non-empty list")
        first = turns[0]
        if isinstance(first, dict):
            first = first.get("content")
        if not isinstance(first, str) or not first.strip():
            raise LineError("turns[0] must be a non-empty string or {content}")
        return [{"role": "user", "content": first}]
    raise LineError("no prompt: expected 'prompt', 'messages' or 'turns'")


def _external_id(obj: dict) -> str:
    for key in ("question_id", "uid"):
        if key in obj:
            value = obj[key]
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise LineError(f"field {key!r} must be a string or integer")
            return str(value)
    return ""


def hh_pair(chosen: str, rejected: str) -> tuple[Messages, str, str]:
    """An Anthropic-HH pair of transcripts as (conversation, chosen reply, rejected
    reply); both transcripts must share everything before their final reply."""
    prefix, a = split_hh_reply(chosen, "chosen")
    prefix_b, b = split_hh_reply(rejected, "rejected")
    if prefix != prefix_b:
        raise LineError(
            "chosen and rejected transcripts differ before their final "
            "Assistant reply, so they are not a pair over one conversation"
        )
    return hh_prompt_messages(prefix), a, b


def _strength(obj: dict) -> int | None:
    """A label's strength, 1..4. A mean strength (Pairloop's preference export
    writes the mean over a pair's labels, e.g. 2.6667) becomes the nearest level,
    since an imported pair is stored as one label (training.formats' rule)."""
    value = obj.get("strength")
    try:
        return strength_level(value)
    except RecordError as exc:
        raise LineError(f"field 'strength'={value!r}: {exc}") from None


def _reply(obj: dict, key: str) -> str:
    """``chosen`` / ``rejected`` beside a prompt: a string, or TRL's conversational
    form, a list holding one assistant message."""
    value = obj.get(key)
    if isinstance(value, list):
        if (
            len(value) != 1
            or not isinstance(value[0], dict)
            or value[0].get("role") != "assistant"
            or not isinstance(value[0].get("content"), str)
        ):
            raise LineError(
                f"field {key!r} as a message list must hold one assistant message "
                "{role: assistant, content}"
            )
        return value[0]["content"].strip()
    return _text(obj, key).strip()


def _probability(obj: dict, key: str) -> float:
    value = obj.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise LineError(f"field {key!r}={value!r} must be a number in [0, 1]")
    if not 0.0 <= float(value) <= 1.0:
        raise LineError(f"field {key!r}={value!r} is outside [0, 1]")
    return float(value)


def _ranking(obj: dict) -> RankingRec:
    """A prompt with K responses and, optionally, their ranking."""
    messages = _prompt_messages(obj)
    raw = obj["responses"]
    if not isinstance(raw, list):
        raise LineError(
            f"field 'responses'={raw!r} must be a list of {MIN_RESPONSES}.."
            f"{MAX_RESPONSES} response texts"
        )
    if not MIN_RESPONSES <= len(raw) <= MAX_RESPONSES:
        raise LineError(
            f"field 'responses' has {len(raw)} responses; a ranking needs "
            f"{MIN_RESPONSES}..{MAX_RESPONSES}"
        )
    texts: list[str] = []
    for i, text in enumerate(raw):
        if not isinstance(text, str) or not text.strip():
            raise LineError(
                f"field 'responses'[{i}]={text!r} must be a non-empty string"
            )
        if text in texts:
            raise LineError(
                f"field 'responses'[{i}] repeats responses[{texts.index(text)}] "
                "(the responses of a ranking must differ)"
            )
        texts.append(text)
    tiers = _tiers(obj, "ranking", len(texts))
    gold_tiers = _tiers(obj, "gold_tiers", len(texts))
    if tiers is not None and gold_tiers is not None:
        # An imported ranking completes the item (k = 1), so a gold item that has
        # one would never be served to the annotators it is meant to grade.
        raise LineError(
            "field 'gold_tiers' with 'ranking': a gold item is for grading "
            "annotators, who rank it; give its known order as 'gold_tiers' alone"
        )
    return RankingRec(messages, texts, tiers, gold_tiers)


def _tiers(obj: dict, key: str, k: int) -> list[list[int]] | None:
    """``obj[key]`` as tiers of indices 0..k-1, best first (None when absent)."""
    if obj.get(key) is None:
        return None
    try:
        return check_tiers(obj[key], list(range(k)))
    except RankingError as exc:
        raise LineError(f"field {key!r}={obj[key]!r}: {exc}") from None


OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


def _oasst_rankings(tree: dict) -> list[Record]:
    """An Open-Assistant message tree (``{"message_tree_id", "prompt": {"text",
    "role", "replies": [...]}}``, as in its ``*_tree.jsonl`` exports): one ranking
    per message whose assistant replies carry a ``rank`` (0 = best) on at least two
    of them, the conversation being the path from the root to that message.
    Replies without a rank (never ranked) and deleted ones are left out, so the
    ranking implies only the pairs OASST's rankers ordered; equal ranks tie."""
    out: list[Record] = []

    def message(node: Any, where: str) -> dict[str, str]:
        if not isinstance(node, dict):
            raise LineError(f"{where} must be a message object")
        role = OASST_ROLES.get(node.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise LineError(
                f"{where}.role={node.get('role')!r} must be 'prompter' or 'assistant'"
            )
        text = node.get("text")
        if not isinstance(text, str) or not text.strip():
            raise LineError(f"{where}.text={text!r} must be a non-empty string")
        return {"role": role, "content": text}

    def walk(node: dict, path: Messages, where: str) -> None:
        path = [*path, message(node, where)]
        replies = node.get("replies") or []
        if not isinstance(replies, list):
            raise LineError(f"{where}.replies must be a list")
        ranked = []
        for i, reply in enumerate(replies):
            here = f"{where}.replies[{i}]"
            message(reply, here)
            rank = reply.get("rank")
            if rank is None or reply.get("deleted") or reply.get("role") != "assistant":
                continue
            if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
                raise LineError(f"{here}.rank={rank!r} must be an integer >= 0")
            ranked.append((rank, reply["text"]))
        texts: list[str] = []
        ranks: list[int] = []
        for rank, text in sorted(ranked, key=lambda r: r[0]):
            if text not in texts:  # the responses of a ranking must differ
                texts.append(text)
                ranks.append(rank)
        if len(texts) >= MIN_RESPONSES:
            # Best first; OASST trees rarely have more than MAX_RESPONSES ranked
            # siblings (none in the shared sample): keep the best ones.
            texts, ranks = texts[:MAX_RESPONSES], ranks[:MAX_RESPONSES]
            tiers: list[list[int]] = []
            for i, rank in enumerate(ranks):
                if i and rank == ranks[i - 1]:
                    tiers[-1].append(i)
                else:
                    tiers.append([i])
            out.append(RankingRec(path, texts, tiers))
        for i, reply in enumerate(replies):
            walk(reply, path, f"{where}.replies[{i}]")

    walk(tree["prompt"], [], "prompt")
    if not out:
        raise LineError(
            "this Open-Assistant tree has no message with two or more ranked "
            "assistant replies"
        )
    return out


def parse_records(obj: object) -> list[Record]:
    """The records of one line: one, or several for an Open-Assistant tree."""
    if (
        isinstance(obj, dict)
        and "message_tree_id" in obj
        and isinstance(obj.get("prompt"), dict)
    ):
        return _oasst_rankings(obj)
    return [parse_record(obj)]


def parse_record(obj: object) -> Record:
    if not isinstance(obj, dict):
        raise LineError(f"expected a JSON object, got {type(obj).__name__}")
    if "responses" in obj:
        return _ranking(obj)
    for key in ("ranking", "gold_tiers"):
        if key in obj:
            raise LineError(f"field {key!r} needs a 'responses' list beside it")
    if "chosen" in obj or "rejected" in obj:
        if "prompt" in obj or "messages" in obj:
            messages = _prompt_messages(obj)
            a, b = _reply(obj, "chosen"), _reply(obj, "rejected")
        else:
            chosen, rejected = _text(obj, "chosen"), _text(obj, "rejected")
            messages, a, b = hh_pair(chosen, rejected)
        for key, value in (("chosen", a), ("rejected", b)):
            if not value:
                raise LineError(f"the {key} response is empty")
        if a == b:
            raise LineError("chosen and rejected responses are identical")
        # p_chosen: the soft label of Pairloop's own export (share of labels for
        # the chosen side), so an export imports back with the same p_a.
        p_chosen = _probability(obj, "p_chosen") if "p_chosen" in obj else 1.0
        return PairRec(messages, a, b, p_chosen, _strength(obj))
    if "response_a" in obj or "response_b" in obj:
        a, b = _text(obj, "response_a"), _text(obj, "response_b")
        if a == b:
            raise LineError("response_a and response_b are identical")
        p_a = _probability(obj, "p_a")
        return PairRec(_prompt_messages(obj), a, b, p_a, _strength(obj))
    if "response" in obj:
        return ResponseRec(_text(obj, "response"), messages=_prompt_messages(obj))
    if "choices" in obj:
        ext = _external_id(obj)
        if not ext:
            raise LineError("a model answer needs 'question_id' or 'uid' to join on")
        choices = obj["choices"]
        try:
            text = choices[0]["turns"][0]["content"]
        except (TypeError, KeyError, IndexError):
            raise LineError("expected choices[0].turns[0].content") from None
        if not isinstance(text, str) or not text.strip():
            raise LineError("choices[0].turns[0].content is empty")
        model = obj.get("model_id") or obj.get("model") or ""
        return ResponseRec(text, external_id=ext, model_ref=str(model))
    return PromptRec(_prompt_messages(obj), _external_id(obj))


def _open(path: Path) -> Iterable[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _json(line: str) -> Any:
    """One JSON line; every way the parser can refuse it is a LineError."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise LineError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise LineError("invalid JSON: nested too deeply") from None
    except ValueError:
        # int() refuses literals over sys.get_int_max_str_digits() (CVE-2020-10735).
        raise LineError(
            "invalid JSON: an integer literal over "
            f"{sys.get_int_max_str_digits():,} digits"
        ) from None


def _jsonl_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value or the LineError) for each non-blank line."""
    try:
        handle = _open(path)
    except OSError as exc:
        raise ImportFailed(f"{path}: cannot open: {exc.strerror or exc}") from None
    with handle as lines:
        try:
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, _json(line)
                except LineError as exc:
                    yield lineno, exc
        except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
            raise ImportFailed(f"{path}: unreadable: {exc}") from None


def _parquet_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """(row number, row as a dict) of a Parquet file, read one row group batch at a
    time so memory stays bounded."""
    try:
        table = pq.ParquetFile(path)
    except OSError as exc:
        raise ImportFailed(f"{path}: cannot open: {exc.strerror or exc}") from None
    except pa.ArrowException as exc:
        raise ImportFailed(f"{path}: not a readable Parquet file: {exc}") from None
    row = 0
    try:
        for batch in table.iter_batches(batch_size=2000):
            for obj in batch.to_pylist():
                row += 1
                yield row, obj
    except pa.ArrowException as exc:
        raise ImportFailed(f"{path}: unreadable: {exc}") from None


def read_records(
    path: Path,
    *,
    skip_invalid: bool = False,
    skipped: list[str] | None = None,
    limits: Limits = Limits(),
) -> Iterator[tuple[int, Record]]:
    """Yield (line number, record) of a JSON-lines (``.gz`` too) or Parquet file;
    raise ImportFailed naming the file and line. A file without any record (empty
    or blank) is refused: it is almost always the wrong file."""
    parquet = path.suffix == ".parquet"
    where = "row" if parquet else "line"
    objects = _parquet_objects(path) if parquet else _jsonl_objects(path)
    seen = 0
    for lineno, obj in objects:
        seen += 1
        try:
            if isinstance(obj, LineError):
                raise obj
            records = parse_records(obj)
            for record in records:
                check_record(record, limits)
        except LineError as exc:
            message = f"{path}, {where} {lineno}: {exc}"
            if not skip_invalid:
                raise ImportFailed(message) from None
            if skipped is not None:
                skipped.append(message)
            continue
        for record in records:
            yield lineno, record
    if not seen:
        raise ImportFailed(f"{path}: the file is empty (no records)")
