"""Best-of-N rounds: selection, dedupe, pair strategies, adaptive N, statistics."""

from __future__ import annotations

import json
import math

import pytest

from tests.training._bon_fixtures import CONVERSATIONS, tiny_sampler
from training import bon_stats
from training.pair_proposals import propose_pairs, ranking_picks
from training.rejection import (
    RoundConfig,
    Sample,
    run_round,
    should_stop,
)
from training.sampling import BadSamplingInput, Completion, PromptTooLongError


class ScriptedSampler:
    """Sample i of a prompt is ``script[prompt text][i]`` — like the real samplers,
    independent of chunking (``first_index``)."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.calls: list[tuple[int, int, int]] = []  # (prompts, n, first_index)

    def validate(self, conversations, max_new_tokens):
        pass

    def sample(self, conversations, n, *, max_new_tokens, temperature, top_p, seed,
               progress=None, first_index=0):  # fmt: skip
        self.calls.append((len(conversations), n, first_index))
        out = []
        for conv in conversations:
            texts = self.script[conv[-1]["content"]][first_index : first_index + n]
            out.append([Completion(t, len(t.split()), "stop") for t in texts])
        if progress:
            progress(len(conversations) * n, len(conversations) * n)
        return out


class TableScorer:
    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.seen: list[str] = []

    def __call__(self, conversations, responses):
        assert len(conversations) == len(responses)
        self.seen.extend(responses)
        return [self.table[r] for r in responses]


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


SCRIPT = {"p": ["a", "b", "c", "b", "d"], "q": ["w", "x", "y", "z", "z"]}
SCORES = {"a": 0.1, "b": 2.0, "c": 1.0, "d": 1.9, "w": -1, "x": 5, "y": 4.5, "z": 0}


def one_pair_round(strategy: str):
    return run_round(
        [conv("p"), conv("q")],
        ScriptedSampler(SCRIPT),
        TableScorer(SCORES),
        RoundConfig(n=5, pair_mix={strategy: 1.0}),
    )


def test_best_is_argmax_and_duplicates_are_counted_and_scored_once():
    scorer = TableScorer(SCORES)
    result = run_round(
        [conv("p"), conv("q")], ScriptedSampler(SCRIPT), scorer, RoundConfig(n=5)
    )
    p, q = result.prompts
    assert p.best.text == "b" and q.best.text == "x"
    assert [s.duplicate_of for s in p.samples] == [None, None, None, 1, None]
    assert p.samples[3].score == 2.0  # a duplicate carries its original's score
    assert sorted(scorer.seen) == sorted("abcdwxyz")  # each unique text scored once
    assert result.stats["duplicates"] == 2
    assert result.stats["duplicate_rate"] == pytest.approx(0.2)
    assert result.sft_examples() == [
        {"messages": [*conv("p"), {"role": "assistant", "content": "b"}]},
        {"messages": [*conv("q"), {"role": "assistant", "content": "x"}]},
    ]
    assert result.stats["reward"]["per_prompt_best"] == [2.0, 5.0]


def test_best_vs_runner_up_proposes_the_top_two():
    pairs = one_pair_round("best_vs_runner_up").pairs
    assert [(x.a_text, x.b_text) for x in pairs] == [("b", "d"), ("x", "y")]
    assert {x.strategy for x in pairs} == {"best_vs_runner_up"}
    assert (pairs[0].a_index, pairs[0].b_index) == (1, 4)
    assert (pairs[0].a_score, pairs[0].b_score) == (2.0, 1.9)


def test_best_vs_random_always_includes_the_best():
    for seed in range(5):
        result = run_round(
            [conv("p"), conv("q")],
            ScriptedSampler(SCRIPT),
            TableScorer(SCORES),
            RoundConfig(n=5, seed=seed, pair_mix={"best_vs_random": 1.0}),
        )
        assert [x.a_text for x in result.pairs] == ["b", "x"]
        assert all(x.b_text != x.a_text for x in result.pairs)


def test_closest_proposes_the_closest_scored_pair():
    pairs = one_pair_round("closest").pairs
    assert {(x.a_text, x.b_text) for x in pairs} == {("b", "d"), ("z", "w")} or {
        (x.a_text, x.b_text) for x in pairs
    } == {("b", "d"), ("x", "y")}
    for x in pairs:
        assert abs(x.a_score - x.b_score) <= 0.5


def test_random_pairs_are_distinct_unique_samples():
    result = run_round(
        [conv("p")],
        ScriptedSampler(SCRIPT),
        TableScorer(SCORES),
        RoundConfig(n=5, pairs_per_prompt=6, pair_mix={"random": 1.0}),
    )
    keys = {tuple(sorted((x.a_index, x.b_index))) for x in result.pairs}
    assert len(keys) == 6  # all 4 choose 2 pairs of unique samples, none repeated
    assert all(3 not in k for k in keys)  # sample 3 duplicates sample 1


def test_pairs_follow_the_mix_and_fall_back_to_random_when_exhausted():
    prompts = {f"p{i}": ["a", "b", "c", "d"] for i in range(4)}
    scores = {"a": 0, "b": 1, "c": 2, "d": 3}
    result = run_round(
        [conv(k) for k in prompts],
        ScriptedSampler(prompts),
        TableScorer(scores),
        RoundConfig(
            n=4, pairs_per_prompt=2, pair_mix={"closest": 1, "best_vs_runner_up": 1}
        ),
    )
    assert result.stats["pairs"] == 8
    strategies = [x.strategy for x in result.pairs]
    assert strategies.count("closest") == 4
    # best_vs_runner_up has one pair per prompt: where a prompt drew it twice,
    # the second falls back to a random unused pair.
    assert strategies.count("best_vs_runner_up") + strategies.count("random") == 4
    for prompt in range(4):
        mine = [x for x in result.pairs if x.prompt_index == prompt]
        assert len({(x.a_index, x.b_index) for x in mine}) == 2
        if [x.strategy for x in mine].count("random"):
            assert "best_vs_runner_up" in [x.strategy for x in mine]


def test_round_zero_without_scorer_proposes_random_pairs_only():
    result = run_round(
        [conv("p"), conv("q")],
        ScriptedSampler(SCRIPT),
        None,
        RoundConfig(n=5, pairs_per_prompt=2, pair_mix={"closest": 1.0}),
    )
    assert {x.strategy for x in result.pairs} == {"random"}
    assert len(result.pairs) == 4
    assert result.sft_examples() == []
    assert all(p.best_index is None for p in result.prompts)
    assert "reward" not in result.stats and result.stats["diversity"]["distinct_1"]


def test_prompts_with_a_single_unique_sample_get_no_pair():
    script = {"p": ["same"] * 3}
    result = run_round(
        [conv("p")], ScriptedSampler(script), TableScorer({"same": 1}), RoundConfig(n=3)
    )
    assert result.pairs == [] and result.stats["duplicates"] == 2
    assert result.prompts[0].best.text == "same"


def test_should_stop_rule():
    config = RoundConfig(n=16, adaptive_min_samples=4, adaptive_margin=0.25)
    assert not should_stop([1.0, 1.0, 1.0], 13, config)  # too few samples yet
    assert should_stop([1.0, 1.01, 0.99, 1.0], 12, config)  # flat: nothing to gain
    assert not should_stop([0.0, 2.0, -1.5, 1.0], 12, config)  # wide spread
    assert should_stop([0.0, 2.0, -1.5, 1.0], 0, config)  # nothing left


def test_adaptive_n_saves_samples_on_flat_prompts_and_keeps_wide_ones():
    flat = [f"f{i}" for i in range(8)]
    wide = [f"w{i}" for i in range(8)]
    scores = {t: 1.0 + 0.001 * i for i, t in enumerate(flat)}
    scores |= {t: (-1) ** i * i for i, t in enumerate(wide)}
    sampler = ScriptedSampler({"flat": flat, "wide": wide})
    config = RoundConfig(n=8, adaptive=True, adaptive_chunk=2, adaptive_min_samples=4)
    result = run_round(
        [conv("flat"), conv("wide")], sampler, TableScorer(scores), config
    )
    flat_r, wide_r = result.prompts
    assert len(flat_r.samples) == 4 and flat_r.stopped_early
    assert len(wide_r.samples) == 8 and not wide_r.stopped_early
    assert sampler.calls == [(2, 4, 0), (1, 2, 4), (1, 2, 6)]
    info = result.stats["adaptive"]
    assert info["samples_drawn"] == 12 and info["samples_saved"] == 4
    assert info["tokens_saved_estimate"] == 4  # 4 samples of one token each
    assert wide_r.best.score == max(scores[t] for t in wide)

    compare = run_round(
        [conv("flat"), conv("wide")],
        ScriptedSampler({"flat": flat, "wide": wide}),
        TableScorer(scores),
        RoundConfig(n=8, adaptive=True, adaptive_compare=True),
    )
    replay = compare.stats["adaptive"]
    assert replay["samples_saved"] == 4 and replay["tokens_saved"] == 4
    # The flat prompt's true best (f7) was among the skipped samples.
    assert replay["pick_changed"] == 1


@pytest.mark.parametrize(
    ("prompts", "config", "scorer", "message"),
    [
        ([], RoundConfig(), None, "no prompts"),
        ([conv("p")], RoundConfig(n=0), None, "n must be"),
        ([conv("p")], RoundConfig(pair_mix={"worst": 1}), None, "unknown pair"),
        ([conv("p")], RoundConfig(adaptive=True), None, "needs a scorer"),
    ],
)
def test_bad_input_fails_before_sampling(prompts, config, scorer, message):
    sampler = ScriptedSampler(SCRIPT)
    with pytest.raises(BadSamplingInput, match=message):
        run_round(prompts, sampler, scorer, config)
    assert sampler.calls == []


def test_too_long_prompt_fails_before_sampling_with_a_real_sampler():
    sampler = tiny_sampler()
    sampler.logits_hook = lambda *a: pytest.fail("sampled despite a too-long prompt")
    with pytest.raises(PromptTooLongError, match="prompt 1"):
        run_round(
            [CONVERSATIONS[0], conv("the cat " * 100)],
            sampler,
            None,
            RoundConfig(n=2, max_new_tokens=8),
        )


def test_round_with_the_tiny_model_end_to_end():
    seen: list[float] = []
    result = run_round(
        CONVERSATIONS,
        tiny_sampler(),
        lambda convs, responses: [float(len(r)) for r in responses],
        RoundConfig(n=4, max_new_tokens=8, pairs_per_prompt=2),
        progress=lambda fraction, message: seen.append(fraction),
    )
    assert [len(p.samples) for p in result.prompts] == [4, 4, 4]
    for p in result.prompts:
        assert p.best.score == max(len(s.text) for s in p.samples)
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert result.stats["samples"] == 12
    assert set(result.stats["length_correlation"]) == {"pearson", "spearman"}


# --------------------------------------------------------------------------------
# statistics


def test_reward_and_length_statistics():
    stats = bon_stats.reward_stats([[1.0, 3.0], [2.0]])
    assert stats["mean"] == 2.0 and stats["best_mean"] == 2.5 and stats["max"] == 3.0
    assert stats["within_prompt_std_mean"] == pytest.approx(math.sqrt(2))
    assert bon_stats.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert bon_stats.spearman([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0)
    assert bon_stats.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert bon_stats.pearson([1, 1], [1, 2]) is None


def test_diversity_statistics():
    assert bon_stats.distinct_n(["a b a b"], 1) == 0.5
    assert bon_stats.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert bon_stats.mean_pairwise_similarity(["a b c", "a b c"]) == 1.0
    assert bon_stats.mean_pairwise_similarity(["a b c", "x y z"]) == 0.0
    same = bon_stats.diversity_stats([["the cat sat", "the cat sat"]])
    varied = bon_stats.diversity_stats([["the cat sat", "a dog ran off"]])
    assert same["distinct_2"] < varied["distinct_2"]
    assert same["pairwise_jaccard_2"] > varied["pairwise_jaccard_2"]


def test_compare_rounds_flags_collapse_and_length_hacking():
    def stats(d2, spearman, reward):
        return {
            "reward": {"mean": reward, "best_mean": reward + 1},
            "diversity": {"distinct_2": d2, "pairwise_jaccard_2": 1 - d2},
            "length_correlation": {"spearman": spearman},
            "duplicate_rate": 0.0,
            "mean_tokens": 100,
        }

    report = bon_stats.compare_rounds([stats(0.8, 0.1, 0.0), stats(0.4, 0.5, 3.0)])
    assert report["rounds"] == 2
    assert report["series"]["distinct_2"] == [0.8, 0.4]
    assert report["deltas"]["reward_mean"] == [3.0]
    text = " ".join(report["warnings"])
    assert "distinct_2 went down" in text and "length_spearman went up" in text
    assert "reward" not in text


def test_propose_pairs_is_deterministic_per_seed():
    result = one_pair_round("random")
    again = propose_pairs(result.prompts, result.config, scored=True)
    assert again == result.pairs


def _samples(scores, duplicates=()):
    return [
        Sample(
            index=i,
            text=f"s{i}",
            token_count=1,
            finish_reason="stop",
            score=score,
            duplicate_of=0 if i in duplicates else None,
        )
        for i, score in enumerate(scores)
    ]


def test_ranking_picks_spread_best_middle_worst():
    samples = _samples([0.1, 0.9, 0.5, 0.3, 0.7, 0.2])
    # By score: 0.9 0.7 0.5 0.3 0.2 0.1; three picks at ranks 0, 2.5 -> 2, 5.
    assert [s.score for s in ranking_picks(samples, 3)] == [0.9, 0.5, 0.1]
    assert [s.score for s in ranking_picks(samples, 4)] == [0.9, 0.5, 0.3, 0.1]
    assert len(ranking_picks(samples, 9)) == 6  # all of them, best first
    # Duplicates never enter; unscored samples keep sample order.
    dup = _samples([0.4, 0.4, 0.8], duplicates={1})
    assert [s.index for s in ranking_picks(dup, 3)] == [0, 2]
    unscored = _samples([None] * 5)
    assert [s.index for s in ranking_picks(unscored, 3)] == [0, 2, 4]
    assert ranking_picks(samples, 1) == [] and ranking_picks(samples[:1], 3) == []


class HeadScorer:
    """An ensemble stand-in with RewardScorer's interface: the reward is the heads'
    mean and ``head_rewards`` keeps each item's rewards by head."""

    def __init__(self, heads: dict[str, list[float]]) -> None:
        self.heads = heads
        self.head_rewards: dict = {}

    @staticmethod
    def key(conversation, response):
        return json.dumps(list(conversation), sort_keys=True), response

    def __call__(self, conversations, responses):
        for c, r in zip(conversations, responses, strict=True):
            self.head_rewards[self.key(c, r)] = self.heads[r]
        return [sum(self.heads[r]) / len(self.heads[r]) for r in responses]


