"""Data-quality reads: the database into the plain data of
``labelapp.selectors.quality_stats``, and the quality page's report.

Which labels count: agreement over the *data* skips rejected labels; checks of
*annotators* use every label they gave (see quality_stats' docstring).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping
from itertools import groupby
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import F, Q
from django.db.models.functions import Length

from labelapp.models import (
    Choice,
    Comparison,
    Label,
    Membership,
    ModelVersion,
    Project,
    Ranking,
    Response,
    Round,
)
from labelapp.selectors.quality_stats import (
    DEFAULT_FAST_THRESHOLD_S,
    AgreementAccumulator,
    BothBad,
    LabelObs,
    agreement_block,
    annotator_pair_agreement,
    diversity_trend,
    gold_accuracy,
    gold_flagged,
    leave_one_out_agreement,
    pearson,
    position_bias,
    rm_human_agreement,
    spearman,
    speed,
)
from training.metrics import expected_calibration_error, sigmoid
from training.rankings import gold_pair_agreement

# Per-label values fetched from the DB; kept in one place so the selectors agree.
_CHUNK = 5000


def label_observations(
    *,
    project: Project,
    round_number: int | None = None,
    include_rejected: bool = True,
    gold_only: bool = False,
) -> list[LabelObs]:
    """The project's labels as ``LabelObs``, read in chunks. A list is fine here: the
    agreement functions need all labels of a unit together, and a LabelObs is small
    (about 150 bytes); exports, which are large, stream instead."""
    qs = Label.objects.filter(comparison__project=project)
    if round_number is not None:
        qs = qs.filter(comparison__round__number=round_number)
    if not include_rejected:
        qs = qs.exclude(review_state=Label.ReviewState.REJECTED)
    if gold_only:
        qs = qs.filter(comparison__is_gold=True)
    rows = qs.values_list(
        "comparison_id",
        "annotator_id",
        "choice",
        "shown_swapped",
        "duration_ms",
        "comparison__is_gold",
        "comparison__gold_choice",
        "comparison__round__number",
        "review_state",
    ).order_by("comparison_id", "annotator_id")
    return [
        LabelObs(
            unit=cid,
            coder=uid,
            choice=choice,
            shown_swapped=swapped,
            duration_ms=dur,
            gold_choice=gold_choice if is_gold else None,
            round=rnd,
            rejected=state == Label.ReviewState.REJECTED,
        )
        for (
            cid,
            uid,
            choice,
            swapped,
            dur,
            is_gold,
            gold_choice,
            rnd,
            state,
        ) in rows.iterator(chunk_size=_CHUNK)
    ]


def project_agreement(
    *, project: Project, both_bad: BothBad = "category"
) -> dict[str, Any]:
    """Alpha and pairwise agreement (non-rejected labels) for the whole project and
    per round (by number; comparisons outside any round, e.g. imports, appear under
    ``None``).

    Streams the labels ordered by comparison and feeds one comparison at a time to
    accumulators, so memory does not grow with the project (exports call this for
    their dataset card)."""
    qs = Label.objects.filter(comparison__project=project).exclude(
        review_state=Label.ReviewState.REJECTED
    )
    if both_bad == "exclude":
        qs = qs.exclude(choice=Choice.BOTH_BAD)
    rows = (
        qs.order_by("comparison_id")
        .values_list(
            "comparison_id", "comparison__round__number", "choice", "annotator_id"
        )
        .iterator(chunk_size=_CHUNK)
    )
    total = AgreementAccumulator()
    coders: set[int] = set()
    per_round: dict[int | None, AgreementAccumulator] = {}
    round_coders: dict[int | None, set[int]] = defaultdict(set)
    for (_cid, rnd), unit_rows in groupby(rows, key=lambda r: (r[0], r[1])):
        values = []
        for *_, choice, uid in unit_rows:
            values.append(choice)
            coders.add(uid)
            round_coders[rnd].add(uid)
        total.add(values)
        per_round.setdefault(rnd, AgreementAccumulator()).add(values)
    return {
        **agreement_block(total, coders, both_bad),
        "rounds": [
            {"round": r, **agreement_block(per_round[r], round_coders[r], both_bad)}
            for r in sorted(per_round, key=lambda r: (r is not None, r or 0))
        ],
    }


def annotator_stats(
    *, project: Project, fast_threshold_s: float = DEFAULT_FAST_THRESHOLD_S
) -> list[dict[str, Any]]:
    """One row per annotator who labelled or ranked in the project: label count,
    leave-one-out agreement, position bias, speed, gold accuracy (pairwise, and on
    gold ranking items beside it), whether they are flagged and why
    (``gold_flags``)."""
    obs = label_observations(project=project, include_rejected=True)
    loo = leave_one_out_agreement(obs)
    bias = position_bias(obs)
    spd = speed(obs, fast_threshold_s=fast_threshold_s)
    gold = gold_accuracy(obs)
    ranking_gold = ranking_gold_agreement(project=project)
    flags = gold_flags(project=project, gold=gold, ranking_gold=ranking_gold)
    counts = Counter(o.coder for o in obs)
    rejected = Counter(o.coder for o in obs if o.rejected)
    # A ranking implies labels, so a ranker is almost always in ``counts``; not
    # when every pair it implies was already labelled pairwise by them.
    coders = set(counts) | set(ranking_gold)
    users = get_user_model().objects.in_bulk(list(coders))
    paused = dict(
        Membership.objects.filter(project=project).values_list("user_id", "paused")
    )
    return [
        {
            "user_id": uid,
            "username": users[uid].get_username() if uid in users else str(uid),
            "n_labels": counts[uid],
            "n_rejected": rejected[uid],
            "loo_agreement": loo.get(uid),
            "position_bias": bias.get(uid),
            "speed": spd.get(uid),
            "gold": gold.get(uid, {"n": 0, "correct": 0, "accuracy": None}),
            "ranking_gold": ranking_gold.get(uid, dict(NO_RANKING_GOLD)),
            "flagged": uid in flags,
            "flag_reason": flags.get(uid, ""),
            "paused": paused.get(uid, False),
        }
        for uid in sorted(coders)
    ]


NO_RANKING_GOLD = {"items": 0, "pairs": 0, "correct": 0, "accuracy": None}


def ranking_gold_agreement(*, project: Project) -> dict[int, dict[str, Any]]:
    """Per annotator, their rankings of the project's gold ranking items: how many
    items, how many pairs the gold orders imply, how many of those their rankings
    imply the same way, and the share (``training.rankings.gold_pair_agreement``:
    a pair their top-k ranking leaves unordered is a miss). Every ranking counts,
    rejected ones included, as every label counts for pairwise gold accuracy.

    Shown beside pairwise gold accuracy, not merged into it: a ranking of K
    responses is K(K-1)/2 pairs, so one ranking would outweigh many pairwise gold
    labels. It flags annotators by the same rule, on its own (``gold_flags``)."""
    out: dict[int, dict[str, Any]] = {}
    rows = Ranking.objects.filter(
        item__project=project, item__is_gold=True
    ).values_list("annotator_id", "tiers", "item__gold_tiers", "item__response_ids")
    for uid, tiers, gold_tiers, response_ids in rows.iterator(chunk_size=_CHUNK):
        correct, n = gold_pair_agreement(tiers, gold_tiers, response_ids)
        row = out.setdefault(uid, dict(NO_RANKING_GOLD))
        row["items"] += 1
        row["pairs"] += n
        row["correct"] += correct
    for row in out.values():
        row["accuracy"] = row["correct"] / row["pairs"] if row["pairs"] else None
    return out


def gold_accuracy_for_project(*, project: Project) -> dict[Hashable, dict[str, Any]]:
    """Per annotator: gold labels, correct ones and accuracy (see ``gold_accuracy``)."""
    return gold_accuracy(
        o for o in label_observations(project=project, gold_only=True) if o.gold_choice
    )


def gold_flags(
    *,
    project: Project,
    gold: Mapping[Any, Mapping[str, Any]],
    ranking_gold: Mapping[Any, Mapping[str, Any]],
) -> dict[int, str]:
    """The flagged annotators (user id -> why, a sentence per reason), by the one
    rule (``gold_flagged``) applied to each kind of gold on its own: at least the
    project's ``gold_min_count`` gold labels with gold accuracy under its
    ``gold_min_accuracy``, or at least ``gold_min_count`` gold ranking items
    ranked with ranking-gold agreement under ``gold_min_accuracy``.

    Ranking gold counts items, not pairs, towards the minimum: a ranked item is
    one judgement, as a gold label is, and its K(K-1)/2 pairs are not independent
    evidence (counted as pairs, one ranking of five responses, ten pairs, would
    be enough to flag someone at the default minimum of 10). The two kinds are not pooled, for the reason in
    ``ranking_gold_agreement``."""
    bar = project.gold_min_accuracy
    rule = {"min_count": project.gold_min_count, "min_accuracy": bar}
    reasons: dict[int, list[str]] = defaultdict(list)
    for uid in gold_flagged(gold, **rule):
        g = gold[uid]
        reasons[int(uid)].append(
            f"Gold accuracy {g['accuracy']:.0%} on {g['n']} gold labels is below "
            f"{bar:.0%}."
        )
    by_item = {
        uid: {"n": r["items"], "accuracy": r["accuracy"]}
        for uid, r in ranking_gold.items()
    }
    for uid in gold_flagged(by_item, **rule):
        r = ranking_gold[uid]
        reasons[int(uid)].append(
            f"Ranking gold agreement {r['accuracy']:.0%} on {r['items']} gold "
            f"ranking items is below {bar:.0%}."
        )
    return {uid: " ".join(why) for uid, why in sorted(reasons.items())}


def annotator_flags(*, project: Project) -> dict[int, str]:
    """``gold_flags`` of the project, read from the database (gold labels and
    rankings of gold items only)."""
    return gold_flags(
        project=project,
        gold=gold_accuracy_for_project(project=project),
        ranking_gold=ranking_gold_agreement(project=project),
    )


def annotators_flagged(*, project: Project) -> list[int]:
    """User ids under the project's gold bar, pairwise or ranking (``gold_flags``)."""
    return sorted(annotator_flags(project=project))


