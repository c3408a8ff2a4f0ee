"""eval-policy: its statistics on constructed inputs, and a paired run end to end."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from training.eval_policy import (
    bon_kl_bound,
    distinct,
    evaluate,
    length_stats,
    mc_kl,
    sequence_logprobs,
    summarize,
    wilson_interval,
    win_rate,
)


def test_wilson_interval_matches_the_textbook_values():
    # 8 of 10 at 95 %: the Wilson interval is [0.490, 0.943] (Newcombe 1998).
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(
        0.9433, abs=1e-4
    )
    lo, hi = wilson_interval(0, 20)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.1611, abs=1e-4)
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi and (0.5 - lo) == pytest.approx(hi - 0.5)
    # Narrower with more data, at the same rate.
    assert wilson_interval(500, 1000)[0] > lo


def test_win_rate_counts_ties_as_half():
    cand = [1.0, 2.0, 0.0, 1.0]
    ref = [0.0, 2.0, 1.0, 0.5]
    w = win_rate(cand, ref)
    assert (w["wins"], w["ties"], w["losses"]) == (2, 1, 1)
    assert w["win_rate"] == pytest.approx(2.5 / 4)
    assert (w["ci_low"], w["ci_high"]) == pytest.approx(wilson_interval(2.5, 4))
    # A tie band turns the 0.5 difference into a tie.
    assert win_rate(cand, ref, tie_epsilon=0.5)["ties"] == 2
    with pytest.raises(ValueError):
        win_rate([1.0], [])


def test_kl_bound_of_best_of_n():
    assert bon_kl_bound(1) == 0.0
    assert bon_kl_bound(8) == pytest.approx(math.log(8) - 7 / 8)
    assert bon_kl_bound(2) == pytest.approx(0.19315, abs=1e-5)


def test_mc_kl_on_constructed_log_probs():
    kl = mc_kl([-1.0, -2.0, -3.0], [-2.0, -2.5, -3.0])
    assert kl["kl"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert kl["kl_stderr"] == pytest.approx(0.5 / math.sqrt(3))
    assert mc_kl([], [])["kl"] is None


class ConstantLM(torch.nn.Module):
    """Every position predicts the same categorical distribution ``probs``."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.log(torch.tensor(probs)))

    def forward(self, input_ids, attention_mask=None):
        b, t = input_ids.shape
        return type("Out", (), {"logits": self.logits.expand(b, t, -1)})()


def test_kl_estimate_from_sampled_log_probs_of_two_known_distributions():
    p, q = [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]
    exact_per_token = sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))
    rng = random.Random(0)
    length = 3
    responses = [rng.choices(range(3), weights=p, k=length) for _ in range(4000)]
    prompts = [[0] for _ in responses]
    lp_p = sequence_logprobs(ConstantLM(p), prompts, responses, batch_size=512)
    lp_q = sequence_logprobs(ConstantLM(q), prompts, responses, batch_size=512)
    assert lp_p[0] == pytest.approx(sum(math.log(p[t]) for t in responses[0]))
    est = mc_kl(lp_p, lp_q)
    assert est["kl"] == pytest.approx(
        length * exact_per_token, abs=4 * est["kl_stderr"]
    )
    assert abs(est["kl"] - length * exact_per_token) < 0.05
    # Temperature applies to the logits of both: T = 2 flattens p.
    hot = sequence_logprobs(ConstantLM(p), [[0]], [[0]], temperature=2.0)[0]
    flat = torch.softmax(torch.log(torch.tensor(p)) / 2, -1)[0]
    assert hot == pytest.approx(math.log(float(flat)), abs=1e-5)


def test_length_ratio_and_distinct_n():
    ls = length_stats([10, 20, 30], [20, 20])
    assert ls["length_ratio"] == pytest.approx(1.0)
    assert length_stats([30], [20])["length_ratio"] == pytest.approx(1.5)
    d = distinct(["a b a b", "a b c"])
    # 1-grams a b a b a b c: 3 distinct of 7; 2-grams ab ba ab ab bc: 3 of 5.
    assert d["distinct_1"] == pytest.approx(3 / 7)
    assert d["distinct_2"] == pytest.approx(3 / 5)


