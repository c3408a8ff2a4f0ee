"""The ``transformers`` backend: local model, CPU or GPU.

The prompt's prefill runs once per prompt (where
``generate(num_return_sequences=n)`` prefills every prompt ``n`` times) and its KV
cache stays stored once per prompt (:mod:`training.sampling.kv_cache`); a
hand-written decode loop drops finished rows from the batch. For stock Llama models
on CPU the decode step itself is fused (:mod:`training.sampling.fused_llama`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from training.models import load_causal_lm as load_policy
from training.sampling.fused_llama import _FusedLlamaDecode, _supports_fused_decode
from training.sampling.interface import (
    DEFAULT_POLICY,
    Completion,
    Conversation,
    SampleProgress,
    _LocalTokenizer,
)
from training.sampling.kv_cache import (
    SHARED_PREFIX_ATTENTION,
    _preallocated_cache,
    _register_shared_prefix_attention,
    _shared_prefix_cache,
    _supports_shared_prefix,
)


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
