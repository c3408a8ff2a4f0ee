"""Agreement, annotator checks and the reward-model monitor (labelapp.quality)."""

from __future__ import annotations

import gzip
import itertools
import json
import math

import numpy as np
import pytest

from labelapp import quality
from labelapp.models import (
    Choice,
    Comparison,
    Label,
    Membership,
    ModelVersion,
    Prompt,
    Response,
    Round,
    content_hash,
    text_hash,
)
from labelapp.quality import LabelObs
from tests.conftest import shared_data_file
from tests.labelapp.conftest_review import (
    review_comparison,
    review_label,
    review_project,
    review_user,
)

N = None

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section A:
# 4 observers x 12 units, nominal values 1..5, "." = missing. Nominal alpha = 0.743.
KRIPP_2011 = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
    "C": [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
}


# --- alpha and agreement, pure ----------------------------------------------------


def test_alpha_krippendorff_2011_textbook_example() -> None:
    units = list(zip(*KRIPP_2011.values(), strict=True))
    alpha = quality.krippendorff_alpha_nominal(units)
    assert alpha == pytest.approx(0.743, abs=5e-4)
    # Worked by hand from the paper's coincidence matrix: n = 40 pairable values,
    # Σ_c o_cc = 7 + 10 + 8 + 4 + 3 = 32, marginals n_c = 9, 13, 10, 5, 3, so
    # α = 1 − (n−1)·(n − Σ o_cc) / (n² − Σ n_c²) = 1 − 39·8 / (1600 − 384).
    assert alpha == pytest.approx(1 - 39 * 8 / (1600 - 384), abs=1e-12)


def test_alpha_ignores_unpairable_units_and_missing_values() -> None:
    units = list(zip(*KRIPP_2011.values(), strict=True))
    # Unit 12 has one value: dropping it, or adding value-less units, changes nothing.
    assert quality.krippendorff_alpha_nominal(units[:11]) == pytest.approx(
        quality.krippendorff_alpha_nominal(units)
    )
    assert quality.krippendorff_alpha_nominal([*units, (N, N, N, N), (7,)]) == (
        pytest.approx(quality.krippendorff_alpha_nominal(units))
    )


def test_alpha_and_pairwise_agreement_hand_worked() -> None:
    units = [["a", "a"], ["a", "b"], ["b", "b"], ["tie", "tie"]]
    # n = 8, n_a = n_b = 3, n_tie = 2; one disagreeing unit of 2 values contributes
    # 2 ordered unequal pairs / (2 − 1): α = 1 − 7·2 / (64 − 9 − 9 − 4) = 2/3.
    assert quality.krippendorff_alpha_nominal(units) == pytest.approx(2 / 3)
    assert quality.pairwise_agreement(units) == pytest.approx(3 / 4)
    # Three coders on one unit: pairs (a,a) agree, (a,b) x2 disagree.
    assert quality.pairwise_agreement([["a", "a", "b"]]) == pytest.approx(1 / 3)


def test_alpha_edge_cases() -> None:
    assert quality.krippendorff_alpha_nominal([["a", "a"], ["b", "b"]]) == 1.0
    # One category only: expected disagreement 0, alpha undefined.
    assert quality.krippendorff_alpha_nominal([["a", "a"], ["a", "a"]]) is None
    assert quality.krippendorff_alpha_nominal([["a"], ["b"]]) is None
    assert quality.krippendorff_alpha_nominal([]) is None
    assert quality.pairwise_agreement([["a"]]) is None
    # Systematic disagreement is worse than chance.
    assert quality.krippendorff_alpha_nominal([["a", "b"], ["b", "a"]]) < 0


def test_both_bad_category_or_excluded() -> None:
    obs = [
        LabelObs(1, "x", "a"),
        LabelObs(1, "y", "a"),
        LabelObs(2, "x", "b"),
        LabelObs(2, "y", "both_bad"),
        LabelObs(3, "x", "b"),
        LabelObs(3, "y", "b"),
    ]
    as_category = quality.units_from_observations(obs)
    excluded = quality.units_from_observations(obs, both_bad="exclude")
    assert quality.pairwise_agreement(as_category) == pytest.approx(2 / 3)
    assert quality.pairwise_agreement(excluded) == 1.0
    assert quality.krippendorff_alpha_nominal(excluded) == 1.0


