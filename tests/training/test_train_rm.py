import json
from pathlib import Path

import pytest
import torch

from training import rm_checkpoint, train_rm
from training.config import RewardConfig
from training.data import Formatter
from training.reward_model import load_reward_model
from training.rm_data import encode_pairs, split_train_eval
from training.rm_eval import pair_rewards
from training.scoring import RewardScorer, score
from training.train_rm import train

from .conftest import save_tiny_base, synthetic_pairs


def tiny_config(base: Path, **kw: object) -> RewardConfig:
    defaults = dict(
        base=str(base),
        learning_rate=3e-3,
        num_epochs=2,
        batch_size=16,
        max_length=64,
        eval_fraction=0.2,
        warmup_ratio=0.1,
        seed=0,
    )
    defaults.update(kw)
    return RewardConfig(**defaults)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_tiny_model_learns_and_moves(tmp_path: Path, kind: str) -> None:
    base = save_tiny_base(tmp_path / "base", kind, chat_template=kind == "decoder")
    pairs = synthetic_pairs(320, seed=1)
    config = tiny_config(base)
    from training.train_rm import prepare_model

    before = {k: v.clone() for k, v in prepare_model(config)[0].state_dict().items()}
    calls: list[tuple[float, str]] = []
    result = train(pairs, config, progress=lambda f, m: calls.append((f, m)))
    t = result.metrics["train"]
    assert t["final_loss"] < 0.5 * t["first_loss"], t
    assert result.metrics["eval"]["n"] > 30
    assert result.metrics["eval"]["accuracy"] > 0.9, result.metrics["eval"]
    after = result.model.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k].cpu())]
    assert "head.weight" in moved and any(k.startswith("backbone.") for k in moved)
    assert calls[0][0] == 0.0 and calls[-1] == (1.0, "done")
    assert all(0.0 <= f <= 1.0 for f, _ in calls)
    assert t["prefix_reuse"] is (kind == "decoder")


