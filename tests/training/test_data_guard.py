"""The data guard: each filter on constructed rounds, and its counts."""

from __future__ import annotations

from training.data_guard import (
    GuardConfig,
    GuardPrompt,
    GuardSample,
    from_round_result,
    from_sample_records,
    select_pairs,
    select_sft,
)

CONV = [{"role": "user", "content": "why is the sky blue?"}]


def prompt(*samples: tuple, conv=CONV, rnd: int = 0) -> GuardPrompt:
    return GuardPrompt(
        conversation=list(conv),
        samples=[GuardSample(*s) for s in samples],
        round=rnd,
    )


def texts(result) -> list[str]:
    return [ex["messages"][-1]["content"] for ex in result.examples]


def test_keeps_the_best_complete_sample_above_the_median_margin():
    p = prompt(("low", 0.0), ("mid", 0.5), ("best", 2.0))
    result = select_sft([[p]], GuardConfig(margin=0.25))
    assert texts(result) == ["best"]
    ex = result.examples[0]
    assert ex["messages"][:-1] == CONV and ex["messages"][-1]["role"] == "assistant"
    assert ex["reward"] == 2.0 and ex["median_reward"] == 0.5
    assert result.counts["kept"] == 1 and result.counts["prompts"] == 1


def test_truncated_best_gives_way_to_the_best_complete_sample():
    # Rewards 0, 0.5, 2 and 3 (cut off): median 1.25; the best complete one, 2.0,
    # beats it by more than the margin.
    p = prompt(("low", 0.0), ("meh", 0.5), ("cut off mid", 3.0, True), ("fine", 2.0))
    fallback = GuardConfig(margin=0.25, min_length_ratio=0, sft_fallback=True)
    result = select_sft([[p]], fallback)
    assert texts(result) == ["fine"] and result.examples[0]["median_reward"] == 1.25
    # By default the cut-off top sample drops the prompt.
    default = select_sft([[p]], GuardConfig(margin=0.25, min_length_ratio=0))
    assert default.examples == [] and default.counts["truncated"] == 1
    # The stand-in still has to beat the median by the margin.
    weak = prompt(("low", 0.0), ("cut off mid", 3.0, True), ("fine", 1.0))
    result = select_sft([[weak]], fallback)
    assert result.examples == [] and result.counts["below_margin"] == 1
    only_cut = prompt(("a b", 0.0, True), ("cut off mid", 3.0, True))
    result = select_sft([[only_cut]])
    assert result.examples == [] and result.counts["truncated"] == 1


def test_best_must_beat_the_median_by_the_margin():
    flat = prompt(("a", 1.0), ("b", 1.1), ("c", 1.2))
    result = select_sft([[flat]], GuardConfig(margin=0.25))
    assert result.examples == [] and result.counts["below_margin"] == 1
    # The same samples pass with a smaller margin: the margin is the filter.
    assert texts(select_sft([[flat]], GuardConfig(margin=0.05))) == ["c"]


def test_no_reward_round_zero():
    result = select_sft([[prompt(("a", None), ("b", None))]])
    assert result.examples == [] and result.counts["no_reward"] == 1


def test_empty_samples_are_never_picked_and_never_pair():
    p = prompt(("", 0.0), (" ", 3.0))
    result = select_sft([[p]])
    assert result.examples == [] and result.counts["empty"] == 1
    # Beside a non-empty one, the empty top sample gives way (and the margin
    # then decides: median 1.5, the stand-in has 0.0).
    q = prompt(("a", 0.0), (" ", 3.0))
    assert select_sft([[q]], GuardConfig(sft_fallback=True)).counts["below_margin"] == 1
    assert select_sft([[q]]).counts["empty"] == 1
    r = prompt(("", -5.0), ("a", 0.0), ("b", 1.0))
    (pair,) = select_pairs([[r]]).examples
    assert pair["rejected"][0]["content"] == "a"


def test_require_approved():
    approved = prompt(("x", 0.0), ("good", 2.0, False, True))
    unreviewed = prompt(
        ("y", 0.0), ("fine", 2.0), conv=[{"role": "user", "content": "q2"}]
    )
    rejected = prompt(
        ("z", 0.0), ("meh", 2.0, False, False), conv=[{"role": "user", "content": "3"}]
    )
    rounds = [[approved, unreviewed, rejected]]
    assert len(select_sft(rounds).examples) == 3
    result = select_sft(rounds, GuardConfig(require_approved=True))
    assert texts(result) == ["good"]
    assert result.counts["not_approved"] == 2


