"""Preference pairs as token ids: the formatter shared by training and scoring.

Reading pair files lives in :mod:`training.formats` (re-exported here, so
``from training.data import read_pairs`` keeps working).

Plain text format (tokenizers without a chat template)::

    User: first user message
    Assistant: an assistant reply
    User: last user message
    Assistant:

followed by the response, as a second segment for encoders (``[CLS] conv [SEP]
response [SEP]``) and as a continuation (plus EOS) for decoders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from training.formats import (
    Message,
    Pair,
    PairFormatError,
    content_id,
    iter_pairs,
    pair_from_record,
    parse_hh_transcript,
    read_pairs,
)

__all__ = [
    "Formatter",
    "Message",
    "Pair",
    "PairFormatError",
    "TruncationStats",
    "content_id",
    "iter_pairs",
    "pair_from_record",
    "parse_hh_transcript",
    "plain_conversation",
    "read_pairs",
]


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

    def _ids(self, text: str, *, keep: str = "start") -> list[int]:
        """Token ids of ``text``, cut at tokenization: a response keeps its start
        (at most ``max_length`` tokens, which :meth:`fit` cuts further). A prompt
        keeps its end, which the tokenizer's right-hand truncation cannot do, so
        it is tokenized whole with the tokenizer's "longer than the maximum"
        warning off: :meth:`fit` truncates it before any model sees it."""
        if keep == "start":
            out = self.tokenizer(
                text,
                add_special_tokens=False,
                truncation=True,
                max_length=self.max_length,
            )
        else:
            out = self.tokenizer(text, add_special_tokens=False, verbose=False)
        return list(out["input_ids"])

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
        return self._ids(prompt, keep="end")

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
