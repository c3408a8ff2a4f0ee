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
from training.rm_eval import evaluate_pairs
from training.train_rm import train

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


def test_the_scorer_keeps_each_items_head_rewards(tmp_path: Path) -> None:
    from training.scoring import RewardScorer

    base = save_tiny_base(tmp_path / "base", "encoder")
    train(synthetic_pairs(32, seed=2), tiny_config(base, ensemble_heads=3),
          out_dir=tmp_path / "v")  # fmt: skip
    scorer = RewardScorer(tmp_path / "v", device="cpu")
    conv = [{"role": "user", "content": "why is the cat big ?"}]
    texts = ["good answer here", "bad", "a longer bad answer here too"]
    rewards = scorer([conv] * 3, texts)
    for text, reward in zip(texts, rewards, strict=True):
        heads = scorer.head_rewards[scorer.key(conv, text)]
        assert len(heads) == 3 and len(set(heads)) == 3  # three different heads
        assert abs(sum(heads) / 3 - reward) < 1e-5  # the reward is their mean
    model, _ = load_reward_model(tmp_path / "v")
    assert not model.per_head  # the scorer's model is left as it was


def test_heads_disagreement_counts_prompts_whose_best_sample_differs() -> None:
    from training.bon_stats import heads_disagreement

    agree = [[0.1, 0.2], [0.9, 0.8], [0.3, 0.1]]  # both heads pick sample 1
    differ = [[0.9, 0.1], [0.2, 0.8]]  # head 0 picks 0, head 1 picks 1
    single = [[0.5, 0.5]]  # one sample: nothing to choose, not counted
    out = heads_disagreement([agree, differ, single, differ])
    assert out == {"heads": 2, "prompts": 3, "disagree": 2, "share": 2 / 3}
    # Identical heads never disagree; one head has nothing to disagree about.
    same = [[[r, r] for r, _ in p] for p in (agree, differ)]
    assert heads_disagreement(same)["share"] == 0.0
    assert heads_disagreement([[[0.1], [0.2]]]) is None


def test_a_round_with_a_real_ensemble_rm_proposes_by_head_disagreement(
    tmp_path: Path,
) -> None:
    from tests.training._bon_fixtures import CONVERSATIONS, tiny_sampler
    from training.rejection import RoundConfig, run_round
    from training.scoring import RewardScorer
    from training.selection import from_head_rewards

    base = save_tiny_base(tmp_path / "base", "encoder")
    train(synthetic_pairs(32, seed=2), tiny_config(base, ensemble_heads=3),
          out_dir=tmp_path / "v")  # fmt: skip
    scorer = RewardScorer(tmp_path / "v", device="cpu")
    config = RoundConfig(n=4, max_new_tokens=6, pair_mix={"disagreement": 1.0})
    result = run_round(CONVERSATIONS[:2], tiny_sampler(), scorer, config)
    assert len(result.pairs) == 2
    for prompt, pair in zip(result.prompts, result.pairs, strict=True):
        unique = prompt.unique
        assert all(len(s.heads) == 3 for s in unique)
        assert pair.strategy == "disagreement"
        variances = [
            from_head_rewards("", a.heads, b.heads).diff_var
            for i, a in enumerate(unique)
            for b in unique[i + 1 :]
        ]
        by_index = {s.index: s for s in unique}
        picked = from_head_rewards(
            "", by_index[pair.a_index].heads, by_index[pair.b_index].heads
        ).diff_var
        assert picked == max(variances) > 0
