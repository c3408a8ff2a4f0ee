"""A fused decode step for stock Llama models on the shared-prefix cache.

The only module of ``training/`` on private torch ops (``torch.ops.mkl`` packed
GEMM); where MKL is missing, or ``_PACKED_GEMM`` is off, every product falls back
to plain ``F.linear`` on the same fused weights.
"""

from __future__ import annotations

import math
from typing import Any

from training.sampling.kv_cache import _supports_shared_prefix


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