def test_prefix_reuse_equals_full_forward(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = save_tiny_base(tmp_path / "base", "decoder", chat_template=True)
    model, tok, _ = train_rm.prepare_model(RewardConfig(base=str(base)))
    model.eval()
    fmt = Formatter(tok, 96, is_encoder=False)
    # Varied prompt and response lengths so both padding paths are exercised.
    pairs = synthetic_pairs(12, seed=3) + synthetic_pairs(5, seed=4, prompt_words=30)
    enc = encode_pairs(fmt, pairs)
    with torch.no_grad():
        fast = pair_rewards(model, enc, tok.pad_token_id, torch.device("cpu"), True)
        full = pair_rewards(model, enc, tok.pad_token_id, torch.device("cpu"), False)
        # and each sequence alone, unpadded
        single = [
            model(torch.tensor([e.prefix + e.a]), torch.ones(1, len(e.prefix + e.a)))
            for e in enc
        ]
    assert torch.allclose(fast[0], full[0], atol=1e-5)
    assert torch.allclose(fast[1], full[1], atol=1e-5)
    assert torch.allclose(full[0], torch.cat(single), atol=1e-5)

    # Gradients through the shared prefix match the full forward's too.
    def grads(reuse: bool) -> torch.Tensor:
        model.zero_grad()
        a, b = pair_rewards(model, enc, tok.pad_token_id, torch.device("cpu"), reuse)
        (a - b).pow(2).sum().backward()
        return model.backbone.embed_tokens.weight.grad.clone()

    assert torch.allclose(grads(True), grads(False), atol=1e-5)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_save_load_identical_scores_and_scorer(tmp_path: Path, kind: str) -> None:
    base = save_tiny_base(tmp_path / "base", kind)
    pairs = synthetic_pairs(64, seed=2)
    out = tmp_path / "versions" / "v1"
    result = train(pairs, tiny_config(base, num_epochs=1), out_dir=out)
    assert result.out_dir == out
    meta = json.loads((out / "pairloop.json").read_text())
    assert meta["base"] == str(base) and meta["config"]["max_length"] == 64
    assert len(meta["data_fingerprint"]) == 64 and "torch" in meta["versions"]
    assert meta["metrics"]["eval"]["accuracy"] is not None
    items = [(p.conversation, p.response_a) for p in pairs[:20]]
    in_memory = score((result.model, result.tokenizer), items, max_length=64)
    from_disk = score(out, items, batch_size=3)
    assert in_memory == pytest.approx(from_disk, abs=1e-5)
    # input order is kept although batches are length-sorted
    one_by_one = [score(out, [it])[0] for it in items[:5]]
    assert one_by_one == pytest.approx(from_disk[:5], abs=1e-5)
    scorer = RewardScorer(out, device="cpu", batch_size=4)
    got = scorer([c for c, _ in items], [r for _, r in items])
    assert got == pytest.approx(from_disk, abs=1e-5)
    with pytest.raises(ValueError):
        scorer([items[0][0]], [])


def test_warm_start_from_earlier_version(tmp_path: Path) -> None:
    base = save_tiny_base(tmp_path / "base", "encoder")
    v1 = tmp_path / "v1"
    train(synthetic_pairs(64, seed=5), tiny_config(base, num_epochs=1), out_dir=v1)
    m1, _ = load_reward_model(v1)
    config = tiny_config(base, init_from=str(v1), num_epochs=1, learning_rate=1e-9)
    result = train(synthetic_pairs(32, seed=6), config, out_dir=tmp_path / "v2")
    m2 = result.model
    for k, v in m1.state_dict().items():
        assert torch.allclose(v, m2.state_dict()[k].cpu(), atol=1e-5), k
    meta = json.loads((tmp_path / "v2" / "pairloop.json").read_text())
    assert meta["parent"] == str(v1) and meta["base"] == str(base)


def test_crash_during_save_leaves_no_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = save_tiny_base(tmp_path / "base", "encoder")
    versions = tmp_path / "versions"
    out = versions / "v1"

    def boom(model: object, directory: Path) -> None:
        (directory / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(rm_checkpoint, "save_weights", boom)
    with pytest.raises(OSError, match="disk full"):
        train(synthetic_pairs(32), tiny_config(base, num_epochs=1), out_dir=out)
    assert not out.exists()
    visible = [p for p in versions.iterdir() if not p.name.startswith(".")]
    assert visible == [] and list(versions.iterdir()) == []


def test_existing_out_dir_fails_before_training(tmp_path: Path) -> None:
    out = tmp_path / "v1"
    out.mkdir()
    (out / "x").write_text("taken")
    with pytest.raises(FileExistsError):
        train(synthetic_pairs(8), RewardConfig(base="builtin:nope"), out_dir=out)


def test_split_is_deterministic_by_id() -> None:
    pairs = synthetic_pairs(200)
    a = split_train_eval(pairs, 0.25)
    b = split_train_eval(list(reversed(pairs)), 0.25)
    assert {p.id for p in a[1]} == {p.id for p in b[1]}
    assert 20 < len(a[1]) < 80


def test_split_never_leaves_a_side_empty_for_small_sets() -> None:
    for n in range(2, 12):
        pairs = synthetic_pairs(n, seed=n)
        for fraction in (0.01, 0.1, 0.5, 0.99):
            train_part, held = split_train_eval(pairs, fraction)
            assert train_part and held, (n, fraction)
            assert len(train_part) + len(held) == n
    one = synthetic_pairs(1)
    assert split_train_eval(one, 0.5) in ((one, []), ([], one))
    assert split_train_eval(synthetic_pairs(5), 0.0)[1] == []


def test_config_fields_are_documented_and_validated() -> None:
    import dataclasses

    for f in dataclasses.fields(RewardConfig):
        assert f.metadata.get("help"), f.name
    with pytest.raises(ValueError, match="eval_fraction"):
        RewardConfig(eval_fraction=1.5)
    cfg = RewardConfig(use_margins=True)
    assert RewardConfig.from_dict(cfg.to_dict()) == cfg


def test_prefix_reuse_batches_group_by_prefix_length() -> None:
    """With prefix reuse, prefixes and responses pad separately, so batches are
    grouped by prefix length: a long prompt with short replies must not share a
    batch with a short prompt with long replies (same total length)."""
    import random

    from training.rm_data import EncodedPair, length_grouped_batches

    pairs = []
    for i in range(32):
        long_prompt = i % 2 == 0
        prefix = [1] * (200 if long_prompt else 20)
        reply = [2] * (10 if long_prompt else 190)
        pairs.append(EncodedPair(prefix=prefix, a=reply, b=reply, p_a=1.0, strength=0))

    def padded_tokens(keys: list) -> int:
        batches = length_grouped_batches(keys, 4, random.Random(0))
        total = 0
        for batch in batches:
            lp = max(len(pairs[i].prefix) for i in batch)
            ls = max(len(pairs[i].a) for i in batch)
            total += len(batch) * lp + 2 * len(batch) * ls
        return total

    by_total = padded_tokens([p.length for p in pairs])
    by_prefix = padded_tokens([p.batch_key(True) for p in pairs])
    real = sum(len(p.prefix) + 2 * len(p.a) for p in pairs)
    assert by_prefix == real  # no padding at all
    assert by_total > 1.5 * by_prefix
