"""The transformers sampler: shared prefill == naive prefill, seeding, EOS, errors."""

from __future__ import annotations

import sys

import pytest
import torch

from tests.training._bon_fixtures import (
    CONVERSATIONS,
    EOS,
    tiny_model,
    tiny_sampler,
    tiny_tokenizer,
)
from training.sampling import (
    BadSamplingInput,
    Completion,
    PromptTooLongError,
    TransformersSampler,
    UnknownBackendError,
    UnknownModelError,
    make_sampler,
    sample_seed,
)

SETTINGS = {"max_new_tokens": 12, "temperature": 1.0, "top_p": 0.9, "seed": 7}


def test_n_completions_per_prompt_with_counts_and_reasons():
    out = tiny_sampler().sample(CONVERSATIONS, 4, **SETTINGS)
    assert len(out) == len(CONVERSATIONS)
    for row in out:
        assert len(row) == 4
        for c in row:
            assert isinstance(c, Completion)
            assert c.finish_reason in ("stop", "length")
            assert 1 <= c.token_count <= SETTINGS["max_new_tokens"]
            if c.finish_reason == "length":
                assert c.token_count == SETTINGS["max_new_tokens"]


def test_shared_prefill_gives_the_samples_and_logits_of_n_fold_prefill():
    shared, naive = tiny_sampler(), tiny_sampler(share_prefill=False)
    logged: dict[str, dict[tuple[int, int], torch.Tensor]] = {"s": {}, "n": {}}

    def hook(name):
        steps: dict[int, int] = {}

        def record(seeds, logits):
            for seed, row in zip(seeds, logits, strict=True):
                step = steps.get(seed, 0)
                steps[seed] = step + 1
                logged[name][(seed, step)] = row.clone()

        return record

    shared.logits_hook, naive.logits_hook = hook("s"), hook("n")
    a = shared.sample(CONVERSATIONS, 5, **SETTINGS)
    b = naive.sample(CONVERSATIONS, 5, **SETTINGS)
    assert a == b
    assert logged["s"].keys() == logged["n"].keys()
    for key, row in logged["s"].items():
        torch.testing.assert_close(row, logged["n"][key], rtol=1e-4, atol=1e-4)
    # The samples of a prompt differ from each other (they are not one sample n times).
    assert len({c.text for c in a[0]}) > 1


def test_greedy_equals_transformers_generate_despite_left_padding():
    sampler = tiny_sampler()
    out = sampler.sample(CONVERSATIONS, 2, max_new_tokens=10, temperature=0.0, seed=0)
    for conv, row in zip(CONVERSATIONS, out, strict=True):
        ids = torch.tensor([sampler.encode(conv)])
        ref = sampler.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=10,
            eos_token_id=EOS,
            pad_token_id=0,
        )[0, ids.shape[1] :].tolist()
        if EOS in ref:
            ref = ref[: ref.index(EOS) + 1]
        assert row[0].token_count == len(ref)
        body = ref[:-1] if ref[-1] == EOS else ref
        assert row[0].text == sampler.tokenizer.decode(body, skip_special_tokens=True)
        assert row[0] == row[1]


def test_seeded_reproducible_and_independent_of_batching_and_chunks():
    sampler = tiny_sampler()
    whole = sampler.sample(CONVERSATIONS, 4, **SETTINGS)
    assert whole == tiny_sampler().sample(CONVERSATIONS, 4, **SETTINGS)
    # One prompt per batch, and the same samples drawn two at a time.
    small = tiny_sampler(max_batch_rows=2)
    first = small.sample(CONVERSATIONS, 2, **SETTINGS)
    rest = small.sample(CONVERSATIONS, 2, first_index=2, **SETTINGS)
    assert [a + b for a, b in zip(first, rest, strict=True)] == whole
    # A prompt's samples do not depend on the other prompts in the call.
    assert sampler.sample(CONVERSATIONS[1:2], 4, **SETTINGS) == whole[1:2]
    other_seed = sampler.sample(CONVERSATIONS, 4, **{**SETTINGS, "seed": 8})
    assert other_seed != whole


