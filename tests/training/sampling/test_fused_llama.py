"""The fused Llama decode step: the model's own forward's logits and samples,
also with finished rows dropped and left-padded prompts; where it is used."""

from __future__ import annotations

import pytest
import torch

from tests.training._bon_fixtures import (
    CONVERSATIONS,
    EOS,
    PAD,
    tiny_model,
    tiny_tokenizer,
)
from training.sampling import TransformersSampler, fused_llama

SETTINGS = {"max_new_tokens": 12, "temperature": 1.0, "top_p": 0.9, "seed": 7}


def llama(**overrides):
    """A tiny random Llama; ``overrides`` change its config."""
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = tiny_tokenizer().vocab_size
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=EOS,
        pad_token_id=PAD,
        **overrides,
    )
    torch.manual_seed(3)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(40)  # preferences, so that top-p selects
    return model.eval()


def _record(log: dict):
    steps: dict[int, int] = {}

    def hook(seeds, logits):
        for seed, row in zip(seeds, logits, strict=True):
            log[(seed, steps.get(seed, 0))] = row.clone()
            steps[seed] = steps.get(seed, 0) + 1

    return hook


def _stop_word(model, tokenizer) -> int:
    """A token the model samples often: as an extra end-of-sequence token it
    makes rows finish (and leave the batch) at different steps."""
    free = TransformersSampler(model, tokenizer).sample(CONVERSATIONS, 8, **SETTINGS)
    texts = [set(c.text.split()) for row in free for c in row]
    # The word in closest to half of the samples: some stop early, some run on.
    words = set().union(*texts)
    word = min(words, key=lambda w: abs(sum(w in t for t in texts) - len(texts) / 2))
    return tokenizer.convert_tokens_to_ids(word)


@pytest.mark.parametrize(
    ("model", "packed"),
    [
        pytest.param(tiny_model, True, id="head_dim8-scale-in-attention"),
        # 16-dim heads: the 1/4 query scaling folds into the weights; 3 groups.
        pytest.param(llama, True, id="head_dim16-scale-folded"),
        pytest.param(llama, False, id="plain-gemm"),  # without MKL's packed GEMM
        pytest.param(
            lambda: llama(
                rope_parameters={
                    "rope_type": "linear",
                    "factor": 2.0,
                    "rope_theta": 500.0,
                }
            ),
            True,
            id="linear-rope",
        ),
    ],
)
def test_fused_step_gives_the_models_logits_and_samples(model, packed, monkeypatch):
    """Left-padded prompts of different lengths, rows dropped as they finish:
    every step's logits equal the model's own forward's, and the same seeds
    give the same samples."""
    monkeypatch.setattr(fused_llama, "_PACKED_GEMM", packed)
    model, tokenizer = model(), tiny_tokenizer()
    stop = _stop_word(model, tokenizer)
    steps = []
    real_step = fused_llama._FusedLlamaDecode.step

    def spy(self, cache, tokens, positions):
        steps.append(tokens.shape[0])
        return real_step(self, cache, tokens, positions)

    monkeypatch.setattr(fused_llama._FusedLlamaDecode, "step", spy)
    logged: dict[bool, dict] = {True: {}, False: {}}
    outputs = {}
    for fused in (True, False):
        sampler = TransformersSampler(
            model, tokenizer, eos_token_ids=[EOS, stop], fused_decode=fused
        )
        assert sampler.fused_decode is fused
        if fused:
            sampler_fused = sampler
        sampler.logits_hook = _record(logged[fused])
        outputs[fused] = sampler.sample(CONVERSATIONS, 8, **SETTINGS)
    assert outputs[True] == outputs[False]
    reasons = [c.finish_reason for row in outputs[True] for c in row]
    assert reasons.count("stop") >= 3 and "length" in reasons
    # The fused step ran, also on a batch that had lost rows.
    assert steps and min(steps) < len(CONVERSATIONS) * 8
    if packed and torch._C.has_mkl:
        assert sampler_fused._fused._weights[0][0][1] is not None
    assert logged[True].keys() == logged[False].keys()
    for key, row in logged[True].items():
        torch.testing.assert_close(row, logged[False][key], rtol=1e-5, atol=1e-4)
    lengths = {len(sampler.encode(c)) for c in CONVERSATIONS}
    assert len(lengths) == len(CONVERSATIONS)  # left padding in the batch


def test_fused_weights_follow_in_place_weight_updates():
    """The concatenated weights are rebuilt when the model is trained in place
    (or a parameter is replaced) between calls, not sampled stale."""
    model, tokenizer = llama(), tiny_tokenizer()
    fused = TransformersSampler(model, tokenizer, fused_decode=True)
    plain = TransformersSampler(model, tokenizer, fused_decode=False)
    before = fused.sample(CONVERSATIONS, 4, **SETTINGS)
    assert before == plain.sample(CONVERSATIONS, 4, **SETTINGS)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.up_proj.weight.mul_(-3.0)
    model.model.layers[1].self_attn.q_proj.weight = torch.nn.Parameter(
        torch.randn_like(model.model.layers[1].self_attn.q_proj.weight)
    )
    after = fused.sample(CONVERSATIONS, 4, **SETTINGS)
    assert after == plain.sample(CONVERSATIONS, 4, **SETTINGS)
    assert after != before


def test_fused_decode_is_used_where_supported_and_only_there():
    tokenizer = tiny_tokenizer()
    model = llama()
    calls = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    # A hook on the model is something the fused step would skip.
    assert not TransformersSampler(model, tokenizer).fused_decode

    model = llama()
    sampler = TransformersSampler(model, tokenizer)
    assert sampler.fused_decode
    forwards = []
    real = type(model.model).forward

    def counting(self, *args, **kwargs):
        forwards.append(1)
        return real(self, *args, **kwargs)

    type(model.model).forward = counting
    try:
        sampler.sample(CONVERSATIONS, 3, max_new_tokens=6, temperature=0.0)
    finally:
        type(model.model).forward = real
    assert len(forwards) == 1  # the prefill alone: decode steps are fused

    from transformers import LlamaForCausalLM, MistralConfig, MistralForCausalLM

    class Custom(LlamaForCausalLM):
        pass

    unsupported = {
        "attention bias": llama(attention_bias=True),
        "mlp bias": llama(mlp_bias=True),
        "subclass": Custom(llama().config),
        "not llama": MistralForCausalLM(
            MistralConfig(
                vocab_size=tokenizer.vocab_size,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=4,
                num_key_value_heads=2,
                eos_token_id=EOS,
            )
        ),
    }
    for name, other in unsupported.items():
        assert not TransformersSampler(other, tokenizer).fused_decode, name
        with pytest.raises(ValueError, match="fused_decode needs"):
            TransformersSampler(other, tokenizer, fused_decode=True)
        # They still sample, through the model's own forward.
        out = TransformersSampler(other.eval(), tokenizer).sample(
            CONVERSATIONS[:1], 2, max_new_tokens=3, temperature=0.0
        )
        assert len(out[0]) == 2
    # The fused step works over the shared-prefix cache only.
    plain = TransformersSampler(llama(), tokenizer, shared_prefix_attention=False)
    assert not plain.fused_decode
    with pytest.raises(ValueError, match="fused_decode needs"):
        TransformersSampler(
            llama(), tokenizer, shared_prefix_attention=False, fused_decode=True
        )