def test_annotator_pair_and_leave_one_out_agreement() -> None:
    obs = [
        LabelObs(1, "x", "a"),
        LabelObs(1, "y", "a"),
        LabelObs(1, "z", "b"),
        LabelObs(2, "x", "b"),
        LabelObs(2, "y", "b"),
        LabelObs(2, "z", "b"),
        LabelObs(3, "x", "a"),
        LabelObs(3, "y", "b"),
    ]
    pairs = quality.annotator_pair_agreement(obs)
    assert pairs[("x", "y")] == {"n": 3, "agree": 2, "rate": pytest.approx(2 / 3)}
    assert pairs[("x", "z")] == {"n": 2, "agree": 1, "rate": 0.5}
    loo = quality.leave_one_out_agreement(obs)
    # Unit 1: others of x are (a, b): split, skipped; others of z are (a, a): z
    # disagrees. Unit 2: all agree. Unit 3: the single other label is the majority.
    assert loo["x"] == {"n": 2, "agree": 1, "rate": 0.5}
    assert loo["z"] == {"n": 2, "agree": 1, "rate": 0.5}
    assert loo["y"] == {"n": 2, "agree": 1, "rate": 0.5}


# --- annotator checks, pure -------------------------------------------------------


def test_position_bias_uses_display_side() -> None:
    assert quality.displayed_side("a", False) == "left"
    assert quality.displayed_side("a", True) == "right"
    assert quality.displayed_side("b", True) == "left"
    assert quality.displayed_side("tie", True) is None
    obs = [
        LabelObs(1, "x", "a", shown_swapped=False),  # left
        LabelObs(2, "x", "b", shown_swapped=True),  # left
        LabelObs(3, "x", "b", shown_swapped=False),  # right
        LabelObs(4, "x", "a", shown_swapped=False),  # left
        LabelObs(5, "x", "tie", shown_swapped=False),  # not counted
    ]
    bias = quality.position_bias(obs)["x"]
    assert (bias["n"], bias["left"], bias["left_rate"]) == (4, 3, 0.75)
    assert bias["z"] == pytest.approx((3 - 2) / 1.0)


def test_speed_median_and_fast_labels() -> None:
    obs = [
        LabelObs(i, "x", "a", duration_ms=ms)
        for i, ms in enumerate([1000, 2500, 4000, 9000, None])
    ]
    s = quality.speed(obs)["x"]
    assert s["n"] == 4 and s["median_s"] == pytest.approx(3.25)
    assert s["fast"] == 2 and s["fast_rate"] == 0.5
    assert quality.speed(obs, fast_threshold_s=1.5)["x"]["fast"] == 1


def test_gold_accuracy_and_flagging() -> None:
    obs = [LabelObs(i, "good", "a", gold_choice="a") for i in range(10)]
    obs += [
        LabelObs(i, "bad", "a" if i < 5 else "b", gold_choice="a") for i in range(10)
    ]
    obs += [LabelObs(i, "new", "b", gold_choice="a") for i in range(3)]
    obs += [LabelObs(99, "bad", "b")]  # not gold: ignored
    gold = quality.gold_accuracy(obs)
    assert gold["good"]["accuracy"] == 1.0
    assert gold["bad"] == {"n": 10, "correct": 5, "accuracy": 0.5}
    # "new" is at 0% but with 3 gold labels that is not enough evidence yet.
    assert quality.gold_flagged(gold, min_count=10, min_accuracy=0.7) == ["bad"]
    assert quality.gold_flagged(gold, min_count=3, min_accuracy=0.7) == ["bad", "new"]


# --- reward-model monitor, pure ---------------------------------------------------