def test_stops_each_sequence_at_eos():
    model, tokenizer = tiny_model(), tiny_tokenizer()
    free = TransformersSampler(model, tokenizer)
    greedy = free.sample(CONVERSATIONS[:1], 1, max_new_tokens=8, temperature=0.0)
    ids = tokenizer(greedy[0][0].text, add_special_tokens=False)["input_ids"]
    assert len(ids) >= 3
    # Declaring the third greedy token an end-of-sequence token must stop there.
    stopping = TransformersSampler(model, tokenizer, eos_token_ids=[EOS, ids[2]])
    out = stopping.sample(CONVERSATIONS[:1], 2, max_new_tokens=8, temperature=0.0)
    assert out[0][0] == Completion(tokenizer.decode(ids[:2]), 3, "stop")


def test_finished_rows_leave_the_batch_without_changing_the_others():
    model, tokenizer = tiny_model(), tiny_tokenizer()
    free = TransformersSampler(model, tokenizer).sample(CONVERSATIONS, 8, **SETTINGS)
    words = [w for row in free for c in row for w in c.text.split()]
    common = max(set(words), key=words.count)
    stop_id = tokenizer.convert_tokens_to_ids(common)
    stopping = TransformersSampler(model, tokenizer, eos_token_ids=[EOS, stop_id])
    out = stopping.sample(CONVERSATIONS, 8, **SETTINGS)
    reasons = [c.finish_reason for row in out for c in row]
    assert reasons.count("stop") >= 3 and "length" in reasons  # rows were dropped
    for row, ref_row in zip(out, free, strict=True):
        for c, ref in zip(row, ref_row, strict=True):
            if common in ref.text.split():
                # Cut at the first new end-of-sequence token, the rest unchanged.
                assert c.finish_reason == "stop"
                assert ref.text.split()[: len(c.text.split())] == c.text.split()
            else:
                assert c == ref


def test_shared_prefix_attention_matches_the_expanded_cache_with_rows_dropped():
    """The prompt's KV kept once per prompt gives the samples (and logits) of the
    cache copied n times, also after finished rows leave the batch."""
    model, tokenizer = tiny_model(), tiny_tokenizer()
    words = tiny_sampler().sample(CONVERSATIONS, 8, **SETTINGS)
    common = [w for row in words for c in row for w in c.text.split()]
    stop = tokenizer.convert_tokens_to_ids(max(set(common), key=common.count))
    logged: dict[bool, dict[tuple[int, int], torch.Tensor]] = {}
    outputs = {}
    for shared in (True, False):
        sampler = TransformersSampler(
            model, tokenizer, eos_token_ids=[EOS, stop], shared_prefix_attention=shared
        )
        steps: dict[int, int] = {}
        rows = logged.setdefault(shared, {})

        def record(seeds, logits, steps=steps, rows=rows):
            for seed, row in zip(seeds, logits, strict=True):
                rows[(seed, steps.get(seed, 0))] = row.clone()
                steps[seed] = steps.get(seed, 0) + 1

        sampler.logits_hook = record
        outputs[shared] = sampler.sample(CONVERSATIONS, 8, **SETTINGS)
    assert outputs[True] == outputs[False]
    reasons = [c.finish_reason for row in outputs[True] for c in row]
    assert reasons.count("stop") >= 3 and "length" in reasons  # rows were dropped
    assert logged[True].keys() == logged[False].keys()
    for key, row in logged[True].items():
        torch.testing.assert_close(row, logged[False][key], rtol=1e-4, atol=1e-4)
    # The model's own attention implementation is back after sampling.
    assert model.config._attn_implementation != "pairloop_shared_prefix"


def test_shared_prefix_attention_is_used_where_supported_and_only_there():
    from training.sampling import kv_cache

    calls = []
    real = kv_cache._shared_prefix_attention

    def spy(module, query, key, *args, **kwargs):
        calls.append(getattr(key, "_pairloop_shared", None) is not None)
        return real(module, query, key, *args, **kwargs)

    # The model's own forward (the fused Llama step calls the attention directly).
    sampler = tiny_sampler(fused_decode=False)
    assert sampler.shared_prefix_attention
    from transformers import AttentionInterface

    AttentionInterface.register(kv_cache.SHARED_PREFIX_ATTENTION, spy)
    try:
        sampler.sample(CONVERSATIONS[:1], 3, max_new_tokens=5, temperature=0.0)
    finally:
        AttentionInterface.register(kv_cache.SHARED_PREFIX_ATTENTION, real)
    layers = sampler.model.config.num_hidden_layers
    # 4 decode steps after the prefill, each layer through the shared path.
    assert calls.count(True) == 4 * layers

    from transformers import MistralConfig, MistralForCausalLM

    windowed = MistralForCausalLM(
        MistralConfig(
            vocab_size=40,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            sliding_window=4,
            eos_token_id=EOS,
        )
    )
    # A sliding window needs the mask the shared path does not apply.
    assert not TransformersSampler(windowed, tiny_tokenizer()).shared_prefix_attention
    with pytest.raises(ValueError, match="shared_prefix_attention needs"):
        TransformersSampler(windowed, tiny_tokenizer(), shared_prefix_attention=True)