def test_summarize_combines_everything():
    s = summarize(
        candidate_rewards=[2.0, 1.0],
        reference_rewards=[1.0, 1.0],
        candidate_tokens=[10, 30],
        reference_tokens=[20, 20],
        candidate_truncated=[False, True],
        reference_truncated=[False, False],
        candidate_texts=["a b", "a b"],
        reference_texts=["a b", "c d"],
        candidate_logps=[-1.0, -1.0],
        reference_logps=[-2.0, -2.0],
    )
    assert s["win"]["win_rate"] == pytest.approx(0.75)
    assert s["reward_gain"] == pytest.approx(0.5)
    assert s["length_ratio"] == pytest.approx(1.0)
    assert s["candidate_truncation_rate"] == 0.5 and s["reference_truncation_rate"] == 0
    assert s["distinct_2_ratio"] == pytest.approx(0.5)
    assert s["kl"] == pytest.approx(1.0)
    # Length control: the second pair (candidate cut off) is left out.
    both = s["win_both_complete"]
    assert (both["n"], both["wins"], both["win_rate"]) == (1, 1, 1.0)


def _len_scorer(convs, responses):
    return [float(len(r.split())) for r in responses]


def test_same_policy_with_same_seeds_ties_everywhere_and_has_zero_kl():
    from tests.training._bon_fixtures import CONVERSATIONS, tiny_sampler
    from training.config import EvalConfig

    config = EvalConfig(n_samples=3, max_new_tokens=8, temperature=1.0, top_p=1.0)
    report = evaluate(
        CONVERSATIONS, tiny_sampler(), tiny_sampler(), _len_scorer, config
    )
    assert report["win"]["ties"] == report["win"]["n"] == 9
    assert report["win"]["win_rate"] == 0.5
    assert report["kl"] == pytest.approx(0.0, abs=1e-5)
    assert report["length_ratio"] == pytest.approx(1.0)
    assert len(report["samples"]) == 9
    assert all(s["candidate"] == s["reference"] for s in report["samples"])


def test_different_policy_is_measured():
    from tests.training._bon_fixtures import CONVERSATIONS, tiny_model, tiny_tokenizer
    from training.config import EvalConfig
    from training.sampling import TransformersSampler

    other = TransformersSampler(tiny_model(seed=1), tiny_tokenizer())
    base = TransformersSampler(tiny_model(seed=0), tiny_tokenizer())
    config = EvalConfig(n_samples=4, max_new_tokens=8, temperature=1.0, top_p=1.0)
    report = evaluate(CONVERSATIONS, other, base, _len_scorer, config)
    # Sharp random models disagree: KL is large and positive in expectation.
    assert report["kl"] > 1.0
    assert report["win"]["ties"] < report["win"]["n"]


def test_cli_bad_prompts_exit_2_and_write_nothing(tmp_path, capsys):
    from training.__main__ import main

    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "ok"}\n{not json\n')
    out = tmp_path / "report.json"
    code = main(
        ["eval-policy", "--prompts", str(bad), "--candidate", str(tmp_path),
         "--reference", str(tmp_path), "--reward", str(tmp_path), "--out", str(out)]
    )  # fmt: skip
    assert code == 2
    assert f"{bad}:2" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_cli_writes_the_report(tmp_path, encoder_base, capsys):
    from tests.training._bon_fixtures import tiny_model, tiny_tokenizer
    from tests.training.conftest import synthetic_pairs
    from training.__main__ import main
    from training.config import RewardConfig
    from training.train_rm import train

    rm = tmp_path / "rm"
    train(
        synthetic_pairs(16),
        RewardConfig(base=str(encoder_base), num_epochs=1, eval_fraction=0.0),
        out_dir=rm,
    )
    policy = tmp_path / "policy"
    tiny_model().save_pretrained(policy)
    tiny_tokenizer().save_pretrained(policy)
    prompts = tmp_path / "eval.jsonl"
    prompts.write_text('{"prompt": "why is the cat big ?"}\n{"prompt": "what ?"}\n')
    out = tmp_path / "report.json"
    code = main(
        ["eval-policy", "--prompts", str(prompts), "--candidate", str(policy),
         "--reference", str(policy), "--reward", str(rm), "--out", str(out),
         "--n-samples", "2", "--max-new-tokens", "6", "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["win"]["n"] == 4 and report["win"]["win_rate"] == 0.5
    assert report["kl"] == pytest.approx(0.0, abs=1e-5)
    assert "win rate 0.500" in capsys.readouterr().out
