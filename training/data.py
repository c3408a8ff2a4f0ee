"""Preference pairs: reading pair files and turning pairs into token ids.

A :class:`Pair` is a conversation (list of ``{role, content}``), two candidate
responses, ``p_a`` (probability that A is preferred: 1, 0, ½ for ties, or any soft
label), an optional strength level 1..4 and an id.

File formats (``.jsonl`` or ``.jsonl.gz``, one object per line, detected per line):

- Pairloop: ``{"prompt" | "messages", "response_a", "response_b", "p_a",
  "strength"?, "id"?}``
- TRL: ``{"prompt", "chosen", "rejected"}`` with strings or message lists (A = chosen)
- Anthropic HH: ``{"chosen", "rejected"}`` full ``\\n\\nHuman:``/``\\n\\nAssistant:``
  transcripts; the shared turns become the conversation and the final assistant
  replies the two responses.

Bad input raises :class:`PairFormatError` naming file, line, field and value.

Plain text format (tokenizers without a chat template)::

    User: first user message
    Assistant: an assistant reply
    User: last user message
    Assistant:

followed by the response, as a second segment for encoders (``[CLS] conv [SEP]
response [SEP]``) and as a continuation (plus EOS) for decoders.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Message = dict[str, str]


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


# ---------------------------------------------------------------------------- reading

_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


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


def _p_a(raw: Any, where: tuple[Path, int]) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise PairFormatError(*where, "p_a", raw, "expected a number in [0, 1]")
    if not 0.0 <= float(raw) <= 1.0:
        raise PairFormatError(*where, "p_a", raw, "must be in [0, 1]")
    return float(raw)


def _strength(raw: Any, where: tuple[Path, int]) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 4:
        raise PairFormatError(*where, "strength", raw, "expected an integer 1..4")
    return raw


def pair_from_record(record: Any, path: Path, line: int) -> Pair:
    """Turn one decoded JSON line into a Pair (format detected from its keys)."""
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
            p_a=_p_a(record["p_a"], where),
            strength=_strength(record.get("strength"), where),
            id=rid,
        )
    if "chosen" in record or "rejected" in record:
        for name in ("chosen", "rejected"):
            if name not in record:
                raise PairFormatError(path, line, name, None, "missing field")
        chosen, rejected = record["chosen"], record["rejected"]
        strength = _strength(record.get("strength"), where)
        if "prompt" in record:
            conv = _messages(record["prompt"], where, "prompt")
            ca = _completion(chosen, where, "chosen")
            cb = _completion(rejected, where, "rejected")
            conv2, a, b = _split_shared(conv + ca, conv + cb, where, "prompt")
            return Pair(conv2, a, b, 1.0, strength, rid)
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
            return Pair(conv, a, b, 1.0, strength, rid)
        ma = _messages(chosen, where, "chosen")
        mb = _messages(rejected, where, "rejected")
        conv, a, b = _split_shared(ma, mb, where, "chosen")
        return Pair(conv, a, b, 1.0, strength, rid)
    raise PairFormatError(
        path,
        line,
        "<keys>",
        sorted(record),
        "unknown format: need response_a/response_b/p_a or chosen/rejected",
    )


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
    with _open_text(path) as fh:
        try:
            for line_no, raw_line in enumerate(fh, start=1):
                if not raw_line.strip():
                    continue
                try:
                    try:
                        record = json.loads(raw_line)
                    except json.JSONDecodeError as exc:
                        raise PairFormatError(
                            path,
                            line_no,
                            "<json>",
                            raw_line.strip(),
                            f"bad JSON ({exc.msg})",
                        ) from None
                    pair = pair_from_record(record, path, line_no)
                except PairFormatError as err:
                    if skipped is None:
                        raise
                    skipped.append(err)
                    continue
                yield pair
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
            raise PairFormatError(path, 0, "<file>", str(path), str(exc)) from None


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


# ------------------------------------------------------------------------ tokenising


def plain_conversation(conversation: Sequence[Message]) -> str:
    """The documented plain format (module docstring), ending with ``Assistant:``."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in conversation]
    return "\n".join([*lines, "Assistant:"])


@dataclass
class TruncationStats:
    sequences: int = 0
    prompt_truncated: int = 0
    response_truncated: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "sequences": self.sequences,
            "prompt_truncated": self.prompt_truncated,
            "response_truncated": self.response_truncated,
        }