def test_tiny_top_p_is_greedy():
    sampler = tiny_sampler()
    greedy = sampler.sample(CONVERSATIONS, 2, max_new_tokens=6, temperature=0.0)
    nucleus = sampler.sample(
        CONVERSATIONS, 2, max_new_tokens=6, temperature=1.0, top_p=1e-6, seed=3
    )
    assert nucleus == greedy


@pytest.mark.parametrize(
    ("conversations", "n", "message"),
    [
        ([], 2, "no prompts"),
        (CONVERSATIONS, 0, "n must be"),
        ([[{"role": "user"}]], 2, "prompt 0"),
        ([[]], 2, "prompt 0"),
    ],
)
def test_bad_input_is_refused_before_sampling(conversations, n, message):
    sampler = tiny_sampler()
    sampler.logits_hook = lambda *a: pytest.fail("sampled despite bad input")
    with pytest.raises(BadSamplingInput, match=message):
        sampler.sample(conversations, n, max_new_tokens=4)


def test_prompt_longer_than_context_names_the_prompt():
    sampler = tiny_sampler()
    long = [{"role": "user", "content": "the cat " * 80}]
    with pytest.raises(PromptTooLongError, match="prompt 1 has") as info:
        sampler.sample([CONVERSATIONS[0], long], 2, max_new_tokens=4)
    assert info.value.index == 1
    assert isinstance(info.value, ValueError)


def test_unknown_backend_and_model():
    with pytest.raises(UnknownBackendError, match="unknown sampler backend 'tpu'"):
        make_sampler("tpu")
    with pytest.raises(UnknownModelError, match="unknown builtin model"):
        make_sampler("transformers", "builtin:nope")
    with pytest.raises(UnknownModelError):
        make_sampler("transformers", "./no/such/dir")


def test_vllm_backend_says_it_needs_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(BadSamplingInput, match="needs the 'vllm' package"):
        make_sampler("vllm", "some/model")


def test_vllm_backend_builds_seeded_prefix_cached_requests(monkeypatch, tmp_path):
    """Against a stand-in vllm module: the request shape, not vLLM itself."""
    import types

    calls: dict[str, object] = {}

    class Params:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            calls["engine"] = kw
            self.llm_engine = types.SimpleNamespace(
                model_config=types.SimpleNamespace(max_model_len=128)
            )

        def get_tokenizer(self):
            return tiny_tokenizer()

        def generate(self, prompts, params, use_tqdm=False):
            calls["params"] = [p.kw for p in params]
            return [
                types.SimpleNamespace(
                    outputs=[
                        types.SimpleNamespace(
                            text=f"s{p.kw['seed'] % 97}",
                            token_ids=[1, 2],
                            finish_reason="length",
                        )
                    ]
                )
                for p in params
            ]

    fake = types.SimpleNamespace(LLM=LLM, SamplingParams=Params)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    (tmp_path / "config.json").write_text("{}")
    sampler = make_sampler("vllm", str(tmp_path))
    out = sampler.sample(CONVERSATIONS, 3, max_new_tokens=5, seed=1)
    assert calls["engine"]["enable_prefix_caching"] is True
    assert len(calls["params"]) == 9
    assert {p["max_tokens"] for p in calls["params"]} == {5}
    # One request per sample, prompt by prompt, each with its own sample seed.
    assert [p["seed"] for p in calls["params"]] == [
        sample_seed(1, c, j) for c in CONVERSATIONS for j in range(3)
    ]
    assert [len(r) for r in out] == [3, 3, 3]
    assert out[0][0].finish_reason == "length" and out[0][0].token_count == 2
    chunked = sampler.sample(CONVERSATIONS, 1, max_new_tokens=5, seed=1, first_index=2)
    assert chunked[0][0] == out[0][2]
