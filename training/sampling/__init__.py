"""Sampler backends for rejection sampling, behind one interface.

Every backend answers ``sample(conversations, n, ...)`` with, per conversation, ``n``
:class:`Completion` objects (text, token count, finish reason):

- ``transformers`` — local model, CPU or GPU. The prompt's prefill runs once per
  prompt (where ``generate(num_return_sequences=n)`` prefills every prompt ``n``
  times) and its KV cache stays stored once per prompt: decode-time attention
  reads it once for all ``n`` samples (a shared-prefix attention registered with
  transformers' AttentionInterface) and each sample keeps only its own tokens; a
  hand-written decode loop drops finished rows from the batch. For stock Llama
  models on CPU the decode step itself is fused (``_FusedLlamaDecode``: one
  product for q/k/v and one for gate/up, MKL-packed weights, no per-step
  transformers plumbing).
- ``vllm`` — GPU, optional import; one request per sample with its own seed, and
  prefix caching so the prompt is prefilled once.
- ``openai`` — any OpenAI-compatible chat/completions endpoint, with bounded
  concurrency, timeouts and retries.


Layout: :mod:`.interface` (the protocol, errors and seeding), :mod:`.hf` (the
transformers sampler), :mod:`.kv_cache` (its caches and shared-prefix attention),
:mod:`.fused_llama` (its fused Llama decode step, the one module on private torch
ops), :mod:`.vllm` and :mod:`.openai_http`. Every name is re-exported here, so
callers import from ``training.sampling``.

The interface lives in its own module rather than in this file so that the backends
import it without importing the package that imports them (no cycle).
"""

from __future__ import annotations

from typing import Any

from training.sampling.hf import TransformersSampler
from training.sampling.interface import (
    BACKENDS,
    DEFAULT_POLICY,
    BadSamplingInput,
    Completion,
    Conversation,
    PromptTooLongError,
    SampleProgress,
    Sampler,
    UnknownBackendError,
    UnknownModelError,
    conversation_key,
    sample_seed,
    validate_request,
)
from training.sampling.openai_http import OpenAISampler, SamplingHTTPError
from training.sampling.vllm import VLLMSampler

__all__ = [
    "BACKENDS",
    "DEFAULT_POLICY",
    "BadSamplingInput",
    "Completion",
    "Conversation",
    "OpenAISampler",
    "PromptTooLongError",
    "SampleProgress",
    "Sampler",
    "SamplingHTTPError",
    "TransformersSampler",
    "UnknownBackendError",
    "UnknownModelError",
    "VLLMSampler",
    "conversation_key",
    "make_sampler",
    "sample_seed",
    "validate_request",
]


def make_sampler(
    backend: str = "transformers", policy_ref: str = DEFAULT_POLICY, **kwargs: Any
) -> Sampler:
    """A sampler for ``backend`` serving ``policy_ref``.

    transformers: kwargs ``device``, ``dtype``, ``artifacts_dir``, ``max_batch_rows``.
    vllm: ``artifacts_dir`` plus ``vllm.LLM`` kwargs. openai: ``policy_ref`` is the
    served model name; kwargs ``base_url``, ``api_key``, ``mode``,
    ``max_concurrency``, ``timeout_s``, ``max_retries``.
    """
    if backend == "transformers":
        return TransformersSampler.from_ref(policy_ref, **kwargs)
    if backend == "vllm":
        return VLLMSampler.from_ref(policy_ref, **kwargs)
    if backend == "openai":
        return OpenAISampler(policy_ref, **kwargs)
    raise UnknownBackendError(
        f"unknown sampler backend {backend!r}; choose one of {', '.join(BACKENDS)}"
    )