def test_rm_human_agreement() -> None:
    pairs = [
        (2.0, 1.0, 1.0),  # agree
        (0.0, 1.0, 0.2),  # agree
        (0.0, 1.0, 0.9),  # disagree
        (1.0, 1.0, 1.0),  # RM has no pick: skipped
        (1.0, 0.0, 0.5),  # humans tied: skipped
        (None, 0.0, 1.0),  # unscored: skipped
    ]
    assert quality.rm_human_agreement(pairs) == {
        "n": 3,
        "agree": 2,
        "rate": pytest.approx(2 / 3),
    }


def test_expected_calibration_error_hand_worked() -> None:
    # Bin [0.9, 1.0): probs 0.9, 0.95, targets 1, 0 -> |0.925 − 0.5| x 2/4.
    # Bin [0.1, 0.2): prob 0.1, target 0 -> 0.1 x 1/4; bin [0.5, 0.6): exact.
    ece = quality.expected_calibration_error([0.9, 0.95, 0.1, 0.5], [1, 0, 0, 0.5])
    assert ece == pytest.approx(0.425 * 0.5 + 0.1 * 0.25)
    assert quality.expected_calibration_error([], []) is None
    assert quality.expected_calibration_error([1.0], [1.0]) == 0.0
    assert quality.sigmoid(-1000.0) == 0.0 and quality.sigmoid(0.0) == 0.5


def test_correlations_match_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 0.5 * x + rng.normal(size=50)
    assert quality.pearson(list(x), list(y)) == pytest.approx(np.corrcoef(x, y)[0, 1])
    # Spearman with ties: average ranks, then Pearson.
    xs = [1.0, 2.0, 2.0, 3.0, 10.0]
    ys = [5.0, 6.0, 7.0, 8.0, 7.0]
    assert quality.ranks(xs) == [1.0, 2.5, 2.5, 4.0, 5.0]
    assert quality.spearman(xs, ys) == pytest.approx(
        np.corrcoef(quality.ranks(xs), quality.ranks(ys))[0, 1]
    )
    assert quality.spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert quality.pearson([1, 1, 1], [1, 2, 3]) is None
    assert quality.pearson([1, 2], [1, 2]) is None


def test_diversity_trend_tolerates_missing_keys() -> None:
    trend = quality.diversity_trend(
        [
            (1, {"diversity": {"distinct_1": 0.5, "distinct_2": 0.8, "note": "x"}}),
            (2, {}),
            (3, None),
            (4, {"distinct_2": 0.6, "diversity": "broken"}),
        ]
    )
    assert trend == [
        {"round": 1, "distinct_1": 0.5, "distinct_2": 0.8},
        {"round": 2},
        {"round": 3},
        {"round": 4, "distinct_2": 0.6},
    ]


# --- selectors and the pause service (database) -----------------------------------


@pytest.mark.django_db
def test_project_agreement_per_round_skips_rejected() -> None:
    project = review_project()
    x, y = review_user("x"), review_user("y")
    r1 = Round.objects.create(project=project, number=1, policy_ref="p")
    c1 = review_comparison(project, "p1", "a1", "b1", round=r1)
    c2 = review_comparison(project, "p2", "a2", "b2", round=r1)
    c3 = review_comparison(project, "p3", "a3", "b3")
    review_label(c1, x, "a")
    review_label(c1, y, "a")
    review_label(c2, x, "b")
    review_label(c2, y, "a")
    review_label(c3, x, "b")
    review_label(c3, y, "b")
    review_label(c3, review_user("z"), "a", review_state="rejected")
    summary = quality.project_agreement(project=project)
    units = [["a", "a"], ["b", "a"], ["b", "b"]]
    assert summary["alpha"] == pytest.approx(quality.krippendorff_alpha_nominal(units))
    assert summary["pairwise_agreement"] == pytest.approx(2 / 3)
    assert (summary["n_units"], summary["n_labels"], summary["n_annotators"]) == (
        3,
        6,
        2,
    )
    by_round = {r["round"]: r for r in summary["rounds"]}
    assert by_round[1]["pairwise_agreement"] == 0.5 and by_round[1]["n_units"] == 2
    assert by_round[None]["pairwise_agreement"] == 1.0

    # "both bad" as a category lowers agreement; excluded, the pair is unanimous.
    c4 = review_comparison(project, "p4", "a4", "b4")
    review_label(c4, x, "a")
    review_label(c4, y, "both_bad")
    assert quality.project_agreement(project=project)["pairwise_agreement"] == 0.5
    excluded = quality.project_agreement(project=project, both_bad="exclude")
    assert excluded["pairwise_agreement"] == pytest.approx(2 / 3)
    assert excluded["n_units"] == 4 and excluded["n_multi_units"] == 3