def _comparison_rewards(qs: Any) -> list[dict[str, Any]]:
    return list(
        qs.filter(
            p_a__isnull=False,
            response_a__reward__isnull=False,
            response_b__reward__isnull=False,
        )
        .values(
            "p_a",
            "strategy",
            r_a=F("response_a__reward"),
            r_b=F("response_b__reward"),
        )
        .iterator(chunk_size=_CHUNK)
    )


def _rm_block(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Agreement (overall and on best-vs-runner-up pairs) and calibration."""
    triples = [(r["r_a"], r["r_b"], r["p_a"]) for r in rows]
    bvr = [
        (r["r_a"], r["r_b"], r["p_a"])
        for r in rows
        if r["strategy"] == "best_vs_runner_up"
    ]
    probs = [sigmoid(r["r_a"] - r["r_b"]) for r in rows]
    return {
        "agreement": rm_human_agreement(triples),
        "agreement_best_vs_runner_up": rm_human_agreement(bvr),
        "ece": expected_calibration_error(probs, [r["p_a"] for r in rows]),
        "n_pairs": len(rows),
    }


def reward_monitor(*, project: Project) -> dict[str, Any]:
    """Reward-model monitor for the project.

    * ``rounds``: per rejection-sampling round, RM–human agreement on the round's
      human-labelled pairs (overall and ``best_vs_runner_up``), calibration (ECE of
      σ(r_a − r_b) against p_a), and reward-vs-length correlation over the round's
      responses (characters; tokens where every response has a token count).
    * ``versions``: per reward ModelVersion, the same agreement and calibration over
      labelled pairs whose two responses were last scored by that version.
      ``Response.reward`` keeps only the latest score, so an old version is judged on
      the pairs it still owns; rescoring moves pairs to the newer version.
    * ``diversity``: the diversity numbers from each round's stats, in round order.
    """
    labelled = Comparison.objects.filter(project=project)
    rounds = list(
        Round.objects.filter(project=project)
        .order_by("number")
        .values("id", "number", "stats", "reward_version__version")
    )
    round_rows = []
    for r in rounds:
        block = _rm_block(_comparison_rewards(labelled.filter(round_id=r["id"])))
        resp = list(
            Response.objects.filter(round_id=r["id"], reward__isnull=False)
            .annotate(chars=Length("text"))
            .values_list("reward", "chars", "token_count")
            .iterator(chunk_size=_CHUNK)
        )
        rewards = [x[0] for x in resp]
        chars = [float(x[1]) for x in resp]
        tokens = [x[2] for x in resp]
        has_tokens = bool(tokens) and all(t is not None for t in tokens)
        round_rows.append(
            {
                "round": r["number"],
                "reward_version": r["reward_version__version"],
                **block,
                "length": {
                    "n": len(resp),
                    "pearson_chars": pearson(rewards, chars),
                    "spearman_chars": spearman(rewards, chars),
                    "pearson_tokens": pearson(rewards, [float(t) for t in tokens])
                    if has_tokens
                    else None,
                    "spearman_tokens": spearman(rewards, [float(t) for t in tokens])
                    if has_tokens
                    else None,
                },
            }
        )
    versions = []
    for mv in ModelVersion.objects.filter(
        project=project, kind=ModelVersion.Kind.REWARD
    ).order_by("version"):
        qs = labelled.filter(
            Q(response_a__reward_version=mv) & Q(response_b__reward_version=mv)
        )
        versions.append(
            {
                "version": mv.version,
                "status": mv.status,
                **_rm_block(_comparison_rewards(qs)),
            }
        )
    return {
        "rounds": round_rows,
        "versions": versions,
        "diversity": diversity_trend((r["number"], r["stats"]) for r in rounds),
    }


def project_quality_report(
    *, project: Project, fast_threshold_s: float = DEFAULT_FAST_THRESHOLD_S
) -> dict[str, Any]:
    """Everything the quality page shows, in one JSON-serialisable dict:
    agreement (project and per round), per-annotator checks, agreement between each
    pair of annotators (non-rejected labels), and the reward-model monitor."""
    stats = annotator_stats(project=project, fast_threshold_s=fast_threshold_s)
    names = {s["user_id"]: s["username"] for s in stats}
    pairs = annotator_pair_agreement(
        label_observations(project=project, include_rejected=False)
    )
    return {
        "agreement": project_agreement(project=project),
        "annotators": stats,
        "annotator_pairs": [
            {"a": names.get(a, str(a)), "b": names.get(b, str(b)), **v}
            for (a, b), v in sorted(pairs.items(), key=lambda kv: kv[0])
        ],
        "flagged": [s["user_id"] for s in stats if s["flagged"]],
        "reward_monitor": reward_monitor(project=project),
        "thresholds": {
            "fast_threshold_s": fast_threshold_s,
            "gold_min_count": project.gold_min_count,
            "gold_min_accuracy": project.gold_min_accuracy,
        },
    }