@dataclass
class Formatter:
    """Turns conversations + responses into ``(prefix_ids, response_ids)``.

    Prompt and response are tokenised separately and concatenated, so both
    responses of a pair share exactly the same prefix tokens (needed for prefix KV
    reuse) and scoring sees the same ids as training.
    """

    tokenizer: Any
    max_length: int
    is_encoder: bool
    stats: TruncationStats = field(default_factory=TruncationStats)

    def __post_init__(self) -> None:
        tok = self.tokenizer
        self.use_template = (not self.is_encoder) and bool(
            getattr(tok, "chat_template", None)
        )
        if self.is_encoder:
            self.head = [tok.cls_token_id] if tok.cls_token_id is not None else []
            sep = [tok.sep_token_id] if tok.sep_token_id is not None else []
            self.mid, self.tail = sep, sep
        else:
            bos = getattr(tok, "bos_token_id", None)
            eos = getattr(tok, "eos_token_id", None)
            # Chat templates write their own special tokens.
            add_bos = not self.use_template and bos is not None and bos != eos
            self.head = [bos] if add_bos else []
            self.mid = []
            self.tail = [] if self.use_template or eos is None else [eos]
        self.reserved = len(self.head) + len(self.mid) + len(self.tail)
        if self.max_length <= self.reserved + 2:
            raise ValueError(f"max_length {self.max_length} is too small")

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def split_texts(
        self, conversation: Sequence[Message], response: str
    ) -> tuple[str, str]:
        """(prompt text, response text) in the tokenizer's chat template or plain."""
        conv = list(conversation)
        if self.use_template:
            tok = self.tokenizer
            prompt = tok.apply_chat_template(
                conv, tokenize=False, add_generation_prompt=True
            )
            full = tok.apply_chat_template(
                [*conv, {"role": "assistant", "content": response}], tokenize=False
            )
            if full.startswith(prompt):
                return prompt, full[len(prompt) :]
            # Templates that rewrite earlier turns: fall back to the raw response.
            return prompt, response
        prompt = plain_conversation(conv)
        return (prompt, response) if self.is_encoder else (prompt, " " + response)

    def prompt_ids(self, conversation: Sequence[Message]) -> list[int]:
        prompt, _ = self.split_texts(conversation, "x")
        return self._ids(prompt)

    def response_ids(self, conversation: Sequence[Message], response: str) -> list[int]:
        _, text = self.split_texts(conversation, response)
        return self._ids(text)

    def fit(
        self, prompt: list[int], responses: Sequence[list[int]]
    ) -> tuple[list[int], list[list[int]]]:
        """Truncate to ``max_length``: keep the conversation's end, whole responses.

        The prompt budget is set by the longest response so all responses share the
        same prefix. When a response alone is too long, a quarter of the budget still
        goes to the end of the conversation and the response keeps its beginning.
        """
        budget = self.max_length - self.reserved
        longest = max(len(r) for r in responses)
        keep_min = min(len(prompt), budget // 4)
        new_responses = []
        for r in responses:
            limit = budget - keep_min
            if len(r) > limit:
                self.stats.response_truncated += 1
                r = r[:limit]
            new_responses.append(r)
        prompt_budget = budget - min(longest, budget - keep_min)
        self.stats.sequences += len(responses)
        if len(prompt) > prompt_budget:
            self.stats.prompt_truncated += len(responses)
            prompt = prompt[len(prompt) - prompt_budget :] if prompt_budget else []
        prefix = [*self.head, *prompt, *self.mid]
        return prefix, [[*r, *self.tail] for r in new_responses]

    def encode_pair(self, pair: Pair) -> tuple[list[int], list[int], list[int]]:
        """(shared prefix ids, response A ids, response B ids)."""
        prompt = self.prompt_ids(pair.conversation)
        ra = self.response_ids(pair.conversation, pair.response_a)
        rb = self.response_ids(pair.conversation, pair.response_b)
        prefix, (a, b) = self.fit(prompt, [ra, rb])
        return prefix, a, b

    def encode_item(self, conversation: Sequence[Message], response: str) -> list[int]:
        prompt = self.prompt_ids(conversation)
        prefix, (r,) = self.fit(prompt, [self.response_ids(conversation, response)])
        return prefix + r