@pytest.mark.django_db
def test_annotator_stats_and_flag_and_pause() -> None:
    project = review_project(gold_min_count=4, gold_min_accuracy=0.75)
    good, bad, few = review_user("good"), review_user("bad"), review_user("few")
    for u in (good, bad, few):
        Membership.objects.create(project=project, user=u)
    for i in range(4):
        c = review_comparison(
            project, f"g{i}", f"ga{i}", f"gb{i}", is_gold=True, gold_choice="a"
        )
        review_label(c, good, "a", duration_ms=8000, shown_swapped=bool(i % 2))
        review_label(c, bad, "a" if i == 0 else "b", duration_ms=1000)
        if i < 2:
            review_label(c, few, "b", duration_ms=5000)
    stats = {s["username"]: s for s in quality.annotator_stats(project=project)}
    assert stats["bad"]["gold"] == {"n": 4, "correct": 1, "accuracy": 0.25}
    assert stats["bad"]["flagged"] and not stats["few"]["flagged"]
    assert stats["bad"]["speed"]["fast"] == 4
    assert stats["good"]["speed"]["median_s"] == 8.0
    # good: a unswapped (left), a swapped (right), ... -> half left.
    assert stats["good"]["position_bias"]["left_rate"] == 0.5
    assert quality.annotators_flagged(project=project) == [bad.pk]
    report = quality.project_quality_report(project=project)
    assert report["flagged"] == [bad.pk]
    pair = {(p["a"], p["b"]): p for p in report["annotator_pairs"]}
    assert pair[("good", "bad")]["n"] == 4 and pair[("good", "bad")]["agree"] == 1
    json.dumps(report)  # the page and the API serialise it as it is

    # The project does not pause by default: flagging only reports.
    assert quality.annotators_flag_and_pause(project=project) == []
    assert not Membership.objects.get(project=project, user=bad).paused

    project.pause_flagged_annotators = True
    project.save()
    assert quality.annotators_flag_and_pause(project=project) == [bad.pk]
    m = Membership.objects.get(project=project, user=bad)
    assert m.paused and "25%" in m.paused_reason
    assert not Membership.objects.get(project=project, user=good).paused
    # Idempotent: an already paused member is left as it is.
    assert quality.annotators_flag_and_pause(project=project) == []


