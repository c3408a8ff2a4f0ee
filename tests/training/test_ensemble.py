"""Ensemble reward heads on one shared backbone (issue 17)."""

from __future__ import annotations

from pathlib import Path

import torch

from training.reward_model import (
    RewardModelSpec,
    export_hf,
    head_rewards,
    load_reward_model,
    reward_model_from_config,
)
from training.train_rm import evaluate_pairs, train

from .conftest import save_tiny_base, synthetic_pairs, tiny_bert_config
from .test_train_rm import tiny_config


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(6, 30, (4, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[2:, 8:] = 0
    return ids, mask


def test_identical_heads_have_zero_variance() -> None:
    torch.manual_seed(0)
    model = reward_model_from_config(
        tiny_bert_config(), RewardModelSpec(kind="encoder", heads=3)
    )
    model.eval()
    ids, mask = batch()
    mean, var = head_rewards(model, ids, mask)
    assert (var > 0).all()  # three random inits disagree
    assert torch.allclose(mean, model(ids, mask))  # the reward is the mean
    with torch.no_grad():
        model.head.weight[1:] = model.head.weight[0]
        model.head.bias[1:] = model.head.bias[0]
    mean, var = head_rewards(model, ids, mask)
    assert torch.equal(var, torch.zeros_like(var))
    # A single head: variance 0, reward unchanged in shape.
    one = reward_model_from_config(tiny_bert_config(), RewardModelSpec("encoder"))
    one.eval()
    assert one(ids, mask).shape == (4,)
    assert torch.equal(head_rewards(one, ids, mask)[1], torch.zeros(4))


def test_heads_train_save_load_and_export(tmp_path: Path) -> None:
    base = save_tiny_base(tmp_path / "base", "encoder")
    pairs = synthetic_pairs(96, seed=1)
    config = tiny_config(base, ensemble_heads=3, validations=1)
    result = train(pairs, config, out_dir=tmp_path / "v")
    ev = result.metrics["eval"]
    assert ev["heads"] == 3 and ev["head_diff_var_mean"] > 0
    assert result.metrics["train"]["final_loss"] < result.metrics["train"]["first_loss"]
    model, tok = load_reward_model(tmp_path / "v")
    assert model.spec.heads == 3 and model.head.out_features == 3
    preds: list[dict] = []
    again = evaluate_pairs(model, tok, pairs[:20], max_length=64, predictions=preds)
    assert again["heads"] == 3 and all(p["diff_var"] >= 0 for p in preds)
    # Export: one head with the mean weights scores as the ensemble's mean.
    info = export_hf(tmp_path / "v", tmp_path / "hf")
    assert info["loader"] == "remote_code"
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(
        str(tmp_path / "hf"), trust_remote_code=True
    )
    hf.eval()
    model.padding_free = False
    ids, mask = batch()
    with torch.no_grad():
        assert torch.allclose(
            hf(input_ids=ids, attention_mask=mask).logits[:, 0],
            model(ids, mask),
            atol=1e-5,
        )