def test_duplicates_across_rounds_and_of_the_pool_are_dropped():
    r0 = [prompt(("no", 0.0), ("The answer", 2.0), rnd=0)]
    # Same prompt, same answer modulo case/whitespace, in the next round.
    r1 = [prompt(("nope", 0.0), ("the  answer ", 2.5), rnd=1)]
    result = select_sft([r0, r1])
    assert texts(result) == ["The answer"]
    assert result.counts["duplicate"] == 1
    assert result.per_round[0]["kept"] == 1 and result.per_round[1]["duplicate"] == 1
    # Against an existing pool, nothing new.
    pool = [{"messages": [*CONV, {"role": "assistant", "content": "the answer"}]}]
    again = select_sft([r0], pooled=pool)
    assert again.examples == [] and again.counts["duplicate"] == 1


def test_pools_every_round_in_order():
    rounds = [
        [prompt(("a", 0.0), ("r0", 1.0), rnd=0)],
        [prompt(("b", 0.0), ("r1", 1.0), rnd=1)],
    ]
    result = select_sft(rounds)
    assert texts(result) == ["r0", "r1"]
    assert [ex["round"] for ex in result.examples] == [0, 1]
    assert sum(result.counts[k] for k in ("kept", "below_margin")) == 2


def test_pairs_best_complete_vs_worst():
    p = prompt(("worst", -2.0, True), ("mid", 0.0), ("cut best", 5.0, True), ("b", 1))
    result = select_pairs([[p]], GuardConfig(min_length_ratio=0, pair_length_band=0))
    (pair,) = result.examples
    assert pair["prompt"] == CONV
    assert pair["chosen"] == [{"role": "assistant", "content": "b"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "worst"}]
    assert (pair["chosen_reward"], pair["rejected_reward"]) == (1, -2.0)


def test_pairs_skip_ties_margins_and_single_samples():
    tie = prompt(("a", 1.0), ("b", 1.0))
    close = prompt(("a", 1.0), ("b", 1.2), conv=[{"role": "user", "content": "c"}])
    single = prompt(("a", 1.0), ("a", 1.0), conv=[{"role": "user", "content": "s"}])
    cut = prompt(("a", 1.0, True), ("b", 0.0, True), conv=[{"role": "user", "content": "t"}])  # fmt: skip
    result = select_pairs([[tie, close, single, cut]], GuardConfig(pair_margin=0.5))
    assert result.examples == []
    assert result.counts == {
        "prompts": 4,
        "too_few_samples": 1,
        "no_complete_sample": 1,
        "too_short": 0,
        "length_mismatch": 0,
        "below_margin": 2,
        "duplicate": 0,
        "kept": 0,
    }
    # A margin of 0 still skips the exact tie but keeps the close pair.
    kept = select_pairs([[tie, close]], GuardConfig(pair_margin=0.0))
    assert kept.counts["kept"] == 1 and kept.counts["below_margin"] == 1


def test_pairs_deduplicated_across_rounds():
    r0 = [prompt(("bad", 0.0), ("good", 2.0), rnd=0)]
    r1 = [prompt(("bad", 0.0), ("good", 2.0), rnd=1)]
    result = select_pairs([r0, r1])
    assert len(result.examples) == 1 and result.counts["duplicate"] == 1


def test_adapters_read_round_outputs():
    from training.rejection import PromptResult, RoundConfig, RoundResult, Sample

    res = RoundResult(
        config=RoundConfig(),
        prompts=[
            PromptResult(
                index=0,
                conversation=CONV,
                samples=[
                    Sample(0, "a", 3, "stop", score=0.0),
                    Sample(1, "a", 3, "stop", score=0.0, duplicate_of=0),
                    Sample(2, "long", 9, "length", score=2.0),
                ],
            )
        ],
        pairs=[],
        stats={},
    )
    (gp,) = from_round_result(res, round_number=3)
    assert gp.round == 3 and [s.text for s in gp.samples] == ["a", "long"]
    assert gp.samples[1].truncated and not gp.samples[0].truncated
    records = [
        {"prompt_index": 1, "messages": CONV, "response": "x", "score": 1.0,
         "finish_reason": "stop", "duplicate_of": None, "approved": True},
        {"prompt_index": 0, "messages": CONV, "response": "y", "score": None,
         "finish_reason": "length", "duplicate_of": None},
        {"prompt_index": 1, "messages": CONV, "response": "x", "score": 1.0,
         "finish_reason": "stop", "duplicate_of": 0},
    ]  # fmt: skip
    prompts = from_sample_records(records)
    assert [len(p.samples) for p in prompts] == [1, 1]
    assert prompts[0].samples[0].truncated and prompts[1].samples[0].approved