@pytest.mark.django_db
def test_reward_monitor_rounds_versions_length_and_diversity() -> None:
    project = review_project()
    mv1 = ModelVersion.objects.create(project=project, version=1, base_ref="b")
    mv2 = ModelVersion.objects.create(project=project, version=2, base_ref="b")
    r1 = Round.objects.create(
        project=project,
        number=1,
        policy_ref="p",
        reward_version=mv1,
        stats={"diversity": {"distinct_2": 0.9}},
    )
    r2 = Round.objects.create(project=project, number=2, policy_ref="p", stats={})
    # Round 1: rewards grow with length (a length-hacking RM); 3 labelled pairs,
    # the RM agrees with humans on 2; the best_vs_runner_up pair is the miss.
    spec = [
        ("x", "xxxx", 0.0, 2.0, 1.0, "best_vs_runner_up"),  # RM B, humans A
        ("yy", "yyyyyyyy", 1.0, 3.0, 0.0, "random"),  # RM B, humans B
        ("zzz", "z", 1.5, 0.5, 1.0, "random"),  # RM A, humans A
    ]
    for i, (ta, tb, ra, rb, p_a, strategy) in enumerate(spec):
        review_comparison(
            project,
            f"q{i}",
            ta,
            tb,
            round=r1,
            strategy=strategy,
            reward_a=ra,
            reward_b=rb,
            response_kwargs={"round": r1, "reward_version": mv1},
            p_a=p_a,
        )
    # A pair scored by v2 in round 2 with no human label yet: not in any agreement.
    review_comparison(
        project, "q9", "m", "mm", round=r2, reward_a=0.1, reward_b=0.2,
        response_kwargs={"round": r2, "reward_version": mv2},
    )  # fmt: skip
    mon = quality.reward_monitor(project=project)
    round1 = mon["rounds"][0]
    assert round1["round"] == 1 and round1["reward_version"] == 1
    assert round1["agreement"] == {"n": 3, "agree": 2, "rate": pytest.approx(2 / 3)}
    assert round1["agreement_best_vs_runner_up"]["rate"] == 0.0
    rows = [(0.0, 2.0, 1.0), (1.0, 3.0, 0.0), (1.5, 0.5, 1.0)]
    assert round1["ece"] == pytest.approx(
        quality.expected_calibration_error(
            [quality.sigmoid(a - b) for a, b, _ in rows], [p for *_, p in rows]
        )
    )
    rewards = [0.0, 2.0, 1.0, 3.0, 1.5, 0.5]
    chars = [1, 4, 2, 8, 3, 1]
    assert round1["length"]["n"] == 6
    assert round1["length"]["pearson_chars"] == pytest.approx(
        np.corrcoef(rewards, chars)[0, 1]
    )
    assert round1["length"]["pearson_tokens"] is None  # no token counts stored
    assert mon["rounds"][1]["agreement"]["n"] == 0
    assert mon["rounds"][1]["length"]["pearson_chars"] is None  # 2 points only
    versions = {v["version"]: v for v in mon["versions"]}
    assert versions[1]["agreement"]["n"] == 3 and versions[2]["n_pairs"] == 0
    assert mon["diversity"] == [{"round": 1, "distinct_2": 0.9}, {"round": 2}]


# --- PandaLM: three real human annotators -----------------------------------------

PANDALM_VALUE = {0: "tie", 1: "r1", 2: "r2"}


def _straightforward_alpha(units: list[list[str]]) -> float:
    """Textbook alpha written the long way (explicit ordered pairs), independent of
    labelapp.quality: α = 1 − D_o / D_e with
    D_o = (1/n) Σ_u Σ_{i≠j} [v_ui ≠ v_uj] / (m_u − 1),
    D_e = (1/(n(n−1))) Σ_{c≠k} n_c n_k."""
    pairable = [u for u in units if len(u) >= 2]
    values = [v for u in pairable for v in u]
    n = len(values)
    d_o = (
        sum(
            sum(u[i] != u[j] for i, j in itertools.permutations(range(len(u)), 2))
            / (len(u) - 1)
            for u in pairable
        )
        / n
    )
    cats = sorted(set(values))
    n_c = {c: values.count(c) for c in cats}
    d_e = sum(n_c[c] * n_c[k] for c in cats for k in cats if c != k) / (n * (n - 1))
    return 1 - d_o / d_e


