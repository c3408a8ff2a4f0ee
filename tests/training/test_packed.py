"""The padding-free encoder forward equals the padded Hugging Face forward."""

from __future__ import annotations

import pytest
import torch

from training.config import RewardConfig
from training.packed import supports_packed
from training.reward_model import RewardModelSpec, reward_model_from_config
from training.train_rm import train

from .conftest import save_tiny_base, synthetic_pairs, tiny_bert_config


def _batch(rows: int = 6, width: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 30, (rows, width), generator=gen)
    mask = torch.ones_like(ids)
    for i in range(rows):  # lengths width, width-3, ...: every row padded differently
        mask[i, width - 3 * i :] = 0
        ids[i, width - 3 * i :] = 0
    return ids, mask


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("training", [False, True])
def test_packed_forward_and_gradients_equal_the_padded_forward(pooling, training):
    torch.manual_seed(0)
    config = tiny_bert_config()
    model = reward_model_from_config(config, RewardModelSpec("encoder", pooling))
    assert model.padding_free
    model.train(training)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # random masks cannot be replayed across the two paths
    ids, mask = _batch()
    weights = torch.arange(1.0, ids.shape[0] + 1)
    grads, rewards = {}, {}
    for packed in (True, False):
        model.padding_free = packed
        model.zero_grad()
        r = model(ids, mask)
        (r * weights).sum().backward()
        rewards[packed] = r.detach()
        grads[packed] = {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
        }
    torch.testing.assert_close(rewards[True], rewards[False], rtol=1e-5, atol=1e-5)
    assert grads[True].keys() == grads[False].keys()
    for name, g in grads[False].items():
        if name.endswith("key.bias"):
            continue  # mathematically zero (softmax ignores a shift): rounding noise
        torch.testing.assert_close(grads[True][name], g, rtol=1e-4, atol=1e-6)
    # Padding really is skipped: the packed hidden states hold real tokens only.
    from training.packed import packed_encoder_forward

    hidden, _ = packed_encoder_forward(model.backbone, ids, mask)
    assert hidden.shape[0] == int(mask.sum()) < ids.numel()


def test_only_plain_bert_encoders_take_the_packed_path():
    from transformers import AutoModel, BertConfig, RobertaConfig

    assert supports_packed(AutoModel.from_config(tiny_bert_config()))
    relative = BertConfig(**{**tiny_bert_config().to_dict()})
    relative.position_embedding_type = "relative_key"
    assert not supports_packed(AutoModel.from_config(relative))
    roberta = RobertaConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    model = reward_model_from_config(roberta, RewardModelSpec("encoder"))
    assert not model.padding_free
    ids, mask = _batch(rows=2, width=8)
    assert model(ids.clamp(max=39), mask).shape == (2,)


def test_training_reports_and_can_disable_padding_free(tmp_path):
    base = save_tiny_base(tmp_path / "base", "encoder")
    pairs = synthetic_pairs(48, seed=2)
    common = dict(base=str(base), num_epochs=1, batch_size=16, max_length=64, seed=0)
    on = train(pairs, RewardConfig(**common))
    off = train(pairs, RewardConfig(**common, padding_free=False))
    assert on.metrics["train"]["padding_free"] is True
    assert off.metrics["train"]["padding_free"] is False
    # Same data, same seed: the two paths train to the same model (up to rounding).
    assert on.metrics["train"]["final_loss"] == pytest.approx(
        off.metrics["train"]["final_loss"], rel=1e-3
    )


def test_packed_prefix_reuse_equals_padded_reuse_and_the_full_forward():
    from .conftest import tiny_llama_config

    torch.manual_seed(0)
    model = reward_model_from_config(tiny_llama_config(), RewardModelSpec("decoder"))
    assert model.padding_free
    gen = torch.Generator().manual_seed(1)
    prefix = torch.randint(6, 30, (3, 9), generator=gen)
    pmask = torch.ones_like(prefix)
    pmask[1, 5:], pmask[2, 2:] = 0, 0
    suffix = torch.randint(6, 30, (6, 6), generator=gen)
    smask = torch.ones_like(suffix)
    smask[0, 3:], smask[3, 1:], smask[5, 4:] = 0, 0, 0
    weights = torch.arange(1.0, 7.0)
    rewards, grads = {}, {}
    for packed in (True, False):
        model.padding_free = packed
        model.zero_grad()
        r = model.forward_prefix_shared(prefix, pmask, suffix, smask)
        (r * weights).sum().backward()
        rewards[packed] = r.detach()
        grads[packed] = {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
        }
    torch.testing.assert_close(rewards[True], rewards[False], rtol=1e-5, atol=1e-5)
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, rtol=1e-4, atol=1e-6)
    # And each equals running that prefix + suffix alone, without any padding.
    with torch.no_grad():
        for j in range(6):
            ids = torch.cat(
                [prefix[j // 2][pmask[j // 2].bool()], suffix[j][smask[j].bool()]]
            )[None]
            alone = model(ids, torch.ones_like(ids))
            torch.testing.assert_close(alone[0], rewards[True][j], rtol=1e-5, atol=1e-5)
