"""KV caches for the transformers sampler's decode loop.

- :func:`_preallocated_cache`: every layer writes into buffers sized for the whole
  generation (no ``torch.cat`` per step).
- :func:`_shared_prefix_cache` with :func:`_shared_prefix_attention`: the prompt's
  keys and values stay stored once per prompt and decode-time attention reads them
  once for all ``n`` samples of that prompt (an attention function registered with
  transformers' AttentionInterface); each sample keeps only its own tokens.
"""

from __future__ import annotations

import threading
from typing import Any


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