@pytest.mark.django_db
def test_pandalm_three_annotators_alpha() -> None:
    path = shared_data_file("pandalm-testset-v1.json.gz")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        items = json.load(fh)
    assert len(items) == 999
    # Six responses are JSON booleans in the file (a model answered `true`); they
    # are texts like any other.
    for item in items:
        for key in ("response1", "response2"):
            if not isinstance(item[key], str):
                item[key] = json.dumps(item[key])

    project = review_project("pandalm", overlap=3)
    users = [review_user(f"pandalm-{j}") for j in (1, 2, 3)]

    # Prompts and responses: identical texts are stored once (the model's unique
    # constraints), so build them first with bulk inserts.
    def prompt_messages(item: dict) -> list[dict[str, str]]:
        content = item["instruction"] + (
            "\n\n" + item["input"] if item["input"] else ""
        )
        return [{"role": "user", "content": content}]

    prompts: dict[str, Prompt] = {}
    for item in items:
        msgs = prompt_messages(item)
        h = content_hash(msgs)
        if h not in prompts:
            prompts[h] = Prompt(
                project=project,
                messages=msgs,
                content_hash=h,
                source="WeOpenML/PandaLM testset-v1 (Apache-2.0)",
            )
    Prompt.objects.bulk_create(prompts.values())
    responses: dict[tuple[str, str], Response] = {}
    for item in items:
        h = content_hash(prompt_messages(item))
        for key in ("response1", "response2"):
            rk = (h, text_hash(item[key]))
            if rk not in responses:
                responses[rk] = Response(
                    prompt=prompts[h], text=item[key], text_hash=rk[1]
                )
    Response.objects.bulk_create(responses.values())

    # One comparison per distinct pair: 136 of the 999 items repeat a pair that an
    # earlier item already has (two models gave the same answers), and a pair is
    # stored once. The first occurrence's labels are kept.
    comparisons: dict[tuple[int, int], Comparison] = {}
    kept: list[tuple[dict, bool]] = []  # (item, response1 is the canonical A)
    for item in items:
        h = content_hash(prompt_messages(item))
        r1 = responses[(h, text_hash(item["response1"]))]
        r2 = responses[(h, text_hash(item["response2"]))]
        a, b = sorted((r1, r2), key=lambda r: r.pk)
        if (a.pk, b.pk) in comparisons:
            continue
        comparisons[(a.pk, b.pk)] = Comparison(
            project=project, prompt=prompts[h], response_a=a, response_b=b,
            labels_required=3, origin=Comparison.Origin.IMPORT,
        )  # fmt: skip
        kept.append((item, r1.pk == a.pk))
    Comparison.objects.bulk_create(comparisons.values())
    assert len(kept) == 863

    to_choice = {
        (0, True): Choice.TIE, (0, False): Choice.TIE,
        (1, True): Choice.A, (1, False): Choice.B,
        (2, True): Choice.B, (2, False): Choice.A,
    }  # fmt: skip
    p_a = {Choice.A: 1.0, Choice.B: 0.0, Choice.TIE: 0.5}
    labels = []
    for comparison, (item, r1_is_a) in zip(comparisons.values(), kept, strict=True):
        for j, user in enumerate(users, start=1):
            choice = to_choice[(int(item[f"annotator{j}"]), r1_is_a)]
            labels.append(
                Label(
                    comparison=comparison, annotator=user, choice=choice,
                    p_a=p_a[choice], source=Label.Source.IMPORTED,
                    review_state=Label.ReviewState.ACCEPTED,
                )
            )  # fmt: skip
    Label.objects.bulk_create(labels)

    summary = quality.project_agreement(project=project)
    alpha = summary["alpha"]

    # Independent: the same 863 units straight from the file, in the orientation
    # stored (alpha's expected disagreement depends on the category marginals, so
    # it must see A/B the way the database does) ...
    canonical = [
        [to_choice[(int(item[f"annotator{j}"]), r1_is_a)].value for j in (1, 2, 3)]
        for item, r1_is_a in kept
    ]
    # ... and in the file's own response1/response2 orientation, over all 999 items.
    raw = [[PANDALM_VALUE[int(it[f"annotator{j}"])] for j in (1, 2, 3)] for it in items]
    alpha_canonical = _straightforward_alpha(canonical)
    alpha_raw_999 = _straightforward_alpha(raw)
    print(
        f"\nPandaLM testset-v1: alpha (DB, 863 pairs) = {alpha:.4f}; "
        f"independent same units = {alpha_canonical:.4f}; raw file, 999 items, "
        f"file orientation = {alpha_raw_999:.4f}; pairwise agreement = "
        f"{summary['pairwise_agreement']:.4f}"
    )
    assert alpha == pytest.approx(alpha_canonical, abs=1e-9)
    assert abs(alpha - alpha_raw_999) < 0.03
    # Three trained annotators on a 3-way scale: substantial, not perfect.
    assert 0.75 < alpha < 0.95
    assert (summary["n_units"], summary["n_labels"], summary["n_annotators"]) == (
        863,
        3 * 863,
        3,
    )
    assert summary["pairwise_agreement"] == pytest.approx(
        quality.pairwise_agreement(canonical)
    )
    assert not math.isnan(alpha)
