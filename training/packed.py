"""Padding-free ("packed") forward for BERT-family encoders.

A length-grouped batch still carries padding: at length 256 on HH pairs about a
fifth of the padded tokens (and with random batches, as TRL's collator makes them,
nearly half). Here every token-wise part of the encoder — embeddings, the query,
key and value projections, the attention output, the feed-forward block and
every LayerNorm — runs on the real tokens only, packed into one ``[tokens,
hidden]`` matrix; only the attention itself sees the padded ``[batch, heads,
length, dim]`` layout it needs, through an index scatter and gather. The weights
are the backbone's own modules, so checkpoints stay ordinary ``save_pretrained``
ones and the padded Hugging Face forward gives the same hidden states (tested).

Supported: ``model_type == "bert"`` encoders (MiniLM, BERT, BGE/E5-style
checkpoints) with absolute positions; anything else keeps the padded forward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def supports_packed(backbone: Any) -> bool:
    config = getattr(backbone, "config", None)
    return (
        config is not None
        and getattr(config, "model_type", None) == "bert"
        and not getattr(config, "is_decoder", False)
        and not getattr(config, "add_cross_attention", False)
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and not getattr(config, "chunk_size_feed_forward", 0)
        and hasattr(backbone, "embeddings")
        and hasattr(backbone, "encoder")
    )


class Packing:
    """Where the real tokens of a right-padded ``[batch, length]`` mask live."""

    def __init__(self, attention_mask: torch.Tensor) -> None:
        mask = attention_mask.bool()
        self.batch, self.length = mask.shape
        self.index = mask.reshape(-1).nonzero().squeeze(-1)  # flat positions
        self.row = self.index // self.length  # each packed token's sequence
        self.position = self.index % self.length  # and its position in it
        self.counts = mask.sum(1)
        self.key_mask = mask[:, None, None, :]  # SDPA: True = attend

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """``[tokens, width]`` -> ``[batch, length, width]`` with zeros on padding."""
        out = packed.new_zeros((self.batch * self.length, packed.shape[-1]))
        out = out.index_copy(0, self.index, packed)
        return out.view(self.batch, self.length, -1)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        return padded.reshape(self.batch * self.length, -1).index_select(0, self.index)

    def mean(self, packed: torch.Tensor) -> torch.Tensor:
        sums = packed.new_zeros((self.batch, packed.shape[-1]))
        sums = sums.index_add(0, self.row, packed)
        return sums / self.counts.clamp(min=1).unsqueeze(-1).to(packed.dtype)

    def first(self, packed: torch.Tensor) -> torch.Tensor:
        starts = torch.cumsum(self.counts, 0) - self.counts
        return packed.index_select(0, starts)


def _attention(layer: Any, hidden: torch.Tensor, packing: Packing) -> torch.Tensor:
    attn = layer.attention.self
    heads, dim = attn.num_attention_heads, attn.attention_head_size
    # One product for query, key and value instead of three.
    weight = torch.cat([attn.query.weight, attn.key.weight, attn.value.weight])
    bias = torch.cat([attn.query.bias, attn.key.bias, attn.value.bias])
    qkv = packing.pad(F.linear(hidden, weight, bias))  # [B, L, 3 * heads * dim]
    b, length = packing.batch, packing.length
    qkv = qkv.view(b, length, 3, heads, dim).permute(2, 0, 3, 1, 4)
    context = F.scaled_dot_product_attention(
        qkv[0],
        qkv[1],
        qkv[2],
        attn_mask=packing.key_mask,
        dropout_p=attn.dropout.p if attn.training else 0.0,
        scale=attn.scaling,
    )  # [B, heads, L, dim]
    context = packing.unpad(context.transpose(1, 2).reshape(b, length, heads * dim))
    out = layer.attention.output
    return out.LayerNorm(out.dropout(out.dense(context)) + hidden)


def packed_encoder_forward(
    backbone: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, Packing]:
    """The encoder's last hidden states for the real tokens only: ``[tokens,
    hidden]`` in row-major order, with the :class:`Packing` that places them."""
    packing = Packing(attention_mask)
    emb = backbone.embeddings
    ids = input_ids.reshape(-1).index_select(0, packing.index)
    hidden = (
        emb.word_embeddings(ids)
        + emb.position_embeddings(packing.position)
        + emb.token_type_embeddings(torch.zeros_like(ids))
    )
    hidden = emb.dropout(emb.LayerNorm(hidden))
    for layer in backbone.encoder.layer:
        hidden = _attention(layer, hidden, packing)
        ffn = layer.intermediate(hidden)
        out = layer.output
        hidden = out.LayerNorm(out.dropout(out.dense(ffn)) + hidden)
    return hidden, packing


# ------------------------------------------------------------------ decoders


def supports_packed_decoder(backbone: Any) -> bool:
    """Llama-architecture decoders (SmolLM2, Llama, TinyLlama, ...) with full
    attention; others keep the padded prefix-reuse forward."""
    config = getattr(backbone, "config", None)
    return (
        config is not None
        and getattr(config, "model_type", None) == "llama"
        and all(
            hasattr(backbone, name)
            for name in ("embed_tokens", "layers", "norm", "rotary_emb")
        )
        and not getattr(config, "attn_logit_softcapping", None)
    )


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _split(
    t: torch.Tensor, pre: Packing, suf: Packing, n_pre: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed ``[tokens, heads * dim]`` -> padded prefix and suffix
    ``[rows, heads, length, dim]``."""
    t = t.reshape(t.shape[0], -1)
    p = pre.pad(t[:n_pre]).view(pre.batch, pre.length, -1, dim).transpose(1, 2)
    s = suf.pad(t[n_pre:]).view(suf.batch, suf.length, -1, dim).transpose(1, 2)
    return p, s


