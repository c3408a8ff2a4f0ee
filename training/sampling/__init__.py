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
import inspect
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from training.models import ModelRefError as UnknownModelError
from training.models import load_causal_lm as load_policy
from training.models import resolve_model_ref

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


__all__ = [
    "BACKENDS",
    "DEFAULT_POLICY",
    "BadSamplingInput",
    "Completion",
    "OpenAISampler",
    "PromptTooLongError",
    "Sampler",
    "TransformersSampler",
    "UnknownBackendError",
    "UnknownModelError",
    "VLLMSampler",
    "make_sampler",
    "validate_request",
]


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


# --------------------------------------------------------------------------------
# transformers


def _chat_text(tokenizer: Any, conversation: Conversation) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False
        )
    # Base models without a template: a plain transcript ending on the reply turn.
    lines = [f"{m['role']}: {m['content']}" for m in conversation]
    return "\n".join([*lines, "assistant:"])


def _preallocated_cache(config: Any, capacity: int) -> Any:
    """A KV cache whose layers write into buffers sized for the whole generation.

    transformers' DynamicCache grows by ``torch.cat`` at every step, copying the
    whole cache each time; on CPU that copy cost more than the model itself
    (two thirds of a decode step at 64 rows). Writing in place and handing out
    views avoids it.
    """
    import torch
    from transformers.cache_utils import Cache, DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self) -> None:
            super().__init__()
            self.length = 0

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            self.device = key_states.device
            batch, heads, _, dim = key_states.shape
            self._k = key_states.new_empty((batch, heads, capacity, dim))
            self._v = value_states.new_empty((batch, heads, capacity, dim))
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kw: Any):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            self._k[:, :, self.length : end] = key_states
            self._v[:, :, self.length : end] = value_states
            self.length = end
            self.keys = self._k[:, :, :end]
            self.values = self._v[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def _resized(self, buffer: Any, rows: Any) -> Any:
            # Copy only the filled part: the rest of the capacity is garbage.
            out = buffer.new_empty((rows.shape[0], *buffer.shape[1:]))
            out[:, :, : self.length] = buffer[rows, :, : self.length]
            return out

        def batch_repeat_interleave(self, repeats: int) -> None:
            rows = torch.arange(self._k.shape[0], device=self._k.device)
            rows = rows.repeat_interleave(repeats)
            self._k, self._v = (
                self._resized(self._k, rows),
                self._resized(self._v, rows),
            )
            self.keys = self._k[:, :, : self.length]
            self.values = self._v[:, :, : self.length]

        def batch_select_indices(self, indices: Any) -> None:
            self._k = self._resized(self._k, indices)
            self._v = self._resized(self._v, indices)
            self.keys = self._k[:, :, : self.length]
            self.values = self._v[:, :, : self.length]

    layers = int(config.num_hidden_layers)
    return Cache(layers=[PreallocatedLayer() for _ in range(layers)])


# Name under which the shared-prefix decode attention is registered with
# transformers' AttentionInterface (and its mask with AttentionMaskInterface).
SHARED_PREFIX_ATTENTION = "pairloop_shared_prefix"
_registered = threading.Lock()
_registered_done = False
# transformers' SDPA attention, looked up once at registration (not per layer call).
_SDPA: list[Any] = []


def _shared_prefix_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Decode attention over a prompt prefix stored once per prompt.

    The cache (:class:`_SharedPrefixCache`) hands out only the per-row part of
    the keys and values (the tokens generated so far) and marks it; the prompt's
    keys and values stay stored once per prompt, not once per sample. Scores
    against the prompt are one batched product per prompt for all of its rows,
    so the prompt's keys and values are read once per step instead of n times
    (on a CPU, attention at 64 rows is bound by those reads). Anything else
    (the prefill, unmarked keys) is ordinary SDPA.
    """
    layer = getattr(key, "_pairloop_shared", None)
    if layer is None or query.shape[2] != 1:
        return _SDPA[0](
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            **kwargs,
        )
    return layer.attend(query, key, value, scaling)


def _register_shared_prefix_attention() -> None:
    global _registered_done
    with _registered:
        if _registered_done:
            return
        from transformers import AttentionInterface
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        _SDPA.append(sdpa_attention_forward)
        AttentionInterface.register(SHARED_PREFIX_ATTENTION, _shared_prefix_attention)
        AttentionMaskInterface.register(SHARED_PREFIX_ATTENTION, sdpa_mask)
        _registered_done = True


def _supports_shared_prefix(model: Any) -> bool:
    """Whether the decode loop may keep the prompt's KV once per prompt.

    The model must route attention through transformers' AttentionInterface
    (else it would attend to the per-row part alone) and use plain full
    attention: no sliding window and no logit soft-capping, which the shared
    path does not apply.
    """
    config = model.config
    if not getattr(model, "_can_set_attn_implementation", lambda: False)():
        return False
    if not getattr(model, "_supports_attention_backend", False):
        return False
    if getattr(config, "sliding_window", None) and getattr(
        config, "use_sliding_window", True
    ):
        return False
    if getattr(config, "attn_logit_softcapping", None):
        return False
    return getattr(config, "layer_types", None) in (None, []) or all(
        t == "full_attention" for t in config.layer_types
    )


class _SharedPrefixState:
    """What every layer's decode attention needs to know about the batch:
    the prompts' padding, and which prompt each live row belongs to."""

    def __init__(self, prefix_mask: Any, n: int, dtype: Any) -> None:
        import torch

        self.prompts = prefix_mask.shape[0]
        # Additive bias over the prompt's positions: 0 where real, -inf on padding.
        bias = torch.zeros(prefix_mask.shape, dtype=dtype, device=prefix_mask.device)
        bias.masked_fill_(prefix_mask == 0, float("-inf"))
        self.bias = bias[:, None, None, :]
        self.owner = torch.arange(self.prompts, device=prefix_mask.device)
        self.owner = self.owner.repeat_interleave(n)
        self.slots_per_prompt = n
        # slots: for each (prompt, slot) the batch row it reads (padding slots
        # read any row; their results are dropped). rows: each batch row's slot.
        # None while rows are exactly prompt-major n per prompt.
        self.slots: Any = None
        self.rows: Any = None
        self.calls = 0

    def select(self, indices: Any) -> None:
        import torch

        self.owner = self.owner[indices]
        counts = torch.bincount(self.owner, minlength=self.prompts)
        width = max(int(counts.max()), 1)
        # Rows stay grouped by prompt in order (dropping rows keeps order).
        first = torch.cumsum(counts, 0) - counts
        slot_in_prompt = torch.arange(len(self.owner), device=self.owner.device)
        slot_in_prompt = slot_in_prompt - first[self.owner]
        self.rows = self.owner * width + slot_in_prompt
        slots = torch.zeros(
            self.prompts * width, dtype=torch.long, device=self.owner.device
        )
        slots[self.rows] = torch.arange(len(self.owner), device=self.owner.device)
        self.slots = slots
        self.slots_per_prompt = width


def _shared_prefix_cache(config: Any, capacity: int, prefix_mask: Any, n: int) -> Any:
    """A KV cache that keeps the prompt's keys/values once per prompt.

    The prefill stores the prompts (batch = prompts); :meth:`fork` then adds a
    per-row buffer for the ``n`` samples' own tokens, preallocated for
    ``capacity`` steps. Decode-time attention is :func:`_shared_prefix_attention`.
    """
    import torch
    from transformers.cache_utils import Cache, DynamicLayer

    state: list[_SharedPrefixState] = []

    class SharedPrefixLayer(DynamicLayer):
        def __init__(self) -> None:
            super().__init__()
            self.prefix_k: Any = None
            self.length = 0

        def update(self, key_states: Any, value_states: Any, *args: Any, **kw: Any):
            if self.prefix_k is None:  # the prefill
                self.device = key_states.device
                self.is_initialized = True
                self.prefix_k, self.prefix_v = key_states, value_states
                self.keys, self.values = key_states, value_states
                return key_states, value_states
            if not state:
                raise RuntimeError("decode step before the prompt cache was forked")
            end = self.length + key_states.shape[-2]
            self._k[:, :, self.length : end] = key_states
            self._v[:, :, self.length : end] = value_states
            self.length = end
            keys, values = self._k[:, :, :end], self._v[:, :, :end]
            keys._pairloop_shared = self  # read by _shared_prefix_attention
            self.keys, self.values = keys, values
            return keys, values

        def get_seq_length(self) -> int:
            if self.prefix_k is None:
                return 0
            return self.prefix_k.shape[-2] + self.length

        def fork(self, rows: int) -> None:
            _, heads, _, dim = self.prefix_k.shape
            self._k = self.prefix_k.new_empty((rows, heads, capacity, dim))
            self._v = self.prefix_v.new_empty((rows, heads, capacity, dim))

        def batch_repeat_interleave(self, repeats: int) -> None:
            raise NotImplementedError("use fork()")

        def batch_select_indices(self, indices: Any) -> None:
            for name in ("_k", "_v"):
                buffer = getattr(self, name)
                out = buffer.new_empty((indices.shape[0], *buffer.shape[1:]))
                out[:, :, : self.length] = buffer[indices, :, : self.length]
                setattr(self, name, out)

        def attend(self, query: Any, key: Any, value: Any, scaling: Any) -> Any:
            s = state[0]
            s.calls += 1
            batch, heads, _, dim = query.shape
            kv_heads = key.shape[1]
            groups = heads // kv_heads
            prompts, width = s.prompts, s.slots_per_prompt
            plen = self.prefix_k.shape[-2]
            scale = dim**-0.5 if scaling is None else scaling
            # Query heads h use key/value head h // groups (as repeat_kv does).
            q = query.reshape(batch, kv_heads, groups, dim)
            if scale != 1.0:
                q = q * scale
            qs = q if s.slots is None else q.index_select(0, s.slots)
            # (prompt, kv head, slot x group, dim): one product per prompt.
            qg = qs.view(prompts, width, kv_heads, groups, dim).transpose(1, 2)
            qg = qg.reshape(prompts, kv_heads, width * groups, dim)
            sp = torch.matmul(qg, self.prefix_k.transpose(-1, -2)) + s.bias
            sp = sp.view(prompts, kv_heads, width, groups, plen).transpose(1, 2)
            sp = sp.reshape(prompts * width, kv_heads, groups, plen)
            if s.rows is not None:
                sp = sp.index_select(0, s.rows)
            ss = torch.matmul(q, key.transpose(-1, -2))
            probs = torch.softmax(torch.cat([sp, ss], dim=-1), dim=-1)
            pp = probs[..., :plen]
            if s.slots is not None:
                pp = pp.index_select(0, s.slots)
            pg = pp.reshape(prompts, width, kv_heads, groups, plen).transpose(1, 2)
            pg = pg.reshape(prompts, kv_heads, width * groups, plen)
            op = torch.matmul(pg, self.prefix_v)
            op = op.view(prompts, kv_heads, width, groups, dim).transpose(1, 2)
            op = op.reshape(prompts * width, kv_heads, groups, dim)
            if s.rows is not None:
                op = op.index_select(0, s.rows)
            out = op + torch.matmul(probs[..., plen:], value)
            return out.reshape(batch, 1, heads, dim), None

    class SharedPrefixCache(Cache):
        def fork(self, dtype: Any) -> None:
            state.append(_SharedPrefixState(prefix_mask, n, dtype))
            for layer in self.layers:
                layer.fork(prefix_mask.shape[0] * n)

        @property
        def attention_calls(self) -> int:
            return state[0].calls if state else 0

        def batch_select_indices(self, indices: Any) -> None:
            state[0].select(indices)
            for layer in self.layers:
                layer.batch_select_indices(indices)

    layers = int(config.num_hidden_layers)
    return SharedPrefixCache(layers=[SharedPrefixLayer() for _ in range(layers)])


def _supports_fused_decode(model: Any) -> bool:
    """Whether :class:`_FusedLlamaDecode` computes exactly this model's decode step.

    Only stock transformers Llama modules (SmolLM2, Llama, TinyLlama, ...) with
    plain ``nn.Linear`` projections and no biases, and no hooks on any module
    (accelerate offloading, adapters or quantisers wrap or hook them); anything
    else keeps the model's own forward.
    """
    import torch

    from training.packed import supports_packed_decoder

    try:
        from transformers.models.llama import modeling_llama as llama
    except ImportError:  # pragma: no cover - transformers without Llama
        return False
    inner = getattr(model, "model", None)
    config = model.config
    if type(model) is not llama.LlamaForCausalLM or type(inner) is not llama.LlamaModel:
        return False
    if not supports_packed_decoder(inner) or not _supports_shared_prefix(model):
        return False
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return False
    if len(inner.layers) != config.num_hidden_layers:
        return False
    head = model.lm_head
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return False
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if (
            type(layer) is not llama.LlamaDecoderLayer
            or type(attn) is not llama.LlamaAttention
            or type(mlp) is not llama.LlamaMLP
            or type(layer.input_layernorm) is not llama.LlamaRMSNorm
            or type(layer.post_attention_layernorm) is not llama.LlamaRMSNorm
        ):
            return False
        projections = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj)
        projections += (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if any(
            type(p) is not torch.nn.Linear or p.bias is not None for p in projections
        ):
            return False
    devices = {p.device for p in model.parameters()}
    hooked = any(
        m._forward_hooks or m._forward_pre_hooks or hasattr(m, "_hf_hook")
        for m in model.modules()
    )
    return len(devices) == 1 and not hooked


# MKL's packed GEMM for the fused decode step (a switch for benchmarks).
_PACKED_GEMM = True


class _FusedLlamaDecode:
    """One decode step of a Llama model over the shared-prefix cache, without
    transformers' per-step machinery (mask building, cache and kwargs plumbing,
    output classes).

    Per layer: RMSNorm, ONE product for query, key and value, rotary (queries
    and keys together), the shared-prefix attention, the output projection,
    RMSNorm, ONE product for gate and up, SiLU times up, the down projection.
    The query/key/value and gate/up weights are concatenated once, here, and
    with MKL every product (output layer included) uses a weight packed once
    into MKL's GEMM format instead of repacking it on every call. The copies
    cost memory (about 1 GB for a 135M model in fp32), so the sampler enables
    this by default only on CPU (where it was measured). They are rebuilt when
    the model's weights change (an in-place update or a replaced parameter).
    Same math as the model's forward; products differ only in float rounding.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        config = model.config
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        attn = model.model.layers[0].self_attn
        self.head_dim = int(attn.head_dim)
        self.scaling = float(attn.scaling)
        self.intermediate = int(config.intermediate_size)
        self._version: Any = None
        self._weights: list[tuple[Any, Any, Any, Any]] = []
        self.refresh()

    def _params(self) -> list[Any]:
        out = []
        for layer in self.model.model.layers:
            a, f = layer.self_attn, layer.mlp
            out += [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]
            out += [a.o_proj.weight, f.gate_proj.weight, f.up_proj.weight]
            out.append(f.down_proj.weight)
        return [*out, self.model.lm_head.weight]

    def refresh(self) -> None:
        """(Re)build the fused weights if the model's weights changed since."""
        import torch

        params = self._params()
        version = [(id(p), p._version) for p in params]
        if version == self._version:
            return
        # Scaling the queries by a power of two (1/8 for 64-dim heads) is exact,
        # so it folds into the query weights; otherwise attention applies it.
        exact = math.frexp(self.scaling)[0] == 0.5
        self.query_scale = 1.0 if exact else self.scaling
        weights = []
        with torch.no_grad():
            for layer in self.model.model.layers:
                a, f = layer.self_attn, layer.mlp
                q = a.q_proj.weight * self.scaling if exact else a.q_proj.weight
                qkv = torch.cat([q, a.k_proj.weight, a.v_proj.weight])
                gate_up = torch.cat([f.gate_proj.weight, f.up_proj.weight])
                mats = (qkv, a.o_proj.weight, gate_up, f.down_proj.weight)
                weights.append(tuple(self._pack(w) for w in mats))
            self._lm_head = self._pack(self.model.lm_head.weight)
        self._weights = weights
        self._version = version

    @staticmethod
    def _pack(weight: Any) -> tuple[Any, Any]:
        """``(weight, MKL-packed weight or None)``. With MKL, products use its
        packed format (prepared once here; saves repacking the weight on every
        call: 15-30 % of each product at 64 rows), at the price of memory."""
        import torch

        weight = weight.detach()
        if _PACKED_GEMM and weight.device.type == "cpu" and torch._C.has_mkl:
            rows = 64  # a hint only: any number of rows multiplies correctly
            return weight, torch.ops.mkl._mkl_reorder_linear_weight(weight, rows)
        return weight, None

    @staticmethod
    def _linear(x: Any, weight: tuple[Any, Any]) -> Any:
        import torch
        import torch.nn.functional as F

        dense, packed = weight
        if packed is None:
            return F.linear(x, dense)
        return torch.ops.mkl._mkl_linear(x, packed, dense, None, 64)

    def step(self, cache: Any, tokens: Any, positions: Any) -> Any:
        """Logits ``[rows, vocab]`` for ``tokens`` ``[rows]`` at ``positions``
        ``[rows, 1]``; appends their keys and values to ``cache``."""
        from training.packed import _rotate

        inner, linear = self.model.model, self._linear
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        qk_width, inter = (heads + kv_heads) * dim, self.intermediate
        hidden = inner.embed_tokens(tokens)
        rows = hidden.shape[0]
        cos, sin = inner.rotary_emb(hidden, positions)  # [rows, 1, head_dim]
        for layer, cached, (qkv_w, o_w, gate_up_w, down_w) in zip(
            inner.layers, cache.layers, self._weights, strict=True
        ):
            qkv = linear(layer.input_layernorm(hidden), qkv_w)
            qk = _rotate(qkv[:, :qk_width].view(rows, heads + kv_heads, dim), cos, sin)
            keys, values = cached.update(
                qk[:, heads:, None], qkv[:, qk_width:].view(rows, kv_heads, 1, dim)
            )
            out, _ = cached.attend(qk[:, :heads, None], keys, values, self.query_scale)
            hidden = hidden + linear(out.reshape(rows, heads * dim), o_w)
            gate_up = linear(layer.post_attention_layernorm(hidden), gate_up_w)
            act = layer.mlp.act_fn(gate_up[:, :inter]).mul_(gate_up[:, inter:])
            hidden = hidden + linear(act, down_w)
        return linear(inner.norm(hidden), self._lm_head)


class _LocalTokenizer:
    """Prompt encoding and the context-length check shared by the backends that
    hold a tokenizer (``self.tokenizer``, ``self.context_length``)."""

    tokenizer: Any
    context_length: int

    def encode(self, conversation: Conversation) -> list[int]:
        text = _chat_text(self.tokenizer, conversation)
        # The chat template already spells out BOS where the model wants one.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

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


class TransformersSampler(_LocalTokenizer):
    """Local sampling with a shared prompt prefill and a lean decode loop.

    ``max_batch_rows`` bounds the rows decoded together (prompts per batch x n);
    prompts are sorted by length so that a batch wastes little on left padding.
    ``share_prefill=False`` prefills every prompt n times, like
    ``generate(num_return_sequences=n)``; it exists for tests and benchmarks.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_rows: int | None = None,
        share_prefill: bool = True,
        shared_prefix_attention: bool | None = None,
        fused_decode: bool | None = None,
        eos_token_ids: Sequence[int] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.share_prefill = share_prefill
        # Keep the prompt's KV once per prompt while decoding (None: wherever
        # the model supports it); False expands it n times along the batch.
        supported = share_prefill and _supports_shared_prefix(model)
        if shared_prefix_attention and not supported:
            raise ValueError(
                "shared_prefix_attention needs share_prefill and a model that "
                "uses transformers' AttentionInterface with full attention"
            )
        self.shared_prefix_attention = (
            supported if shared_prefix_attention is None else shared_prefix_attention
        )
        if self.shared_prefix_attention:
            _register_shared_prefix_attention()
        self.device = next(model.parameters()).device
        # Decode steps of Llama models through _FusedLlamaDecode (None: where
        # supported and on CPU, where it was measured; it needs the shared cache).
        fusable = self.shared_prefix_attention and _supports_fused_decode(model)
        if fused_decode and not fusable:
            raise ValueError(
                "fused_decode needs the shared-prefix attention and a stock "
                "transformers Llama model without biases, hooks or wrapped layers"
            )
        if fused_decode is None:
            fused_decode = fusable and self.device.type == "cpu"
        self._fused = _FusedLlamaDecode(model) if fused_decode else None
        self.fused_decode = bool(fused_decode)
        # CPU throughput stops improving around 64 rows; a GPU wants far more.
        default_rows = 512 if self.device.type == "cuda" else 64
        self.max_batch_rows = max_batch_rows or default_rows
        config = model.config
        self.context_length = int(
            getattr(config, "max_position_embeddings", None) or 2048
        )
        eos: set[int] = set(eos_token_ids or ())
        sources = (getattr(model, "generation_config", None), config, tokenizer)
        # Explicit ids replace the model's (e.g. a chat model's end-of-turn token).
        for source in () if eos else sources:
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                eos.add(value)
            elif value:
                eos.update(int(v) for v in value)
        if not eos:
            raise ValueError("the model/tokenizer defines no eos_token_id")
        self.eos_ids = sorted(eos)
        self._eos_set = frozenset(self.eos_ids)
        # transformers 5 renamed past_key_values to cache (the old name warns).
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else self.eos_ids[0]
        # Test hook: called with (row sample seeds, logits) before each draw.
        self.logits_hook: Callable[[list[int], Any], None] | None = None

    @classmethod
    def from_ref(
        cls,
        ref: str = DEFAULT_POLICY,
        *,
        device: str | None = None,
        dtype: Any = None,
        artifacts_dir: str | None = None,
        **kwargs: Any,
    ) -> TransformersSampler:
        model, tokenizer = load_policy(
            ref, device=device, dtype=dtype, artifacts_dir=artifacts_dir
        )
        return cls(model, tokenizer, **kwargs)

    def sample(
        self,
        conversations: Sequence[Conversation],
        n: int,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        progress: SampleProgress | None = None,
        first_index: int = 0,
    ) -> list[list[Completion]]:
        encoded, seeds = self._prepare(
            conversations,
            n,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            first_index=first_index,
        )
        # Prompts sorted by length share batches with similar lengths (less padding).
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        per_batch = max(1, self.max_batch_rows // n)
        results: list[list[Completion]] = [[] for _ in conversations]
        total, done = len(conversations) * n, 0
        for start in range(0, len(order), per_batch):
            batch = order[start : start + per_batch]
            outputs = self._decode_batch(
                [encoded[i] for i in batch],
                [seeds[i] for i in batch],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
            )
            for i, rows in zip(batch, outputs, strict=True):
                results[i] = [self._completion(ids, reason) for ids, reason in rows]
            done += len(batch) * n
            if progress is not None:
                progress(done, total)
        return results

    def _completion(self, ids: list[int], reason: str) -> Completion:
        body = ids[:-1] if reason == "stop" else ids
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        return Completion(text=text, token_count=len(ids), finish_reason=reason)

    def _decode_batch(
        self,
        prompts: list[list[int]],
        seeds: list[list[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
    ) -> list[list[tuple[list[int], str]]]:
        import torch

        n = len(seeds[0])
        device = self.device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            # Left padding keeps every row's next token in the last column.
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        if not self.share_prefill:
            ids = ids.repeat_interleave(n, dim=0)
            mask = mask.repeat_interleave(n, dim=0)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        row_seeds = [s for prompt_seeds in seeds for s in prompt_seeds]
        # Each row draws all its uniforms up front from its own CPU generator
        # (one call per row, not per row and step: on a GPU that would be a
        # kernel launch each), so a sample depends on its seed alone.
        uniforms = torch.stack(
            [
                torch.rand(max_new_tokens, generator=torch.Generator().manual_seed(s))
                for s in row_seeds
            ]
        ).to(device)
        # Mask columns for every step, allocated once; step t uses [:, : width+t+1].
        full_mask = torch.ones(
            (len(row_seeds), width + max_new_tokens), dtype=torch.long, device=device
        )

        shared = self.shared_prefix_attention
        fused = self._fused
        if fused is not None:
            fused.refresh()
        with torch.inference_mode(), self._decode_attention(shared):
            if shared:
                cache = _shared_prefix_cache(self.model.config, max_new_tokens, mask, n)
            else:
                cache = _preallocated_cache(self.model.config, width + max_new_tokens)
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                **{self._cache_kwarg: cache},
                use_cache=True,
                logits_to_keep=1,
            )
            logits = out.logits[:, -1, :]
            if self.share_prefill:
                # The one place the n samples part ways. Either the prompt's KV
                # stays once per prompt and each row gets a buffer for its own
                # tokens, or it is copied n times (never recomputed n times).
                if shared:
                    cache.fork(logits.dtype)
                else:
                    cache.batch_repeat_interleave(n)
                mask = mask.repeat_interleave(n, dim=0)
                logits = logits.repeat_interleave(n, dim=0)
            full_mask[:, :width] = mask
            next_pos = mask.sum(-1, keepdim=True)
            # Batch row -> output row; -1 marks a finished row still in the batch.
            rows = list(range(len(row_seeds)))
            dead = 0
            tokens: list[list[int]] = [[] for _ in row_seeds]
            reasons = ["length"] * len(row_seeds)
            for step in range(max_new_tokens):
                live = [b for b, r in enumerate(rows) if r >= 0]
                live_logits = logits if dead == 0 else logits[live]
                if self.logits_hook is not None:
                    self.logits_hook([row_seeds[rows[b]] for b in live], live_logits)
                live_rows = rows if dead == 0 else [rows[b] for b in live]
                drawn = self._draw(
                    live_logits, uniforms[live_rows, step], temperature, top_p
                ).tolist()
                chosen = [self.pad_id] * len(rows)
                for b, token in zip(live, drawn, strict=True):
                    r = rows[b]
                    chosen[b] = token
                    tokens[r].append(token)
                    if token in self._eos_set:
                        reasons[r] = "stop"
                        rows[b] = -1
                        dead += 1
                if step == max_new_tokens - 1 or dead == len(rows):
                    break
                # Finished rows leave the batch so later steps only pay for what
                # is still generating; compacting copies the cache, so it waits
                # until an eighth of the batch is done.
                if dead and dead >= max(1, len(rows) // 8):
                    keep = [b for b, r in enumerate(rows) if r >= 0]
                    index = torch.tensor(keep, device=device)
                    cache.batch_select_indices(index)
                    full_mask, next_pos = full_mask[index], next_pos[index]
                    chosen = [chosen[b] for b in keep]
                    rows = [rows[b] for b in keep]
                    dead = 0
                step_ids = torch.tensor(chosen, device=device)
                if fused is not None:
                    logits = fused.step(cache, step_ids, next_pos)
                    next_pos = next_pos + 1
                    continue
                out = self.model(
                    input_ids=step_ids[:, None],
                    # The shared-prefix attention masks the prompt's padding
                    # itself; every generated position is real.
                    attention_mask=None if shared else full_mask[:, : width + step + 1],
                    position_ids=next_pos,
                    **{self._cache_kwarg: cache},
                    use_cache=True,
                )
                if shared and step == 0 and cache.attention_calls == 0:
                    # The model bypassed the attention interface: its output
                    # attended to the generated tokens alone.
                    raise RuntimeError(
                        f"{type(self.model).__name__} did not call the shared-prefix"
                        " attention; use shared_prefix_attention=False"
                    )
                logits = out.logits[:, -1, :]
                next_pos = next_pos + 1
        pairs = list(zip(tokens, reasons, strict=True))
        return [pairs[p * n : (p + 1) * n] for p in range(len(prompts))]

    @contextmanager
    def _decode_attention(self, shared: bool) -> Iterator[None]:
        """Route the model's attention through the shared-prefix function for
        one batch, then restore what it was (the prefill and any other user of
        the model keep their own implementation: the function defers to SDPA
        for everything but marked decode steps)."""
        before = self.model.config._attn_implementation
        if not shared or before == SHARED_PREFIX_ATTENTION:
            yield
            return
        self.model.set_attn_implementation(SHARED_PREFIX_ATTENTION)
        try:
            yield
        finally:
            self.model.set_attn_implementation(before)

    @staticmethod
    def _draw(logits: Any, uniforms: Any, temperature: float, top_p: float) -> Any:
        import torch

        if temperature == 0:
            return logits.argmax(dim=-1)
        scaled = logits.float()
        if temperature != 1.0:
            scaled = scaled / temperature
        order = None
        if top_p >= 1.0:
            # Inverse-CDF sampling needs no normalised probabilities: the CDF of
            # the unnormalised weights, read at u times their total, picks the
            # same token (one pass over the vocabulary less per step).
            probs = torch.exp(scaled - scaled.amax(dim=-1, keepdim=True))
        else:
            probs = torch.softmax(scaled, dim=-1)
            # Nucleus: keep the smallest set of top tokens whose mass reaches top_p
            # (the token crossing the threshold included).
            probs, order = probs.sort(dim=-1, descending=True)
            cumulative = probs.cumsum(dim=-1)
            probs = probs.masked_fill(cumulative - probs >= top_p, 0.0)
        cdf = probs.cumsum(dim=-1)
        # Inverse-CDF sampling with the row's own uniform keeps each sample
        # independent of the batch it happens to be in.
        u = (uniforms * cdf[:, -1]).unsqueeze(-1).to(cdf.dtype)
        picked = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[-1] - 1)
        if order is not None:
            picked = order.gather(-1, picked)
        return picked.squeeze(-1)


# --------------------------------------------------------------------------------
# vLLM


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise BadSamplingInput(
            "the vllm backend needs the 'vllm' package (pip install vllm), "
            "which runs on CUDA GPUs; use --backend transformers otherwise"
        ) from exc
    return vllm


class VLLMSampler(_LocalTokenizer):
    """vLLM on a GPU; install ``vllm`` separately (it is not a project dependency).

    Each sample is its own request with the per-sample seed (see the module
    docstring), and prefix caching makes the n requests of a prompt share one
    prefill — the same saving as ``SamplingParams(n=...)`` while keeping samples
    reproducible when drawn in chunks.
    """

    def __init__(
        self,
        model_path: str,
        *,
        gpu_memory_utilization: float = 0.85,
        dtype: str = "bfloat16",
        **engine_kwargs: Any,
    ) -> None:
        vllm = _import_vllm()
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=model_path,
            enable_prefix_caching=True,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            **engine_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)

    @classmethod
    def from_ref(
        cls, ref: str = DEFAULT_POLICY, *, artifacts_dir: str | None = None, **kw: Any
    ) -> VLLMSampler:
        _import_vllm()  # say that vLLM is missing before resolving the model
        return cls(str(resolve_model_ref(ref, artifacts_dir)), **kw)

    def sample(
        self,
        conversations: Sequence[Conversation],
        n: int,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        progress: SampleProgress | None = None,
        first_index: int = 0,
    ) -> list[list[Completion]]:
        encoded, seeds = self._prepare(
            conversations,
            n,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            first_index=first_index,
        )
        prompts, params = [], []
        for ids, prompt_seeds in zip(encoded, seeds, strict=True):
            for one_seed in prompt_seeds:
                prompts.append({"prompt_token_ids": ids})
                params.append(
                    self._vllm.SamplingParams(
                        n=1,
                        max_tokens=max_new_tokens,
                        temperature=temperature,
                        top_p=top_p,
                        seed=one_seed,
                    )
                )
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results: list[list[Completion]] = []
        for p in range(len(conversations)):
            row = []
            for output in outputs[p * n : (p + 1) * n]:
                choice = output.outputs[0]
                reason = "stop" if choice.finish_reason == "stop" else "length"
                row.append(Completion(choice.text, len(choice.token_ids), reason))
            results.append(row)
        if progress is not None:
            progress(len(conversations) * n, len(conversations) * n)
        return results


# --------------------------------------------------------------------------------
# OpenAI-compatible HTTP


class SamplingHTTPError(RuntimeError):
    """The endpoint failed after all retries."""


class OpenAISampler:
    """Any OpenAI-compatible ``/chat/completions`` (or ``/completions``) endpoint.

    Requests ask for ``n`` choices; servers that return fewer get asked again for
    the rest. At most ``max_concurrency`` requests are in flight; a request is
    retried on connection errors, timeouts, 429 and 5xx with exponential backoff.
    Token counts come from ``usage.completion_tokens`` (split over the choices by
    length when n > 1, since usage is per request) unless a ``count_tokens``
    function is given.
    """

    RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        mode: str = "chat",
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        count_tokens: Callable[[str], int] | None = None,
        check_model: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import httpx

        if mode not in ("chat", "completions"):
            raise BadSamplingInput(
                f"mode must be 'chat' or 'completions', got {mode!r}"
            )
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.mode = mode
        self.max_concurrency = max(1, max_concurrency)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.count_tokens = count_tokens
        self.check_model = check_model
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            headers=headers,
            limits=httpx.Limits(max_connections=self.max_concurrency),
        )
        self._model_checked = False
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def validate(
        self, conversations: Sequence[Conversation], max_new_tokens: int
    ) -> None:
        # The context length is the server's business; the model name we can check.
        if not self.check_model or self._model_checked:
            return
        try:
            response = self._client.get(f"{self.base_url}/models")
        except Exception:
            return  # unreachable now; the sampling requests report it with retries
        if response.status_code == 200:
            try:
                known = [m.get("id") for m in response.json().get("data", [])]
            except (ValueError, AttributeError):
                known = []
            if known and self.model not in known:
                raise UnknownModelError(
                    f"the endpoint {self.base_url} does not serve model "
                    f"{self.model!r}; it serves: {', '.join(map(str, known))}"
                )
        self._model_checked = True

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        import httpx

        path = "/chat/completions" if self.mode == "chat" else "/completions"
        last: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.post(self.base_url + path, json=payload)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in self.RETRY_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code == 404:
                raise UnknownModelError(
                    f"{self.base_url}{path} answered 404 for model {self.model!r}: "
                    f"{response.text[:200]}"
                )
            if response.status_code >= 400:
                raise SamplingHTTPError(
                    f"HTTP {response.status_code}: {response.text[:500]}"
                )
            return response.json()
        raise SamplingHTTPError(
            f"{self.base_url}{path} failed after {self.max_retries + 1} "
            f"attempts: {last}"
        )

    def _one_prompt(
        self,
        conversation: Conversation,
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> list[Completion]:
        completions: list[Completion] = []
        requests = 0
        while len(completions) < n:
            if requests > n:
                raise SamplingHTTPError(
                    f"the endpoint returned {len(completions)} of {n} choices"
                )
            payload: dict[str, Any] = {
                "model": self.model,
                "n": n - len(completions),
                "max_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "seed": seed + requests,
            }
            if self.mode == "chat":
                payload["messages"] = conversation
            else:
                payload["prompt"] = _chat_text(None, conversation)
            body = self._post(payload)
            requests += 1
            choices = body.get("choices") or []
            texts = [
                (c.get("message") or {}).get("content") or ""
                if self.mode == "chat"
                else c.get("text") or ""
                for c in choices
            ]
            usage = (body.get("usage") or {}).get("completion_tokens")
            chars = sum(len(t) for t in texts) or 1
            for choice, text in zip(choices, texts, strict=True):
                if self.count_tokens is not None:
                    count = self.count_tokens(text)
                elif isinstance(usage, int):
                    count = (
                        usage if len(texts) == 1 else round(usage * len(text) / chars)
                    )
                else:
                    count = len(text.split())
                reason = "length" if choice.get("finish_reason") == "length" else "stop"
                completions.append(Completion(text, count, reason))
        return completions[:n]

    def sample(
        self,
        conversations: Sequence[Conversation],
        n: int,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        progress: SampleProgress | None = None,
        first_index: int = 0,
    ) -> list[list[Completion]]:
        validate_request(conversations, n, max_new_tokens, temperature, top_p)
        self.validate(conversations, max_new_tokens)
        total, done = len(conversations) * n, 0

        def run(conv: Conversation) -> list[Completion]:
            nonlocal done
            # OpenAI's seed is an int; keep it in a range every server accepts.
            request_seed = sample_seed(seed, conv, first_index) % (2**31)
            result = self._one_prompt(
                conv, n, max_new_tokens, temperature, top_p, request_seed
            )
            with self._lock:
                done += n
                if progress is not None:
                    progress(done, total)
            return result

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(run, conversations))


# --------------------------------------------------------------------------------


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
