"""The sampler interface every backend implements, its errors, and the seeding.

Seeding: sample ``i`` of a conversation draws its randomness from a generator seeded
by ``(seed, hash of the conversation, i)``. A sample therefore does not depend on
which other prompts share its batch, on batch sizes, or on whether it was drawn in
one call or in chunks (``first_index``), which makes adaptive N replayable and the
shared-prefill path comparable sample-for-sample with the naive path. (Numerics
still differ in the last bits between batch shapes, which can flip a draw that lands
exactly on a token boundary; in practice samples match.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# The backends' error for a model reference or name nobody serves.
from training.models import ModelRefError as UnknownModelError  # noqa: F401

DEFAULT_POLICY = "builtin:smollm2-135m-instruct"
BACKENDS = ("transformers", "vllm", "openai")

Conversation = list[dict[str, str]]
# progress(done, total): samples finished so far out of those requested in the call.
SampleProgress = Callable[[int, int], None]


class BadSamplingInput(ValueError):
    """Input that the engine refuses before sampling anything."""


class UnknownBackendError(BadSamplingInput):
    pass


class PromptTooLongError(BadSamplingInput):
    """A prompt (plus the tokens to generate) exceeds the model's context."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class Completion:
    text: str
    token_count: int
    # "stop" (end-of-sequence token) or "length" (hit max_new_tokens).
    finish_reason: str


class Sampler(Protocol):
    def validate(
        self, conversations: Sequence[Conversation], max_new_tokens: int
    ) -> None:
        """Raise :class:`BadSamplingInput` for prompts this sampler cannot serve."""

    def sample(
        self,
        conversations: Sequence[Conversation],
        n: int,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        progress: SampleProgress | None = None,
        first_index: int = 0,
    ) -> list[list[Completion]]: ...


def validate_request(
    conversations: Sequence[Conversation],
    n: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> None:
    """Backend-independent checks shared by all samplers and the round."""
    if not conversations:
        raise BadSamplingInput("no prompts given")
    if not isinstance(n, int) or n < 1:
        raise BadSamplingInput(f"n must be an integer >= 1, got {n!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise BadSamplingInput(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    if temperature < 0:
        raise BadSamplingInput(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise BadSamplingInput(f"top_p must be in (0, 1], got {top_p}")
    for i, conv in enumerate(conversations):
        if not conv or not all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in conv
        ):
            raise BadSamplingInput(
                f"prompt {i}: a conversation is a non-empty list of "
                "{'role': str, 'content': str} messages"
            )


def conversation_key(conversation: Conversation) -> bytes:
    blob = json.dumps(conversation, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).digest()


def sample_seed(seed: int, conversation: Conversation, index: int) -> int:
    """The seed of sample ``index`` for ``conversation`` (stable across processes)."""
    digest = hashlib.sha256(
        f"{seed}:{index}:".encode() + conversation_key(conversation)
    ).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _chat_text(tokenizer: Any, conversation: Conversation) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False
        )
    # Base models without a template: a plain transcript ending on the reply turn.
    lines = [f"{m['role']}: {m['content']}" for m in conversation]
    return "\n".join([*lines, "assistant:"])


class _LocalTokenizer:
    """Prompt encoding and the context-length check shared by the backends that
    hold a tokenizer (``self.tokenizer``, ``self.context_length``)."""

    tokenizer: Any
    context_length: int

    def encode(self, conversation: Conversation) -> list[int]:
        text = _chat_text(self.tokenizer, conversation)
        # The chat template already spells out BOS where the model wants one.
        # verbose=False: a prompt over the context is refused by validate() with
        # its index; the tokenizer's own warning would only add noise.
        out = self.tokenizer(text, add_special_tokens=False, verbose=False)
        return list(out["input_ids"])

    def validate(
        self, conversations: Sequence[Conversation], max_new_tokens: int
    ) -> None:
        for i, conv in enumerate(conversations):
            length = len(self.encode(conv))
            if length + max_new_tokens > self.context_length:
                raise PromptTooLongError(
                    f"prompt {i} has {length} tokens; with max_new_tokens="
                    f"{max_new_tokens} that exceeds the model's context of "
                    f"{self.context_length} tokens",
                    index=i,
                )

    def _prepare(
        self,
        conversations: Sequence[Conversation],
        n: int,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        first_index: int,
    ) -> tuple[list[list[int]], list[list[int]]]:
        """The start of every local ``sample()``: check the request and the prompt
        lengths, then each prompt's token ids and the seeds of its n samples
        (samples ``first_index`` .. ``first_index + n - 1``)."""
        validate_request(conversations, n, max_new_tokens, temperature, top_p)
        self.validate(conversations, max_new_tokens)
        encoded = [self.encode(c) for c in conversations]
        seeds = [
            [sample_seed(seed, c, first_index + j) for j in range(n)]
            for c in conversations
        ]
        return encoded, seeds
