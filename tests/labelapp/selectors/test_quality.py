"""Data-quality reads (labelapp.selectors.quality): agreement per project and
round, annotator checks and the reward-model monitor, from real rows."""

from __future__ import annotations

import gzip
import itertools
import json
import math

import numpy as np
import pytest

from labelapp.models import (
    Choice,
    Comparison,
    Label,
    ModelVersion,
    Prompt,
    Response,
    Round,
    content_hash,
    text_hash,
)
from labelapp.selectors import quality, quality_stats
from tests.conftest import shared_data_file
from tests.labelapp.conftest_review import (
    review_comparison,
    review_gold_project,
    review_label,
    review_project,
    review_user,
)
from training import metrics


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
    assert summary["alpha"] == pytest.approx(
        quality_stats.krippendorff_alpha_nominal(units)
    )
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
def test_annotator_stats_and_flags() -> None:
    project, _good, bad, _few = review_gold_project()
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
        metrics.expected_calibration_error(
            [metrics.sigmoid(a - b) for a, b, _ in rows], [p for *_, p in rows]
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
    labelapp.selectors.quality_stats: α = 1 − D_o / D_e with
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
        quality_stats.pairwise_agreement(canonical)
    )
    assert not math.isnan(alpha)
