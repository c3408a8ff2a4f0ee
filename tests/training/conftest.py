"""Tiny models, tokenizers and a learnable synthetic preference task (no downloads)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

GOOD = ["good", "great", "helpful", "correct", "kind"]
BAD = ["bad", "awful", "rude", "wrong", "useless"]
FILLER = [
    "the", "a", "answer", "question", "is", "what", "why", "how", "please", "help",
    "me", "with", "this", "that", "it", "you", "i", "think", "maybe", "sure", "here",
    "thing", "about", "cats", "dogs", "code", "math", "music", "food", "travel",
]  # fmt: skip
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[BOS]", "[EOS]"]
PUNCT = [":", ".", ",", "?", "!", "<", ">", "|", "/", "_"]
ROLES = ["user", "assistant", "system"]
VOCAB = SPECIALS + PUNCT + ROLES + GOOD + BAD + FILLER + [str(i) for i in range(10)]

# A Jinja chat template in the same spirit as SmolLM2's, over the tiny vocabulary.
TINY_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} .\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_tokenizer(kind: str, chat_template: bool = False):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(VOCAB)}
    tk = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    if kind == "encoder":
        tok = PreTrainedTokenizerFast(
            tokenizer_object=tk,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
        )
    else:
        tok = PreTrainedTokenizerFast(
            tokenizer_object=tk,
            unk_token="[UNK]",
            pad_token="[PAD]",
            bos_token="[BOS]",
            eos_token="[EOS]",
        )
        if chat_template:
            tok.chat_template = TINY_TEMPLATE
    return tok


def tiny_bert_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=0,
    )


def tiny_llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=4,
        eos_token_id=5,
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    )


def save_tiny_base(
    directory: Path, kind: str, seed: int = 0, chat_template: bool = False
) -> Path:
    """Save a random tiny backbone + tokenizer as a local model reference."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(seed)
    if kind == "encoder":
        model = AutoModel.from_config(tiny_bert_config())
    else:
        model = AutoModelForCausalLM.from_config(tiny_llama_config())
    model.save_pretrained(str(directory))
    make_tokenizer(kind, chat_template).save_pretrained(str(directory))
    return directory


def synthetic_pairs(n: int, seed: int = 0, prompt_words: int = 12):
    """Pairs where the response containing a GOOD word is preferred."""
    from training.data import Pair

    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        conv = [
            {"role": "user", "content": " ".join(rng.choices(FILLER, k=prompt_words))},
        ]
        if rng.random() < 0.3:
            conv += [
                {"role": "assistant", "content": " ".join(rng.choices(FILLER, k=4))},
                {"role": "user", "content": " ".join(rng.choices(FILLER, k=5))},
            ]

        def reply(words: list[str]) -> str:
            body = rng.choices(FILLER, k=rng.randint(3, 8))
            body.insert(rng.randrange(len(body) + 1), rng.choice(words))
            return " ".join(body)

        good, bad = reply(GOOD), reply(BAD)
        a_good = rng.random() < 0.5
        pairs.append(
            Pair(
                conversation=conv,
                response_a=good if a_good else bad,
                response_b=bad if a_good else good,
                p_a=1.0 if a_good else 0.0,
                strength=rng.randint(1, 4),
                id=f"syn-{seed}-{i}",
            )
        )
    return pairs


@pytest.fixture
def encoder_base(tmp_path: Path) -> Path:
    return save_tiny_base(tmp_path / "tiny-bert", "encoder")


@pytest.fixture
def decoder_base(tmp_path: Path) -> Path:
    return save_tiny_base(tmp_path / "tiny-llama", "decoder")


@pytest.fixture
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared data directory {DATA_DIR} is absent")
    return DATA_DIR