LONG = "a complete answer of some length"  # 32 characters


def test_sft_top_sample_under_the_length_floor_gives_way():
    # Lengths 32, 32, 33 and 3: median 32, floor 0.8 x 32 = 25.6 characters.
    # Rewards 1, 0, 0, 2: median 0.5. "Ok." is the top sample but too short; the
    # pick is the best long enough complete one.
    p = prompt((LONG, 1.0), (LONG.upper(), 0.0), (LONG + "!", 0.0, True), ("Ok.", 2.0))
    result = select_sft([[p]], GuardConfig(sft_fallback=True))
    assert texts(result) == [LONG] and result.counts["too_short"] == 0
    # By default the short top sample drops the prompt.
    assert select_sft([[p]]).counts["too_short"] == 1
    # Off, the short top sample is the pick: the floor is the filter.
    assert texts(select_sft([[p]], GuardConfig(min_length_ratio=0))) == ["Ok."]
    # Every complete sample too short: the prompt gives nothing, and says why.
    short = prompt(("Ok.", 2.0), (LONG, 0.0, True), (LONG + "?", 0.0, True))
    result = select_sft([[short]])
    assert result.examples == [] and result.counts["too_short"] == 1
    # Long best among short others (median 3): kept up to a ratio of 32 / 3.
    long_best = prompt((LONG, 2.0), ("Ok.", 0.0), ("No.", 0.0))
    assert texts(select_sft([[long_best]])) == [LONG]
    assert texts(select_sft([[long_best]], GuardConfig(min_length_ratio=10))) == [LONG]
    over = select_sft([[long_best]], GuardConfig(min_length_ratio=11))
    assert over.examples == [] and over.counts["too_short"] == 1


def test_pairs_chosen_is_the_best_complete_sample_above_the_length_floor():
    # "Ok." has the highest reward but is under the floor (median 32): the chosen
    # answer is the best of the long enough complete samples, the rejected one
    # the worst of all.
    p = prompt(
        ("Ok.", 3.0),
        (LONG, 1.0),
        (LONG.upper(), 2.0),
        (LONG + "!", -1.0, True),
    )
    (pair,) = select_pairs([[p]]).examples
    assert pair["chosen"][0]["content"] == LONG.upper()
    assert pair["rejected"][0]["content"] == LONG + "!"
    only_short = prompt(("Ok.", 3.0), (LONG, -1.0, True), (LONG + "?", 0.0, True))
    result = select_pairs([[only_short]])
    assert result.examples == [] and result.counts["too_short"] == 1


def test_pairs_rejected_is_the_worst_sample_of_about_the_chosen_length():
    # The worst sample overall is three times longer than the chosen answer; with
    # the band (1.25) the rejected one is the worst of those about as long.
    p = prompt(
        (LONG, 2.0),
        (LONG * 3, -3.0, True),  # worst, but 3x as long: never the rival
        (LONG.upper(), -1.0),
        (LONG + " and more", 0.5),
    )
    (pair,) = select_pairs([[p]], GuardConfig(min_length_ratio=0)).examples
    assert pair["chosen"][0]["content"] == LONG
    assert pair["rejected"][0]["content"] == LONG.upper()
    # Band off: best vs worst of all, as before.
    (off,) = select_pairs(
        [[p]], GuardConfig(min_length_ratio=0, pair_length_band=0)
    ).examples
    assert off["rejected"][0]["content"] == LONG * 3
    # No rival of about its length: the prompt gives no pair, and says why.
    lone = prompt((LONG, 2.0), (LONG * 3, -3.0))
    result = select_pairs([[lone]], GuardConfig(min_length_ratio=0))
    assert result.examples == [] and result.counts["length_mismatch"] == 1
