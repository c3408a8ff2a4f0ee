"""Tiny models and stand-ins shared by the rejection-sampling tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"

WORDS = (
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "ran",
    "fast",
    "slow",
    "big",
    "small",
    "red",
    "blue",
    "green",
    "why",
    "how",
    "what",
    "is",
    "are",
    "was",
    "were",
    "user",
    "assistant",
    "system",
    ":",
    ".",
    ",",
    "?",
    "hello",
    "world",
    "answer",
    "question",
)
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
PAD, BOS, EOS = 0, 1, 2
CHAT_TEMPLATE = (
    "{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s> "
    "{% endfor %}{% if add_generation_prompt %}<s> assistant :{% endif %}"
)


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # "a b c"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_model(seed: int = 0, context: int = 128):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(SPECIALS) + len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Random init logits are nearly flat; scaling the output layer gives the
    # model preferences, so greedy decoding and top-p actually select.
    with torch.no_grad():
        model.lm_head.weight.mul_(40)
    model.eval()
    return model


def tiny_sampler(**kwargs):
    from training.sampling import TransformersSampler

    return TransformersSampler(tiny_model(), tiny_tokenizer(), **kwargs)


CONVERSATIONS = [
    [{"role": "user", "content": "why is the cat big ?"}],
    [
        {"role": "system", "content": "answer fast ."},
        {"role": "user", "content": "hello world , what is a dog ?"},
        {"role": "assistant", "content": "a dog is red ."},
        {"role": "user", "content": "how ?"},
    ],
    [{"role": "user", "content": "the"}],
]