# Means: a 0, b 1, c 1, d 2 (best first: d, b, c, a). Per-head differences
# (hand-computed): d-b [3, -1] var 4 gap 2; d-c [1, 1] var 0; d-a [4, 0] var 4
# gap 4; b-c [-2, 2] var 4 gap 0; b-a [1, 1] var 0; c-a [3, -1] var 4 gap 2.
HEADS = {"a": [0, 0], "b": [1, 1], "c": [3, -1], "d": [4, 0]}


def heads_round(strategy: str, scorer=None):
    return run_round(
        [conv("h")],
        ScriptedSampler({"h": ["a", "b", "c", "d"]}),
        scorer or HeadScorer(HEADS),
        RoundConfig(n=4, pair_mix={strategy: 1.0}),
    )


def test_samples_carry_the_ensemble_heads_rewards():
    result = heads_round("random")
    assert {s.text: s.heads for s in result.prompts[0].samples} == HEADS
    assert [s.score for s in result.prompts[0].samples] == [0, 1, 1, 2]


def test_disagreement_proposes_the_pair_the_heads_disagree_on_most():
    (pair,) = heads_round("disagreement").pairs
    # var 4 ties between d-b, d-a, b-c and c-a: the best-first order picks d-b.
    assert (pair.a_text, pair.b_text, pair.strategy) == ("d", "b", "disagreement")


def test_gap_proposes_a_large_gap_the_heads_are_unsure_about():
    (pair,) = heads_round("gap").pairs
    assert (pair.a_text, pair.b_text, pair.strategy) == ("d", "a", "gap")


def test_without_heads_disagreement_falls_back_to_random_and_gap_to_bernoulli():
    (pair,) = one_pair_round("disagreement").pairs[:1]
    assert pair.strategy == "random"  # one head: nothing to disagree about
    # gap = |diff| * 4 p (1 - p), p = sigmoid(diff): for prompt p (a 0.1, b 2.0,
    # c 1.0, d 1.9) the largest is d-a (1.8 -> 0.877) over b-a (1.9 -> 0.859).
    first = one_pair_round("gap").pairs[0]
    assert (first.a_text, first.b_text, first.strategy) == ("d", "a", "gap")


def test_pair_mix_accepts_the_queue_strategies_and_names_unknown_ones():
    RoundConfig(pair_mix={"gap": 1, "disagreement": 1}).validate()
    with pytest.raises(BadSamplingInput, match="uncertainty"):
        RoundConfig(pair_mix={"uncertainty": 1}).validate()
