"""Reading and checking policy-training data (``python -m training train-policy``).

The formats (TRL conversational, prompt-completion, chosen/rejected, Pairloop's
exports and pairs) are described in :mod:`training.train_policy`. Everything that
can be wrong with an input file is found here, before any model loads: an empty
file, bad JSON, a role other than user/assistant/system, an example longer than
the context. Each error names file, line and field.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")
EXIT_USAGE = 2
Progress = Callable[[float, str], None]


class PolicyDataError(ValueError):
    """A training file or line that cannot be used, with where and why."""

    def __init__(self, path: Any, line: int | None, field: str | None, why: str):
        where = f"{path}:{line}" if line is not None else f"{path}"
        what = f": field {field!r}" if field else ""
        super().__init__(f"{where}{what}: {why}")
        self.path, self.line, self.field = str(path), line, field


@dataclass
class Example:
    """One training example: a conversation and its completion(s)."""

    prompt: list[dict[str, str]]
    completion: str | None = None  # SFT
    chosen: str | None = None  # DPO
    rejected: str | None = None
    source: tuple[str, int] = ("", 0)

    def record(self) -> dict[str, Any]:
        if self.completion is not None:
            return {
                "prompt": self.prompt,
                "completion": [{"role": "assistant", "content": self.completion}],
            }
        return {
            "prompt": self.prompt,
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
        }


# ------------------------------------------------------------------- reading


def _lines(path: Path) -> list[tuple[int, Any]]:
    if not path.is_file():
        raise PolicyDataError(path, None, None, "no such file")
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        text = io.StringIO(raw.decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise PolicyDataError(path, None, None, f"cannot read: {exc}") from exc
    records = []
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise PolicyDataError(path, number, None, f"bad JSON: {exc}") from exc
    if not records:
        raise PolicyDataError(path, None, None, "empty file: no examples")
    return records


def _messages(raw: Any, path: Path, line: int, name: str) -> list[dict[str, str]]:
    if isinstance(raw, str):
        if not raw.strip():
            raise PolicyDataError(path, line, name, "empty text")
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise PolicyDataError(path, line, name, "expected a non-empty message list")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise PolicyDataError(path, line, f"{name}[{i}]", "expected an object")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise PolicyDataError(
                path,
                line,
                f"{name}[{i}].role",
                f"role {role!r} is not one of {', '.join(ROLES)}",
            )
        if not isinstance(content, str):
            raise PolicyDataError(
                path, line, f"{name}[{i}].content", "expected a string"
            )
        out.append({"role": role, "content": content})
    return out


def _reply(raw: Any, path: Path, line: int, name: str) -> str:
    """A completion: a string or messages ending in one assistant reply."""
    if isinstance(raw, str):
        text = raw
    else:
        msgs = _messages(raw, path, line, name)
        if len(msgs) != 1 or msgs[0]["role"] != "assistant":
            raise PolicyDataError(
                path, line, name, "expected exactly one assistant message"
            )
        text = msgs[0]["content"]
    if not text.strip():
        raise PolicyDataError(path, line, name, "empty reply")
    return text


def _prompt(raw: Any, path: Path, line: int, name: str) -> list[dict[str, str]]:
    msgs = _messages(raw, path, line, name)
    if msgs[-1]["role"] == "assistant":
        raise PolicyDataError(path, line, name, "the prompt must not end on a reply")
    return msgs


def read_sft(path: str | os.PathLike[str]) -> list[Example]:
    path = Path(path)
    out = []
    for line, rec in _lines(path):
        if not isinstance(rec, dict):
            raise PolicyDataError(path, line, None, "expected a JSON object")
        if "messages" in rec:
            msgs = _messages(rec["messages"], path, line, "messages")
            if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
                raise PolicyDataError(
                    path, line, "messages", "must end with an assistant reply"
                )
            prompt = _prompt(msgs[:-1], path, line, "messages")
            reply = _reply(msgs[-1]["content"], path, line, "messages[-1].content")
        elif "prompt" in rec and "completion" in rec:
            prompt = _prompt(rec["prompt"], path, line, "prompt")
            reply = _reply(rec["completion"], path, line, "completion")
        else:
            raise PolicyDataError(
                path,
                line,
                None,
                "expected 'messages' or 'prompt' + 'completion' "
                f"(got keys {sorted(rec)})",
            )
        out.append(Example(prompt, completion=reply, source=(str(path), line)))
    return out


def read_dpo(path: str | os.PathLike[str], counts: dict[str, int]) -> list[Example]:
    """DPO pairs; ``counts['ties_skipped']`` gets the Pairloop pairs with p_a = ½."""
    path = Path(path)
    out = []
    for line, rec in _lines(path):
        if not isinstance(rec, dict):
            raise PolicyDataError(path, line, None, "expected a JSON object")
        if "response_a" in rec or "response_b" in rec:
            key = "messages" if "messages" in rec else "prompt"
            for name in (key, "response_a", "response_b", "p_a"):
                if name not in rec:
                    raise PolicyDataError(path, line, name, "missing field")
            p_a = rec["p_a"]
            if isinstance(p_a, bool) or not isinstance(p_a, int | float):
                raise PolicyDataError(path, line, "p_a", "expected a number")
            if not 0 <= p_a <= 1:
                raise PolicyDataError(path, line, "p_a", "must be in [0, 1]")
            prompt = _prompt(rec[key], path, line, key)
            a = _reply(rec["response_a"], path, line, "response_a")
            b = _reply(rec["response_b"], path, line, "response_b")
            if p_a == 0.5:
                counts["ties_skipped"] = counts.get("ties_skipped", 0) + 1
                continue
            chosen, rejected = (a, b) if p_a > 0.5 else (b, a)
        elif "chosen" in rec and "rejected" in rec:
            if "prompt" in rec:
                prompt = _prompt(rec["prompt"], path, line, "prompt")
                chosen = _reply(rec["chosen"], path, line, "chosen")
                rejected = _reply(rec["rejected"], path, line, "rejected")
            else:
                ca = _messages(rec["chosen"], path, line, "chosen")
                cr = _messages(rec["rejected"], path, line, "rejected")
                if len(ca) < 2 or ca[:-1] != cr[:-1]:
                    raise PolicyDataError(
                        path,
                        line,
                        "chosen",
                        "implicit prompt: chosen and rejected must share every "
                        "message but the last",
                    )
                prompt = _prompt(ca[:-1], path, line, "chosen")
                chosen = _reply(ca[-1:], path, line, "chosen[-1]")
                rejected = _reply(cr[-1:], path, line, "rejected[-1]")
        else:
            raise PolicyDataError(
                path,
                line,
                None,
                "expected 'prompt'/'chosen'/'rejected' or 'response_a'/'response_b'"
                f"/'p_a' (got keys {sorted(rec)})",
            )
        out.append(
            Example(prompt, chosen=chosen, rejected=rejected, source=(str(path), line))
        )
    return out


def check_lengths(examples: Sequence[Example], tokenizer: Any, max_length: int) -> int:
    """Raise for the first example longer than ``max_length``; return the tokens
    of one pass over the data (the tokens/s numerator)."""
    total = 0
    for ex in examples:
        prompt_ids = tokenizer.apply_chat_template(
            ex.prompt, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        fields = (
            [("completion", ex.completion)]
            if ex.completion is not None
            else [("chosen", ex.chosen), ("rejected", ex.rejected)]
        )
        for name, text in fields:
            full = tokenizer.apply_chat_template(
                [*ex.prompt, {"role": "assistant", "content": text}],
                tokenize=True,
                return_dict=False,
            )
            length = max(len(full), len(prompt_ids))
            if length > max_length:
                raise PolicyDataError(
                    ex.source[0],
                    ex.source[1],
                    name,
                    f"the example is {length} tokens, longer than the context of "
                    f"{max_length} (max_length / the model's context)",
                )
            total += length
    return total


def fingerprint(
    files: dict[str, Sequence[str]], examples: dict[str, Sequence[Example]]
) -> dict[str, Any]:
    """Which data trained a version: file hashes, counts, and a hash of the
    parsed examples (stable across re-encodings of the same data)."""
    out: dict[str, Any] = {"files": [], "examples": {}}
    for kind, paths in files.items():
        for p in paths:
            out["files"].append(
                {
                    "kind": kind,
                    "path": str(p),
                    "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest(),
                }
            )
    for kind, exs in examples.items():
        blob = json.dumps([e.record() for e in exs], sort_keys=True).encode()
        out["examples"][kind] = {
            "count": len(exs),
            "sha256": hashlib.sha256(blob).hexdigest(),
        }
    return out
