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
* labelled pair: TRL ``{"prompt", "chosen", "rejected"}``; Anthropic HH
  ``{"chosen", "rejected"}`` transcripts with ``\\n\\nHuman:`` / ``\\n\\nAssistant:``
  turns; ``{"prompt"|"messages", "response_a", "response_b", "p_a", "strength"?}``.
  Labels are stored as labels of the ``imported`` pseudo-annotator.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from labelapp.errors import ImportFailed

ROLES = {"system", "user", "assistant"}

Messages = list[dict[str, str]]


class LineError(ValueError):
    """A problem with one line; the caller adds the file and line number."""


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


Record = PromptRec | ResponseRec | PairRec


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


_HUMAN, _ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


# duplicate of training.formats: replaced at merge
def hh_pair(chosen: str, rejected: str) -> tuple[Messages, str, str]:
    """An Anthropic-HH pair of transcripts as (conversation, chosen reply, rejected
    reply); both transcripts must share everything before their final reply."""

    def split(transcript: str, key: str) -> tuple[str, str]:
        cut = transcript.rfind(_ASSISTANT)
        if cut < 0 or not transcript.lstrip("\n").startswith("Human:"):
            raise LineError(f"field {key!r} is not a Human:/Assistant: transcript")
        return transcript[:cut], transcript[cut + len(_ASSISTANT) :].strip()

    prefix, a = split(chosen, "chosen")
    prefix_b, b = split(rejected, "rejected")
    if prefix != prefix_b:
        raise LineError(
            "chosen and rejected transcripts differ before their final "
            "Assistant reply, so they are not a pair over one conversation"
        )
    messages: Messages = []
    rest = prefix
    while rest:
        if rest.startswith(_HUMAN):
            role, rest = "user", rest[len(_HUMAN) :]
        elif rest.startswith(_ASSISTANT):
            role, rest = "assistant", rest[len(_ASSISTANT) :]
        else:
            raise LineError("transcript turn does not start with Human: or Assistant:")
        nxt = [i for i in (rest.find(_HUMAN), rest.find(_ASSISTANT)) if i >= 0]
        end = min(nxt) if nxt else len(rest)
        content = rest[:end].strip()
        if not content:
            raise LineError(f"an empty {role} turn in the transcript")
        messages.append({"role": role, "content": content})
        rest = rest[end:]
    if not messages or messages[-1]["role"] != "user":
        raise LineError("the transcript must end with a Human turn before the reply")
    return messages, a, b


def _strength(obj: dict) -> int | None:
    value = obj.get("strength")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4:
        raise LineError(f"field 'strength'={value!r} must be an integer in 1..4")
    return value


def parse_record(obj: object) -> Record:
    if not isinstance(obj, dict):
        raise LineError(f"expected a JSON object, got {type(obj).__name__}")
    if "chosen" in obj or "rejected" in obj:
        chosen, rejected = _text(obj, "chosen"), _text(obj, "rejected")
        if "prompt" in obj or "messages" in obj:
            messages = _prompt_messages(obj)
            a, b = chosen.strip(), rejected.strip()
        else:
            messages, a, b = hh_pair(chosen, rejected)
        for key, value in (("chosen", a), ("rejected", b)):
            if not value:
                raise LineError(f"the {key} response is empty")
        if a == b:
            raise LineError("chosen and rejected responses are identical")
        return PairRec(messages, a, b, 1.0, _strength(obj))
    if "response_a" in obj or "response_b" in obj:
        a, b = _text(obj, "response_a"), _text(obj, "response_b")
        if a == b:
            raise LineError("response_a and response_b are identical")
        p_a = obj.get("p_a")
        if not isinstance(p_a, (int, float)) or isinstance(p_a, bool):
            raise LineError(f"field 'p_a'={p_a!r} must be a number in [0, 1]")
        if not 0.0 <= float(p_a) <= 1.0:
            raise LineError(f"field 'p_a'={p_a!r} is outside [0, 1]")
        return PairRec(_prompt_messages(obj), a, b, float(p_a), _strength(obj))
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


def read_records(
    path: Path, *, skip_invalid: bool = False, skipped: list[str] | None = None
) -> Iterator[tuple[int, Record]]:
    """Yield (line number, record); raise ImportFailed naming the file and line."""
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
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise LineError(
                            f"invalid JSON: {exc.msg} at column {exc.colno}"
                        ) from None
                    yield lineno, parse_record(obj)
                except LineError as exc:
                    message = f"{path}, line {lineno}: {exc}"
                    if not skip_invalid:
                        raise ImportFailed(message) from None
                    if skipped is not None:
                        skipped.append(message)
        except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
            raise ImportFailed(f"{path}: unreadable: {exc}") from None


# ---------------------------------------------------------------- writing