def packed_prefix_shared_forward(
    backbone: Any,
    prefix_ids: torch.Tensor,
    prefix_mask: torch.Tensor,
    suffix_ids: torch.Tensor,
    suffix_mask: torch.Tensor,
    repeats: int = 2,
) -> torch.Tensor:
    """Final hidden state at each suffix's last real token, ``[B * repeats, H]``.

    The same computation as running every ``prefix + suffix`` unpadded, with each
    prefix run once: the token-wise parts (projections, MLP, norms) of prefixes
    and suffixes together are one packed ``[real tokens, hidden]`` matrix; the
    prefixes attend causally among themselves, each suffix attends to its
    prefix's keys and causally to its own. Padding only exists inside attention.
    """
    pre, suf = Packing(prefix_mask), Packing(suffix_mask)
    rows, plen = pre.batch, pre.length
    srows, slen = suf.batch, suf.length
    n_pre = pre.index.shape[0]
    prefix_len = pre.counts.repeat_interleave(repeats)  # per suffix row
    positions = torch.cat([pre.position, suf.position + prefix_len[suf.row]])
    ids = torch.cat(
        [
            prefix_ids.reshape(-1).index_select(0, pre.index),
            suffix_ids.reshape(-1).index_select(0, suf.index),
        ]
    )
    hidden = backbone.embed_tokens(ids)
    cos, sin = backbone.rotary_emb(hidden, positions[None])
    cos, sin = cos[0][:, None, :], sin[0][:, None, :]  # [tokens, 1, head_dim]
    # Suffix queries: their prefix's real keys, then their own keys causally.
    causal = torch.ones(slen, slen, dtype=torch.bool, device=hidden.device).tril()
    suffix_attn_mask = torch.cat(
        [
            prefix_mask.bool()
            .repeat_interleave(repeats, 0)[:, None, None, :]
            .expand(srows, 1, slen, plen),
            causal[None, None].expand(srows, 1, slen, slen),
        ],
        dim=-1,
    )
    for layer in backbone.layers:
        attn = layer.self_attn
        heads = attn.config.num_attention_heads
        kv_heads = attn.config.num_key_value_heads
        dim = attn.head_dim
        dropout = attn.attention_dropout if attn.training else 0.0
        x = layer.input_layernorm(hidden)
        q = _rotate(attn.q_proj(x).view(-1, heads, dim), cos, sin)
        k = _rotate(attn.k_proj(x).view(-1, kv_heads, dim), cos, sin)
        v = attn.v_proj(x)

        qp, qs = _split(q, pre, suf, n_pre, dim)
        kp, ks = _split(k, pre, suf, n_pre, dim)
        vp, vs = _split(v, pre, suf, n_pre, dim)
        out_p = F.scaled_dot_product_attention(
            qp,
            kp,
            vp,
            is_causal=True,  # right padding: real queries only see real keys
            dropout_p=dropout,
            scale=attn.scaling,
            enable_gqa=heads != kv_heads,
        )
        out_s = F.scaled_dot_product_attention(
            qs,
            torch.cat([kp.repeat_interleave(repeats, 0), ks], dim=2),
            torch.cat([vp.repeat_interleave(repeats, 0), vs], dim=2),
            attn_mask=suffix_attn_mask,
            dropout_p=dropout,
            scale=attn.scaling,
            enable_gqa=heads != kv_heads,
        )
        out = torch.cat(
            [
                pre.unpad(out_p.transpose(1, 2).reshape(rows, plen, heads * dim)),
                suf.unpad(out_s.transpose(1, 2).reshape(srows, slen, heads * dim)),
            ]
        )
        hidden = hidden + attn.o_proj(out)
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    hidden = backbone.norm(hidden)
    last = n_pre + torch.cumsum(suf.counts, 0) - 1
    return hidden.index_select(0, last)
